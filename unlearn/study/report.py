"""Tables, verdicts and figures of the reproduction study (:mod:`unlearn.study.plan`).

Every number is computed here from what :func:`unlearn.study.plan.collect` read from the runs'
``results.json``: the per-run cells (replicates x seeds; intervals are Student-t intervals over
them, :func:`unlearn.study.plan.mean_ci`, paired by replicate and seed where a difference is
reported) and the replicated verdicts of run.py's table (one per method and game, over the
replicates against the retrained references). The claims are judged from those verdicts only,
by the rules written out in :func:`verdicts` and in the document they produce.
"""
from __future__ import annotations

import math
import numpy as np

from ..methods import get_method
from ..store.checkpoint import save_figure
from .plan import mean_ci

# The two games, judged and reported apart: ours against retrained models at both levels, and the
# paper's OOD game (forget-class against relabelled OOD relearning) against the references' same game.
GAMES = {"retrain game": ("verdict_out", "verdict_feat"), "OOD game": ("verdict_ood",)}
PRICE_PCT = 12.0  # the paper's upper end of "2-12% of retraining's cost"
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


def verdict_text(v: dict, key: str) -> str:
    """One replicated verdict with its (Holm-adjusted) p, e.g. ``residual (p 0.029)``, ``equivalent (TOST p 0.01)``."""
    label = (v or {}).get(key)
    if not label:
        return "–"
    short = key.rsplit("_", 1)[-1]
    p = v.get(f"verdict_p_equiv_{short}") if label == "equivalent" else v.get(f"verdict_p_{short}")
    name = "TOST p" if label == "equivalent" else "p"
    return f"{label} ({name} {p:.2g})" if p is not None and np.isfinite(p) else label


def combined(v: dict, keys) -> str:
    """One method's reading of a game from its verdicts at ``keys`` (levels): ``residual`` if any level is,
    else ``over-suppressed`` if any is, ``equivalent`` only if every level is, else ``undetermined``;
    ``no verdict`` where a level has none (a run missing)."""
    labels = [(v or {}).get(k) for k in keys]
    if any(not x for x in labels):
        return "no verdict"
    for label in ("residual", "over-suppressed"):
        if label in labels:
            return label
    return "equivalent" if all(x == "equivalent" for x in labels) else "undetermined"


def plain_methods(grid) -> list[str]:
    return [m for m in grid if m not in ("baseline", "retrain") and not get_method(m)[1]]


def our_pairs(grid) -> list[tuple[str, str]]:
    return [(m[: -len("_our")], m) for m in grid if m.endswith("_our") and m[: -len("_our")] in grid]


def paired(a_cells, b_cells, key) -> list[float]:
    """``a - b`` per replicate and seed (those present in both)."""
    b = {(c["replicate"], c["seed"]): c.get(key, math.nan) for c in b_cells}
    return [c.get(key, math.nan) - b[(c["replicate"], c["seed"])] for c in a_cells
            if (c["replicate"], c["seed"]) in b]


# ---------------------------------------------------------------- tables

def _md(header, rows) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(out)


def claim1_table(grid, verdicts) -> str:
    head = ["method", "d_f", "d_t", "verdict, output", "verdict, feature", "verdict, OOD game",
            "index, output [95% CI]", "index, feature [95% CI]", "bal. acc. out", "bal. acc. feat"]
    rows = []
    for m in ["baseline", "retrain", *plain_methods(grid)]:
        c, v = grid[m], verdicts.get(m)
        rows.append([m, fmt_sd(col(c, "d_f"), 1), fmt_sd(col(c, "d_t"), 1), verdict_text(v, "verdict_out"),
                     verdict_text(v, "verdict_feat"), verdict_text(v, "verdict_ood"),
                     fmt_ci(col(c, "rea_index_out")), fmt_ci(col(c, "rea_index_feat")),
                     fmt_sd(col(c, "rea_bacc_out")), fmt_sd(col(c, "rea_bacc_feat"))])
    return _md(head, rows)


def claim2_rows(grid, verdicts) -> list[dict]:
    """Paired (by replicate and seed) differences ``_our`` − plain, and OUR − retrain, with the run's verdicts."""
    pairs = our_pairs(grid) + ([("retrain", "OUR")] if "OUR" in grid and "retrain" in grid else [])
    out = []
    for plain, our in pairs:
        a, b = grid[our], grid[plain]
        out.append({"method": our, "against": plain,
                    **{f"d_{k}": paired(a, b, k) for k in ("rea_index_out", "rea_index_feat", "d_t", "time")},
                    "verdicts": verdicts.get(our) or {}, "time_pct": col(a, "time_pct"),
                    "work_pct": col(a, "work_pct")})
    return out


