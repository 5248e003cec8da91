"""Known-answer tests for unlearn/evaluation/distribution.py on synthetic data."""

import os

import numpy as np
import pytest
from sklearn.metrics import silhouette_score

from unlearn.evaluation.distribution import (
    OverlapResult,
    distribution_metrics,
    forget_silhouette,
    intra_class_variance,
    kde_overlap,
    nearest_class,
    plot_overlap,
    plot_tsne,
    stratified_subsample,
    tsne_2d,
)


def _blobs(centres, n, sigma=1.0, seed=0, dim=2):
    rng = np.random.default_rng(seed)
    pts, labs = [], []
    for i, c in enumerate(centres):
        c = np.zeros(dim) + np.asarray(c, dtype=float)
        pts.append(rng.normal(c, sigma, size=(n, dim)))
        labs.append(np.full(n, i))
    return np.vstack(pts), np.concatenate(labs)


def test_far_apart_blobs_are_separated():
    x, y = _blobs([(0, 0), (50, 0)], 500)
    sil, near = forget_silhouette(x, y, 0)
    assert near == 1
    assert sil > 0.9
    res = kde_overlap(x, y, 0)
    assert isinstance(res, OverlapResult)
    assert res.overlap < 0.01
    assert res.density_forget.shape == (200, 200) == res.density_rest.shape
    assert res.xs.shape == (200,) and res.ys.shape == (200,)
    assert np.isclose(res.density_forget.sum(), 1.0)
    assert np.isclose(res.density_rest.sum(), 1.0)


def test_identical_distributions_overlap():
    x, y = _blobs([(0, 0), (0, 0)], 500, seed=1)
    sil, _ = forget_silhouette(x, y, 0)
    assert abs(sil) < 0.1
    assert kde_overlap(x, y, 0).overlap > 0.8


def test_intra_class_variance_known_covariance():
    rng = np.random.default_rng(2)
    x = np.vstack([rng.normal(0, 2.0, size=(20000, 2)), rng.normal(30, 1.0, size=(100, 2))])
    y = np.r_[np.zeros(20000, int), np.ones(100, int)]
    assert intra_class_variance(x, y, 0) == pytest.approx(8.0, rel=0.02)
    # Works in higher dimension too: D * sigma^2.
    x5 = rng.normal(0, 1.0, size=(20000, 5))
    assert intra_class_variance(x5, np.zeros(20000), 0) == pytest.approx(5.0, rel=0.02)


def test_nearest_class_picks_closer_blob():
    x, y = _blobs([(0, 0), (20, 0), (0, 6)], 200)
    assert nearest_class(x, y, 0) == 2
    assert nearest_class(x, y, 1) in (0, 2)
    assert forget_silhouette(x, y, 0)[1] == 2
    # String labels (class names) are not required, but non-contiguous ints are.
    assert nearest_class(x, y * 10 + 3, 3) == 23


def test_stratified_subsample_keeps_proportions():
    y = np.r_[np.zeros(6000, int), np.ones(3000, int), np.full(990, 2), np.full(10, 7)]
    idx = stratified_subsample(y, 1000, seed=0)
    assert len(idx) == 1000
    assert np.all(np.diff(idx) > 0)
    counts = {c: int(np.sum(y[idx] == c)) for c in (0, 1, 2, 7)}
    assert counts[0] == 600 and counts[1] == 300 and counts[2] == 99
    assert counts[7] == 1
    # Deterministic per seed, different across seeds.
    assert np.array_equal(idx, stratified_subsample(y, 1000, seed=0))
    assert not np.array_equal(idx, stratified_subsample(y, 1000, seed=1))
    # Tiny class still represented, all indices when small enough.
    y2 = np.r_[np.zeros(995, int), np.ones(5, int)]
    idx2 = stratified_subsample(y2, 50, seed=3)
    assert len(idx2) == 50 and np.sum(y2[idx2] == 1) >= 1
    assert np.array_equal(stratified_subsample(y2, 5000, seed=0), np.arange(1000))


