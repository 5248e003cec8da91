"""Known-answer tests for unlearn/attack_stats.py (Reminiscence Attack statistics)."""

import os

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from unlearn.attack_stats import (
    curve_area,
    membership_score,
    plot_relearning_curves,
    plot_roc,
    roc_summary,
    steps_to_threshold,
    summarise_curves,
)


# ----------------------------------------------------------------- steps / area

def test_steps_reaches_at_step_3():
    assert steps_to_threshold([0.1, 0.5, 0.95, 0.2, 1.0]) == 3


def test_steps_never_reached_is_cap_plus_one():
    acc = np.full(75, 0.5)
    assert steps_to_threshold(acc) == 76


def test_steps_first_step():
    assert steps_to_threshold([0.91, 0.2, 0.3]) == 1


def test_steps_exactly_threshold_counts():
    assert steps_to_threshold([0.2, 0.9, 1.0]) == 2
    assert steps_to_threshold([0.2, 27 / 30, 1.0]) == 2
    assert steps_to_threshold([0.2, 0.5, 0.5], threshold=0.5) == 2


def test_steps_last_step_ranks_above_never():
    reach_last = [0.0, 0.0, 0.0, 0.9]
    never = [0.0, 0.0, 0.0, 0.89]
    assert steps_to_threshold(reach_last) == 4
    assert steps_to_threshold(never) == 5


@pytest.mark.parametrize("value", [0.0, 0.3, 1.0])
def test_curve_area_constant(value):
    assert curve_area(np.full(75, value)) == pytest.approx(value)


def test_curve_area_mean():
    assert curve_area([0.0, 0.5, 1.0, 0.5]) == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [[], [[0.1, 0.2]], [0.1, float("nan")], [50.0, 90.0]])
def test_bad_curve_raises(bad):
    with pytest.raises(ValueError):
        steps_to_threshold(bad)


# ----------------------------------------------------------------- membership score

def test_membership_score_orders_faster_above_slower():
    fast = [0.3, 0.95, 1.0, 1.0]
    slow = [0.3, 0.6, 0.92, 1.0]
    never = [0.3, 0.6, 0.7, 0.8]
    assert membership_score(fast) > membership_score(slow) > membership_score(never)


def test_membership_score_area_breaks_ties():
    a = [0.5, 0.95, 1.0]
    b = [0.1, 0.95, 1.0]
    assert steps_to_threshold(a) == steps_to_threshold(b)
    assert membership_score(a) > membership_score(b)
    # exact formula: (cap + 1 - steps) + area
    assert membership_score(a) == pytest.approx((3 + 1 - 2) + np.mean(a))


def test_membership_score_step_dominates_area():
    # b has a far larger area but reaches the threshold one step later
    a = [0.0, 0.0, 0.9, 0.0, 0.0]
    b = [0.89, 0.89, 0.89, 1.0, 1.0]
    assert curve_area(b) > curve_area(a)
    assert membership_score(a) > membership_score(b)


# ----------------------------------------------------------------- ROC

def test_roc_perfect_separation():
    r = roc_summary([0.9, 0.8, 0.7], [0.3, 0.2, 0.1, 0.0])
    assert r["auc"] == 1.0
    assert r["tpr_at_fpr_5"] == 1.0
    assert r["tpr_at_fpr_1"] == 1.0
    assert r["balanced_accuracy_at_fpr_5"] == 1.0
    assert r["n_members"] == 3 and r["n_nonmembers"] == 4
    assert 0.3 < r["threshold_at_fpr_5"] <= 0.7


def test_roc_identical_distributions():
    r = roc_summary([0.5, 0.5, 0.5], [0.5, 0.5])
    assert r["auc"] == 0.5
    # all scores tie: any threshold admitting a member admits every non-member
    assert r["tpr_at_fpr_5"] == 0.0
    assert r["balanced_accuracy_at_fpr_5"] == 0.5


def test_roc_same_values_spread():
    vals = [0.1, 0.4, 0.7]
    assert roc_summary(vals, vals)["auc"] == 0.5


def test_roc_inverted():
    r = roc_summary([0.1, 0.2], [0.8, 0.9, 1.0])
    assert r["auc"] == 0.0
    assert r["tpr_at_fpr_5"] == 0.0


def test_roc_hand_checked_small_case():
    members = [0.9, 0.8, 0.7, 0.2]
    nonmembers = [0.6, 0.3, 0.1, 0.05]
    r = roc_summary(members, nonmembers)
    # member > nonmember pairs: 0.9, 0.8, 0.7 beat all 4 (12); 0.2 beats 0.1, 0.05 (2)
    assert r["auc"] == pytest.approx(14 / 16)
    # threshold 0.7 admits 3/4 members and no non-member; 0.6 would give FPR 1/4 > 0.05
    assert r["tpr_at_fpr_5"] == pytest.approx(0.75)
    assert r["tpr_at_fpr_1"] == pytest.approx(0.75)
    assert r["balanced_accuracy_at_fpr_5"] == pytest.approx((0.75 + 1.0) / 2)
    assert r["threshold_at_fpr_5"] == pytest.approx(0.7)
    assert r["fpr"][0] == 0.0 and r["tpr"][0] == 0.0
    assert r["fpr"][-1] == 1.0 and r["tpr"][-1] == 1.0


