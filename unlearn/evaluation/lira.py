"""LiRA, the likelihood-ratio membership inference of Carlini et al. ("Membership Inference Attacks
From First Principles", IEEE S&P 2022), as the paper's 2025 code runs it for its sample-wise scenario
(``lira_utils.py`` and ``mia_lira.py`` of that repository, themselves after the authors'
``mi_lira_2021``), on plain arrays.

* Per-query score (:func:`logit_scaled_confidence`): ``log p_y - log sum_{k != y} p_k`` of a softmax,
  the paper's ``log_logits`` strategy. Computed as ``z_y - logsumexp_{k != y} z_k`` from the logits,
  which is the same number wherever the paper's float64 softmax does not underflow; there the paper
  adds 1e-45 inside each log and saturates at about +-103.6, ours does not (declared deviation).
* Shadow inclusion (:func:`inclusion_design`): every sample in exactly ``n_in`` of the ``n_shadows``
  shadow training sets, the paper's ``keep = uniform(size=(S, N)).argsort(0) < int(pkeep * S)`` (8
  shadows, ``pkeep`` 0.83: each sample in 6 of 8).
* Online LiRA with fixed variance (:func:`lira_online`): per sample and query the median of the
  in-shadows' scores and of the out-shadows' scores; one standard deviation of all in-scores and one
  of all out-scores; the statistic is the per-query log-likelihood ratio ``log N(s; mu_in, sd_in) -
  log N(s; mu_out, sd_out)`` averaged over the queries. Higher means "member".
* Offline LiRA with fixed variance (:func:`lira_offline`): ``-log N(s; mu_out, sd_out)`` averaged over
  the queries, two-sided as the paper's code (a score far *below* the out-shadows also reads as
  member). Carlini et al. describe a one-sided offline test; we follow the code.
* Attack summary (:func:`roc_summary`): AUC, the best balanced accuracy over thresholds, and TPR at
  1% and 10% FPR, each read as the paper's ``cal_stats`` reads them (the TPR of the last ROC point
  with FPR strictly below the level). The best balanced accuracy picks its threshold on the very
  scores it reads, so it is optimistic; beside it (ours, not the paper's),
  :func:`crossfit_balanced_accuracy` fixes the threshold on one half of the targets and reads the other.
* Per-example scores against retrained models (:func:`against_retrained`, ours; after U-LiRA, Hayes et
  al., "Inexact Unlearning Needs More Careful Evaluations to Avoid a False Sense of Privacy", 2024):
  a model's score on each target standardised by the scores of retrained models on the same target.
  Retrained models never saw the forget set, so a forget sample scoring above them is remembered.

Checked against the paper's ``lira_utils.py`` executed unchanged (8 shadows, 6 of 8 inclusion, 400
samples, 10 queries, 10 classes, random logits): scores, online and offline statistics agree to 4e-15,
and ``cal_stats``' AUC, balanced accuracy and both TPRs are equal.

Shapes: shadow scores ``(S, N, Q)`` (shadow, sample, query), inclusion ``(S, N)`` booleans, a target's
scores ``(N, Q)``. No torch here: the models' logits come in as arrays.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import logsumexp
from scipy.stats import norm


def logit_scaled_confidence(logits, labels) -> np.ndarray:
    """``log p_y - log sum_{k != y} p_k`` for logits ``(..., C)`` and integer labels broadcast over ``...``
    but the last axis of ``logits`` (e.g. logits ``(N, Q, C)`` and labels ``(N, 1)`` or ``(N, Q)``)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if z.ndim < 1 or z.shape[-1] < 2:
        raise ValueError(f"logits need a class axis of at least 2, got shape {z.shape}")
    y = np.broadcast_to(y, z.shape[:-1])
    if y.size and (y.min() < 0 or y.max() >= z.shape[-1]):
        raise ValueError(f"labels must lie in [0, {z.shape[-1]}), got {y.min()}..{y.max()}")
    true = np.take_along_axis(z, y[..., None], axis=-1)[..., 0]
    rest = z.copy()
    np.put_along_axis(rest, y[..., None], -np.inf, axis=-1)
    return true - logsumexp(rest, axis=-1)


