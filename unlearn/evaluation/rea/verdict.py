"""Calibrated, graded and two-sided verdicts of the Reminiscence Attack.

The paper (Xiao et al., "Reminiscence Attack on Residuals") compares an unlearned
model's relearning curves with those of OOD data, and a later reading compares them
with ONE retrained model. Both read one number one way. Here every verdict is
relative to a *reference population*: R models retrained from independent seeds,
which never saw the forget class, relearning the same candidate sets with the same
step plans as the model under test (common random numbers: curve ``t`` of every
model uses candidate set ``t``).

Per curve the statistic is the **area under the relearning accuracy curve** (mean
candidate accuracy over the steps, :func:`unlearn.evaluation.rea.stats.curve_area`). Unlike
the paper's steps-to-90% it does not ignore where a curve starts (a model that
already classifies the candidates scores high from step 1) nor saturate at the step
cap (a curve that never reaches 90% still says how far it got), and it lies in
[0, 1], so an over-suppressed model cannot dominate a mean. Steps-to-90% is still
computed and reported beside it.

* :func:`reminiscence_index`: 0 = the reference mean (like retraining), 1 = the
  never-unlearned anchor, below 0 = relearns slower than retraining
  (over-suppressed); bootstrap interval over trials, resampled jointly for all
  models because trial ``t`` is the same candidate set for each.
* :func:`null_indices`: each reference scored against the others (leave-one-out),
  reported as the index's null; the band a method's index is read against is the
  95% prediction interval of one more retrained model (:func:`index_band`), which
  is wide when the references are few or unlike each other.
* :func:`calibrated_game`: two-sided membership game. A curve's score is its
  distance from the reference centre; the centre and the thresholds for 5% / 1%
  FPR are fitted on references that are not scored (cross-fitting: each reference
  is held out in turn), so a retrain-like model scores AUC and balanced accuracy
  about 0.5 and can fall below it, as the paper's published 48.75%.

These are the verdicts of ONE model. The verdict of record for a method is the replicated
decision of :mod:`unlearn.evaluation.rea.decide`: the method run on K independently pretrained
models against the R references, with a difference test, an equivalence test and Holm's
adjustment, all in raw units and never through the anchor. The index here is a display.

All functions are numpy in, plain Python out.
"""
from __future__ import annotations

import math

import numpy as np

ALPHAS = {"5": 0.05, "1": 0.01}
BAND_LEVEL = 0.95  # null bands: 95% prediction intervals of one more reference
DIRECTIONS = ("residual", "inside null band", "over-suppressed")