def claim2_table(grid, verdicts) -> str:
    head = ["run", "against", "verdict, output", "verdict, feature", "verdict, OOD game", "Δ index, output",
            "Δ index, feature", "Δ d_t (points)", "time, % of retrain", "training examples, % of retrain"]
    rows = [[r["method"], r["against"], *(verdict_text(r["verdicts"], k) for k in
                                          ("verdict_out", "verdict_feat", "verdict_ood")),
             fmt_ci(r["d_rea_index_out"]), fmt_ci(r["d_rea_index_feat"]), fmt_ci(r["d_d_t"], 1),
             fmt_sd(r["time_pct"], 1), fmt_sd(r["work_pct"], 1)] for r in claim2_rows(grid, verdicts)]
    return _md(head, rows)


def claim3_table(grid) -> str:
    head = ["method", "variance", "silhouette", "overlap (ours, 0-1)", "overlap (paper's raw sum)"]
    order = ["baseline", "retrain", *plain_methods(grid), *[o for _, o in our_pairs(grid)],
             *(["OUR"] if "OUR" in grid else [])]
    rows = [[m, fmt_sd(col(grid[m], "variance"), 1), fmt_sd(col(grid[m], "silhouette"), 3),
             fmt_sd(col(grid[m], "overlap"), 3), fmt_sd(col(grid[m], "overlap_paper"), 4)] for m in order]
    return _md(head, rows)


def tradeoff_table(sweep) -> str:
    head = ["method", "strength", "replay epochs", "swept parameter", "d_t", "d_f", "verdict, feature",
            "verdict, output", "index, feature", "time, % of retrain", "training examples, % of retrain"]
    rows = [[p.method, f"{p.strength:g}", p.replay, f"{p.value:g}", fmt_sd(col(p.cells, "d_t"), 1),
             fmt_sd(col(p.cells, "d_f"), 1), verdict_text(p.verdicts, "verdict_feat"),
             verdict_text(p.verdicts, "verdict_out"), fmt_ci(col(p.cells, "rea_index_feat")),
             fmt_sd(col(p.cells, "time_pct"), 1), fmt_sd(col(p.cells, "work_pct"), 1)] for p in sweep]
    return _md(head, rows)


# ---------------------------------------------------------------- verdicts

def _mean(values) -> float:
    return mean_ci(values)[0]


def _grade(readings: dict, *, want: str) -> str:
    """A claim from its methods' readings: ``holds`` when every one reads ``want``; ``does not hold`` when
    none does and each is decided otherwise (for removal: when any is residual or over-suppressed);
    ``mixed`` when some do and the others are decided otherwise; else ``undetermined``."""
    got = list(readings.values())
    if not got:
        return "undetermined"
    if all(x == want for x in got):
        return "holds"
    if want == "equivalent":
        return "does not hold" if any(x in ("residual", "over-suppressed") for x in got) else "undetermined"
    decided = [x for x in got if x not in ("undetermined", "no verdict")]
    if len(decided) < len(got):
        return "undetermined"
    return "mixed" if want in got else "does not hold"


def _readings_text(readings: dict) -> str:
    return ", ".join(f"{m} {r}" for m, r in readings.items()) or "none"