def test_roc_ties_not_broken_by_order():
    # the tied 0.5s must enter together: no point (FPR 0, TPR 1) may appear
    r = roc_summary([1.0, 0.5], [0.5, 0.0])
    assert r["auc"] == pytest.approx(3.5 / 4)
    assert r["tpr_at_fpr_5"] == 0.5
    assert all(not (f == 0.0 and t == 1.0) for f, t in zip(r["fpr"], r["tpr"]))
    # swapping the order of the inputs changes nothing
    assert roc_summary([0.5, 1.0], [0.0, 0.5])["tpr_at_fpr_5"] == 0.5


def _brute_tpr_at_fpr(m, n, bound):
    best = 0.0
    for t in np.unique(np.concatenate([m, n])):
        tpr, fpr = np.mean(m >= t), np.mean(n >= t)
        if fpr <= bound:
            best = max(best, tpr)
    return best


def test_roc_matches_sklearn_and_brute_force_on_random_example():
    rng = np.random.default_rng(0)
    m = np.round(rng.normal(1.0, 1.0, 300), 1)  # rounding creates ties
    n = np.round(rng.normal(0.0, 1.0, 400), 1)
    r = roc_summary(m, n)
    y = np.r_[np.ones(m.size), np.zeros(n.size)]
    assert r["auc"] == pytest.approx(roc_auc_score(y, np.r_[m, n]))
    assert r["tpr_at_fpr_5"] == pytest.approx(_brute_tpr_at_fpr(m, n, 0.05))
    assert r["tpr_at_fpr_1"] == pytest.approx(_brute_tpr_at_fpr(m, n, 0.01))
    # the reported threshold reproduces the reported operating point
    t = r["threshold_at_fpr_5"]
    assert np.mean(m >= t) == pytest.approx(r["tpr_at_fpr_5"])
    assert np.mean(n >= t) <= 0.05
    best_bal = max(
        (np.mean(m >= t) + 1 - np.mean(n >= t)) / 2
        for t in np.r_[np.unique(np.r_[m, n]), np.inf]
        if np.mean(n >= t) <= 0.05
    )
    assert r["balanced_accuracy_at_fpr_5"] == pytest.approx(best_bal)
    assert 0.0 < r["tpr_at_fpr_1"] <= r["tpr_at_fpr_5"] <= 1.0
    assert len(r["fpr"]) == len(r["tpr"])


@pytest.mark.parametrize("members, nonmembers", [([], [0.1]), ([0.1], []), ([], [])])
def test_roc_empty_raises(members, nonmembers):
    with pytest.raises(ValueError, match="empty"):
        roc_summary(members, nonmembers)


def test_roc_nan_raises():
    with pytest.raises(ValueError):
        roc_summary([0.1, float("nan")], [0.2])


# ----------------------------------------------------------------- summaries

def test_summarise_curves():
    curves = np.array([[0.0, 0.5, 1.0], [0.5, 1.0, 1.0]])
    s = summarise_curves(curves)
    assert s["mean"] == pytest.approx([0.25, 0.75, 1.0])
    assert s["std"] == pytest.approx([0.25, 0.25, 0.0])
    assert s["mean_steps_to_threshold"] == pytest.approx((3 + 2) / 2)
    assert s["mean_area"] == pytest.approx((0.5 + 2.5 / 3) / 2)
    assert s["n_trials"] == 2 and s["cap"] == 3


def test_summarise_curves_empty_raises():
    with pytest.raises(ValueError):
        summarise_curves(np.zeros((0, 75)))


# ----------------------------------------------------------------- plots

def _check_written(tmp_path, stem_name):
    for ext in ("png", "pdf"):
        p = tmp_path / f"{stem_name}.{ext}"
        assert p.is_file() and p.stat().st_size > 0
    assert sorted(os.listdir(tmp_path)) == sorted([f"{stem_name}.png", f"{stem_name}.pdf"])


def test_plot_relearning_curves_writes_files(tmp_path):
    rng = np.random.default_rng(1)
    cap = 20
    steps = np.arange(1, cap + 1)
    members = np.clip(1 - np.exp(-steps / 3) + rng.normal(0, 0.03, (5, cap)), 0, 1)
    nonmembers = np.clip(1 - np.exp(-steps / 12) + rng.normal(0, 0.03, (5, cap)), 0, 1)
    out = plot_relearning_curves(tmp_path / "curves", {"member": members, "non-member": nonmembers},
                                 title="test")
    assert len(out) == 2
    _check_written(tmp_path, "curves")


def test_plot_roc_writes_files(tmp_path):
    rocs = {
        "game A": roc_summary([0.9, 0.8, 0.7, 0.2], [0.6, 0.3, 0.1, 0.05]),
        "game B": roc_summary([0.5, 0.4], [0.5, 0.1]),
    }
    out = plot_roc(str(tmp_path / "roc"), rocs, title="ROC")
    assert len(out) == 2
    _check_written(tmp_path, "roc")


def test_plots_reject_empty(tmp_path):
    with pytest.raises(ValueError):
        plot_relearning_curves(tmp_path / "x", {})
    with pytest.raises(ValueError):
        plot_roc(tmp_path / "y", {})
    assert os.listdir(tmp_path) == []
