"""The calibration study's design and its pure functions on arrays of model statistics.

What the study is and why it is built so: :mod:`unlearn.study.calibration` (its docstring). Here: the
design's sizes (models, the (K, R) of the negative controls, splits, held-out models, doses, alpha) and
the functions that turn model statistics into label rates: random and disjoint (K, R) splits, the
replicated decision of each (vectorised), the negative controls, the normal model's expectation, the
spread between populations, the power rows of dosed models, and :func:`analyse`, the whole analysis.
No runs, no files, no figures: everything here is tested on synthetic statistics
(tests/test_calibration.py). The runs (:mod:`unlearn.study.calibration_runs`) and the report
(:mod:`unlearn.study.calibration_report`) import this module, never the reverse.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from ..evaluation.rea.calibration import decide_arrays, simulate_rates
from ..evaluation.rea.decide import LABELS, decide_means, margin_from_refs

COMMAND = "python studies/calibration.py"
N_MODELS = 30
KS = (1, 3)
RS = (3, 5, 10, 20)
N_SPLITS = 20000  # random splits per (K, R): Monte Carlo sd of a 5% rate 0.15 points
SPREAD_SPLITS = 2000  # per simulated population in population_spread (50 x 20000 exact permutation tests: too slow)
HELD_OUT = 10  # the models of the highest seeds: dosed, never references in the power part
DOSES = (0, 1, 2, 4, 8, 16)
DOSE_BATCH = 8  # forget-class samples per dose step, and as many retain samples
POWER_K = 3  # the dosed method's models per experiment (and K = 1); its references: every model not held out
ALPHA = 0.05
FALSE = ("residual", "over-suppressed")


def draw_splits(n: int, k: int, r: int, n_splits: int, rng: np.random.Generator) -> np.ndarray:
    """``n_splits`` random (K method, R reference) splits of ``n`` models: rows of ``k + r`` distinct
    model indices, the first ``k`` the method's. Rows are independent draws (models recur across rows)."""
    if k < 1 or r < 1 or k + r > n:
        raise ValueError(f"need 1 <= K, 1 <= R and K + R <= {n}, got K={k} R={r}")
    return np.argsort(rng.random((n_splits, n)), axis=1)[:, : k + r]


def disjoint_splits(n: int, k: int, r: int, rng: np.random.Generator) -> np.ndarray:
    """One random partition of ``n`` models into ``n // (k + r)`` disjoint (K, R) splits: experiments
    that share no model, hence independent when the models are."""
    if k < 1 or r < 1 or k + r > n:
        raise ValueError(f"need 1 <= K, 1 <= R and K + R <= {n}, got K={k} R={r}")
    m = n // (k + r)
    return rng.permutation(n)[: m * (k + r)].reshape(m, k + r)


def decide_split(method: np.ndarray, refs: np.ndarray, *, margin_sd: float, alpha: float = ALPHA):
    """The replicated decision of one experiment: model statistics of the method's models and of the
    references; margin = ``margin_sd`` x the references' sd, as :func:`margin_from_refs` sets it."""
    refs = np.asarray(refs, float)
    margin = margin_from_refs(refs[:, None], margin_sd)
    return decide_means(np.asarray(method, float), refs, margin=margin, alpha=alpha)


def label_splits(stats: np.ndarray, splits: np.ndarray, k: int, *, margin_sd: float,
                 alpha: float = ALPHA) -> np.ndarray:
    """The label of every split (:func:`draw_splits` rows) of the model statistics ``stats``: the
    rule of :func:`decide_split` vectorised (:func:`decide_arrays`, checked label for label against
    it by the tests), since one permutation test per split would take hours here."""
    stats = np.asarray(stats, float)
    m, refs = stats[splits[:, :k]], stats[splits[:, k:]]
    margin = margin_sd * refs.std(1, ddof=1) if refs.shape[1] >= 2 else np.nan
    return decide_arrays(m, refs, margin, alpha)


def rates(labels) -> dict:
    """The rate of each label of :data:`LABELS` (they sum to 1), plus ``false_difference``
    (``residual`` + ``over-suppressed``) and ``n``."""
    lab = np.asarray(labels, dtype=object)
    if lab.size == 0:
        raise ValueError("no labels")
    out = {k: float(np.mean(lab == k)) for k in LABELS}
    out["false_difference"] = out["residual"] + out["over-suppressed"]
    out["n"] = int(lab.size)
    return out


