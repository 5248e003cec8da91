"""Tables, verdicts and figures of the reproduction study (:mod:`unlearn.study.plan`).

Every number is computed here from the per-seed cells that :func:`unlearn.study.plan.collect`
read from the runs' ``results.json``; intervals are Student-t intervals over seeds
(:func:`unlearn.study.plan.mean_ci`), paired by seed where a difference is reported. The
verdict rules are written out in :func:`verdicts` and in the document they produce.
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np

from ..methods import get_method
from ..store.checkpoint import save_figure
from .plan import mean_ci

RESIDUAL = "residual"
# The paper's figures (../shared/reference/paper-protocol.md: the 2024 appendix, CIFAR-20).
PAPER = {
    1: "ReA balanced accuracy 92.0% (Bad Teacher), 94.5% (SSD); retraining 50.75% (CIFAR-20, 3% subset)",
    2: "Bad Teacher / SSD under OUR 50.25% / 52.75%, retraining 49.25% (CIFAR-20, 10% subset); "
       "OUR at 2-12% of retraining's time",
    3: "t-SNE variance / KDE overlap: pretrained 50.4 / 0.0066, retrain 351.4 / 0.914, Bad Teacher 53.0 / 0.026, "
       "SSD 51.6 / 0.0066, Bad Teacher (OUR) 460.5 / 0.853, SSD (OUR) 467.0 / 0.799",
}
KEY_PLAIN = ("badteacher", "ssd_tuning")  # the methods whose numbers the paper publishes
KEY_OUR = ("badteacher_our", "ssd_tuning_our", "OUR")


def fmt(x, digits: int = 2) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def fmt_ci(values, digits: int = 2) -> str:
    m, lo, hi, n = mean_ci(values)
    if n == 0:
        return "–"
    return fmt(m, digits) if n < 2 else f"{fmt(m, digits)} [{fmt(lo, digits)}, {fmt(hi, digits)}]"


def fmt_sd(values, digits: int = 2) -> str:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if v.size == 0:
        return "–"
    return fmt(v.mean(), digits) + (f" ± {fmt(v.std(ddof=1), digits)}" if v.size > 1 else "")


def col(cells, key):
    return [c.get(key, math.nan) for c in cells]


def votes(cells, key) -> str:
    """Directions over seeds, e.g. ``residual 3/3`` or ``inside null band 2/3, residual 1/3``."""
    v = Counter(c.get(key) for c in cells if c.get(key))
    n = sum(v.values())
    return ", ".join(f"{d} {k}/{n}" for d, k in v.most_common()) or "–"


def n_residual(cells, short: str) -> int:
    return sum(c.get(f"rea_dir_{short}") == RESIDUAL for c in cells)


def plain_methods(grid) -> list[str]:
    return [m for m in grid if m not in ("baseline", "retrain") and not get_method(m)[1]]


def our_pairs(grid) -> list[tuple[str, str]]:
    return [(m[: -len("_our")], m) for m in grid if m.endswith("_our") and m[: -len("_our")] in grid]


def paired(a_cells, b_cells, key) -> list[float]:
    """``a - b`` per seed (seeds present in both)."""
    b = {c["seed"]: c.get(key, math.nan) for c in b_cells}
    return [c.get(key, math.nan) - b[c["seed"]] for c in a_cells if c["seed"] in b]


# ---------------------------------------------------------------- tables

def _md(header, rows) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(out)


def claim1_table(grid) -> str:
    head = ["method", "d_f", "d_t", "index, output [95% CI]", "direction, output", "index, feature [95% CI]",
            "direction, feature", "bal. acc. out", "bal. acc. feat"]
    rows = []
    for m in ["baseline", "retrain", *plain_methods(grid)]:
        c = grid[m]
        rows.append([m, fmt_sd(col(c, "d_f"), 1), fmt_sd(col(c, "d_t"), 1), fmt_ci(col(c, "rea_index_out")),
                     votes(c, "rea_dir_out"), fmt_ci(col(c, "rea_index_feat")), votes(c, "rea_dir_feat"),
                     fmt_sd(col(c, "rea_bacc_out")), fmt_sd(col(c, "rea_bacc_feat"))])
    return _md(head, rows)


def claim2_rows(grid) -> list[dict]:
    """Paired (by seed) differences ``_our`` − plain, and OUR − retrain."""
    pairs = our_pairs(grid) + ([("retrain", "OUR")] if "OUR" in grid and "retrain" in grid else [])
    out = []
    for plain, our in pairs:
        a, b = grid[our], grid[plain]
        out.append({"method": our, "against": plain,
                    **{f"d_{k}": paired(a, b, k) for k in ("rea_index_out", "rea_index_feat", "d_t", "time")},
                    "dir_out": votes(a, "rea_dir_out"), "dir_feat": votes(a, "rea_dir_feat"),
                    "time_pct": col(a, "time_pct")})
    return out


def claim2_table(grid) -> str:
    head = ["run", "against", "Δ index, output", "Δ index, feature", "Δ d_t (points)", "Δ time (s)",
            "direction out (run)", "direction feat (run)", "time, % of retrain"]
    rows = [[r["method"], r["against"], fmt_ci(r["d_rea_index_out"]), fmt_ci(r["d_rea_index_feat"]),
             fmt_ci(r["d_d_t"], 1), fmt_ci(r["d_time"], 1), r["dir_out"], r["dir_feat"], fmt_sd(r["time_pct"], 1)]
            for r in claim2_rows(grid)]
    return _md(head, rows)


def claim3_table(grid) -> str:
    head = ["method", "variance", "silhouette", "overlap (ours, 0-1)", "overlap (paper's raw sum)"]
    order = ["baseline", "retrain", *plain_methods(grid), *[o for _, o in our_pairs(grid)],
             *(["OUR"] if "OUR" in grid else [])]
    rows = [[m, fmt_sd(col(grid[m], "variance"), 1), fmt_sd(col(grid[m], "silhouette"), 3),
             fmt_sd(col(grid[m], "overlap"), 3), fmt_sd(col(grid[m], "overlap_paper"), 4)] for m in order]
    return _md(head, rows)


def tradeoff_table(sweep) -> str:
    head = ["method", "strength", "replay epochs", "swept parameter", "d_t", "d_f", "index, feature", "direction, feature",
            "index, output", "time, % of retrain"]
    rows = [[p.method, f"{p.strength:g}", p.replay, f"{p.value:g}", fmt_sd(col(p.cells, "d_t"), 1),
             fmt_sd(col(p.cells, "d_f"), 1), fmt_ci(col(p.cells, "rea_index_feat")), votes(p.cells, "rea_dir_feat"),
             fmt_ci(col(p.cells, "rea_index_out")), fmt_sd(col(p.cells, "time_pct"), 1)] for p in sweep]
    return _md(head, rows)


# ---------------------------------------------------------------- verdicts

def _mean(values) -> float:
    return mean_ci(values)[0]


def verdicts(data: dict) -> list[dict]:
    """One verdict per claim for one dataset (``data`` from :func:`unlearn.study.plan.collect`).

    Claim 1 holds when Bad Teacher and SSD are ``residual`` at some level in every seed, does not
    hold when neither is in any seed, else mixed. Claim 2 has two parts: removal (Bad Teacher and
    SSD under OUR, and OUR itself, are ``residual`` in no seed at either level) and price (each at
    most 12% of retraining's time); holds when both do, does not hold when neither does. Claim 3
    holds when retraining and the three OUR runs all raise the forget class's t-SNE variance and
    KDE overlap above the pretrained model's, and Bad Teacher and SSD raise them less than their
    OUR variants; does not hold when none of the four raises both, else mixed.
    """
    g = data["grid"]
    nseeds = len(data["seeds"])
    out = []
    # claim 1
    res = {m: max(n_residual(g[m], "out"), n_residual(g[m], "feat")) for m in KEY_PLAIN if m in g}
    plain = plain_methods(g)
    anyres = [m for m in plain if n_residual(g[m], "out") + n_residual(g[m], "feat") > 0]
    v = ("holds" if res and all(k == nseeds for k in res.values()) else
         "does not hold" if not any(res.values()) else "mixed")
    ours = "; ".join(f"{m}: index out {fmt_ci(col(g[m], 'rea_index_out'))}, feat {fmt_ci(col(g[m], 'rea_index_feat'))}"
                     f", bal. acc. {fmt(_mean(col(g[m], 'rea_bacc_out')))} / {fmt(_mean(col(g[m], 'rea_bacc_feat')))}"
                     for m in KEY_PLAIN if m in g)
    ours += (f"; retrain bal. acc. {fmt(_mean(col(g['retrain'], 'rea_bacc_out')))} / "
             f"{fmt(_mean(col(g['retrain'], 'rea_bacc_feat')))}")
    why = (f"residual (index interval above the retrain null band) in {', '.join(f'{m} {k}/{nseeds}' for m, k in res.items())}"
           f" seeds at the output or feature level; {len(anyres)} of {len(plain)} plain methods are residual in at "
           f"least one seed ({', '.join(anyres) or 'none'})")
    out.append(dict(claim=1, paper=PAPER[1], ours=ours, verdict=v, why=why))
    # claim 2
    removed = {m: n_residual(g[m], "out") + n_residual(g[m], "feat") == 0 for m in KEY_OUR if m in g}
    cost = {m: _mean(col(g[m], "time_pct")) for m in KEY_OUR if m in g}
    cheap = {m: np.isfinite(c) and c <= 12.0 for m, c in cost.items()}
    parts = [all(removed.values()), all(cheap.values())]
    v = "holds" if all(parts) else "does not hold" if not any(parts) else "mixed"
    ours = "; ".join(f"{m}: {votes(g[m], 'rea_dir_feat')} (feature), {votes(g[m], 'rea_dir_out')} (output), "
                     f"{fmt(cost[m], 1)}% of retrain" for m in removed)
    left = [m for m, ok in removed.items() if not ok]
    nothing = [m for m in KEY_PLAIN if m in g and max(n_residual(g[m], "out"), n_residual(g[m], "feat")) == 0]
    why = ("no residual left" if not left else f"still residual in some seed: {', '.join(left)}") + "; price " + (
        "within the paper's 2-12%" if parts[1] else
        f"above 12% for {', '.join(m for m, ok in cheap.items() if not ok)}")
    if nothing:
        why += f"; {', '.join(nothing)} left nothing residual to remove in the first place"
    out.append(dict(claim=2, paper=PAPER[2], ours=ours, verdict=v, why=why))
    # claim 3
    base_v, base_o = _mean(col(g["baseline"], "variance")), _mean(col(g["baseline"], "overlap"))
    spreaders = [m for m in ("retrain", *KEY_OUR) if m in g]
    raised = {m: _mean(col(g[m], "variance")) > base_v and _mean(col(g[m], "overlap")) > base_o for m in spreaders}
    less = [p for p in KEY_PLAIN if p in g and p + "_our" in g and
            _mean(col(g[p], "variance")) < _mean(col(g[p + "_our"], "variance"))
            and _mean(col(g[p], "overlap")) < _mean(col(g[p + "_our"], "overlap"))]
    v = ("holds" if all(raised.values()) and len(less) == len([p for p in KEY_PLAIN if p in g]) else
         "does not hold" if not any(raised.values()) else "mixed")
    ours = "; ".join(f"{m} {fmt(_mean(col(g[m], 'variance')), 1)} / {fmt(_mean(col(g[m], 'overlap')), 3)}"
                     for m in ("baseline", "retrain", *KEY_PLAIN, *KEY_OUR) if m in g)
    why = (f"raise both above the pretrained model: {', '.join(m for m, ok in raised.items() if ok) or 'none'}; "
           f"do not: {', '.join(m for m, ok in raised.items() if not ok) or 'none'}; plain methods below their OUR "
           f"variant on both: {', '.join(less) or 'none'}")
    out.append(dict(claim=3, paper=PAPER[3], ours="variance / overlap (ours): " + ours, verdict=v, why=why))
    return out


def verdict_table(per_dataset: dict) -> str:
    rows = []
    for ds, vs in per_dataset.items():
        for v in vs:
            rows.append([v["claim"], ds, v["paper"], v["ours"], f"**{v['verdict']}**", v["why"]])
    return _md(["claim", "dataset", "paper", "ours (mean [95% CI over seeds])", "verdict", "why"], rows)


# ---------------------------------------------------------------- figures

def _band(cells_by_run, short: str) -> tuple[float, float]:
    lo = [c[f"band_lo_{short}"] for cs in cells_by_run for c in cs if np.isfinite(c.get(f"band_lo_{short}", np.nan))]
    hi = [c[f"band_hi_{short}"] for cs in cells_by_run for c in cs if np.isfinite(c.get(f"band_hi_{short}", np.nan))]
    return (float(np.mean(lo)), float(np.mean(hi))) if lo else (math.nan, math.nan)


def plot_tradeoff(stem, data: dict) -> list[str]:
    """Residual index (feature level) against d_t, one panel per method: colour = over-unlearning
    strength, marker = replay length; grey = retrain null band; star = pretrained model; cross =
    retrain; error bars = 95% intervals over seeds (per-run bootstrap interval with one seed)."""
    from matplotlib import cm  # lazy: start-up time
    from matplotlib.figure import Figure  # lazy: start-up time

    sweep, g = data["tradeoff"], data["grid"]
    methods = list(dict.fromkeys(p.method for p in sweep))
    fig = Figure(figsize=(5.2 * len(methods) / 2, 8.4), layout="constrained")
    axes = fig.subplots(2, (len(methods) + 1) // 2, squeeze=False).ravel()
    strengths = sorted({p.strength for p in sweep})
    colours = {f: cm.viridis(i / max(len(strengths) - 1, 1)) for i, f in enumerate(strengths)}
    markers = ["v", "o", "^", "s", "D"]
    lo, hi = _band([p.cells for p in sweep] + [g["retrain"]], "feat")
    for ax, m in zip(axes, methods):
        pts = [p for p in sweep if p.method == m]
        replays = sorted({p.replay for p in pts})
        if np.isfinite(lo):
            ax.axhspan(lo, hi, color="0.85", label="retrain null band (95%)")
        for p in pts:
            mx, _, _, _ = mean_ci(col(p.cells, "d_t"))
            my, ylo, yhi, n = mean_ci(col(p.cells, "rea_index_feat"))
            if n == 1:
                ylo, yhi = p.cells[0].get("rea_lo_feat", math.nan), p.cells[0].get("rea_hi_feat", math.nan)
            if not np.isfinite(my):
                continue
            err = [[my - ylo], [yhi - my]] if np.isfinite(ylo) else None
            ax.errorbar([mx], [my], yerr=err, fmt=markers[replays.index(p.replay) % len(markers)],
                        color=colours[p.strength], ms=7, capsize=2, label=f"x{p.strength:g}, replay {p.replay}")
        for name, marker, colour in (("baseline", "*", "crimson"), ("retrain", "X", "black")):
            ax.plot([mean_ci(col(g[name], "d_t"))[0]], [mean_ci(col(g[name], "rea_index_feat"))[0]], marker,
                    color=colour, ms=12, label=name)
        ax.axhline(0, color="0.5", lw=0.5)
        ax.set_title(m)
        ax.set_xlabel("d_t: retain-class test accuracy (%)")
        ax.set_ylabel("reminiscence index, feature level")
        ax.legend(fontsize=6, ncol=2)
    for ax in axes[len(methods):]:
        ax.set_visible(False)
    fig.suptitle(f"{data['tag']}, forget class {data['forget_class']}: the defence's trade-off "
                 f"(seeds {sorted({c['seed'] for p in sweep for c in p.cells})})")
    return save_figure(fig, stem)


def plot_indices(stem, data: dict) -> list[str]:
    """Claims 1 and 2 at a glance: each plain method's index and its ``_our`` variant's (mean and
    95% interval over seeds), output and feature level, against the retrain null band."""
    from matplotlib.figure import Figure  # lazy: start-up time
    from matplotlib.lines import Line2D  # lazy: start-up time
    from matplotlib.patches import Patch  # lazy: start-up time

    g = data["grid"]
    pairs = our_pairs(g) + ([("retrain", "OUR")] if "OUR" in g else [])
    fig = Figure(figsize=(12, 0.45 * len(pairs) + 1.8), layout="constrained")
    for ax, short, level in zip(fig.subplots(1, 2), ("out", "feat"), ("output", "feature")):
        lo, hi = _band(list(g.values()), short)
        if np.isfinite(lo):
            ax.axvspan(lo, hi, color="0.85", label="retrain null band")
        for i, (p, o) in enumerate(pairs):
            for name, dy, colour in ((p, 0.15, "tab:red"), (o, -0.15, "tab:blue")):
                m, a, b, n = mean_ci(col(g[name], f"rea_index_{short}"))
                if np.isfinite(m):
                    ax.errorbar([m], [i + dy], xerr=[[m - a], [b - m]] if n > 1 else None, fmt="o", color=colour,
                                ms=4, capsize=2)
        ax.set_yticks(range(len(pairs)), [o for _, o in pairs])
        ax.axvline(0, color="0.4", lw=0.6)
        ax.axvline(1, color="crimson", lw=0.6, ls="--")
        ax.set_xlabel(f"reminiscence index, {level} level (0 = retrain, 1 = pretrained)")
        handles = [Patch(color="0.85", label="retrain null band"),
                   Line2D([], [], marker="o", ls="", color="tab:red", label="plain (retrain for OUR)"),
                   Line2D([], [], marker="o", ls="", color="tab:blue", label="_our (OUR)")]
        ax.legend(handles=handles, fontsize=7)
    fig.suptitle(f"{data['tag']}, forget class {data['forget_class']}, seeds {data['seeds']}")
    return save_figure(fig, stem)
