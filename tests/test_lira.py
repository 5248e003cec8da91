"""LiRA (unlearn.evaluation.lira) on known cases: the score against the paper's formula, the inclusion
design, and online / offline LiRA on synthetic Gaussian populations whose TPR at a fixed FPR is known."""
import numpy as np
import pytest
from scipy.stats import norm

from unlearn.evaluation import lira


def paper_log_logits(logits, label):
    """The paper's get_log_logits for one row: float64 softmax, log p_y - log(sum of the others), 1e-45 floors."""
    z = np.asarray(logits, dtype=np.float64)
    p = np.exp(z - z.max())
    p /= p.sum()
    wrong = p.sum() - p[label]
    return np.log(p[label] + 1e-45) - np.log(wrong + 1e-45)


def test_score_is_the_papers_where_its_softmax_does_not_underflow():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 4, size=(50, 3, 10))
    y = rng.integers(0, 10, size=(50, 1))
    ours = lira.logit_scaled_confidence(z, y)
    assert ours.shape == (50, 3)
    ref = np.array([[paper_log_logits(z[i, q], y[i, 0]) for q in range(3)] for i in range(50)])
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)


def test_score_stays_finite_where_the_papers_saturates():
    ours = lira.logit_scaled_confidence(np.array([[1000.0, 0.0, 0.0]]), np.array([0]))
    assert ours[0] == pytest.approx(1000.0 - np.log(2.0))
    assert paper_log_logits([1000.0, 0.0, 0.0], 0) == pytest.approx(-np.log(1e-45), rel=1e-6)  # ~103.6


def test_score_rejects_labels_outside_the_classes():
    with pytest.raises(ValueError, match="labels"):
        lira.logit_scaled_confidence(np.zeros((2, 3)), np.array([0, 3]))


def test_inclusion_design_puts_every_sample_in_exactly_n_in_shadows():
    keep = lira.inclusion_design(1000, 8, 6, seed=3)
    assert keep.shape == (8, 1000) and keep.dtype == bool
    assert (keep.sum(axis=0) == 6).all()
    assert abs(keep.sum(axis=1).mean() - 750) < 1e-9 and keep.sum(axis=1).min() > 650  # each shadow ~ 6/8 of the data
    np.testing.assert_array_equal(keep, lira.inclusion_design(1000, 8, 6, seed=3))
    assert not np.array_equal(keep, lira.inclusion_design(1000, 8, 6, seed=4))


@pytest.mark.parametrize("shadows,n_in", [(1, 0), (8, 0), (8, 8), (4, 5)])
def test_inclusion_design_rejects_designs_without_both_sides(shadows, n_in):
    with pytest.raises(ValueError, match="n_in"):
        lira.inclusion_design(10, shadows, n_in, seed=0)


