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
    return shadows.train_shadows(digits, DESIGN, device="cpu")


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
    again, _ = shadows.train_shadows(digits, DESIGN, device="cpu")
    assert again == paths and [p.stat().st_mtime_ns for p in again] == stamps
    other, _ = shadows.train_shadows(digits, shadows.ShadowDesign(n_shadows=3, n_in=1, seed=1, epochs=1), device="cpu")
    assert not set(other) & set(paths)  # another design seed: other keys, other files
    paths[1].write_bytes(b"truncated")
    fixed, _ = shadows.train_shadows(digits, DESIGN, device="cpu")
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
