"""How often the replicated decision (:mod:`unlearn.evaluation.rea.decide`) gives each label,
by simulation: the error rates and power behind the choice of K, R and the margin.

The model: a model's statistic is its model effect plus the mean of T trial noises,
effect ~ N(mu, model_sd^2) (mu + shift for the method's models), trial ~ N(0, trial_sd^2),
everything independent. Units: ``shift_sd`` and ``margin_sd`` count the sd of one model's
statistic, ``s = sqrt(model_sd^2 + trial_sd^2 / T)`` (the spread the references show). The
margin is estimated in each simulated experiment as the decision would be in a real one:
``margin_sd`` x the sd of that experiment's reference model statistics
(:func:`unlearn.evaluation.rea.decide.margin_from_refs`), not the true ``s``.

:func:`decide_arrays` is the rule of :func:`unlearn.evaluation.rea.decide.decide_means`
vectorised over experiments (the permutation test enumerated exactly, :func:`permutation_p_arrays`;
the t-based parts with numpy and ``scipy.stats.t``); the tests check that both give the same label
on every draw. Normal statistics are an idealisation:
curve areas are bounded in [0, 1] and can pile up at the floor.

What it showed (alpha 0.05, 40000 experiments, shift 0): with Welch's unequal-variance test
for K >= 2 the false-difference rate was alpha for K = 1 (the prediction test is exact under
the model) and for K = 5, but liberal for a tiny method group beside many references (K=2,
R=20: 11.8%; K=3, R=20: 7.2%). The pooled-variance (Student) t-test that replaced it is exact
under the model only; the decision now uses the permutation test of the pooled t for K >= 2,
at most alpha for any exchangeable statistics (simulated, K = 3, R = 20, 4000 experiments: 4.8%).
"""
from __future__ import annotations

import itertools

import numpy as np

from unlearn.evaluation.rea.decide import LABELS, PERMUTATIONS


def split_indices(k: int, r: int) -> np.ndarray:
    """Every split of K + R models into a first group of K: (C(K + R, K), K) indices, observed first."""
    return np.array(list(itertools.combinations(range(k + r), k)), dtype=np.intp)


