"""Statistics and plots for the Reminiscence Attack (Xiao et al., "Reminiscence
Attack on Residuals" / "Over-Unlearning and Replay Is All You Need").

The attack starts from an unlearned model and briefly retrains it on a small
candidate set relabelled as the forgotten class, recording the accuracy on the
whole candidate set after every step (up to a step cap, 75 by default).  A class
that was trained and then unlearned comes back faster (member) than data the
model never saw (non-member).  Each trial therefore yields one curve: an array
of per-step accuracies in [0, 1] of length ``cap``.  This module turns curves
into membership scores, ROC summaries and figures.

All functions are numpy in / numpy-or-plain-Python out; no torch needed.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from ...store.checkpoint import save_figure

DEFAULT_THRESHOLD = 0.9
# Accuracies are ratios such as 18/20 computed in float32 by the attack (18/20 is 0.89999998 there):
# a curve that exactly reaches the threshold must count as reaching it. float32 rounds a ratio by a
# relative 6e-8 at most, while two ratios k/n with n below 10^5 candidates differ from a threshold
# such as 0.9 by at least 1/(10 n) > 1e-6 unless equal, so 1e-6 tells ties from misses.
_TIE_EPS = 1e-6

__all__ = [
    "DEFAULT_THRESHOLD",
    "steps_to_threshold",
    "curve_area",
    "membership_score",
    "roc_summary",
    "summarise_curves",
    "plot_relearning_curves",
    "plot_relearning_panels",
    "plot_roc",
]


# --------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------

def _as_curve(acc) -> np.ndarray:
    """Validate one accuracy curve: 1-D, non-empty, finite, fractions in [0, 1]."""
    a = np.asarray(acc, dtype=float)
    if a.ndim != 1:
        raise ValueError(f"an accuracy curve must be 1-D (one value per step); got shape {a.shape}")
    if a.size == 0:
        raise ValueError("an accuracy curve must have at least one step; got an empty array")
    if not np.all(np.isfinite(a)):
        raise ValueError("an accuracy curve must be finite; it contains NaN or inf")
    if a.min() < 0.0 or a.max() > 1.0:
        raise ValueError(
            f"accuracies must be fractions in [0, 1]; got range [{a.min():g}, {a.max():g}]"
            " (percentages? divide by 100)"
        )
    return a


def _as_curves(curves) -> np.ndarray:
    """Validate a stack of curves of shape (T, cap) with T >= 1 and cap >= 1."""
    c = np.asarray(curves, dtype=float)
    if c.ndim != 2:
        raise ValueError(f"curves must be a 2-D array of shape (trials, cap); got shape {c.shape}")
    if c.shape[0] == 0 or c.shape[1] == 0:
        raise ValueError(f"curves must hold at least one trial of at least one step; got shape {c.shape}")
    for row in c:
        _as_curve(row)
    return c


def _check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not np.isfinite(t):
        raise ValueError(f"threshold must be a finite number; got {threshold!r}")
    return t


def _as_scores(scores, name: str) -> np.ndarray:
    s = np.asarray(scores, dtype=float)
    if s.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of scores; got shape {s.shape}")
    if s.size == 0:
        raise ValueError(f"{name} is empty: an ROC needs at least one member and one non-member score")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} contains NaN or inf; scores must be finite")
    return s


# --------------------------------------------------------------------------
# per-curve statistics
# --------------------------------------------------------------------------

def steps_to_threshold(acc, *, threshold: float = DEFAULT_THRESHOLD) -> int:
    """Steps the Reminiscence Attack needs to relearn the candidate set.

    Returns the 1-based index of the first step whose accuracy is >= ``threshold``
    (a value equal to the threshold counts).  If the curve never reaches it, returns
    ``cap + 1`` with ``cap = len(acc)``, so "never" ranks below "at the last step".
    Fewer steps means faster relearning, i.e. more likely a member.
    """
    a = _as_curve(acc)
    t = _check_threshold(threshold)
    hits = np.flatnonzero(a >= t - _TIE_EPS)
    return int(hits[0]) + 1 if hits.size else int(a.size) + 1


def curve_area(acc) -> float:
    """Area under the accuracy curve normalised to [0, 1]: the mean accuracy over steps.

    Used as a tie-breaker between curves that reach the threshold at the same step.
    """
    return float(np.mean(_as_curve(acc)))


def membership_score(acc, *, threshold: float = DEFAULT_THRESHOLD) -> float:
    """Single membership score for one attack curve; higher means "more likely member".

    Score = ``(cap + 1 - steps_to_threshold) + curve_area``.  The first term lies in
    [0, cap] and is the primary key (faster relearning = member, as in the paper);
    the area lies in [0, 1] and breaks ties.  For a threshold <= 1 a curve that needs
    more steps has its first accuracy below 1 and so area < 1, hence any faster curve
    scores strictly higher: the score is monotone in both keys.  Scores are only
    comparable between curves with the same cap.
    """
    a = _as_curve(acc)
    steps = steps_to_threshold(a, threshold=threshold)
    return float(a.size + 1 - steps) + curve_area(a)


# --------------------------------------------------------------------------
# ROC
# --------------------------------------------------------------------------

def roc_summary(member_scores, nonmember_scores) -> dict:
    """ROC statistics for separating members from non-members by score (higher = member).

    Returns a dict with
      ``auc``: sklearn ``roc_auc_score`` (ties count 1/2, as sklearn does);
      ``tpr_at_fpr_5`` / ``tpr_at_fpr_1``: largest TPR among ROC points with
        FPR <= 0.05 / 0.01 (points from ``roc_curve(drop_intermediate=False)``);
      ``balanced_accuracy_at_fpr_5``: max of (TPR + 1 - FPR) / 2 over ROC points
        with FPR <= 0.05;
      ``threshold_at_fpr_5``: the score threshold (predict member iff
        score >= threshold) of the point giving ``tpr_at_fpr_5`` (lowest FPR among
        equals); ``inf`` when only the "predict nobody" point qualifies;
      ``fpr`` / ``tpr``: the ROC points as lists, for plotting;
      ``n_members`` / ``n_nonmembers``.
    Tied scores are never split by order: a threshold admits all equal scores at once.
    Raises ValueError on an empty or non-finite input.
    """
    m = _as_scores(member_scores, "member_scores")
    n = _as_scores(nonmember_scores, "nonmember_scores")
    y = np.concatenate([np.ones(m.size, dtype=int), np.zeros(n.size, dtype=int)])
    s = np.concatenate([m, n])

    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    auc = float(roc_auc_score(y, s))

    def best_tpr_index(bound: float) -> int:
        ok = np.flatnonzero(fpr <= bound + _TIE_EPS)  # never empty: (0, 0) is first
        best_tpr = tpr[ok].max()
        cand = ok[tpr[ok] == best_tpr]
        return int(cand[np.argmin(fpr[cand])])

    i5 = best_tpr_index(0.05)
    i1 = best_tpr_index(0.01)
    ok5 = np.flatnonzero(fpr <= 0.05 + _TIE_EPS)
    bal5 = float(np.max((tpr[ok5] + 1.0 - fpr[ok5]) / 2.0))

    return {
        "auc": auc,
        "tpr_at_fpr_5": float(tpr[i5]),
        "tpr_at_fpr_1": float(tpr[i1]),
        "balanced_accuracy_at_fpr_5": bal5,
        "threshold_at_fpr_5": float(thresholds[i5]),
        "fpr": [float(v) for v in fpr],
        "tpr": [float(v) for v in tpr],
        "n_members": int(m.size),
        "n_nonmembers": int(n.size),
    }


# --------------------------------------------------------------------------
# curve summaries
# --------------------------------------------------------------------------

def summarise_curves(curves, *, threshold: float = DEFAULT_THRESHOLD) -> dict:
    """Per-step mean and std (population, ddof=0) of T attack curves of shape (T, cap).

    Also returns the mean (and std) of ``steps_to_threshold`` and of ``curve_area``
    over the trials, ``n_trials``, ``cap`` and the ``threshold`` used.
    """
    c = _as_curves(curves)
    t = _check_threshold(threshold)
    steps = np.array([steps_to_threshold(r, threshold=t) for r in c], dtype=float)
    areas = c.mean(axis=1)
    return {
        "mean": [float(v) for v in c.mean(axis=0)],
        "std": [float(v) for v in c.std(axis=0)],
        "mean_steps_to_threshold": float(steps.mean()),
        "std_steps_to_threshold": float(steps.std()),
        "mean_area": float(areas.mean()),
        "std_area": float(areas.std()),
        "n_trials": int(c.shape[0]),
        "cap": int(c.shape[1]),
        "threshold": t,
    }


# --------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------

def _new_figure(figsize=(5.0, 3.6)):
    # Use the object-oriented API (no pyplot): no global state, no screen needed.
    from matplotlib.figure import Figure  # lazy: start-up time

    return Figure(figsize=figsize, layout="constrained")


def plot_relearning_curves(
    stem,
    groups: dict,
    *,
    title: str = "",
    ylabel: str = "accuracy",
    threshold: float = DEFAULT_THRESHOLD,
    references=None,
) -> list[str]:
    """Plot Reminiscence-Attack relearning curves: one mean line with a +-1 std band per
    group (e.g. members vs non-members), x = step 1..cap, dashed line at ``threshold``.

    ``groups`` maps a label to an array of shape (T, cap); ``references`` (optional) is a
    list of such arrays, one per retrained reference model, drawn as a band. Writes
    <stem>.png and <stem>.pdf atomically and returns their paths.
    """
    if not groups:
        raise ValueError("groups is empty: give at least one label -> (trials, cap) array")
    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    _draw_curves(ax, groups, references, threshold)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(loc="lower right", fontsize="small")
    return save_figure(fig, stem)


def _draw_curves(ax, groups: dict, references, threshold: float):
    """Mean +- 1 std per group, and the reference population as a band: the range of the
    references' mean curves (between-model spread) around their pooled mean."""
    if references:
        means = np.stack([_as_curves(r).mean(axis=0) for r in references])
        x = np.arange(1, means.shape[1] + 1)
        ax.fill_between(x, means.min(axis=0), means.max(axis=0), color="grey", alpha=0.3, linewidth=0,
                        label=f"retrained references (R={len(references)}): range of their means")
        ax.plot(x, np.mean([_as_curves(r).mean(axis=0) for r in references], axis=0), color="black",
                linestyle=":", linewidth=1.2, label="retrained references: pooled mean")
    for label, curves in groups.items():
        c = _as_curves(curves)
        x = np.arange(1, c.shape[1] + 1)
        mean, std = c.mean(axis=0), c.std(axis=0)
        (line,) = ax.plot(x, mean, label=f"{label} (n={c.shape[0]})")
        ax.fill_between(x, np.clip(mean - std, 0, 1), np.clip(mean + std, 0, 1),
                        color=line.get_color(), alpha=0.15, linewidth=0)
    ax.axhline(float(threshold), color="grey", linestyle="--", linewidth=1, label=f"threshold {float(threshold):g}")
    ax.set_xlabel("step")
    ax.set_ylim(-0.02, 1.02)


