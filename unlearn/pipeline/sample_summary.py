"""The sample-wise table (``run.py --scenario sample``): ``log_files/sample_summary.{md,csv}`` and the
figure ``sample_summary_auc.{png,pdf}``.

One row per method of the list (those defined without a forget class), read from the runs'
``results.json`` and ``scores.npz``; numbers are mean ± sd (ddof=1) over replicates x seeds.

* ``lira_*``: the paper's online LiRA (``mia_lira.py``), AUC and TPR at 1% FPR, on the unlearned model
  (``plain``) and after the sample-wise Reminiscence Attack's retain fine-tuning (``rea``).
* ``rea_gain``: the paired ReA-minus-plain difference in online AUC, per model, mean over the
  replicates with its 95% t interval (``scipy.stats.ttest_1samp``): does the fine-tuning raise the
  attack? The ``null`` row gives the same over the retrained references.
* ``ulira_*``: the per-example test against the retrained population (ours, after U-LiRA;
  :func:`unlearn.evaluation.lira.against_retrained`): each target's score standardised by the R
  retrained references' scores on it, then the AUC of forget against test targets. A reference is
  scored against the other R - 1 (leave-one-out), which is its null.
* ``verdict_*``: the replicated decision of :mod:`unlearn.evaluation.rea.decide` on each model's AUC
  (one per replicate, mean over its seeds) against the references' AUCs scored the same way: a
  permutation test, Holm across the rows except ``baseline`` (the never-unlearned anchor, a check of
  the attack), within each column; TOST within ``config.REA_MARGIN_SD`` reference sd for
  ``equivalent``. ``residual``: the forget samples read as more member-like than after retraining;
  ``over-suppressed``: less (as revealing, Hayes et al.'s "Streisand effect").
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

import config
from ..evaluation.lira import against_retrained
from ..evaluation.rea.decide import decide_family
from ..methods.entries import entry_settings
from ..store.checkpoint import atomic_write_text, read_ok_results, save_figure
from ..store.setting import Setting, fmt_para

LEVELS = ("plain", "rea")
VERDICTS = {"plain": "lira_auc_plain", "rea": "lira_auc_rea", "ulira_plain": "ulira_auc_plain",
            "ulira_rea": "ulira_auc_rea"}
COLUMNS = [
    ("d_t", "D_t: in-distribution test accuracy (%)"),
    ("d_f", "D_f: accuracy on the forgotten training samples (%)"),
    ("mia", "classic entropy MIA: forget samples predicted member (%)"),
    ("lira_auc_plain", "online LiRA AUC, forget vs test targets, on the unlearned model (the paper's plain MIA)"),
    ("lira_tpr1_plain", "online LiRA TPR at 1% FPR, plain"),
    ("lira_auc_rea", "online LiRA AUC after the retain fine-tuning (the paper's sample-wise ReA)"),
    ("lira_tpr1_rea", "online LiRA TPR at 1% FPR, ReA"),
    ("rea_gain", "ReA minus plain online AUC, paired per model: mean over models [95% t interval]"),
    ("ulira_auc_plain", "per-example test against the retrained references: AUC of the standardised scores, "
                        "plain (a retrained model: ~0.5)"),
    ("ulira_auc_rea", "the same after the retain fine-tuning"),
    ("verdict_plain", "verdict on lira_auc_plain over the replicates against the references' [Holm p; models]"),
    ("verdict_rea", "verdict on lira_auc_rea"),
    ("verdict_ulira_plain", "verdict on ulira_auc_plain"),
    ("verdict_ulira_rea", "verdict on ulira_auc_rea"),
    ("time", "unlearning seconds"),
]
EXTRA = ["d_r", "lira_tpr10_plain", "lira_tpr10_rea", "lira_bacc_plain", "lira_bacc_rea", "lira_auc_offline_plain",
         "lira_auc_offline_rea", "ulira_tpr1_plain", "ulira_tpr1_rea"]
NUMERIC = [k for k, _ in COLUMNS if not k.startswith("verdict_") and k != "rea_gain"] + EXTRA


def _model(s: Setting, entry, *, weight_path=None) -> dict | None:
    """One model's numbers and per-target scores, or None when its forget run or attack is missing."""
    method, p1, p2 = entry[:3]
    extras = entry_settings(method, entry[3] if len(entry) > 3 else None, weight_path=weight_path)[2]
    f = read_ok_results(s.stage_dir("unlearning", method, p1, p2, extras) / "results.json")
    adir = s.stage_dir("mia_sample_attack", method, p1, p2, extras)
    a = read_ok_results(adir / "results.json")
    if not f or not a or not (adir / "scores.npz").is_file():
        return None
    with np.load(adir / "scores.npz") as z:
        scores = {lv: np.asarray(z[f"{lv}_score"], dtype=float) for lv in LEVELS}
        member = np.asarray(z["member"], dtype=bool)
    out = {k: float(f["metrics"][k]) for k in ("d_t", "d_f", "d_r", "mia")}
    out["time"] = float(f["time"])
    for lv in LEVELS:
        on, off = a["levels"][lv]["online"], a["levels"][lv]["offline"]
        out.update({f"lira_auc_{lv}": on["auc"], f"lira_tpr1_{lv}": on["tpr_at_1pct_fpr"],
                    f"lira_tpr10_{lv}": on["tpr_at_10pct_fpr"], f"lira_bacc_{lv}": on["balanced_accuracy_crossfit"],
                    f"lira_auc_offline_{lv}": off["auc"]})
    return {"numbers": out, "scores": scores, "member": member, "replicate": s.pretrain_seed}