def permutation_p_arrays(method_means, ref_means, *, chunk: int = 1 << 22) -> np.ndarray:
    """:func:`unlearn.evaluation.rea.decide.permutation_p` for ``n`` experiments at once:
    ``method_means`` (n, K), ``ref_means`` (n, R), K >= 2, R >= 2. Exact (every split enumerated,
    the same comparisons with scipy's relative tolerance of 100 ulp), so only up to
    :data:`~unlearn.evaluation.rea.decide.PERMUTATIONS` splits; beyond that decide_means draws
    random splits, which cannot be matched here."""
    m, r = np.atleast_2d(np.asarray(method_means, float)), np.atleast_2d(np.asarray(ref_means, float))
    n, k = m.shape
    R = r.shape[1]
    splits = split_indices(k, R)
    if len(splits) > PERMUTATIONS:
        raise ValueError(f"K={k}, R={R}: {len(splits)} splits, more than the {PERMUTATIONS} the exact test "
                         "enumerates; the vectorised rule covers exact cases only")
    x = np.concatenate([m, r], 1)
    x = x - x.mean(1, keepdims=True)  # centred: the sums of squares below lose no precision
    tot, tot2 = x.sum(1, keepdims=True), (x * x).sum(1, keepdims=True)
    out = np.empty(n)
    step = max(1, chunk // (len(splits) * k))
    for i in range(0, n, step):
        xs, t1, t2 = x[i:i + step], tot[i:i + step], tot2[i:i + step]
        g = xs[:, splits]  # (b, splits, K)
        s1, q1 = g.sum(-1), (g * g).sum(-1)
        s2, q2 = t1 - s1, t2 - q1
        var = ((q1 - s1 * s1 / k) + (q2 - s2 * s2 / R)) / (k + R - 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (s1 / k - s2 / R) / np.sqrt(var * (1 / k + 1 / R))
        obs = t[:, :1]
        gamma = np.abs(np.finfo(float).eps * 100 * obs)
        less = (t <= obs + gamma).mean(1)
        greater = (t >= obs - gamma).mean(1)
        out[i:i + step] = np.clip(2 * np.minimum(less, greater), 0, 1)
    return out


def decide_arrays(method_means, ref_means, margin, alpha: float = 0.05) -> np.ndarray:
    """Labels for ``n`` experiments at once: ``method_means`` (n, K), ``ref_means`` (n, R),
    ``margin`` (n,) or a number. For K >= 2 the permutation test (:func:`permutation_p_arrays`)
    + pooled TOST, for K = 1 the prediction test, ``undetermined`` for R < 2 or a zero standard
    error (as :func:`unlearn.evaluation.rea.decide.decide_means`)."""
    from scipy.stats import t as student_t  # lazy: start-up time

    m, r = np.atleast_2d(np.asarray(method_means, float)), np.atleast_2d(np.asarray(ref_means, float))
    n, k = m.shape
    R = r.shape[1]
    out = np.full(n, "undetermined", dtype=object)
    if R < 2:
        return out
    margin = np.broadcast_to(np.asarray(margin, float), (n,))
    diff = m.mean(1) - r.mean(1)
    if k >= 2:
        sp2 = ((k - 1) * m.var(1, ddof=1) + (R - 1) * r.var(1, ddof=1)) / (k + R - 2)
        se = np.sqrt(sp2 * (1 / k + 1 / R))
        df = np.full(n, k + R - 2.0)
    else:
        se = r.std(1, ddof=1) * np.sqrt(1 + 1 / R)
        df = np.full(n, R - 1.0)
    ok = se > 0
    se_, df_, d_, mg = se[ok], df[ok], diff[ok], margin[ok]
    p_diff = permutation_p_arrays(m[ok], r[ok]) if k >= 2 else 2 * student_t.sf(np.abs(d_) / se_, df_)
    p_equiv = np.maximum(student_t.sf((d_ + mg) / se_, df_), student_t.cdf((d_ - mg) / se_, df_))
    lab = np.where(p_diff < alpha, np.where(d_ > 0, "residual", "over-suppressed"),
                   np.where(p_equiv < alpha, "equivalent", "undetermined"))
    out[ok] = lab
    return out


def simulate_labels(*, K: int, R: int, shift_sd: float, margin_sd: float, n_sim: int, seed: int,
                    alpha: float = 0.05, model_sd: float = 1.0, trial_sd: float = 1.0, T: int = 10) -> dict:
    """``n_sim`` simulated experiments (model above): per-trial statistics drawn for K method
    and R reference models, averaged per model, decided by :func:`decide_arrays` with the
    margin estimated from each experiment's references. Returns the model statistics
    (``method_means`` (n, K), ``ref_means`` (n, R)), ``margin`` (n,) and ``labels`` (n,)."""
    if K < 1 or R < 1 or T < 1 or n_sim < 1:
        raise ValueError(f"K, R, T and n_sim must be >= 1, got K={K} R={R} T={T} n_sim={n_sim}")
    rng = np.random.default_rng(seed)
    s = float(np.sqrt(model_sd ** 2 + trial_sd ** 2 / T))

    def models(count, centre):
        effect = rng.normal(centre, model_sd, (n_sim, count))
        return effect + rng.normal(0, trial_sd, (n_sim, count, T)).mean(2)

    m, r = models(K, shift_sd * s), models(R, 0.0)
    margin = margin_sd * r.std(1, ddof=1) if R >= 2 else np.full(n_sim, np.nan)
    return {"method_means": m, "ref_means": r, "margin": margin, "labels": decide_arrays(m, r, margin, alpha)}


def simulate_rates(*, K: int, R: int, shift_sd: float, margin_sd: float, n_sim: int, seed: int,
                   alpha: float = 0.05, model_sd: float = 1.0, trial_sd: float = 1.0, T: int = 10) -> dict:
    """The rate of each label (:data:`unlearn.evaluation.rea.decide.LABELS`) over ``n_sim``
    simulated experiments (:func:`simulate_labels`). At ``shift_sd = 0`` the rate of
    ``residual`` + ``over-suppressed`` is the false-difference rate (about ``alpha``); above,
    ``residual`` is the power. Returns label -> rate, plus the settings."""
    lab = simulate_labels(K=K, R=R, shift_sd=shift_sd, margin_sd=margin_sd, n_sim=n_sim, seed=seed,
                          alpha=alpha, model_sd=model_sd, trial_sd=trial_sd, T=T)["labels"]
    rates = {k: float(np.mean(lab == k)) for k in LABELS}
    return {**rates, "K": K, "R": R, "shift_sd": float(shift_sd), "margin_sd": float(margin_sd), "n_sim": n_sim,
            "alpha": alpha, "T": T, "model_sd": model_sd, "trial_sd": trial_sd}


def rate_table(*, Ks=(1, 2, 3), Rs=(5, 10, 20), shifts=(0, 1, 2, 3), margins=(1, 1.5, 2), n_sim: int = 2000,
               seed: int = 0, **kw) -> list[dict]:
    """:func:`simulate_rates` over a grid (one seed per cell, derived from ``seed``)."""
    rows, i = [], 0
    for k in Ks:
        for r in Rs:
            for sh in shifts:
                for mg in margins:
                    rows.append(simulate_rates(K=k, R=r, shift_sd=sh, margin_sd=mg, n_sim=n_sim, seed=seed + i, **kw))
                    i += 1
    return rows