def inclusion_design(n_samples: int, n_shadows: int, n_in: int, *, seed: int) -> np.ndarray:
    """``(n_shadows, n_samples)`` booleans: shadow ``s`` trains on sample ``i``; every column has exactly
    ``n_in`` True (the paper's argsort construction), so every sample has in- and out-shadows when
    ``0 < n_in < n_shadows``."""
    if n_shadows < 2 or not 0 < n_in < n_shadows:
        raise ValueError(f"need 2 or more shadows and 0 < n_in < n_shadows, got {n_shadows} shadows, n_in {n_in}")
    rng = np.random.default_rng(seed)
    order = rng.uniform(size=(n_shadows, n_samples)).argsort(0)
    return order < n_in


def _shadows(shadow_scores, inclusion) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(shadow_scores, dtype=np.float64)
    keep = np.asarray(inclusion, dtype=bool)
    if s.ndim == 2:
        s = s[..., None]
    if s.ndim != 3 or keep.shape != s.shape[:2]:
        raise ValueError(f"shapes must be shadows (S, N, Q) and inclusion (S, N); got {s.shape}, {keep.shape}")
    return s, keep


def _target(target_scores, s: np.ndarray) -> np.ndarray:
    t = np.asarray(target_scores, dtype=np.float64)
    t = t[:, None] if t.ndim == 1 else t
    if t.shape != s.shape[1:]:
        raise ValueError(f"target scores must be (N, Q) = {s.shape[1:]}, got {t.shape}")
    return t


def _medians(s: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Per sample and query, the median over the shadows selected by ``keep`` (every sample has one)."""
    if not keep.any(axis=0).all():
        raise ValueError("every sample needs at least one shadow on each side of the inclusion design")
    masked = np.where(keep[..., None], s, np.nan)
    return np.nanmedian(masked, axis=0)


@dataclass(frozen=True)
class Gaussians:
    """The fitted in/out Gaussians of LiRA: per-sample, per-query means, one fixed sd per side."""

    mean_in: np.ndarray | None
    mean_out: np.ndarray
    sd_in: float | None
    sd_out: float


def fit(shadow_scores, inclusion, *, online: bool = True) -> Gaussians:
    """The fixed-variance fit the paper's code uses: medians per sample and query, one sd per side over
    every in (out) score of every sample."""
    s, keep = _shadows(shadow_scores, inclusion)
    mean_out = _medians(s, ~keep)
    sd_out = float(np.std(s[~keep]))
    if not online:
        return Gaussians(None, mean_out, None, sd_out)
    return Gaussians(_medians(s, keep), mean_out, float(np.std(s[keep])), sd_out)


def lira_online(shadow_scores, inclusion, target_scores) -> np.ndarray:
    """Online LiRA, fixed variance: per sample the mean over queries of log N(in) - log N(out); higher = member."""
    s, keep = _shadows(shadow_scores, inclusion)
    t, g = _target(target_scores, s), fit(s, keep, online=True)
    ratio = norm.logpdf(t, g.mean_in, g.sd_in + 1e-30) - norm.logpdf(t, g.mean_out, g.sd_out + 1e-30)
    return ratio.mean(axis=1)


def lira_offline(shadow_scores, inclusion, target_scores) -> np.ndarray:
    """Offline LiRA, fixed variance, two-sided as the paper's code: -mean over queries of log N(out)."""
    s, keep = _shadows(shadow_scores, inclusion)
    t, g = _target(target_scores, s), fit(s, keep, online=False)
    return -norm.logpdf(t, g.mean_out, g.sd_out + 1e-30).mean(axis=1)


@dataclass(frozen=True)
class RocSummary:
    """One attack's ROC read as the paper's ``cal_stats``: AUC, best balanced accuracy, TPR at low FPR."""

    auc: float
    best_balanced_accuracy: float
    tpr_at_1pct_fpr: float
    tpr_at_10pct_fpr: float
    balanced_accuracy_crossfit: float
    members: int
    non_members: int

    def as_dict(self) -> dict:
        return asdict(self)


def _scored(scores, is_member) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_member, dtype=bool)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"scores and membership must be 1-D of one length, got {x.shape} and {y.shape}")
    if y.all() or not y.any():
        raise ValueError("an attack's summary needs members and non-members")
    return x, y


