"""Known-answer tests for unlearn/evaluation/rea/decide.py (the replicated decision) and
unlearn/evaluation/rea/calibration.py (its simulated label rates).

Populations are built so their model statistics are known exactly: model effects at
standardised normal quantiles (mean and sd exact), each model's trials symmetric around its
effect (so the model mean is the effect), hence every expected t, df and p-value below is
computed by hand from the pooled-variance t / prediction formulas, and every permutation
p-value by enumerating the splits here."""
import itertools
import math

import numpy as np
import pytest
from scipy import stats

import config

from unlearn.evaluation.rea import decide as D
from unlearn.evaluation.rea.calibration import (decide_arrays, permutation_p_arrays, rate_table, simulate_labels,
                                                 simulate_rates)
from unlearn.evaluation.rea.verdict import band

MU, S = 0.4, 0.02  # reference mean and model-to-model sd of the statistic


def _std(n: int) -> np.ndarray:
    """n values with mean exactly 0 and sd (ddof=1) exactly 1 (n >= 2)."""
    q = stats.norm.ppf((np.arange(n) + 0.5) / n)
    return (q - q.mean()) / q.std(ddof=1)


def _models(effects, trials: int = 8, within: float = 0.005) -> list[np.ndarray]:
    """Per-trial arrays whose means are exactly ``effects``: +-within pairs around each effect."""
    half = np.tile([within, -within], trials // 2)
    return [e + half for e in effects]


def _pop(n: int, mean: float = MU, sd: float = S) -> list[np.ndarray]:
    return _models(mean + sd * _std(n))


def _pooled_p(k, r, diff, sk=S, sr=S):
    """Two-sided p-value and df of Student's pooled-variance t-test, by hand."""
    df = k + r - 2
    sp2 = ((k - 1) * sk ** 2 + (r - 1) * sr ** 2) / df
    return float(2 * stats.t.sf(abs(diff) / math.sqrt(sp2 * (1 / k + 1 / r)), df)), df


def _perm_p(method, refs):
    """The two-sided permutation p-value of the pooled t, by enumerating every split by hand."""
    x = np.r_[method, refs]
    k = len(method)

    def t(idx):
        a, b = x[list(idx)], np.delete(x, list(idx))
        sp2 = ((k - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(x) - 2)
        return (a.mean() - b.mean()) / math.sqrt(sp2 * (1 / k + 1 / len(b)))

    obs = t(range(k))
    ts = np.array([t(c) for c in itertools.combinations(range(len(x)), k)])
    tol = 1e-12 * abs(obs)
    return min(1.0, 2 * min(np.mean(ts <= obs + tol), np.mean(ts >= obs - tol)))


# ----------------------------------------------------------------- the four labels


def test_equal_means_many_models_is_equivalent():
    refs, method = _pop(20), _pop(20)
    margin = D.margin_from_refs(refs, 1.0)
    assert margin == pytest.approx(S)
    d = D.decide(method, refs, margin=margin)
    assert d.label == "equivalent" and d.test == "permutation" and (d.n_method, d.n_ref) == (20, 20)
    assert d.diff == pytest.approx(0, abs=1e-12) and d.p_t == pytest.approx(1.0)
    assert d.p_diff > 0.9  # C(40, 20) splits: 9999 seeded random ones, t = 0 sits in the middle
    se = S * math.sqrt(2 / 20)
    assert d.se == pytest.approx(se) and d.df == pytest.approx(38)
    assert d.p_equiv == pytest.approx(stats.t.sf(S / se, 38))  # both one-sided tests alike: 0.0015
    lo, hi = d.ci_tost
    assert -margin < lo < hi < margin  # equivalent <=> the 1 - 2 alpha interval inside the margin
    assert d.ci == pytest.approx([-stats.t.ppf(0.975, 38) * se, stats.t.ppf(0.975, 38) * se])


@pytest.mark.parametrize("sign, label", [(1, "residual"), (-1, "over-suppressed")])
def test_shift_3_sd_three_models_twenty_references(sign, label):
    refs, method = _pop(20), _pop(3, MU + sign * 3 * S)
    d = D.decide(method, refs, margin=D.margin_from_refs(refs, 1.5))
    p, df = _pooled_p(3, 20, 3 * S)
    assert d.label == label and d.diff == pytest.approx(sign * 3 * S)
    assert d.se == pytest.approx(S * math.sqrt(1 / 3 + 1 / 20))  # pooled sp = S: equal spreads
    assert d.p_t == pytest.approx(p) and p == pytest.approx(8.64e-5, rel=1e-2) and d.df == df == 21
    # every method model above every reference: the observed split is the most extreme of C(23, 3)
    assert d.p_diff == pytest.approx(2 / math.comb(23, 3)) == _perm_p(D.model_means(method), D.model_means(refs))
    assert d.ci[0] > 0 if sign > 0 else d.ci[1] < 0  # the 1 - alpha interval excludes 0
    assert d.p_equiv > 0.5  # 3 sd away with a 1.5 sd margin: not equivalent either


def test_half_margin_shift_with_few_models_is_undetermined():
    refs = _pop(4)
    margin = D.margin_from_refs(refs, 1.5)
    d = D.decide(_pop(2, MU + 0.5 * margin), refs, margin=margin)
    se = S * math.sqrt(1 / 2 + 1 / 4)
    p, df = _pooled_p(2, 4, 0.5 * margin)
    assert d.label == "undetermined" and d.p_t == pytest.approx(p)
    assert d.p_diff == pytest.approx(_perm_p(D.model_means(_pop(2, MU + 0.5 * margin)), D.model_means(refs)))
    assert d.p_equiv == pytest.approx(stats.t.cdf((0.5 * margin - margin) / se, df))  # the upper test binds
    assert d.p_diff > 0.05 and d.p_equiv > 0.05


# ----------------------------------------------------------------- one method model, few references


def test_one_method_model_uses_the_prediction_test():
    refs = _pop(20)
    se = S * math.sqrt(1 + 1 / 20)
    d = D.decide(_models([MU + 3 * S]), refs, margin=2 * S)
    assert d.test == "prediction" and d.n_method == 1 and d.df == 19 and d.se == pytest.approx(se)
    assert d.p_diff == pytest.approx(2 * stats.t.sf(3 * S / se, 19)) and d.label == "residual"
    same = D.decide(_models([MU]), refs, margin=2 * S)
    assert same.p_equiv == pytest.approx(stats.t.sf(2 * S / se, 19)) and same.label == "equivalent"  # p 0.033
    assert D.decide(_models([MU]), refs, margin=1 * S).label == "undetermined"  # p_equiv 0.17
    assert D.decide(_models([MU - 3 * S]), refs, margin=2 * S).label == "over-suppressed"


@pytest.mark.parametrize("n_ref", [0, 1])
def test_fewer_than_two_references_is_undetermined(n_ref):
    d = D.decide(_pop(3), _pop(2)[:n_ref], margin=float("nan"))
    assert d.label == "undetermined" and d.test == "none" and d.n_ref == n_ref
    assert all(math.isnan(x) for x in (d.p_diff, d.p_equiv, d.se, d.df, *d.ci, *d.ci_tost))
    assert math.isnan(d.diff) == (n_ref == 0)
    assert math.isnan(D.margin_from_refs(_pop(2)[:1], 2.0))


def test_no_spread_at_all_is_undetermined():
    d = D.decide(_models([0.5, 0.5]), _models([0.3, 0.3, 0.3]), margin=0.1)
    assert d.label == "undetermined" and d.test == "none" and d.diff == pytest.approx(0.2)


def test_order_of_models_does_not_matter():
    rng = np.random.default_rng(0)
    refs = [MU + rng.normal(0, S) + rng.normal(0, 0.01, 6) for _ in range(7)]
    method = [MU + 0.03 + rng.normal(0, S) + rng.normal(0, 0.01, 6) for _ in range(4)]
    a = D.decide(method, refs, margin=0.02).as_dict()
    b = D.decide(method[::-1], [refs[i] for i in rng.permutation(7)], margin=0.02).as_dict()
    assert a["label"] == b["label"] and a["test"] == b["test"]
    for k, v in a.items():
        if k not in ("label", "test"):
            assert b[k] == pytest.approx(v, rel=1e-9, abs=1e-12, nan_ok=True)


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="1-D array"):
        D.decide([0.41, 0.42, 0.43], _pop(5), margin=0.02)  # one model's trials, flat: refused
    with pytest.raises(ValueError, match="empty"):
        D.decide([], _pop(5), margin=0.02)
    with pytest.raises(ValueError, match="margin"):
        D.decide(_pop(3), _pop(5), margin=float("nan"))
    with pytest.raises(ValueError, match="alpha"):
        D.decide(_pop(3), _pop(5), margin=0.02, alpha=0.7)
    assert D.decide_means([0.4, 0.41], [0.39, 0.4, 0.42], margin=0.02).test == "permutation"  # model means directly


def test_as_dict_is_plain_python():
    d = D.decide(_pop(3), _pop(5), margin=0.02).as_dict()
    assert isinstance(d["ci"], list) and isinstance(d["ci_tost"], list) and isinstance(d["label"], str)
    assert all(isinstance(v, (str, int, float, list)) for v in d.values())


# ----------------------------------------------------------------- Holm


def test_holm_known_values():
    assert D.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    out = D.holm([0.01, float("nan"), 0.04])  # the NaN is not in the family: m = 2
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert D.holm([]) == [] and D.holm([0.5]) == [0.5] and D.holm([0.6, 0.5]) == [1.0, 1.0]


def test_decide_many_applies_holm():
    """Alone, +1.5 sd with 3 models against 20 references is residual (permutation test: p
    0.0282); in a family of three with its mirror and a null method it is not (Holm:
    3 x 0.0282 = 0.085)."""
    refs = _pop(20)
    margin = D.margin_from_refs(refs, 1.5)
    named = {"up": _pop(3, MU + 1.5 * S), "down": _pop(3, MU - 1.5 * S), "null": _pop(3)}
    out = D.decide_many(named, refs, margin=margin)
    assert list(out) == ["up", "down", "null"]
    p = out["up"].p_diff
    assert p == pytest.approx(_perm_p(D.model_means(named["up"]), D.model_means(refs))) and p == pytest.approx(0.0282, abs=5e-4)
    assert out["up"].p_t == pytest.approx(_pooled_p(3, 20, 1.5 * S)[0])
    assert out["up"].p_adjusted == pytest.approx(3 * p) and out["down"].p_adjusted == pytest.approx(3 * p)
    assert out["null"].p_adjusted == pytest.approx(1.0)
    # the null method is equivalent (TOST, not Holm-adjusted: p_equiv 0.012 with a 1.5 sd margin)
    assert [d.label for d in out.values()] == ["undetermined", "undetermined", "equivalent"]
    assert out["null"].p_equiv == pytest.approx(stats.t.sf(1.5 / math.sqrt(1 / 3 + 1 / 20), 21))
    two = D.decide_many({"up": named["up"], "big": _pop(3, MU + 10 * S)}, refs, margin=margin)
    # Holm steps down: the smallest p (big's) is multiplied by 2, the next one by 1
    assert two["big"].label == "residual" and two["big"].p_adjusted == pytest.approx(2 * two["big"].p_diff)
    assert two["up"].p_adjusted == pytest.approx(p) and two["up"].label == "residual"
    assert D.decide(named["up"], refs, margin=margin, p_adjusted=0.06).label == "undetermined"


# ----------------------------------------------------------------- the display index and the anchor


def test_display_index_anchor_below_the_references():
    refs = _pop(10)
    anchor = _models([0.1])  # far below the references' band
    lo, hi = band([float(np.mean(r)) for r in refs])["band"]
    slow = D.display_index(_models([0.25]), refs, anchor)
    assert slow.defined and slow.index == pytest.approx(0.5)  # halfway toward the anchor: slower than retraining
    assert tuple(slow.ref_band) == pytest.approx((lo, hi)) and lo < hi
    fast_models = _pop(3, 0.7)
    fast = D.display_index(fast_models, refs, anchor)
    assert fast.defined and fast.index == pytest.approx(-1.0)  # (0.7 - 0.4) / (0.1 - 0.4): negative ...
    assert D.decide(fast_models, refs, margin=2 * S).label == "residual"  # ... yet residual: no anchor here


def test_display_index_undefined_when_the_anchor_is_inside_the_band():
    refs = _pop(10)
    inside = D.display_index(_models([0.7]), refs, _models([MU - 1.5 * S]))
    assert not inside.defined and math.isnan(inside.index) and "inside" in inside.reason
    few = D.display_index(_models([0.7]), refs[:1], _models([0.1]))
    assert not few.defined and math.isnan(few.index)
    above = D.display_index(_models([MU + 5 * S]), refs, _models([MU + 10 * S]))
    assert above.defined and above.index == pytest.approx(0.5) and above.as_dict()["defined"] is True


# ----------------------------------------------------------------- calibration: simulation


@pytest.mark.parametrize("K, R", [(1, 5), (3, 6), (3, 10), (2, 20)])
def test_vectorised_rule_matches_decide_means(K, R):
    sim = simulate_labels(K=K, R=R, shift_sd=1.0, margin_sd=1.5, n_sim=300, seed=K * 10 + R)
    for m, r, mg, lab in zip(sim["method_means"], sim["ref_means"], sim["margin"], sim["labels"]):
        assert D.decide_means(m, r, margin=mg).label == lab
    assert len(set(sim["labels"])) >= 2  # the comparison saw more than one label


def test_vectorised_rule_few_references():
    assert list(decide_arrays([[0.1, 0.2]], [[0.3]], 0.1)) == ["undetermined"]


@pytest.mark.parametrize("K, R", [(1, 5), (3, 10), (2, 20)])
def test_no_shift_false_difference_rate_is_about_alpha(K, R):
    r = simulate_rates(K=K, R=R, shift_sd=0.0, margin_sd=1.5, n_sim=2000, seed=1)
    assert r["residual"] + r["over-suppressed"] <= 0.08
    assert sum(r[k] for k in D.LABELS) == pytest.approx(1.0)


@pytest.mark.parametrize("K", [3, 2])
def test_no_shift_false_difference_rate_at_most_alpha_small_method_group(K):
    """The project's requirement: false residual + over-suppressed <= 5% at the default K=3,
    R=20 (Welch's test gave 7.2% there, 11.8% at K=2; the permutation test is at most alpha by
    construction); 0.06 allows the Monte Carlo error of 4000 experiments (sd 0.0034 at 5%)."""
    r = simulate_rates(K=K, R=20, shift_sd=0.0, margin_sd=1.5, n_sim=4000, seed=3)
    assert r["residual"] + r["over-suppressed"] <= 0.06


def test_shift_3_sd_is_found_with_three_models():
    r = simulate_rates(K=3, R=20, shift_sd=3.0, margin_sd=1.5, n_sim=2000, seed=2)
    assert r["residual"] > 0.5 and r["over-suppressed"] < 0.01 and r["equivalent"] < 0.01


def test_rate_table_grid():
    rows = rate_table(Ks=(1, 3), Rs=(5,), shifts=(0,), margins=(1, 2), n_sim=50)
    assert [(x["K"], x["margin_sd"]) for x in rows] == [(1, 1.0), (1, 2.0), (3, 1.0), (3, 2.0)]


def test_permutation_p_known_answers():
    rng = np.random.default_rng(4)
    for k, r in ((2, 3), (3, 5), (3, 8)):
        m, ref = rng.normal(0.5, 1, k), rng.normal(0, 1, r)
        assert D.permutation_p(m, ref) == pytest.approx(_perm_p(m, ref))
    # K = 3 against R = 3: 20 splits, so p >= 2 / 20 even for the most extreme split: never residual
    far = D.decide_means([10.0, 11.0, 12.0], [0.0, 1.0, 2.0], margin=1.0)
    assert far.p_diff == pytest.approx(0.1) and far.label == "undetermined" and far.p_t < 1e-3
    with pytest.raises(ValueError, match="K >= 2"):
        D.permutation_p([1.0], [0.0, 1.0])


def test_permutation_test_holds_alpha_on_skewed_statistics():
    """Exchangeable but far from normal (exponential model statistics, K=3, R=20): the exact
    permutation test stays at or below alpha, where the pooled t-test need not."""
    rng = np.random.default_rng(5)
    x = rng.exponential(1.0, (3000, 23))
    p = permutation_p_arrays(x[:, :3], x[:, 3:])
    assert np.mean(p < 0.05) <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 3000)