def _ulira(model: dict, refs: list[dict], *, skip: int | None = None) -> None:
    """Add the per-example test against the references (all but ``skip``) to ``model['numbers']``."""
    from sklearn.metrics import roc_auc_score, roc_curve  # lazy: start-up time

    others = [r for i, r in enumerate(refs) if i != skip]
    for lv in LEVELS:
        if len(others) < 2 or any(not np.array_equal(r["member"], model["member"]) for r in others):
            model["numbers"][f"ulira_auc_{lv}"] = model["numbers"][f"ulira_tpr1_{lv}"] = float("nan")
            continue
        z = against_retrained(model["scores"][lv], np.stack([r["scores"][lv] for r in others]))
        fpr, tpr, _ = roc_curve(model["member"], z)
        model["numbers"][f"ulira_auc_{lv}"] = float(roc_auc_score(model["member"], z))
        model["numbers"][f"ulira_tpr1_{lv}"] = float(tpr[np.flatnonzero(fpr < 0.01)[-1]])


def references(base: Setting, retrain, n: int, *, weight_path=None) -> list[dict]:
    """The retrained references that finished (seeds ``REFERENCE_SEED_BASE + r``), each with its
    leave-one-out per-example test."""
    refs = [m for r in range(n) if (m := _model(replace(base, pretrain_seed=0, seed=config.REFERENCE_SEED_BASE + r),
                                                retrain, weight_path=weight_path))]
    for i, m in enumerate(refs):
        _ulira(m, refs, skip=i)
    return refs


def gain(models: list[dict]) -> dict:
    """The paired ReA-minus-plain online AUC: per replicate (mean over its seeds), mean and 95% t interval."""
    from scipy.stats import ttest_1samp  # lazy: start-up time

    by: dict[int, list[float]] = {}
    for m in models:
        by.setdefault(m["replicate"], []).append(m["numbers"]["lira_auc_rea"] - m["numbers"]["lira_auc_plain"])
    d = np.array([np.mean(v) for v in by.values()], dtype=float)
    if d.size < 2:
        return {"mean": float(d.mean()) if d.size else float("nan"), "ci": [float("nan")] * 2, "n": int(d.size)}
    ci = ttest_1samp(d, 0.0).confidence_interval(0.95)
    return {"mean": float(d.mean()), "ci": [float(ci.low), float(ci.high)], "n": int(d.size)}


