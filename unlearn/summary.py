"""The paper's table in one file: ``log_files/summary.{csv,md}`` and a comparison figure.

One row per method (and ``_our`` variant) of the list; every number read from
the runs' ``results.json`` files and, over several seeds, reported as mean and
standard deviation. ReA figures are the strongest relearning learning rate's
(highest ROC AUC), per game.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from .checkpoint import atomic_write_text, read_ok_results, save_figure
from .setting import Setting, fmt_para

COLUMNS = [
    ("d_t", "D_t: retain-class test accuracy (%)"),
    ("d_f", "D_f: forget-class training accuracy (%)"),
    ("d_r", "D_r: retain training accuracy (%)"),
    ("mia", "classic entropy MIA: forget samples predicted member (%)"),
    ("rea_auc_ood", "Reminiscence Attack ROC AUC, OOD non-members"),
    ("rea_bacc_ood", "ReA balanced accuracy at FPR <= 5%, OOD non-members"),
    ("rea_auc_retrain", "ReA ROC AUC, non-members = retrained model relearning"),
    ("rea_bacc_retrain", "ReA balanced accuracy at FPR <= 5%, retrain game"),
    ("variance", "forget-class intra-class variance (t-SNE of logits)"),
    ("silhouette", "forget-class silhouette against its nearest class (t-SNE)"),
    ("overlap", "KDE overlap of the forget class with the others (t-SNE), 0..1"),
    ("time", "unlearning seconds (evaluation excluded)"),
    ("time_pct", "time as % of the retrain run of the same seed"),
]


def _best_attack(res, game):
    best = None
    for lr, r in (res or {}).get("per_lr", {}).items():
        g = r["games"].get(game)
        if g and (best is None or g["auc"] > best["auc"]):
            best = g
    return best


def cell(s: Setting, method, p1, p2) -> dict:
    """All table numbers of one run (NaN where a stage is missing)."""
    nan = float("nan")
    row = {k: nan for k, _ in COLUMNS}
    f = read_ok_results(s.stage_dir("unlearning", method, p1, p2) / "results.json")
    if f:
        row.update({k: f["metrics"][k] for k in ("d_t", "d_f", "d_r", "mia")}, time=f["time"])
    a = read_ok_results(s.stage_dir("mia_mu_attack", method, p1, p2) / "results.json")
    for game in ("ood", "retrain"):
        g = _best_attack(a, game)
        if g:
            row[f"rea_auc_{game}"] = g["auc"]
            row[f"rea_bacc_{game}"] = g["balanced_accuracy_at_fpr_5"]
    v = read_ok_results(s.stage_dir("visualization", method, p1, p2) / "results.json")
    if v:
        t = v["metrics"]["tsne"]
        row.update(variance=t["intra_class_variance"], silhouette=t["silhouette"], overlap=t["overlap"])
    return row


def summarise(base: Setting, methods, seeds) -> list[dict]:
    """Rows of mean/std over seeds; ``time_pct`` against the retrain row of the same seed."""
    from dataclasses import replace

    retrain = next((m[:3] for m in methods if m[0] == "retrain"), None)
    rows = []
    for method, p1, p2, *_ in methods:
        per_seed = []
        for seed in seeds:
            s = replace(base, seed=seed)
            c = cell(s, method, p1, p2)
            if retrain:
                rt = cell(s, *retrain)["time"]
                c["time_pct"] = 100 * c["time"] / rt if rt and not math.isnan(rt) else float("nan")
            per_seed.append(c)
        row = {"method": method, "para1": fmt_para(p1), "para2": fmt_para(p2), "seeds": len(seeds)}
        for k, _ in COLUMNS:
            vals = np.array([c[k] for c in per_seed], dtype=float)
            ok = vals[~np.isnan(vals)]
            row[k] = float(ok.mean()) if len(ok) else float("nan")
            row[k + "_std"] = float(ok.std(ddof=1)) if len(ok) > 1 else float("nan")
        rows.append(row)
    return rows


def _fmt(v, std, digits):
    if v is None or math.isnan(v):
        return "–"
    return f"{v:.{digits}f}" + ("" if std is None or math.isnan(std) else f" ± {std:.{digits}f}")


def to_markdown(rows) -> str:
    digits = {"rea_auc_ood": 3, "rea_bacc_ood": 3, "rea_auc_retrain": 3, "rea_bacc_retrain": 3, "silhouette": 3,
              "overlap": 3, "time": 1}
    head = ["method", "para1", "para2"] + [k for k, _ in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vals = [r["method"], r["para1"], r["para2"]] + [_fmt(r[k], r[k + "_std"], digits.get(k, 2)) for k, _ in COLUMNS]
        lines.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows) -> str:
    buf = io.StringIO()
    keys = ["method", "para1", "para2", "seeds"] + [x for k, _ in COLUMNS for x in (k, k + "_std")]
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def plot_comparison(stem: Path, rows):
    """Each method beside its ``_our`` variant: ReA AUC (retrain game, else OOD) and D_t."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {r["method"]: r for r in rows}
    pairs = [(m, m + "_our") for m in by if m + "_our" in by]
    if not pairs:
        return
    fig, axes = plt.subplots(1, 2, figsize=(max(6, 1.1 * len(pairs) + 3), 3.8))
    x = np.arange(len(pairs))
    for ax, (key, label) in zip(axes, [("rea_auc", "ReA ROC AUC (retrain game; OOD if absent)"), ("d_t", "D_t (%)")]):
        for off, idx, name in ((-0.2, 0, "method"), (0.2, 1, "_our")):
            vals = []
            for p in pairs:
                r = by[p[idx]]
                v = r["d_t"] if key == "d_t" else (r["rea_auc_retrain"] if not math.isnan(r["rea_auc_retrain"])
                                                  else r["rea_auc_ood"])
                vals.append(v)
            ax.bar(x + off, vals, 0.4, label=name)
        ax.set_xticks(x, [p[0] for p in pairs], rotation=45, ha="right", fontsize=8)
        ax.set_title(label, fontsize=9)
        if key == "rea_auc":
            ax.axhline(0.5, color="k", ls="--", lw=0.8)
            ax.set_ylim(0, 1.05)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, stem)
    plt.close(fig)


def write_summary(base: Setting, methods, seeds) -> tuple[list[dict], str]:
    rows = summarise(base, methods, seeds)
    md = to_markdown(rows)
    root = Path(base.log_root)
    title = f"# {base.tag}, forget class {base.forget_class}, seeds {list(seeds)}\n\n"
    legend = "\n".join(f"- `{k}`: {d}" for k, d in COLUMNS)
    atomic_write_text(root / "summary.md", title + md + "\n" + legend + "\n")
    atomic_write_text(root / "summary.csv", to_csv(rows))
    plot_comparison(root / "summary_comparison", rows)
    return rows, md
