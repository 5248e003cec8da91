"""LiRA's shadow population (unlearn.evaluation.shadows): the inclusion design it trains on, its cache
(reused only for the same inputs, retrained when a file is damaged or an input changes), queries, and
bad designs as one-line errors."""
import numpy as np
import pytest
import torch

from unlearn.core.errors import UsageError
from unlearn.evaluation import shadows
from unlearn.evaluation.lira import logit_scaled_confidence

DESIGN = shadows.ShadowDesign(n_shadows=3, n_in=1, seed=0, epochs=3)


@pytest.fixture(scope="module")
def trained(digits):
    return shadows.train_shadows(digits, DESIGN, digits.load_data("cpu"), device="cpu")


def test_every_pool_sample_is_in_n_in_shadows_and_they_learned_what_they_hold(digits, trained):
    paths, keep = trained
    data = digits.load_data("cpu")
    ps = shadows.pool(data)
    assert len(ps) == len(data.in_train) + len(data.in_test)
    assert keep.shape == (3, len(ps)) and (keep.sum(0) == 1).all()
    scores = np.stack([shadows.query_scores(digits.load_model(p, "cpu")[0], ps)[:, 0] for p in paths])
    held = scores.T[keep.T]  # each sample's score under the one shadow that trained on it
    gap = held - np.nanmean(np.where(keep, np.nan, scores), axis=0)
    # per sample: the shadow holding it is more confident on it than the shadows that do not
    assert gap.mean() > 5 * gap.std(ddof=1) / np.sqrt(len(gap))


def test_the_cache_is_reused_for_the_same_inputs_only(digits, trained):
    paths, _ = trained
    stamps = [p.stat().st_mtime_ns for p in paths]
    again, _ = shadows.train_shadows(digits, DESIGN, digits.load_data("cpu"), device="cpu")
    assert again == paths and [p.stat().st_mtime_ns for p in again] == stamps
    other, _ = shadows.train_shadows(digits, shadows.ShadowDesign(n_shadows=3, n_in=1, seed=1, epochs=1),
                                     digits.load_data("cpu"), device="cpu")
    assert not set(other) & set(paths)  # another design seed: other keys, other files
    paths[1].write_bytes(b"truncated")
    fixed, _ = shadows.train_shadows(digits, DESIGN, digits.load_data("cpu"), device="cpu")
    assert fixed == paths and torch.load(paths[1], weights_only=True)["lira_key"] == paths[1].parent.name
    assert [p.stat().st_mtime_ns for p in (paths[0], paths[2])] == [stamps[0], stamps[2]]


@pytest.mark.parametrize("n,k", [(1, 0), (4, 0), (4, 4), (8, 9)])
def test_a_design_without_both_sides_is_a_one_line_error(n, k):
    with pytest.raises(UsageError, match="shadows") as e:
        shadows.ShadowDesign(n_shadows=n, n_in=k)
    assert "\n" not in str(e.value)


def test_queries_are_the_sample_then_fixed_augmented_copies(digits, trained):
    model = digits.load_model(trained[0][0], "cpu")[0]
    ts = digits.load_data("cpu").in_test
    one = shadows.query_scores(model, ts)
    with torch.no_grad():
        direct = logit_scaled_confidence(model.eval()(ts.x).numpy(), ts.y.numpy())
    np.testing.assert_allclose(one[:, 0], direct, rtol=1e-5, atol=1e-5)
    aug = dict(padding=1, hflip=False)
    four = shadows.query_scores(model, ts, queries=4, augment=aug)
    assert four.shape == (len(ts), 4)
    np.testing.assert_array_equal(four, shadows.query_scores(model, ts, queries=4, augment=aug))
    np.testing.assert_allclose(four[:, 0], one[:, 0])
    assert not np.allclose(four[:, 1], four[:, 0])
    with pytest.raises(UsageError, match="queries 1"):
        shadows.query_scores(model, ts, queries=4)


def test_targets_are_forget_and_test_samples_at_their_pool_positions(digits):
    from dataclasses import replace

    from unlearn.evaluation.sample_attack import pick_targets

    s = replace(digits, forget_percent=10.0)
    data = s.load_data("cpu")
    t = pick_targets(data, members=50, non_members=60, seed=1)
    assert t.member.sum() == 50 and (~t.member).sum() == 60
    ps = shadows.pool(data)
    assert torch.equal(ps.x[t.pool_positions], t.samples.x) and torch.equal(ps.y[t.pool_positions], t.samples.y)
    forget = {tuple(r) for r in data.forget_train.x.flatten(1).tolist()}
    assert all(tuple(r) in forget for r in t.samples.x[t.member].flatten(1).tolist())
    assert (t.pool_positions[~t.member] >= len(data.in_train)).all()  # non-members come from the test part
    again = pick_targets(data, members=50, non_members=60, seed=1)
    np.testing.assert_array_equal(again.pool_positions, t.pool_positions)
    with pytest.raises(UsageError, match="sample-wise"):
        pick_targets(digits.load_data("cpu"))


def test_retain_finetune_trains_each_phase_with_a_fresh_optimiser(digits, trained):
    from unlearn.core.engine import metered
    from unlearn.evaluation.sample_attack import RetainFinetune, retain_finetune

    model = digits.load_model(trained[0][0], "cpu")[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    retain = digits.load_data("cpu").retain_train
    with metered() as work:
        retain_finetune(model, retain, RetainFinetune(lrs=(0.01, 0.005), epochs=(2, 1), batch_size=64),
                        generator=torch.Generator().manual_seed(0))
    assert work.examples == 3 * len(retain) and work.steps == 3 * -(-len(retain) // 64)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(UsageError, match="one epoch count per lr"):
        RetainFinetune(lrs=(0.01,), epochs=(3, 3))


def test_lira_summary_reads_members_apart_on_a_model_that_trained_on_them(digits, trained):
    """The first shadow attacked, all three as the shadow population (a mechanical check: the target is
    one of its own shadows): the third of the pool it trained on reads as members (AUC above 0.6)."""
    from unlearn.evaluation.sample_attack import Targets, lira_statistics, lira_summary

    paths, keep = trained
    data = digits.load_data("cpu")
    ps = shadows.pool(data)
    mine = np.flatnonzero(keep[0])[:200]
    other = np.flatnonzero(~keep[0])[:200]
    pos = np.concatenate([other, mine])
    ts = ps.subset(torch.as_tensor(pos))
    t = Targets(pool_positions=pos, member=np.arange(len(pos)) >= len(other), samples=ts)
    s = np.stack([shadows.query_scores(digits.load_model(p, "cpu")[0], ts) for p in paths])
    got = lira_summary(lira_statistics(s[0], t, s, keep), t)
    assert got["online"].auc > 0.6 and got["offline"].members == 200