def counts(labels) -> dict:
    lab = np.asarray(labels, dtype=object)
    return {k: int(np.sum(lab == k)) for k in LABELS}


def binomial_ci(k: int, n: int, level: float = 0.95) -> list[float]:
    """The exact (Clopper-Pearson) interval of a rate k / n."""
    from scipy.stats import binomtest  # lazy: start-up time

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
    return [float(ci.low), float(ci.high)]


def negative_control(stats: np.ndarray, *, Ks=KS, Rs=RS, n_splits: int = N_SPLITS, margin_sd: float,
                     alpha: float = ALPHA, seed: int = 0) -> list[dict]:
    """Label rates of retrained-vs-retrained experiments: for each (K, R), ``n_splits`` random splits
    (:func:`draw_splits`) and one partition into disjoint ones (:func:`disjoint_splits`).
    ``stats``: the N model statistics of one level. One row per (K, R), in order."""
    stats = np.asarray(stats, float)
    n = stats.size
    rows = []
    for i, (k, r) in enumerate(itertools.product(Ks, Rs)):
        rng = np.random.default_rng([seed, i])
        lab = label_splits(stats, draw_splits(n, k, r, n_splits, rng), k, margin_sd=margin_sd, alpha=alpha)
        part = disjoint_splits(n, k, r, rng)
        dlab = label_splits(stats, part, k, margin_sd=margin_sd, alpha=alpha)
        c = counts(dlab)
        false = c["residual"] + c["over-suppressed"]
        rows.append({"K": k, "R": r, **rates(lab),
                     "disjoint": {"n": int(len(part)), "counts": c, "false_difference": false,
                                  "false_difference_ci": binomial_ci(false, len(part)),
                                  "equivalent_ci": binomial_ci(c["equivalent"], len(part))}})
    return rows


def simulated_expectation(*, Ks=KS, Rs=RS, margin_sd: float, alpha: float = ALPHA, n_sim: int = 40000,
                          seed: int = 0) -> list[dict]:
    """What the normal model of :mod:`unlearn.evaluation.rea.calibration` predicts for the same
    (K, R) at shift 0 (with equal spreads its rates depend on nothing else)."""
    return [simulate_rates(K=k, R=r, shift_sd=0.0, margin_sd=margin_sd, n_sim=n_sim, seed=seed + i, alpha=alpha)
            for i, (k, r) in enumerate(itertools.product(Ks, Rs))]


def population_spread(*, n: int, Ks=KS, Rs=RS, n_splits: int = SPREAD_SPLITS, n_pop: int = 50, margin_sd: float,
                      alpha: float = ALPHA, seed: int = 0) -> list[dict]:
    """How far a rate over random splits of one population of ``n`` models strays from its
    expectation: ``n_pop`` populations of ``n`` normal model statistics, each split as
    :func:`negative_control` does (vectorised rule, :func:`decide_arrays`); per (K, R) the sd over
    populations of each label's rate. The Monte Carlo error of the splits (about
    sqrt(p (1 - p) / n_splits)) is included; most of the spread is the population's."""
    rows = []
    for i, (k, r) in enumerate(itertools.product(Ks, Rs)):
        rng = np.random.default_rng([seed, 1000 + i])
        per = {lab: [] for lab in (*LABELS, "false_difference")}
        for _ in range(n_pop):
            s = rng.normal(size=n)
            sp = draw_splits(n, k, r, n_splits, rng)
            m, rf = s[sp[:, :k]], s[sp[:, k:]]
            lab = decide_arrays(m, rf, margin_sd * rf.std(1, ddof=1), alpha)
            rt = rates(lab)
            for key in per:
                per[key].append(rt[key])
        rows.append({"K": k, "R": r, "n_pop": n_pop, "n_splits": n_splits, **{f"sd_{key}": float(np.std(v, ddof=1)) for key, v in per.items()},
                     **{f"mean_{key}": float(np.mean(v)) for key, v in per.items()}})
    return rows