def test_index_guard_per_run_and_over_replicates_agree():
    """verdict.index_defined (index units, per run) and decide.display_index (raw units) draw the same line."""
    from unlearn.evaluation.rea.verdict import index_band, index_defined

    refs = _pop(10)
    ref_means = [float(np.mean(r)) for r in refs]
    for anchor in (0.1, MU - 1.5 * S, MU + 1.5 * S, MU + 10 * S):
        shown = D.display_index(_models([0.5]), refs, _models([anchor])).defined
        assert index_defined(index_band(ref_means, anchor)) == shown


def test_smallest_p_is_reached_by_the_most_extreme_split():
    assert D.smallest_p(3, 20) == pytest.approx(2 / 1771)
    assert D.permutation_p([30.0, 31.0, 32.0], np.arange(20.0)) == pytest.approx(2 / 1771)
    assert D.smallest_p(3, 8) == pytest.approx(2 / 165)
    assert D.smallest_p(10, 20) == pytest.approx(2 / (D.PERMUTATIONS + 1))  # C(30, 10) > 9999: sampled


@pytest.mark.parametrize("dataset", sorted(config.REPLICATES))
def test_default_reference_population_can_decide(dataset):
    """With the default K replicates and R references, the most extreme split still beats Holm over the
    table's family (every row of the method list but baseline); otherwise every verdict would be
    undetermined by construction."""
    k, r = config.REPLICATES[dataset], config.ATTACK[dataset]["retrain_refs"]
    family = len([e for e in config.MU_METHOD_LIST[dataset] if e[0] != "baseline"])
    if k < 2:
        pytest.skip(f"{dataset}: K = {k}, the one-model prediction test decides (no permutation test)")
    assert family * D.smallest_p(k, r) < config.REA_ALPHA, (dataset, k, r, family)