def _vec(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be a non-empty 1-D array of finite statistics; got shape {a.shape}")
    return a


def _refs(refs, name: str = "refs") -> list[np.ndarray]:
    out = [_vec(r, f"{name}[{i}]") for i, r in enumerate(refs)]
    if not out:
        raise ValueError(f"{name} is empty: give at least one reference model's statistics")
    return out


def auc(pos, neg) -> float:
    """ROC AUC of ``pos`` (members) above ``neg`` (non-members); ties count 1/2 (Mann-Whitney)."""
    p, n = _vec(pos, "pos")[:, None], _vec(neg, "neg")[None, :]
    return float(np.mean((p > n) + 0.5 * (p == n)))


def _index(m: float, r: float, a: float) -> float:
    d = a - r
    return (m - r) / d if abs(d) > 1e-9 else math.nan


def reminiscence_index(method, refs, anchor, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """(mean(method) - mean(refs)) / (mean(anchor) - mean(refs)) with a bootstrap interval.

    ``method`` and ``anchor``: per-trial statistics (T,); ``refs``: one such array per
    reference model. When every array has the same length the trials are resampled
    jointly (paired: trial t is the same candidate set for every model), otherwise
    each array on its own. NaN when the anchor and the references coincide.
    """
    m, a, rs = _vec(method, "method"), _vec(anchor, "anchor"), _refs(refs)
    r_mean = float(np.mean(np.concatenate(rs)))
    point = _index(float(m.mean()), r_mean, float(a.mean()))
    rng = np.random.default_rng(seed)
    lens = {len(m), len(a), *map(len, rs)}

    def draw(x, ix=None):
        ix = rng.integers(0, len(x), (n_boot, len(x))) if ix is None else ix
        return x[ix].mean(1)

    if len(lens) == 1:
        ix = rng.integers(0, len(m), (n_boot, len(m)))
        bm, ba, br = draw(m, ix), draw(a, ix), np.mean([draw(r, ix) for r in rs], 0)
    else:
        bm, ba = draw(m), draw(a)
        br = np.concatenate([r[rng.integers(0, len(r), (n_boot, len(r)))] for r in rs], 1).mean(1)
    d = ba - br
    boots = np.where(np.abs(d) > 1e-9, (bm - br) / np.where(d == 0, 1, d), np.nan)
    tail = 100 * (1 - level) / 2
    lo, hi = (np.nanpercentile(boots, [tail, 100 - tail]) if np.isfinite(boots).any() else (math.nan, math.nan))
    return {"index": point, "ci": [float(lo), float(hi)], "level": level, "n_boot": n_boot,
            "method_mean": float(m.mean()), "reference_mean": r_mean, "anchor_mean": float(a.mean())}


def band(values, level: float = BAND_LEVEL) -> dict:
    """Mean, sd (ddof=1) and the ``level`` prediction interval of one more value drawn like
    ``values`` (normal, Student t with n-1 degrees of freedom: mean +- t sd sqrt(1 + 1/n)).

    With 3 references the interval is +- 4.97 sd: a handful of retrained models cannot
    exclude much, and the band says so rather than flag retrain-like models. NaN entries
    are dropped; fewer than 2 values give no band.
    """
    from scipy.stats import t as student_t  # lazy: start-up time

    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size < 2:
        return {"values": [float(x) for x in v], "mean": float(v.mean()) if v.size else math.nan,
                "sd": math.nan, "band": [math.nan, math.nan], "level": level}
    mu, sd = float(v.mean()), float(v.std(ddof=1))
    half = float(student_t.ppf(0.5 + level / 2, v.size - 1)) * sd * math.sqrt(1 + 1 / v.size)
    return {"values": [float(x) for x in v], "mean": mu, "sd": sd, "band": [mu - half, mu + half], "level": level}


def index_band(ref_means, anchor_mean: float, level: float = BAND_LEVEL) -> list[float]:
    """The null band of the index: the prediction interval of one more reference's mean
    statistic (:func:`band` of the references' means), in index units, as [low, high].

    The index is decreasing in the statistic when the anchor lies below the references, so
    the band's ends are sorted after the mapping (they came out inverted, low > high, before)."""
    b = band(ref_means, level)["band"]
    r = float(np.mean(ref_means))
    return sorted(_index(x, r, anchor_mean) for x in b) if np.all(np.isfinite(b)) else [math.nan, math.nan]


def index_defined(null_band) -> bool:
    """The display guard of the index: the anchor (index 1) must lie outside the index's null band
    (the references' prediction interval in index units, :func:`index_band`), else the ratio divides by a
    distance the references do not tell apart from 0. The same guard in raw units over replicates is
    :func:`unlearn.evaluation.rea.decide.display_index`."""
    lo, hi = null_band
    return not (lo <= 1.0 <= hi)


def null_indices(refs, anchor) -> list[float]:
    """Each reference's index against the pooled others (leave-one-out): the index's null."""
    rs, a = _refs(refs), float(_vec(anchor, "anchor").mean())
    out = []
    for i, r in enumerate(rs):
        others = np.concatenate([x for j, x in enumerate(rs) if j != i]) if len(rs) > 1 else None
        out.append(_index(float(r.mean()), float(others.mean()), a) if others is not None else math.nan)
    return out


def direction(index: float, ci, null_band) -> str:
    """``residual`` / ``over-suppressed`` when the whole bootstrap interval of the index lies
    above / below the null band, otherwise ``inside null band``; ``undetermined`` when the
    index or the band cannot be computed (fewer than 2 references).

    The band holds the model-to-model spread of retrained models, the interval the trial
    noise of this model's own mean; asking for both keeps a retrain-like model inside even
    when the references sit at the floor (FashionMNIST: they relearn 4% of the coats), where
    their spread, hence the band, is tiny.

    The labels assume the statistic grows with relearning speed. The index does only when the
    anchor lies above the references; :func:`assess` swaps the two labels when it lies below,
    so the index's direction is the raw statistic's and does not depend on the anchor's side."""
    lo_b, hi_b = null_band
    if not all(np.isfinite([index, lo_b, hi_b, *ci])):
        return "undetermined"
    if ci[0] > hi_b:
        return "residual"
    if ci[1] < lo_b:
        return "over-suppressed"
    return "inside null band"


def _threshold(fit_scores: np.ndarray, alpha: float) -> float:
    """The fitted threshold: at most ``alpha`` of ``fit_scores`` lie strictly above it."""
    s = np.sort(fit_scores)[::-1]
    return float(s[min(int(math.floor(alpha * s.size)), s.size - 1)])


def calibrated_game(member, refs) -> dict:
    """Two-sided member-vs-retrained game, cross-fitted over the references.

    Fold j holds out reference j. On the other references (the fit set): the centre c
    = their mean statistic; a curve's score = |statistic - c| (far from retraining in
    either direction = member); thresholds = the largest score with at most 5% / 1% of
    the fit set strictly above (predict member iff score > threshold). Scored: the
    model's curves (members) against reference j's curves (non-members), neither of
    which fitted anything. Returns the fold means of ``auc`` (two-sided), ``tpr_at_fpr_5``,
    ``tpr_at_fpr_1``, the realised ``fpr_at_5`` / ``fpr_at_1`` on the held-out reference,
    ``balanced_accuracy_at_fpr_5`` = (TPR + 1 - FPR) / 2, and ``auc_one_sided`` (statistic
    of the model against all references pooled; above 0.5 = relearns faster). Needs
    at least 2 references.
    """
    m, rs = _vec(member, "member"), _refs(refs)
    if len(rs) < 2:
        raise ValueError("the calibrated game needs at least 2 reference models (one to fit, one to score)")
    folds = []
    for j, held in enumerate(rs):
        fit = np.concatenate([x for i, x in enumerate(rs) if i != j])
        c = fit.mean()
        s_fit, s_m, s_h = np.abs(fit - c), np.abs(m - c), np.abs(held - c)
        f = {"auc": auc(s_m, s_h)}
        for k, alpha in ALPHAS.items():
            t = _threshold(s_fit, alpha)
            f[f"tpr_at_fpr_{k}"], f[f"fpr_at_{k}"] = float(np.mean(s_m > t)), float(np.mean(s_h > t))
        folds.append(f)
    out = {k: float(np.mean([f[k] for f in folds])) for k in folds[0]}
    out["balanced_accuracy_at_fpr_5"] = (out["tpr_at_fpr_5"] + 1 - out["fpr_at_5"]) / 2
    out["auc_one_sided"] = auc(m, np.concatenate(rs))
    out["folds"] = len(folds)
    return out


def reference_null(refs, anchor) -> dict:
    """The reference population scored against itself.

    ``pairs``: one-sided AUC of every pair (i above j, i < j in the given order);
    ``index``: each reference's leave-one-out index, their mean and sd, and as ``band``
    the index's null band (:func:`index_band`); ``game``: each reference's calibrated
    game against the others with prediction bands (needs 3 references, else None).
    """
    rs = _refs(refs)
    a = float(_vec(anchor, "anchor").mean())
    pairs = {f"{i}-{j}": auc(rs[i], rs[j]) for i in range(len(rs)) for j in range(i + 1, len(rs))}
    games = [calibrated_game(r, [x for j, x in enumerate(rs) if j != i]) for i, r in enumerate(rs)] \
        if len(rs) >= 3 else None
    game = None
    if games:
        game = {k: band([g[k] for g in games]) for k in ("auc", "balanced_accuracy_at_fpr_5", "tpr_at_fpr_5",
                                                          "tpr_at_fpr_1", "auc_one_sided")}
    return {"pairs": pairs, "pairs_mean": float(np.mean(list(pairs.values()))) if pairs else math.nan,
            "index": {**band(null_indices(rs, anchor)), "band": index_band([float(r.mean()) for r in rs], a)},
            "game": game}


def gap_interval(member, ood, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> list[float]:
    """Bootstrap interval of mean(member) - mean(ood), trials resampled within each group."""
    m, o = _vec(member, "member"), _vec(ood, "ood")
    rng = np.random.default_rng(seed)
    d = m[rng.integers(0, m.size, (n_boot, m.size))].mean(1) - o[rng.integers(0, o.size, (n_boot, o.size))].mean(1)
    tail = 100 * (1 - level) / 2
    return [float(x) for x in np.percentile(d, [tail, 100 - tail])]


def assess(model: dict, refs: list[dict], anchor: dict, *, seed: int = 0) -> dict:
    """Every verdict for one model at one level and lr.

    ``model``, each of ``refs`` and ``anchor`` map ``member`` (forget-class candidate
    sets) and ``ood`` (OOD candidate sets relabelled as the forget class) to per-trial
    statistics. Returns the index (with its null and direction), the calibrated
    retrain game (with its null), the reference pairs' AUCs and the OOD game (the
    paper's: the model's member against its OOD curves), whose null is the same game
    played by each reference: its ``auc`` and, because an AUC saturates at 1 when even
    retrained models relearn the forget class faster than relabelled OOD data (Digits:
    0.8-0.98), its ``gap`` = mean statistic of member minus OOD curves with a bootstrap
    interval, read against the references' gaps as the index is (:func:`direction`). With no reference only the OOD game's own numbers are
    computed; with one, the index has no null band and the retrain game only its
    one-sided AUC (``calibrated`` False).
    """
    m, a = _vec(model["member"], "model member"), _vec(anchor["member"], "anchor member")
    rm = [_vec(r["member"], "reference member") for r in refs]
    gap = lambda d: float(np.mean(d["member"]) - np.mean(d["ood"]))  # noqa: E731
    gap_null = band([gap(r) for r in refs])
    gap_ci = gap_interval(m, model["ood"], seed=seed)
    out = {"n_references": len(refs), "calibrated": len(refs) >= 2,
           "ood_game": {"auc": auc(m, model["ood"]), "null": band([auc(r["member"], r["ood"]) for r in refs]),
                        "anchor_auc": auc(a, anchor["ood"]), "gap": gap(model), "gap_ci": gap_ci,
                        "gap_null": gap_null, "anchor_gap": gap(anchor),
                        "direction": direction(gap(model), gap_ci, gap_null["band"])},
           "index": None, "retrain_game": None, "reference_pairs": {}, "reference_pairs_mean": math.nan}
    if not rm:
        return out
    null = reference_null(rm, a)
    ix = reminiscence_index(m, rm, a, seed=seed)
    label = direction(ix["index"], ix["ci"], null["index"]["band"])
    if ix["anchor_mean"] < ix["reference_mean"]:  # index decreasing in the statistic: read it in raw units
        label = {"residual": "over-suppressed", "over-suppressed": "residual"}.get(label, label)
    ix.update(null=null["index"], direction=label)
    game = calibrated_game(m, rm) if len(rm) >= 2 else {"auc_one_sided": auc(m, np.concatenate(rm))}
    game["null"] = null["game"]
    out.update(index=ix, retrain_game=game, reference_pairs=null["pairs"], reference_pairs_mean=null["pairs_mean"])
    return out