def verdicts(data: dict) -> list[dict]:
    """The claims for one dataset (``data`` from :func:`unlearn.study.plan.collect`), from the replicated
    verdicts only; each game (:data:`GAMES`) judged apart.

    A method reads a game as :func:`combined` of its levels. Claim 1 (residual knowledge after plain
    unlearning) holds in a game when Bad Teacher and SSD both read ``residual``; does not hold when
    neither does and both are decided; mixed when one does and the other is decided; else undetermined.
    Claim 2, removal, holds in a game when Bad Teacher and SSD under OUR and OUR itself all read
    ``equivalent``; does not hold when any reads ``residual`` or ``over-suppressed`` (over-suppressed
    is not removal: the attack tells the model from retrained ones); else undetermined. Claim 2,
    price, holds when each costs at most 12% of retraining both in wall time and in training
    examples (mean over the runs); does not hold when neither measure is within 12% for any; else
    mixed. Claim 3 is descriptive (no test): it holds when retraining and the three OUR runs raise
    the forget class's t-SNE variance and KDE overlap above the pretrained model's and Bad Teacher
    and SSD raise them less than their OUR variants; does not hold when none of the four raises
    both; else mixed.
    """
    g, vs = data["grid"], data["verdicts"]
    out = []
    for game, keys in GAMES.items():
        readings = {m: combined(vs.get(m), keys) for m in KEY_PLAIN if m in g}
        plain = plain_methods(g)
        res = [m for m in plain if combined(vs.get(m), keys) == "residual"]
        ours = "; ".join(f"{m}: " + ", ".join(verdict_text(vs.get(m), k) for k in keys) for m in readings)
        why = (f"{_readings_text(readings)}; {len(res)} of {len(plain)} plain methods read residual "
               f"({', '.join(res) or 'none'})")
        out.append(dict(claim=1, part=game, paper=PAPER[1], ours=ours, verdict=_grade(readings, want="residual"),
                        why=why))
    for game, keys in GAMES.items():
        readings = {m: combined(vs.get(m), keys) for m in KEY_OUR if m in g}
        ours = "; ".join(f"{m}: " + ", ".join(verdict_text(vs.get(m), k) for k in keys) for m in readings)
        why = _readings_text(readings)
        if any(r == "over-suppressed" for r in readings.values()):
            why += " (over-suppressed is not removal)"
        out.append(dict(claim=2, part=f"removal, {game}", paper=PAPER[2], ours=ours,
                        verdict=_grade(readings, want="equivalent"), why=why))
    cost = {m: (_mean(col(g[m], "time_pct")), _mean(col(g[m], "work_pct"))) for m in KEY_OUR if m in g}
    within = {m: [np.isfinite(x) and x <= PRICE_PCT for x in c] for m, c in cost.items()}
    v = ("holds" if within and all(all(w) for w in within.values()) else
         "does not hold" if not any(any(w) for w in within.values()) else "mixed")
    ours = "; ".join(f"{m}: {fmt(t, 1)}% of retraining's time, {fmt(e, 1)}% of its training examples"
                     for m, (t, e) in cost.items())
    over = [f"{m} ({' and '.join(n for n, ok in zip(('time', 'examples'), w) if not ok)})"
            for m, w in within.items() if not all(w)]
    why = f"above {PRICE_PCT:g}%: {', '.join(over)}" if over else f"every one within {PRICE_PCT:g}% on both measures"
    out.append(dict(claim=2, part="price", paper=PAPER[2], ours=ours, verdict=v, why=why))
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
    why = (f"descriptive, means over the runs, no test; raise both above the pretrained model: "
           f"{', '.join(m for m, ok in raised.items() if ok) or 'none'}; do not: "
           f"{', '.join(m for m, ok in raised.items() if not ok) or 'none'}; plain methods below their OUR "
           f"variant on both: {', '.join(less) or 'none'}")
    out.append(dict(claim=3, part="spread", paper=PAPER[3], ours="variance / overlap (ours): " + ours, verdict=v,
                    why=why))
    return out


def verdict_table(per_dataset: dict) -> str:
    rows = []
    for ds, vs in per_dataset.items():
        for v in vs:
            rows.append([v["claim"], v["part"], ds, v["paper"], v["ours"], f"**{v['verdict']}**", v["why"]])
    return _md(["claim", "part", "dataset", "paper", "ours (replicated verdicts; costs: mean over the runs)",
                "verdict", "why"], rows)


# ---------------------------------------------------------------- figures

def _band(cells_by_run, short: str) -> tuple[float, float]:
    lo = [c[f"band_lo_{short}"] for cs in cells_by_run for c in cs if np.isfinite(c.get(f"band_lo_{short}", np.nan))]
    hi = [c[f"band_hi_{short}"] for cs in cells_by_run for c in cs if np.isfinite(c.get(f"band_hi_{short}", np.nan))]
    return (float(np.mean(lo)), float(np.mean(hi))) if lo else (math.nan, math.nan)


def plot_tradeoff(stem, data: dict) -> list[str]:
    """Residual index (feature level) against d_t, one panel per method: colour = over-unlearning
    strength, marker = replay length; grey = retrain null band; star = pretrained model; cross =
    retrain; error bars = 95% intervals over the runs (replicates x seeds; per-run bootstrap interval with one)."""
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
                 f"(replicates {sorted({c['replicate'] for p in sweep for c in p.cells})}, "
                 f"seeds {sorted({c['seed'] for p in sweep for c in p.cells})})")
    return save_figure(fig, stem)


def plot_indices(stem, data: dict) -> list[str]:
    """Claims 1 and 2 at a glance: each plain method's index and its ``_our`` variant's (mean and
    95% interval over the runs), output and feature level, against the retrain null band."""
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
    fig.suptitle(f"{data['tag']}, forget class {data['forget_class']}, replicates {data['replicates']}, "
                 f"seeds {data['seeds']}")
    return save_figure(fig, stem)
