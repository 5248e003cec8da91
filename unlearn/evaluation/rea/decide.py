"""The replicated decision of the Reminiscence Attack: is a method residual, over-suppressed,
equivalent to retraining, or undetermined?

The experimental unit is a **pretrained model**. A method is run on K independently
pretrained models (its *replicates*); the references are R models retrained from
independent seeds without the forget class, shared by all replicates. Each model has T
per-trial statistics (curve areas in [0, 1], :func:`unlearn.evaluation.rea.stats.curve_area`);
its *model statistic* is their mean. Everything here works on the model statistics, so the
sample size is K and R, never K x T: trials of one model share that model and are not
independent evidence about the method. Each model mean carries its own trial noise, so
the model-to-model spread of the means covers both sources of variance.

* Difference: a two-sided permutation test of the model labels (Fisher 1935; Pitman 1937):
  the method's K model statistics and the references' R are pooled, every split of the K + R
  models into K "method" and R "reference" models is scored with the pooled-variance t statistic
  (Student 1908), and ``p_diff`` is the share of splits at least as extreme as the observed one
  (``scipy.stats.permutation_test(permutation_type='independent')``; exact, all C(K + R, K)
  splits, when there are at most :data:`PERMUTATIONS` of them, else that many seeded random
  ones). Under the null "the method's models are like retrained ones" the K + R models are
  exchangeable, so the false-difference rate is at most ``alpha`` for any distribution of the
  statistic, not only a normal one. The parametric pooled t-test (``scipy.stats.ttest_ind
  (equal_var=True)``, K + R - 2 degrees of freedom) was used before; exact only for normal
  statistics, it flagged 5.8% of held-out retrained Digits models at the feature level (K = 3,
  R = 20, 2000 splits; this test 5.6% on the same splits' design, both within their Monte Carlo
  error; 20000 splits: 5.005%, docs/calibration.md); its p-value is kept as ``p_t``. With few models the permutation
  test cannot reach small p-values (K = 3, R = 3: 20 splits, so never below 0.1): it says so by
  returning ``undetermined``, which is the truth. Welch's unequal-variance test (Welch 1947)
  was used before that and measured liberal with a tiny method group beside many references
  (simulated false-difference rate at alpha 0.05: K=2, R=20: 11.8%; K=3, R=20: 7.2%;
  :mod:`unlearn.evaluation.rea.calibration`).
* Equivalence: two one-sided tests (TOST, Schuirmann 1987) of H0 ``|diff| >= margin``
  against ``|diff| < margin``, with the same pooled standard error and degrees of freedom
  (``statsmodels.stats.weightstats.ttost_ind(usevar='pooled')``); ``p_equiv`` is the larger
  of the two one-sided p-values. ``margin`` is in raw units of the statistic, declared
  beforehand, e.g. a multiple of the references' model-to-model sd (:func:`margin_from_refs`).
* Several methods (the *primary* comparisons): Holm's step-down adjustment of the difference
  p-values (Holm 1979, :func:`holm`, :func:`decide_many`), which keeps the family-wise
  error of the "residual" / "over-suppressed" claims at ``alpha``.

The rule (:func:`decide_means`): if the (adjusted) difference p-value is below ``alpha`` the
method is ``residual`` (relearns faster than retrained models: diff > 0) or
``over-suppressed`` (slower: diff < 0); otherwise, if ``p_equiv < alpha``, ``equivalent``;
otherwise ``undetermined``. A difference shown wins over equivalence even when it lies
inside the margin: the difference test has the stronger claim on the data.

The anchor (the never-unlearned model) enters no decision: a difference divided by
``anchor - references`` changes sign with the anchor's side and explodes when the anchor
sits among the references. :func:`display_index` gives that ratio for display only, and
only when the anchor lies clearly outside the references' prediction band.

Numpy in, plain Python (dataclasses, floats, lists) out.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from unlearn.evaluation.rea.verdict import BAND_LEVEL, band

LABELS = ("residual", "over-suppressed", "equivalent", "undetermined")
TESTS = ("permutation", "prediction", "none")  # K >= 2 and R >= 2; K = 1 and R >= 2; R < 2 or no spread
PERMUTATIONS = 9999  # the permutation test is exact up to this many splits C(K + R, K) (K = 3, R = 20: 1771)
PERMUTATION_SEED = 0  # the seeded random splits beyond that, so a rerun gives the same p-value


@dataclass(frozen=True)
class Decision:
    """One method's replicated decision against the references.

    ``diff``: mean method model statistic minus mean reference model statistic (raw units).
    ``ci``: the two-sided ``1 - alpha`` t interval of ``diff`` (pooled se; an effect-size interval:
    for K >= 2 it excludes 0 exactly when ``p_t < alpha``, which the rule does not read).
    ``ci_tost``: the ``1 - 2 alpha`` interval TOST uses; ``equivalent`` needs ``p_equiv < alpha``,
    i.e. ``ci_tost`` strictly inside ``(-margin, margin)``. ``p_diff``: the two-sided difference
    p-value (the permutation test for K >= 2, the prediction test for K = 1); ``p_t``: the
    parametric pooled-t p-value beside it (K >= 2; NaN otherwise), for comparison only;
    ``p_adjusted``: the Holm-adjusted ``p_diff`` the rule used (NaN when none was given, then the
    rule used ``p_diff``); ``p_equiv``: TOST's p-value. ``se`` and ``df``: the standard error of
    ``diff`` and the t degrees of freedom of the t-based parts (the intervals, TOST, ``p_t``).
    ``test``: ``permutation`` (K >= 2: the permutation test of the pooled t statistic),
    ``prediction`` (K = 1: the method model as one more draw of the references), ``none``
    (nothing could be tested).
    """

    label: str
    diff: float
    ci: tuple[float, float]
    ci_tost: tuple[float, float]
    p_diff: float
    p_t: float
    p_adjusted: float
    p_equiv: float
    margin: float
    alpha: float
    n_method: int
    n_ref: int
    method_mean: float
    ref_mean: float
    se: float
    df: float
    test: str

    def as_dict(self) -> dict:
        """Plain Python: floats, ints, strings and lists (the intervals), for JSON."""
        d = asdict(self)
        d["ci"], d["ci_tost"] = list(self.ci), list(self.ci_tost)
        return d


def model_means(models) -> np.ndarray:
    """The model statistics: the mean of each model's per-trial statistics.

    ``models``: a sequence of 1-D arrays, one per model (or a 2-D array, one row per model).
    Each must be a non-empty 1-D array of finite values; a bare number is refused so that
    one model's trials passed as a flat array are not read as that many one-trial models
    (give model means to :func:`decide_means` instead)."""
    out = []
    for i, m in enumerate(models):
        a = np.asarray(m, dtype=float)
        if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)):
            raise ValueError(f"model {i}: expected a non-empty 1-D array of finite per-trial statistics, "
                             f"got shape {a.shape} (model means go to decide_means)")
        out.append(float(a.mean()))
    return np.asarray(out, dtype=float)


def _means(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim != 1 or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be a 1-D array of finite model statistics, got shape {a.shape}")
    return a


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must lie in (0, 0.5), got {alpha}")
    return alpha


def margin_from_refs(ref_models, k_sd: float) -> float:
    """Equivalence margin = ``k_sd`` x the sd (ddof=1) of the reference model statistics.

    The references' model-to-model spread (trial noise of each mean included) is the size
    of "like retraining": a method whose mean differs from the references' by less than
    ``k_sd`` of their own spread is called equivalent when the data show it. The config
    declares ``k_sd``; it must be chosen before looking at the methods. NaN with fewer than
    2 references. ``ref_models``: per-trial arrays, one per model, as in :func:`decide`."""
    k = float(k_sd)
    if not (math.isfinite(k) and k > 0):
        raise ValueError(f"k_sd must be a positive number, got {k_sd}")
    r = model_means(ref_models)
    return k * float(r.std(ddof=1)) if r.size >= 2 else math.nan


def holm(pvalues) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979), in the given order.

    ``statsmodels.stats.multitest.multipletests(method='holm')`` on the finite p-values; NaN
    entries stay NaN and do not count in the family (a comparison that could not be tested
    is not a hypothesis tested). Example: [0.01, 0.04, 0.03] -> [0.03, 0.06, 0.06]."""
    from statsmodels.stats.multitest import multipletests  # lazy: start-up time

    p = np.asarray(pvalues, dtype=float).reshape(-1)
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
    out = np.full(p.shape, math.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return [float(x) for x in out]


def _undetermined(m: np.ndarray, r: np.ndarray, margin: float, alpha: float, p_adj: float) -> Decision:
    nan = math.nan
    mm = float(m.mean()) if m.size else nan
    rm = float(r.mean()) if r.size else nan
    return Decision("undetermined", mm - rm, (nan, nan), (nan, nan), nan, nan, p_adj, nan, margin, alpha,
                    int(m.size), int(r.size), mm, rm, nan, nan, "none")


def pooled_t(a, b, axis: int = -1):
    """Student's pooled-variance t statistic of ``a`` against ``b`` along ``axis`` (vectorised)."""
    from scipy import stats  # lazy: start-up time

    return stats.ttest_ind(a, b, equal_var=True, axis=axis).statistic


def permutation_p(method_means, ref_means) -> float:
    """The two-sided permutation p-value of the pooled t statistic of ``method_means`` (K >= 2)
    against ``ref_means`` (R >= 2): ``scipy.stats.permutation_test`` over the splits of the K + R
    models into groups of K and R, exact (all C(K + R, K) splits, the observed one included) when
    there are at most :data:`PERMUTATIONS`, else :data:`PERMUTATIONS` random splits drawn from
    :data:`PERMUTATION_SEED`. Two-sided as scipy defines it: twice the smaller one-sided p-value,
    at most 1."""
    from scipy import stats  # lazy: start-up time

    m, r = _means(method_means, "method_means"), _means(ref_means, "ref_means")
    if m.size < 2 or r.size < 2:
        raise ValueError(f"the permutation test needs K >= 2 and R >= 2 models, got K={m.size} R={r.size}")
    res = stats.permutation_test((m, r), pooled_t, permutation_type="independent", vectorized=True,
                                 n_resamples=PERMUTATIONS, alternative="two-sided",
                                 rng=np.random.default_rng(PERMUTATION_SEED))
    return float(res.pvalue)


def smallest_p(k: int, r: int) -> float:
    """The smallest two-sided p-value :func:`permutation_p` can give for K method and R reference models:
    2 / C(K + R, K) when it enumerates every split (the observed one, alone in its tail), else
    2 / (:data:`PERMUTATIONS` + 1). A table whose Holm family holds m rows can call a difference only if
    ``m * smallest_p(K, R) < alpha``."""
    splits = math.comb(int(k) + int(r), int(k))
    return min(1.0, 2.0 / (splits if splits <= PERMUTATIONS else PERMUTATIONS + 1))


def decide_means(method_means, ref_means, *, margin: float, alpha: float = 0.05,
                 p_adjusted: float | None = None) -> Decision:
    """The decision from model statistics: ``method_means`` (K,), ``ref_means`` (R,).

    K >= 2: the difference p-value is the permutation test of the pooled t statistic
    (:func:`permutation_p`); the pooled standard error ``se = sp * sqrt(1/K + 1/R)``,
    ``sp^2 = ((K-1) var_m + (R-1) var_r) / (K+R-2)``, with K + R - 2 degrees of freedom gives the
    intervals, ``p_t`` (``scipy.stats.ttest_ind(equal_var=True)``) and TOST with bounds
    ``(-margin, +margin)`` (``statsmodels...ttost_ind(usevar='pooled')``). The null hypothesis
    "the method is like retraining" includes "its models vary like retrained ones": a method
    whose models spread much more than retrained ones is unlike retraining too, and the test may
    then call a difference from what is in part a difference in spread. The parametric pooled
    t-test is exact for normal statistics only; Welch's unequal-variance test, used before it,
    is liberal when the method's group is tiny beside many references (simulated
    false-difference rates at alpha 0.05, equal normal spreads, 40000 experiments: K=2, R=20:
    11.8%; K=3, R=10: 6.6%; K=3, R=20: 7.2%; K=5, R=20: 5.5%).

    K = 1: no variance can be estimated from one model. The method model is then read as one
    more draw of the reference population (the test behind the references' prediction
    interval, :func:`unlearn.evaluation.rea.verdict.band`):
    ``se = sd_ref * sqrt(1 + 1/R)``, ``t = diff / se`` with R - 1 degrees of freedom, and TOST
    as the two one-sided tests of ``diff`` against ``-margin`` and ``+margin`` with that ``se``.
    This is the pooled t-test's own K = 1 case (the method contributes no variance term); a
    permutation test cannot decide here (R + 1 splits: p >= 2 / (R + 1)). It assumes normal
    statistics; with K = 1 nothing can check that.

    ``p_adjusted``: the Holm-adjusted difference p-value (:func:`decide_many`); when given
    the rule uses it instead of ``p_diff``. Fewer than 2 references, or no spread at all
    (``se == 0``): ``undetermined`` with NaN intervals and p-values; ``diff`` is still given
    when both sides have a model. ``margin``: raw units, >= 0; NaN is accepted only when the
    references are too few to decide anyway."""
    from scipy import stats  # lazy: start-up time
    from statsmodels.stats.weightstats import ttost_ind

    m, r = _means(method_means, "method_means"), _means(ref_means, "ref_means")
    alpha = _check_alpha(alpha)
    if m.size == 0:
        raise ValueError("method_means is empty: give at least one method model")
    p_adj = math.nan if p_adjusted is None else float(p_adjusted)
    margin = float(margin)
    if r.size < 2:
        return _undetermined(m, r, margin, alpha, p_adj)
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0 (raw units), got {margin}")
    diff = float(m.mean() - r.mean())
    k, n = m.size, r.size
    if k >= 2:
        sp2 = ((k - 1) * m.var(ddof=1) + (n - 1) * r.var(ddof=1)) / (k + n - 2)
        se = math.sqrt(sp2 * (1 / k + 1 / n))
        if not se > 0:
            return _undetermined(m, r, margin, alpha, p_adj)
        res = stats.ttest_ind(m, r, equal_var=True)
        p_t, df = float(res.pvalue), float(res.df)
        p_diff = permutation_p(m, r)
        p_equiv = float(ttost_ind(m, r, -margin, margin, usevar="pooled")[0])
        test = "permutation"
    else:
        se = float(r.std(ddof=1)) * math.sqrt(1 + 1 / n)
        if not se > 0:
            return _undetermined(m, r, margin, alpha, p_adj)
        df = float(n - 1)
        p_diff = float(2 * stats.t.sf(abs(diff) / se, df))
        p_equiv = float(max(stats.t.sf((diff + margin) / se, df), stats.t.cdf((diff - margin) / se, df)))
        p_t, test = math.nan, "prediction"
    q1, q2 = float(stats.t.ppf(1 - alpha / 2, df)), float(stats.t.ppf(1 - alpha, df))
    p_rule = p_diff if p_adjusted is None else p_adj
    if p_rule < alpha:
        label = "residual" if diff > 0 else "over-suppressed"
    elif p_equiv < alpha:
        label = "equivalent"
    else:
        label = "undetermined"
    return Decision(label, diff, (diff - q1 * se, diff + q1 * se), (diff - q2 * se, diff + q2 * se),
                    p_diff, p_t, p_adj, p_equiv, margin, alpha, int(k), int(n), float(m.mean()), float(r.mean()),
                    float(se), df, test)


def decide(method_models, ref_models, *, margin: float, alpha: float = 0.05,
           p_adjusted: float | None = None) -> Decision:
    """The decision from per-trial statistics: ``method_models`` and ``ref_models`` are
    sequences of 1-D arrays, one per model (:func:`model_means`); see :func:`decide_means`."""
    return decide_means(model_means(method_models), model_means(ref_models), margin=margin, alpha=alpha,
                        p_adjusted=p_adjusted)


def decide_many(named: dict, ref_models, *, margin: float, alpha: float = 0.05) -> dict[str, Decision]:
    """Decisions for several methods against the same references, Holm-adjusted.

    ``named``: method name -> its per-trial arrays, one per model (as ``method_models`` of
    :func:`decide`). These are the primary comparisons: their difference p-values form one
    Holm family (:func:`holm`; untestable ones are left out of it) and each decision's rule
    uses its adjusted p-value. TOST p-values are not adjusted: each equivalence claim is an
    intersection-union test on its own. Returns name -> :class:`Decision`, in the given order."""
    refs = model_means(ref_models)
    raw = {k: decide_means(model_means(v), refs, margin=margin, alpha=alpha) for k, v in named.items()}
    adj = holm([d.p_diff for d in raw.values()])
    return {k: decide_means(model_means(v), refs, margin=margin, alpha=alpha, p_adjusted=p)
            for (k, v), p in zip(named.items(), adj)}


def decide_family(stats: dict, ref_means, *, margin: float, alpha: float = 0.05, outside=()) -> dict:
    """Decisions from model statistics for the rows of a table against one reference population.

    ``stats``: row name -> that row's model statistics (one per replicate; empty: no decision, None).
    The rows not named in ``outside`` form one Holm family (:func:`holm`); a row in ``outside`` (an
    anchor, a check of the attack rather than a claim) is decided on its unadjusted p-value.
    Returns row name -> :class:`Decision` or None, in the given order."""
    refs = _means(ref_means, "ref_means")
    first = {k: decide_means(np.asarray(v, dtype=float), refs, margin=margin, alpha=alpha) if len(v) else None
             for k, v in stats.items()}
    family = [k for k, d in first.items() if d is not None and k not in set(outside)]
    adjusted = dict(zip(family, holm([first[k].p_diff for k in family])))
    return {k: decide_means(np.asarray(stats[k], dtype=float), refs, margin=margin, alpha=alpha,
                            p_adjusted=adjusted[k]) if k in adjusted else d for k, d in first.items()}


@dataclass(frozen=True)
class DisplayIndex:
    """The reminiscence index for display: ``(method_mean - ref_mean) / (anchor_mean - ref_mean)``.

    ``defined`` is False (and ``index`` NaN) when the anchor's mean lies inside ``ref_band``,
    the references' prediction interval of one more model, or when that band cannot be
    computed: then the denominator is not clearly away from zero and the ratio is noise.
    ``reason`` says which. Its sign is relative to the anchor's side (negative for a method
    above the references when the anchor lies below them): it is never read for direction,
    :class:`Decision` is."""

    index: float
    defined: bool
    reason: str
    method_mean: float
    ref_mean: float
    anchor_mean: float
    ref_band: tuple[float, float]

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ref_band"] = list(self.ref_band)
        return d


def display_index(method_models, ref_models, anchor_models, *, level: float = BAND_LEVEL) -> DisplayIndex:
    """The guarded display index (:class:`DisplayIndex`) of the method's models against the
    references, in units of the anchor models' distance from them. Each argument: per-trial
    arrays, one per model; each side's mean is the mean of its model statistics. The guard:
    the anchor's mean must lie strictly outside the references' ``level`` prediction
    interval (:func:`unlearn.evaluation.rea.verdict.band`)."""
    m, r, a = model_means(method_models), model_means(ref_models), model_means(anchor_models)
    if m.size == 0 or r.size == 0 or a.size == 0:
        raise ValueError("display_index needs at least one method, reference and anchor model")
    mm, rm, am = float(m.mean()), float(r.mean()), float(a.mean())
    lo, hi = band(r, level)["band"]
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return DisplayIndex(math.nan, False, "fewer than 2 references: no band", mm, rm, am, (lo, hi))
    if lo <= am <= hi:
        return DisplayIndex(math.nan, False, "anchor inside the references' band", mm, rm, am, (lo, hi))
    return DisplayIndex((mm - rm) / (am - rm), True, "", mm, rm, am, (lo, hi))