def test_degenerate_forget_class_is_finite():
    rng = np.random.default_rng(3)
    x = np.vstack([np.tile([[1.0, 2.0]], (50, 1)), rng.normal(0, 3, size=(300, 2))])
    y = np.r_[np.zeros(50, int), np.ones(150, int), np.full(150, 2)]
    m = distribution_metrics(x, y, 0)
    assert set(m) == {"intra_class_variance", "silhouette", "nearest_class", "overlap"}
    for k in ("intra_class_variance", "silhouette", "overlap"):
        assert np.isfinite(m[k]), k
    assert m["intra_class_variance"] == 0.0
    assert 0.0 <= m["overlap"] <= 1.0
    # A single forget point, and collinear forget points.
    x1, y1 = x[49:], y[49:]
    assert all(np.isfinite(v) for v in distribution_metrics(x1, y1, 0).values())
    xl = x.copy()
    xl[:50, 0] = np.linspace(-1, 1, 50)
    res = kde_overlap(xl, y, 0)
    assert np.isfinite(res.overlap) and np.isfinite(res.density_forget).all()


def test_distribution_metrics_high_dimensional():
    far, yf = _blobs([np.r_[40.0, np.zeros(9)], np.zeros(10), np.r_[0, 40.0, np.zeros(8)]],
                     150, dim=10)
    m = distribution_metrics(far, yf, 0)
    assert m["intra_class_variance"] == pytest.approx(10.0, rel=0.15)
    assert m["silhouette"] > 0.8
    assert m["overlap"] < 0.05
    same, ys = _blobs([np.zeros(10)] * 3, 150, dim=10, seed=5)
    m2 = distribution_metrics(same, ys, 0)
    assert abs(m2["silhouette"]) < 0.1
    assert m2["overlap"] > 0.7


def test_tsne_2d_separates_blobs():
    rng = np.random.default_rng(4)
    centres = rng.normal(0, 10, size=(3, 10))
    n = [67, 67, 66]
    x = np.vstack([rng.normal(c, 1.0, size=(k, 10)) for c, k in zip(centres, n)])
    y = np.repeat(np.arange(3), n)
    emb = tsne_2d(x)
    assert emb.shape == (200, 2)
    assert np.all(np.isfinite(emb))
    assert silhouette_score(emb, y) > 0.5
    # Same seed -> same embedding (checked on a subset to save time);
    # tiny inputs do not crash.
    assert np.array_equal(tsne_2d(x[::4]), tsne_2d(x[::4]))
    assert tsne_2d(x[:5]).shape == (5, 2)


def _only_final_files(d, stems):
    names = sorted(os.listdir(d))
    want = sorted(f"{s}.{e}" for s in stems for e in ("png", "pdf"))
    assert names == want, names
    for n in names:
        assert os.path.getsize(os.path.join(d, n)) > 0


def test_plots_write_png_and_pdf(tmp_path):
    x, y = _blobs([(0, 0), (8, 0), (0, 8)], 100)
    plot_tsne(tmp_path / "tsne", x, y, 1, class_names=["a", "b", "c"], title="demo")
    res = kde_overlap(x, y, 1, grid=60)
    plot_overlap(str(tmp_path / "overlap"), res, title="demo")
    _only_final_files(tmp_path, ["tsne", "overlap"])
    with open(tmp_path / "tsne.png", "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "overlap.pdf", "rb") as fh:
        assert fh.read(5) == b"%PDF-"
    # Overwrite in place, many classes (compact legend), degenerate densities.
    xm, ym = _blobs([(i, i) for i in range(15)], 10)
    plot_tsne(tmp_path / "tsne", xm, ym, 0)
    xd = np.vstack([np.zeros((10, 2)), x])
    yd = np.r_[np.full(10, 9), y]
    plot_overlap(tmp_path / "overlap", kde_overlap(xd, yd, 9, grid=50))
    _only_final_files(tmp_path, ["tsne", "overlap"])