def plot_relearning_panels(stem, panels: dict, *, title: str = "", threshold: float = DEFAULT_THRESHOLD,
                           rocs: dict | None = None, formats=("png", "pdf"), dpi: int = 150) -> list[str]:
    """One panel per attack level: ``panels`` maps a level name to ``(groups, references)``,
    ``groups`` a label -> (T, cap) array (mean +- std lines) and ``references`` a list of
    (T, cap) arrays, one per retrained reference model (drawn as a band). ``rocs``
    (optional, label -> :func:`roc_summary` dict) adds a last panel of ROC curves. One
    figure, because rendering dominates a small attack's time. Writes <stem>.<format> for
    each of ``formats`` atomically and returns their paths."""
    from matplotlib.ticker import MaxNLocator  # lazy: start-up time

    if not panels:
        raise ValueError("panels is empty: give at least one level -> (groups, references)")
    n = len(panels) + (1 if rocs else 0)
    fig = _new_figure(figsize=(4.4 * n, 3.9))
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (level, (groups, references)) in zip(axes, panels.items()):
        if not groups:
            raise ValueError(f"panel {level!r} has no curve groups")
        _draw_curves(ax, groups, references, threshold)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{level} level", fontsize=9)
    axes[0].set_ylabel("accuracy on the candidate set")
    axes[len(panels) - 1].legend(loc="lower right", fontsize="x-small")
    if rocs:
        _draw_rocs(axes[-1], rocs)
        axes[-1].set_title("ROC", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, stem, formats=formats, dpi=dpi)


def _draw_rocs(ax, rocs: dict):
    for label, summary in rocs.items():
        try:
            fpr, tpr, auc = summary["fpr"], summary["tpr"], summary["auc"]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"rocs[{label!r}] is not a roc_summary() dict (missing {exc})") from None
        ax.plot(fpr, tpr, label=f"{label} (AUC = {float(auc):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right", fontsize="x-small")


def plot_roc(stem, rocs: dict, *, title: str = "") -> list[str]:
    """Plot one ROC curve per attack game/label (AUC in the legend) plus the chance diagonal.

    ``rocs`` maps a label to a dict from :func:`roc_summary`.  Writes <stem>.png and
    <stem>.pdf atomically and returns their paths.
    """
    if not rocs:
        raise ValueError("rocs is empty: give at least one label -> roc_summary() dict")
    fig = _new_figure(figsize=(4.2, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    _draw_rocs(ax, rocs)
    if title:
        ax.set_title(title)
    return save_figure(fig, stem)
