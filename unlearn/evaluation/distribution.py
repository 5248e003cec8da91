"""Output-space distribution metrics and plots for class-wise unlearning.

The paper "Over-Unlearning and Replay Is All You Need" (the "Reminiscence
Attack on Residuals") observes that after *approximate* unlearning the
forgotten class still forms a tight, separate cluster in the model's output
space, whereas a model retrained without that class scatters the forget
samples among the other classes.  This module measures that residual
structure, following the paper's evaluation code:

1. take features (logits) of the training set, optionally subsampled with
   :func:`stratified_subsample`;
2. embed them in 2-D with t-SNE (:func:`tsne_2d`, fixed seed 42);
3. for the forget class compute

   * the intra-class variance (:func:`intra_class_variance`): mean squared
     distance of the forget points to their centroid -- small = tight cluster;
   * the silhouette (:func:`forget_silhouette`) of the forget class against
     its nearest class only -- near 1 = cleanly separated, near 0 = mixed in;
   * the KDE overlap (:func:`kde_overlap`) between the density of the forget
     points and the density of all other points -- near 0 = disjoint,
     near 1 = indistinguishable (what retraining from scratch looks like).

All metric functions are pure (numpy in, numbers/arrays out).  The plotting
functions use matplotlib's Agg canvas directly (no pyplot, no screen needed)
and write ``<stem>.png`` and ``<stem>.pdf`` atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..store.checkpoint import save_figure

__all__ = [
    "OverlapResult",
    "stratified_subsample",
    "tsne_2d",
    "intra_class_variance",
    "nearest_class",
    "forget_silhouette",
    "kde_overlap",
    "paper_kde_overlap",
    "distribution_metrics",
    "plot_tsne",
    "plot_overlap",
]


# --------------------------------------------------------------------------
# input helpers
# --------------------------------------------------------------------------

def _as_points(points) -> np.ndarray:
    """Return ``points`` as a float64 (N, D) array (a 1-D input becomes (N, 1))."""
    x = np.asarray(points, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"points must be a (N, D) array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("points contain NaN or infinite values")
    return x


def _as_labels(labels, n: int) -> np.ndarray:
    y = np.asarray(labels).reshape(-1)
    if y.shape[0] != n:
        raise ValueError(f"labels has {y.shape[0]} entries but points has {n} rows")
    return y


def _forget_mask(y: np.ndarray, cls) -> np.ndarray:
    mask = y == cls
    if not mask.any():
        raise ValueError(f"forget class {cls!r} has no points")
    return mask


# --------------------------------------------------------------------------
# subsampling and embedding
# --------------------------------------------------------------------------

def stratified_subsample(labels, max_points: int, seed: int) -> np.ndarray:
    """Indices of a class-stratified random subsample of at most ``max_points``.

    t-SNE and the KDE are too slow on a whole training set, so the paper's
    plots use a subsample.  Every present class keeps (up to rounding, by the
    largest-remainder method) its proportion of the data and keeps at least one
    point, so even a nearly-forgotten class stays visible.  If there are more
    classes than ``max_points`` the result holds one point per class (and so
    exceeds ``max_points``).  If ``len(labels) <= max_points`` all indices are
    returned.  The result is sorted and deterministic for a given ``seed``.
    """
    y = np.asarray(labels).reshape(-1)
    n = y.shape[0]
    max_points = int(max_points)
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    if n <= max_points:
        return np.arange(n)

    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    quota = counts * (max_points / n)
    alloc = np.maximum(np.floor(quota).astype(np.int64), 1)
    alloc = np.minimum(alloc, counts)
    # Distribute what is left by largest remainder (ties: larger class first).
    left = max_points - int(alloc.sum())
    if left > 0:
        order = np.lexsort((-counts, -(quota - np.floor(quota))))
        for c in order:
            if left == 0:
                break
            if alloc[c] < counts[c]:
                alloc[c] += 1
                left -= 1
    # The minimum of one per class may overshoot: take back from the largest.
    while left < 0:
        c = int(np.argmax(alloc))
        if alloc[c] <= 1:
            break
        alloc[c] -= 1
        left += 1

    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(classes.shape[0]):
        idx = np.flatnonzero(inverse == c)
        chosen.append(rng.choice(idx, size=int(alloc[c]), replace=False))
    return np.sort(np.concatenate(chosen))


def tsne_2d(features, *, seed: int = 42, perplexity: float = 30.0,
            n_jobs: int | None = None) -> np.ndarray:
    """Embed ``features`` (N, D) into 2-D with scikit-learn's t-SNE.

    As in the paper's code: PCA initialisation and a fixed random seed (42 by
    default) so the embeddings of the original, unlearned and retrained models
    are reproducible.  The perplexity is clipped to ``N - 1`` (scikit-learn
    requires it to be below the number of samples).  Barnes-Hut, other
    parameters at scikit-learn's defaults.

    ``n_jobs=None`` picks 1 thread below 2000 points and 2 from there on: for
    small inputs the OpenMP threads cost more than they save, and on a busy
    2-core machine they spin-wait, making a 200-point run several times slower.
    The embedding does not depend on ``n_jobs`` (checked bit-identical on a
    300-point case).  Rough cost: ~45 CPU-seconds for
    5000 points of 10-D features.
    """
    from sklearn.manifold import TSNE  # lazy: start-up time

    x = _as_points(features)
    n = x.shape[0]
    if n == 0:
        raise ValueError("tsne_2d needs at least one point")
    if n == 1:
        return np.zeros((1, 2))
    perp = float(min(float(perplexity), max(1.0, n - 1.0)))
    if perp >= n:  # only possible for n == 1, handled above; keep sklearn happy
        perp = n - 0.5
    tsne = TSNE(
        n_components=2,
        perplexity=perp,
        init="pca",
        learning_rate="auto",
        random_state=seed,
        n_jobs=(1 if n < 2000 else 2) if n_jobs is None else int(n_jobs),
    )
    return np.asarray(tsne.fit_transform(x), dtype=np.float64)


# --------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------

def intra_class_variance(points, labels, cls) -> float:
    """Mean squared Euclidean distance of the ``cls`` points to their centroid.

    Equals the trace of the (biased) covariance of the class; for an isotropic
    Gaussian with standard deviation sigma in D dimensions it is D * sigma**2.
    A small value means the forget class is still a tight cluster.
    """
    x = _as_points(points)
    y = _as_labels(labels, x.shape[0])
    f = x[_forget_mask(y, cls)]
    return float(np.mean(np.sum((f - f.mean(axis=0)) ** 2, axis=1)))


def nearest_class(points, labels, cls) -> int:
    """The other class whose centroid is closest, on average, to the ``cls`` points.

    For every other class c the mean over forget points of the Euclidean
    distance to c's centroid is computed; the class with the smallest mean wins
    (ties: smallest label).  Returned as ``int``.
    """
    x = _as_points(points)
    y = _as_labels(labels, x.shape[0])
    f = x[_forget_mask(y, cls)]
    others = [c for c in np.unique(y) if c != cls]
    if not others:
        raise ValueError("nearest_class needs at least one class besides the forget class")
    best, best_d = None, np.inf
    for c in others:
        centroid = x[y == c].mean(axis=0)
        d = float(np.mean(np.linalg.norm(f - centroid, axis=1)))
        if d < best_d:
            best, best_d = c, d
    return int(best)


def forget_silhouette(points, labels, cls) -> tuple[float, int]:
    """Silhouette of the forget class against its nearest class only.

    Following the paper's code, the points of the forget class and of its
    :func:`nearest_class` are taken, labelled forget vs nearest, and passed to
    :func:`sklearn.metrics.silhouette_score`.  Near 1: the forget class is a
    separate cluster; near 0: mixed with its neighbour.  Returns
    ``(silhouette, nearest_class)``.  With only two points in total the
    silhouette is undefined and 0.0 is returned (the convention scikit-learn
    uses for singleton clusters).
    """
    from sklearn.metrics import silhouette_score  # lazy: start-up time

    x = _as_points(points)
    y = _as_labels(labels, x.shape[0])
    near = nearest_class(x, y, cls)
    fmask = y == cls
    nmask = y == near
    sub = x[fmask | nmask]
    sub_y = fmask[fmask | nmask].astype(np.int64)
    if sub.shape[0] <= 2:
        return 0.0, near
    s = float(silhouette_score(sub, sub_y))
    if not np.isfinite(s):
        s = 0.0
    return s, near


@dataclass(eq=False)
class OverlapResult:
    """Result of :func:`kde_overlap`.

    ``overlap`` is in [0, 1].  ``xs`` (length G) and ``ys`` (length G) are the
    grid axes; ``density_forget`` and ``density_rest`` are (G, G) arrays indexed
    ``[y_index, x_index]`` (rows = y, ready for ``imshow(origin="lower")``),
    each normalised to sum to 1 over the grid.
    """

    overlap: float
    xs: np.ndarray
    ys: np.ndarray
    density_forget: np.ndarray
    density_rest: np.ndarray


def _grid_density(pts: np.ndarray, gx: np.ndarray, gy: np.ndarray,
                  cell: np.ndarray) -> np.ndarray:
    """Density of the 2-D ``pts`` on the mesh (gx, gy), normalised to sum 1.

    Uses :class:`scipy.stats.gaussian_kde` (Scott's rule, as the paper).  When
    that is impossible -- fewer than 3 points, or points on a line or all
    identical, which makes the KDE covariance singular -- it falls back to a
    sum of axis-aligned Gaussians whose width per axis is the larger of the
    grid cell and the Scott bandwidth of the data on that axis.  The result is
    always finite and sums to 1.
    """
    from scipy.stats import gaussian_kde  # lazy: start-up time

    mesh = np.vstack([gx.ravel(), gy.ravel()])
    dens = None
    if pts.shape[0] >= 3:
        try:
            with np.errstate(all="ignore"):
                kde = gaussian_kde(pts.T)
                dens = kde(mesh)
            if not np.all(np.isfinite(dens)) or dens.sum() <= 0:
                dens = None
        except (np.linalg.LinAlgError, ValueError):
            dens = None
    if dens is None:
        n = pts.shape[0]
        scott = n ** (-1.0 / 6.0)  # Scott's factor for d = 2
        sigma = np.maximum(pts.std(axis=0) * scott, cell)
        dens = np.zeros(mesh.shape[1])
        # Chunk over points to keep memory bounded.
        for start in range(0, n, 256):
            p = pts[start:start + 256]
            z = (mesh[:, None, :] - p.T[:, :, None]) / sigma[:, None, None]
            dens += np.exp(-0.5 * np.sum(z ** 2, axis=0)).sum(axis=0)
    dens = dens.reshape(gx.shape)
    total = dens.sum()
    if not np.isfinite(total) or total <= 0:
        # Every point far off-grid (cannot happen with our bounding box), but
        # never return NaN: fall back to a uniform density.
        return np.full(gx.shape, 1.0 / gx.size)
    return dens / total


def kde_overlap(points, labels, cls, *, grid: int = 200,
                margin: float = 0.05) -> OverlapResult:
    """Overlap of the forget-class density with the density of all other points.

    As in the paper's code, a Gaussian KDE (:class:`scipy.stats.gaussian_kde`)
    is fitted to the 2-D forget points and another to all remaining points;
    both are evaluated on a ``grid`` x ``grid`` mesh spanning the bounding box
    of all points, widened by ``margin`` times its extent on each side.

    Normalisation (ours): each density is normalised to sum 1 over the grid
    before the pointwise minimum is summed, so ``overlap`` is in [0, 1]:
    1 = identical distributions, 0 = disjoint.  It equals one minus the
    total-variation distance of the two discretised densities.

    Degenerate inputs (forget points all identical or collinear, fewer than 3
    points) make the KDE covariance singular; these fall back to a fixed
    bandwidth of at least one grid cell (see :func:`_grid_density`), so the
    result is always finite.
    """
    x = _as_points(points)
    if x.shape[1] != 2:
        raise ValueError(f"kde_overlap needs 2-D points, got {x.shape[1]}-D "
                         "(use distribution_metrics for PCA to 2-D)")
    y = _as_labels(labels, x.shape[0])
    fmask = _forget_mask(y, cls)
    if fmask.all():
        raise ValueError("kde_overlap needs points outside the forget class")
    grid = int(grid)
    if grid < 2:
        raise ValueError(f"grid must be >= 2, got {grid}")

    lo = x.min(axis=0)
    hi = x.max(axis=0)
    extent = hi - lo
    extent = np.where(extent > 0, extent, 1.0)
    lo = lo - margin * extent
    hi = hi + margin * extent
    xs = np.linspace(lo[0], hi[0], grid)
    ys = np.linspace(lo[1], hi[1], grid)
    gx, gy = np.meshgrid(xs, ys)  # shape (len(ys), len(xs)): rows = y
    cell = (hi - lo) / (grid - 1)

    df = _grid_density(x[fmask], gx, gy, cell)
    dr = _grid_density(x[~fmask], gx, gy, cell)
    overlap = float(np.clip(np.minimum(df, dr).sum(), 0.0, 1.0))
    return OverlapResult(overlap=overlap, xs=xs, ys=ys,
                         density_forget=df, density_rest=dr)


def paper_kde_overlap(points, labels, cls, *, grid: int = 200, pad: float = 1.0) -> float:
    """The paper's KDE overlap, as its 2024 code computes it (``calculate_overlap`` in
    ``feature_visualization_metric_main.py``), for comparison with its published numbers.

    Gaussian KDEs of the forget points and of all other points, evaluated on a ``grid`` x
    ``grid`` mesh over the points' bounding box widened by ``pad`` (t-SNE units) on each side;
    the pointwise minimum of the two *raw* densities is summed without the cell area. The
    number therefore grows with the grid and shrinks as the embedding's extent grows (it is
    not bounded by 1); :func:`kde_overlap` is our normalised version.
    """
    from scipy.stats import gaussian_kde  # lazy: start-up time

    x = _as_points(points)
    y = _as_labels(labels, x.shape[0])
    fmask = _forget_mask(y, cls)
    if x.shape[1] != 2 or fmask.all() or fmask.sum() < 3:
        raise ValueError("paper_kde_overlap needs 2-D points, >= 3 of the forget class and some others")
    lo, hi = x.min(axis=0) - pad, x.max(axis=0) + pad
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], grid), np.linspace(lo[1], hi[1], grid), indexing="ij")
    pos = np.vstack([gx.ravel(), gy.ravel()])
    return float(np.minimum(gaussian_kde(x[fmask].T)(pos), gaussian_kde(x[~fmask].T)(pos)).sum())


def _pca_2d(x: np.ndarray) -> np.ndarray:
    """Project ``x`` (N, D) onto its first two principal components (N, 2).

    Columns beyond the rank of the data (or D < 2) are zero.
    """
    xc = x - x.mean(axis=0)
    if xc.shape[1] == 1:
        return np.hstack([xc, np.zeros_like(xc)])
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    proj = xc @ vt[:2].T
    if proj.shape[1] < 2:
        proj = np.hstack([proj, np.zeros((proj.shape[0], 2 - proj.shape[1]))])
    return proj


def distribution_metrics(points, labels, cls, *, overlap: OverlapResult | None = None) -> dict:
    """All forget-class metrics of the paper in one dict.

    Keys: ``intra_class_variance`` (float), ``silhouette`` (float),
    ``nearest_class`` (int), ``overlap`` (float in [0, 1]).

    Variance and silhouette are computed in the given space of any dimension D
    (normally the 2-D t-SNE embedding).  The KDE overlap needs 2-D points: for
    D > 2 (e.g. applying the metrics to the raw logits) it is computed on the
    first two principal components of all points, and for D == 1 on the value
    with a constant second coordinate. ``overlap``: the :func:`kde_overlap` of these 2-D points, when the
    caller has it already (its plot), so it is not computed twice.
    """
    x = _as_points(points)
    y = _as_labels(labels, x.shape[0])
    var = intra_class_variance(x, y, cls)
    sil, near = forget_silhouette(x, y, cls)
    x2 = x if x.shape[1] == 2 else _pca_2d(x)
    ov = (overlap if overlap is not None and x.shape[1] == 2 else kde_overlap(x2, y, cls)).overlap
    return {
        "intra_class_variance": var,
        "silhouette": sil,
        "nearest_class": near,
        "overlap": ov,
    }


# --------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------

def _new_figure(figsize=(6.0, 5.0)):
    """A figure on the Agg canvas (no pyplot state, works without a screen)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: start-up time
    from matplotlib.figure import Figure  # lazy: start-up time

    fig = Figure(figsize=figsize, dpi=150)
    FigureCanvasAgg(fig)
    return fig