def _row(name: str, p1, p2, models: list[dict], requested: int) -> dict:
    row = {"method": name, "para1": fmt_para(p1), "para2": fmt_para(p2), "runs": len(models), "requested": requested}
    for k in NUMERIC:
        v = np.array([m["numbers"].get(k, math.nan) for m in models], dtype=float)
        v = v[np.isfinite(v)]
        row[k] = float(v.mean()) if v.size else math.nan
        row[k + "_std"] = float(v.std(ddof=1)) if v.size > 1 else math.nan
    g = gain(models)
    row.update(rea_gain=g["mean"], rea_gain_lo=g["ci"][0], rea_gain_hi=g["ci"][1], rea_gain_n=g["n"])
    return row


def replicate_means(models: list[dict], key: str) -> list[float]:
    """A method's model statistics: one per replicate, the mean over its seeds."""
    by: dict[int, list[float]] = {}
    for m in models:
        if math.isfinite(m["numbers"].get(key, math.nan)):
            by.setdefault(m["replicate"], []).append(m["numbers"][key])
    return [float(np.mean(v)) for v in by.values()]


def summarise(base: Setting, methods, seeds, *, weight_path=None, replicates=(0,), retrain_refs: int = 0) \
        -> tuple[list[dict], dict | None, list[dict]]:
    """(method rows with their verdicts, the null row of the references or None, the references' models)."""
    retrain = next((m for m in methods if m[0] == "retrain"), None)
    refs = references(base, retrain, retrain_refs, weight_path=weight_path) if retrain else []
    rows, per_method = [], []
    for entry in methods:
        models = [m for p in replicates for seed in seeds
                  if (m := _model(replace(base, pretrain_seed=p, seed=seed), entry, weight_path=weight_path))]
        for m in models:
            _ulira(m, refs)
        rows.append(_row(entry[0], entry[1], entry[2], models, len(replicates) * len(seeds)))
        rows[-1]["replicates"] = len({m["replicate"] for m in models})
        rows[-1]["_models"] = {k: [m["numbers"][k] for m in models] for k in ("lira_auc_plain", "lira_auc_rea")}
        per_method.append(models)
    alpha, k_sd = float(config.REA_ALPHA), float(config.REA_MARGIN_SD)
    for col, key in VERDICTS.items():
        ref_means = np.array([r["numbers"][key] for r in refs if math.isfinite(r["numbers"].get(key, math.nan))])
        margin = k_sd * float(ref_means.std(ddof=1)) if ref_means.size > 1 else math.nan
        got = decide_family({i: replicate_means(ms, key) if ref_means.size >= 2 else [] for i, ms in
                             enumerate(per_method)}, ref_means, margin=margin, alpha=alpha,
                            outside=[i for i, r in enumerate(rows) if r["method"] == "baseline"])
        for i, r in enumerate(rows):
            d = got[i]
            r[f"decision_{col}"] = None if d is None else d.as_dict()
            r[f"verdict_{col}"] = None if d is None else d.label
    null = None
    if refs:
        null = _row(f"null ({len(refs)} retrained refs)", "", "", [{**r, "replicate": i} for i, r in
                                                                         enumerate(refs)], retrain_refs)
        null["null"] = True
    return rows, null, refs


def _fmt(v, sd=None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}" + ("" if sd is None or not math.isfinite(sd) else f" ± {sd:.{digits}f}")


def format_cell(r: dict, k: str) -> str:
    if k.startswith("verdict_"):
        d = r.get(f"decision_{k[len('verdict_'):]}")
        if r.get("null") or not d:
            return "–"
        p = d["p_adjusted"] if math.isfinite(d["p_adjusted"]) else d["p_diff"]
        text = f"TOST p {d['p_equiv']:.2g}" if d["label"] == "equivalent" else (
            f"p {p:.2g}" if math.isfinite(p) else "no test")
        return f"{d['label']} ({text}; {d['n_method']} models)"
    if k == "rea_gain":
        text = _fmt(r["rea_gain"])
        if math.isfinite(r["rea_gain_lo"]):
            text += f" [{r['rea_gain_lo']:.3f}, {r['rea_gain_hi']:.3f}]"
        return text
    return _fmt(r[k], r.get(k + "_std"), 2 if k in ("d_t", "d_f", "mia", "time") else 3)