def synthetic(*, n=20000, shadows=64, shift=2.0, spread=3.0, seed=0):
    """Per-sample difficulty o_i ~ N(0, spread); a model that trained on sample i scores N(o_i + shift, 1),
    one that did not N(o_i, 1). Returns shadow scores, the design, a target's scores and its membership."""
    rng = np.random.default_rng(seed)
    o = rng.normal(0, spread, size=n)
    keep = lira.inclusion_design(n, shadows, shadows // 2, seed=seed + 1)
    s = o[None, :] + shift * keep + rng.normal(size=(shadows, n))
    member = np.arange(n) % 2 == 0
    t = o + shift * member + rng.normal(size=n)
    return s, keep, t, member


def test_online_lira_reaches_the_known_tpr_and_beats_a_global_threshold():
    s, keep, t, member = synthetic()
    got = lira.roc_summary(lira.lira_online(s, keep, t), member)
    oracle = 1 - norm.cdf(norm.ppf(0.99) - 2.0)  # likelihood-ratio test with the true per-sample means: 0.372
    assert got.tpr_at_1pct_fpr == pytest.approx(oracle, abs=0.04)
    assert got.tpr_at_10pct_fpr == pytest.approx(1 - norm.cdf(norm.ppf(0.9) - 2.0), abs=0.04)
    assert got.auc == pytest.approx(norm.cdf(2.0 / np.sqrt(2)), abs=0.02)
    raw = lira.roc_summary(t, member)  # the same scores without per-sample calibration
    assert raw.tpr_at_1pct_fpr < 0.1 < got.tpr_at_1pct_fpr


def test_offline_lira_is_two_sided_and_reaches_its_known_tpr():
    s, keep, t, member = synthetic(seed=5)
    got = lira.roc_summary(lira.lira_offline(s, keep, t), member)
    z = norm.ppf(0.995)  # |score - o_i| > z has FPR 1% for non-members
    known = 1 - norm.cdf(z - 2.0) + norm.cdf(-z - 2.0)  # 0.282
    assert got.tpr_at_1pct_fpr == pytest.approx(known, abs=0.04)
    mu = lira.fit(s, keep, online=False).mean_out[:, 0]
    below, above, at = (lira.lira_offline(s, keep, mu + d) for d in (-4.0, 4.0, 0.0))
    np.testing.assert_allclose(below, above)  # far below the out-shadows reads as member as much as far above
    assert (below > at).all()


def test_equal_populations_give_chance():
    s, keep, t, member = synthetic(shift=0.0, seed=9)
    got = lira.roc_summary(lira.lira_online(s, keep, t), member)
    assert got.auc == pytest.approx(0.5, abs=0.02)
    assert got.tpr_at_1pct_fpr < 0.03


def test_roc_summary_reads_tpr_at_the_last_point_strictly_below_the_fpr():
    # 10 non-members, 4 members; one non-member above every member: FPR 0.1 at the first threshold.
    scores = np.array([9.0, 5, 4, 3, 2] + [1.0] * 9)
    member = np.array([False, True, True, True, True] + [False] * 9)
    got = lira.roc_summary(scores, member)
    assert got.tpr_at_1pct_fpr == 0.0 and got.tpr_at_10pct_fpr == 0.0  # fpr 0.1 is not < 0.1
    assert got.auc == pytest.approx(0.9)
    assert got.best_balanced_accuracy == pytest.approx(1 - (0.1 + 0.0) / 2)
    assert (got.members, got.non_members) == (4, 10)


def test_shapes_are_checked():
    s, keep, t, _ = synthetic(n=10, shadows=4)
    with pytest.raises(ValueError, match="inclusion"):
        lira.lira_online(s, keep[:, :5], t)
    with pytest.raises(ValueError, match="target"):
        lira.lira_offline(s, keep, t[:5])
    with pytest.raises(ValueError, match="members and non-members"):
        lira.roc_summary(t, np.ones(10, dtype=bool))


def test_crossfit_balanced_accuracy_is_chance_for_noise_and_one_for_a_perfect_score():
    rng = np.random.default_rng(0)
    member = np.arange(400) >= 200
    noise = [lira.crossfit_balanced_accuracy(rng.normal(size=400), member, seed=s) for s in range(40)]
    best = [lira.roc_summary(rng.normal(size=400), member).best_balanced_accuracy for _ in range(40)]
    assert abs(np.mean(noise) - 0.5) < 0.01 and np.mean(best) > 0.53  # the in-sample best is optimistic
    assert lira.crossfit_balanced_accuracy(member.astype(float), member) == 1.0
    assert lira.roc_summary(member.astype(float), member).balanced_accuracy_crossfit == 1.0


def test_against_retrained_standardises_by_the_retrained_scores_per_target():
    rng = np.random.default_rng(1)
    difficulty = rng.normal(0, 3, size=300)  # per-target offsets that a global threshold cannot remove
    refs = difficulty + rng.normal(size=(12, 300))
    member = np.arange(300) >= 150
    retrained_like = difficulty + rng.normal(size=300)
    remembers = retrained_like + 1.5 * member
    auc = lambda x: float(np.mean([(a > b) for a in x[member] for b in x[~member]]))  # noqa: E731
    assert abs(auc(lira.against_retrained(retrained_like, refs)) - 0.5) < 0.08
    z = lira.against_retrained(remembers, refs)
    assert auc(z) > 0.8 > auc(remembers)  # per-target standardisation is what separates them
    sd = np.sqrt(((refs - refs.mean(0)) ** 2).sum() / (refs.size - 300))
    assert z[0] == pytest.approx((remembers[0] - refs[:, 0].mean()) / sd)
    with pytest.raises(ValueError, match="at least two retrained"):
        lira.against_retrained(remembers, refs[:1])