def _class_name(c, class_names) -> str:
    if class_names is None:
        return f"class {c}"
    if isinstance(class_names, Mapping):
        return str(class_names.get(c, f"class {c}"))
    try:
        return str(class_names[int(c)])
    except (IndexError, TypeError, ValueError):
        return f"class {c}"


def plot_tsne(stem, points, labels, forget_cls, *,
              class_names: Sequence[str] | Mapping | None = None,
              title: str = "") -> None:
    """Scatter plot of a 2-D embedding with the forget class highlighted.

    Other classes are drawn small and semi-transparent in muted colours; the
    forget class is drawn on top in strong red with larger, edged markers, so
    the residual cluster described in the paper is easy to see.  The legend
    lists every class when there are at most 10 others, otherwise just
    "forget" vs "other classes".  Saves ``<stem>.png`` and ``<stem>.pdf``.
    """
    import seaborn as sns  # lazy: start-up time

    x = _as_points(points)
    if x.shape[1] != 2:
        raise ValueError(f"plot_tsne needs 2-D points, got {x.shape[1]}-D")
    y = _as_labels(labels, x.shape[0])
    fmask = y == forget_cls
    others = [c for c in np.unique(y) if c != forget_cls]
    palette = sns.color_palette("muted" if len(others) <= 10 else "husl", len(others))
    palette = [sns.desaturate(c, 0.6) for c in palette]

    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    few = len(others) <= 10
    for i, c in enumerate(others):
        m = y == c
        ax.scatter(x[m, 0], x[m, 1], s=4, color=palette[i], alpha=0.45,
                   linewidths=0, zorder=1,
                   label=_class_name(c, class_names) if few else
                   ("other classes" if i == 0 else None))
    if fmask.any():
        ax.scatter(x[fmask, 0], x[fmask, 1], s=14, color="#d62728",
                   edgecolors="black", linewidths=0.3, alpha=0.95, zorder=3,
                   label=f"{_class_name(forget_cls, class_names)} (forget)")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    if title:
        ax.set_title(title)
    leg = ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7,
                    markerscale=2.0, frameon=False)
    for h in getattr(leg, "legend_handles", getattr(leg, "legendHandles", [])):
        try:
            h.set_alpha(1.0)
        except AttributeError:
            pass
    save_figure(fig, stem, bbox_inches="tight")