def to_markdown(rows: list[dict]) -> str:
    head = ["method", "para1", "para2", "runs", *[k for k, _ in COLUMNS]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], r["para1"], r["para2"], f"{r['runs']}/{r['requested']}"]
        lines.append("| " + " | ".join(cells + [format_cell(r, k) for k, _ in COLUMNS]) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    keys = ["method", "para1", "para2", "runs", "requested", "replicates"]
    keys += [x for k in NUMERIC for x in (k, k + "_std")] + ["rea_gain", "rea_gain_lo", "rea_gain_hi", "rea_gain_n"]
    keys += [x for c in VERDICTS for x in (f"verdict_{c}", f"p_{c}", f"p_equiv_{c}")]
    out = []
    for r in rows:
        flat = dict(r)
        for c in VERDICTS:
            d = r.get(f"decision_{c}") or {}
            flat[f"p_{c}"] = d.get("p_adjusted") if math.isfinite(d.get("p_adjusted", math.nan)) else d.get("p_diff")
            flat[f"p_equiv_{c}"] = d.get("p_equiv")
        out.append({k: "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v
                    for k, v in flat.items()})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    w.writerows(out)
    return buf.getvalue()


def plot_summary(stem: Path, rows: list[dict], refs: list[dict]):
    """Each method's models' online LiRA AUC, plain and after ReA, against the retrained references'
    95% prediction band (:func:`unlearn.evaluation.rea.verdict.band`) of each level."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: start-up time
    from matplotlib.figure import Figure  # lazy: start-up time

    from ..evaluation.rea.verdict import band

    fig = Figure(figsize=(max(7.0, 0.45 * len(rows) + 2), 4.2), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(rows))
    for off, lv, color in ((-0.15, "plain", "tab:red"), (0.15, "rea", "tab:blue")):
        b = band([r["numbers"][f"lira_auc_{lv}"] for r in refs])["band"]
        if np.isfinite(b).all():
            ax.axhspan(*b, color=color, alpha=0.12, label=f"retrained references, {lv}: 95% prediction band")
        for i, r in enumerate(rows):
            ys = r["_models"].get(f"lira_auc_{lv}", [])
            ax.plot(np.full(len(ys), i + off), ys, "o", ms=3.5, color=color, label=lv if i == 0 else None)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xticks(x, [r["method"] for r in rows], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("online LiRA AUC (forget vs test)")
    ax.set_title("sample-wise: plain LiRA and after the retain fine-tuning (ReA), one point per model", fontsize=9)
    ax.legend(fontsize=6, loc="best")
    save_figure(fig, stem, bbox_inches="tight")


def write_sample_summary(base: Setting, methods, seeds, *, weight_path=None, replicates=(0,),
                         retrain_refs: int = 0) -> tuple[list[dict], str]:
    """Write ``sample_summary.{md,csv}`` under the log root; returns (rows, markdown table)."""
    rows, null, refs = summarise(base, methods, seeds, weight_path=weight_path, replicates=replicates,
                                 retrain_refs=retrain_refs)
    md = to_markdown(rows + ([null] if null else []))
    plot_summary(Path(base.log_root) / "sample_summary_auc", rows, refs)
    title = (f"# {base.tag}, forget {fmt_para(base.forget_percent)}% of the training samples (forget seed "
             f"{base.forget_seed}), seeds {list(seeds)}, replicates (pretraining seeds) {list(replicates)}\n\n")
    legend = "\n".join(f"- `{k}`: {d}" for k, d in COLUMNS)
    legend += (f"\n- verdicts: alpha {config.REA_ALPHA}, equivalence margin {config.REA_MARGIN_SD} reference sd; the "
               "Holm family is every row but `baseline`, per verdict column; `null` row: the retrained references "
               "scored exactly as the methods (ulira leave-one-out), mean ± sd over them")
    root = Path(base.log_root)
    atomic_write_text(root / "sample_summary.md", title + md + "\n" + legend + "\n")
    atomic_write_text(root / "sample_summary.csv", to_csv(rows + ([null] if null else [])))
    return rows, md