def roc_summary(scores, is_member, *, crossfit_seed: int = 0) -> RocSummary:
    """AUC, best balanced accuracy and TPR at FPR < 1% / < 10% (the last ROC point strictly below), and
    the cross-fitted balanced accuracy (:func:`crossfit_balanced_accuracy`)."""
    from sklearn.metrics import roc_auc_score, roc_curve  # lazy: start-up time

    x, y = _scored(scores, is_member)
    fpr, tpr, _ = roc_curve(y, x)
    return RocSummary(auc=float(roc_auc_score(y, x)), best_balanced_accuracy=float(np.max(1 - (fpr + 1 - tpr) / 2)),
                      tpr_at_1pct_fpr=float(tpr[np.flatnonzero(fpr < 0.01)[-1]]),
                      tpr_at_10pct_fpr=float(tpr[np.flatnonzero(fpr < 0.1)[-1]]),
                      balanced_accuracy_crossfit=crossfit_balanced_accuracy(x, y, seed=crossfit_seed),
                      members=int(y.sum()), non_members=int((~y).sum()))


def _balanced_accuracy(x, y, threshold: float) -> float:
    guess = x >= threshold
    return float((guess[y].mean() + (~guess[~y]).mean()) / 2)


def crossfit_balanced_accuracy(scores, is_member, *, seed: int = 0) -> float:
    """Balanced accuracy at a threshold fixed on data it does not score: the targets are halved (members
    and non-members each, under ``seed``), the threshold with the best balanced accuracy on one half is
    read on the other, and the two readings are averaged. Chance is 0.5 in expectation, unlike the best
    balanced accuracy, which is above 0.5 even for a score that carries no information."""
    x, y = _scored(scores, is_member)
    rng = np.random.RandomState(int(seed))
    half = np.zeros(len(x), dtype=bool)
    for group in (np.flatnonzero(y), np.flatnonzero(~y)):
        half[rng.permutation(group)[: len(group) // 2]] = True
    reads = []
    for fit_on in (half, ~half):
        read = ~fit_on
        if y[fit_on].all() or not y[fit_on].any() or y[read].all() or not y[read].any():
            return float("nan")  # fewer than two members or non-members: no half to fit on
        candidates = np.unique(x[fit_on])
        best = max(candidates, key=lambda t: _balanced_accuracy(x[fit_on], y[fit_on], t))
        reads.append(_balanced_accuracy(x[read], y[read], best))
    return float(np.mean(reads))


def against_retrained(target_scores, retrained_scores) -> np.ndarray:
    """Per-example scores of a model against retrained models scored on the same targets (U-LiRA-style).

    ``target_scores`` ``(N,)``: the model's score per target (mean over queries); ``retrained_scores``
    ``(R, N)``: R retrained models' on the same targets. Per target ``(s - mean_r) / sd``, with one
    pooled sd of the retrained scores about their per-target means (fixed variance, as the paper's
    LiRA; R per-target values are too few for a per-target sd). Higher = more member-like than
    retraining leaves it; a retrained model scored against the others (leave-one-out) is the null.
    """
    t = np.asarray(target_scores, dtype=np.float64)
    r = np.asarray(retrained_scores, dtype=np.float64)
    if r.ndim != 2 or t.shape != r.shape[1:] or r.shape[0] < 2:
        raise ValueError(f"against_retrained needs target scores (N,) and at least two retrained models' "
                         f"(R, N), got {t.shape} and {r.shape}")
    mean = r.mean(axis=0)
    sd = float(np.sqrt(((r - mean) ** 2).sum() / (r.size - r.shape[1])))
    return (t - mean) / (sd + 1e-30)