def plot_overlap(stem, result: OverlapResult, *, title: str = "") -> None:
    """Heat map of min(density_forget, density_rest) with contours of each density.

    The heat map shows where the forget class and the rest share mass (its sum
    is ``result.overlap``); red contours outline the forget density, blue ones
    the density of the other classes.  Saves ``<stem>.png`` and ``<stem>.pdf``.
    """
    xs, ys = result.xs, result.ys
    df, dr = result.density_forget, result.density_rest
    inter = np.minimum(df, dr)
    extent = (xs[0], xs[-1], ys[0], ys[-1])

    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(inter, origin="lower", extent=extent, aspect="auto",
                   cmap="viridis", interpolation="nearest")
    cb = fig.colorbar(im, ax=ax)
    cb.set_label("min(forget, rest) density")
    for dens, colour in ((df, "#d62728"), (dr, "#4c72b0")):
        top = float(dens.max())
        if top > 0 and float(dens.min()) < top:
            levels = top * np.array([0.1, 0.3, 0.6, 0.9])
            ax.contour(xs, ys, dens, levels=levels, colors=colour, linewidths=0.8)
    from matplotlib.lines import Line2D  # lazy: start-up time
    ax.legend(handles=[Line2D([], [], color="#d62728", label="forget class"),
                       Line2D([], [], color="#4c72b0", label="other classes")],
              loc="upper right", fontsize=7)
    head = f"KDE overlap = {result.overlap:.3f}"
    ax.set_title(f"{title}\n{head}" if title else head)
    ax.set_xlabel("dim 1")
    ax.set_ylabel("dim 2")
    save_figure(fig, stem, bbox_inches="tight")