@pytest.mark.parametrize("dataset", sorted(config.REPLICATES))
def test_default_sample_wise_reference_population_can_decide(dataset):
    """The same for the sample-wise table: its family is the list's methods defined without a forget class."""
    from unlearn.methods.entries import normalise_entry
    from unlearn.pipeline.sample_jobs import split_methods

    k, r = config.REPLICATES[dataset], config.SAMPLE_RETRAIN_REFS[dataset]
    kept, _ = split_methods([normalise_entry(e) for e in config.MU_METHOD_LIST[dataset]])
    family = len([e for e in kept if e[0] != "baseline"])
    if k < 2:
        pytest.skip(f"{dataset}: K = {k}, the one-model prediction test decides (no permutation test)")
    assert family * D.smallest_p(k, r) < config.REA_ALPHA, (dataset, k, r, family)


def test_decide_family_holm_adjusts_the_family_and_leaves_the_anchor_out():
    from unlearn.evaluation.rea.decide import decide_family

    rng = np.random.default_rng(3)
    refs = rng.normal(size=20)
    stats = {"anchor": [5.0, 5.2, 4.9], "far": [3.0, 3.1, 2.9], "near": [0.1, -0.2, 0.3], "none": []}
    got = decide_family(stats, refs, margin=1.5 * refs.std(ddof=1), alpha=0.05, outside=["anchor"])
    raw = {k: D.decide_means(np.array(v), refs, margin=1.5 * refs.std(ddof=1)) for k, v in stats.items() if v}
    assert got["none"] is None and math.isnan(got["anchor"].p_adjusted)
    assert got["anchor"].p_diff == raw["anchor"].p_diff
    adj = D.holm([raw["far"].p_diff, raw["near"].p_diff])
    assert [got["far"].p_adjusted, got["near"].p_adjusted] == adj
    assert got["far"].label == "residual"