def method_groups(n: int, k: int, n_max: int, rng: np.random.Generator) -> np.ndarray:
    """K-subsets of ``n`` dosed models: all of them when there are at most ``n_max``, else ``n_max``
    random ones (distinct models within a subset)."""
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= K <= {n}, got {k}")
    if math.comb(n, k) <= n_max:
        return np.array(list(itertools.combinations(range(n), k)), dtype=int).reshape(-1, k)
    return np.argsort(rng.random((n_max, n)), axis=1)[:, :k]


def power_rows(dosed: dict, refs: np.ndarray, *, k: int = POWER_K, n_max: int = N_SPLITS, margin_sd: float,
               alpha: float = ALPHA, seed: int = 0) -> list[dict]:
    """Label rates of dosed methods against fixed references: ``dosed`` {dose: statistics of the held-out
    models (same order at every dose)}, ``refs`` the references' statistics. The same K-subsets
    (:func:`method_groups`) at every dose. Also the mean shift in reference sd: of the dosed models'
    mean from the references' (``shift_sd``) and, paired, from the same models undosed
    (``paired_shift_sd``, when dose 0 is given)."""
    refs = np.asarray(refs, float)
    sd = float(refs.std(ddof=1))
    first = np.asarray(next(iter(dosed.values())), float)
    groups = method_groups(first.size, k, n_max, np.random.default_rng([seed, k]))
    base = np.asarray(dosed[0], float) if 0 in dosed else None
    rows = []
    for dose, values in dosed.items():
        v = np.asarray(values, float)
        lab = decide_arrays(v[groups], np.broadcast_to(refs, (len(groups), refs.size)),
                            margin_from_refs(refs[:, None], margin_sd), alpha)  # decide_split, vectorised
        row = {"dose": dose, "K": k, "R": int(refs.size), **rates(lab),
               "mean": float(v.mean()), "shift_sd": float((v.mean() - refs.mean()) / sd)}
        if base is not None:
            d = (v - base) / sd
            row.update(paired_shift_sd=float(d.mean()), paired_shift_sd_spread=float(d.std(ddof=1)) if d.size > 1 else 0.0)
        rows.append(row)
    return rows


def describe(stats) -> dict:
    """Mean, sd, extremes and the Shapiro-Wilk normality p-value of model statistics."""
    from scipy.stats import shapiro  # lazy: start-up time

    s = np.asarray(stats, float)
    return {"n": int(s.size), "mean": float(s.mean()), "sd": float(s.std(ddof=1)), "min": float(s.min()),
            "max": float(s.max()), "shapiro_p": float(shapiro(s).pvalue) if s.size >= 3 else math.nan}


def analyse(stats: dict, dosed: dict, *, held_out: int, n_splits: int = N_SPLITS, margin_sd: float,
            alpha: float = ALPHA, seed: int = 0, n_sim: int = 40000, n_pop: int = 50) -> dict:
    """The whole analysis from model statistics: ``stats`` {level: the N models' statistics, by seed},
    ``dosed`` {level: {dose: the held-out models' statistics}}; the held-out models are the last
    ``held_out`` of the N, the power part's references all the others. Returns ``levels`` (per level:
    the statistics, their description, the negative controls, the power rows for K = POWER_K and 1,
    the power references' description), ``simulated`` and ``population_spread``."""
    levels = {}
    for lv, values in stats.items():
        s = np.asarray(values, float)
        refs = s[: s.size - held_out]
        d = {int(k): np.asarray(v, float) for k, v in dosed[lv].items()}
        levels[lv] = {
            "statistics": [float(x) for x in s], "describe": describe(s),
            "negative_control": negative_control(s, n_splits=n_splits, margin_sd=margin_sd, alpha=alpha, seed=seed),
            "dosed": {str(k): [float(x) for x in v] for k, v in d.items()},
            "power": {str(k): power_rows(d, refs, k=k, n_max=n_splits, margin_sd=margin_sd, alpha=alpha, seed=seed)
                      for k in (POWER_K, 1)},
            "power_refs": describe(refs),
        }
    n = len(next(iter(stats.values())))
    return {"levels": levels, "alpha": alpha, "margin_sd": margin_sd, "n_splits": n_splits,
            "simulated": simulated_expectation(margin_sd=margin_sd, alpha=alpha, n_sim=n_sim, seed=seed),
            "population_spread": population_spread(n=n, n_splits=min(n_splits, SPREAD_SPLITS), n_pop=n_pop,
                                                   margin_sd=margin_sd, alpha=alpha, seed=seed)}
