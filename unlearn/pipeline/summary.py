"""The paper's table in one file: ``log_files/summary.{csv,md}`` and a comparison figure.

One row per method (and ``_our`` variant) of the list; every number is read from
the runs' ``results.json`` files and, over several seeds, reported as mean and
standard deviation (ddof=1) over the seeds that have it. The ``seeds`` column
says how many of the requested seeds have a finished forget run, and a cell
computed from fewer seeds than its row says ``(n=k)``: a missing seed is never
hidden.

Runs repeat over *replicates* (independently pretrained models, :attr:`Setting.pretrain_seed`) and
seeds; numeric cells are mean and sd over all of them. The ``verdict_*`` columns are the one verdict
per method (:mod:`unlearn.evaluation.rea.decide`): each replicate's model statistic (its forget-class
relearning curve area, mean over its trials and seeds, at the first relearning lr) tested against the
retrained references' (a permutation test of the pooled t, Holm across the table's method rows except ``baseline``, the
never-unlearned anchor; TOST within ``config.REA_MARGIN_SD`` reference sd for ``equivalent``).

The other Reminiscence Attack columns come from the per-run readings of
:mod:`unlearn.evaluation.rea.verdict` (index, two-sided AUC, balanced accuracy: effect sizes and the
display scale), each at the relearning lr with the highest two-sided AUC. A ``null`` row gives the
reference population scored against itself: what a retrained model gets.
"""
from __future__ import annotations

import csv
import io
import math
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

import config
from ..evaluation.rea.decide import decide_family
from ..evaluation.rea.verdict import index_defined
from ..methods.entries import entry_settings
from ..store.checkpoint import atomic_write_text, read_ok_results, save_figure
from ..store.identity import attack_extras
from ..store.setting import Setting, fmt_para

LEVEL_KEYS = {"out": "output", "feat": "feature"}
# The replicated verdicts: our retrain game at both levels, and the paper's OOD game (output level, its
# forget-minus-OOD gap in mean relearning accuracy against the references' gaps), each its own Holm family.
GAMES = {**LEVEL_KEYS, "ood": "the paper's OOD game"}
COLUMNS = [
    ("d_t", "D_t: retain-class test accuracy (%)"),
    ("d_f", "D_f: forget-class training accuracy (%)"),
    ("d_r", "D_r: retain training accuracy (%)"),
    ("mia", "classic entropy MIA: forget samples predicted member (%)"),
    ("zrf", "ZRF (the paper's UnLearningScore): 1 - mean Jensen-Shannon divergence from a randomly initialised "
            "model on the forget set; 1 = answers like a random model, 0.307 the floor"),
    ("verdict_out", "verdict, output level, over the replicates (pretrained models) against the retrained "
                    "references: residual / over-suppressed (relearns faster / slower, permutation test, Holm-adjusted "
                    "p < alpha), equivalent (TOST within the margin), else undetermined; [Holm p; n models]"),
    ("verdict_feat", "verdict, feature level (as verdict_out)"),
    ("rea_diff_out", "model statistic minus the references' (forget-class curve area, output level): the "
                     "verdict's effect, raw units"),
    ("rea_diff_feat", "the same at the feature level"),
    ("rea_index_out", "ReA reminiscence index, output level: 0 = like the retrained references, 1 = like the "
                      "never-unlearned model, < 0 = relearns slower than retraining; [95% bootstrap interval]"),
    ("rea_auc2_out", "ReA two-sided AUC against the references, output level (cross-fitted; retrain-like ~0.5)"),
    ("rea_bacc_out", "ReA balanced accuracy at 5% FPR, threshold fixed on held-out references, output level"),
    ("rea_index_feat", "ReA reminiscence index, feature level (forget row of the classifier reset to one fixed "
                       "random init in every model)"),
    ("rea_auc2_feat", "ReA two-sided AUC, feature level"),
    ("rea_bacc_feat", "ReA balanced accuracy at 5% FPR, feature level"),
    ("rea_auc_ood", "the paper's OOD game, output level: AUC of forget-class against OOD candidate curves "
                    "(area statistic); its null is the `null` row"),
    ("verdict_ood", "verdict of the paper's OOD game over the replicates: each model's forget-minus-OOD gap in "
                    "mean relearning accuracy (output level) against the references' gaps, tested as verdict_out"),
    ("rea_dir_ood", "OOD game direction, output level: the 95% interval of the model's forget-minus-OOD gap in "
                    "mean accuracy against the references' null band (their AUCs saturate)"),
    ("rea_steps_out", "the paper's statistic: mean steps to 90% accuracy, output level (cap + 1 = never)"),
    ("variance", "forget-class intra-class variance (t-SNE of logits)"),
    ("silhouette", "forget-class silhouette against its nearest class (t-SNE)"),
    ("overlap", "KDE overlap of the forget class with the others (t-SNE), 0..1"),
    ("time", "unlearning seconds (evaluation excluded)"),
    ("time_pct", "time as % of the retrain run of the same seed"),
]
# CSV only: the price in training examples (unlearn.core.engine.metered), as retain-set epochs and as % of
# the retrain run's.
WORK = ["work", "work_pct"]
TEXT = {"rea_dir_ood", "verdict_out", "verdict_feat", "verdict_ood"}
VERDICTS = ("verdict_out", "verdict_feat", "verdict_ood")  # per method over replicates, not per run (summarise)
DIGITS = {"rea_diff_out": 3, "rea_diff_feat": 3, "rea_index_out": 2, "rea_index_feat": 2, "rea_auc2_out": 3, "rea_auc2_feat": 3, "rea_bacc_out": 3,
          "rea_bacc_feat": 3, "rea_auc_ood": 3, "rea_steps_out": 1, "silhouette": 3, "overlap": 3, "time": 1}
EXTRA = ["rea_lo_out", "rea_hi_out", "rea_lo_feat", "rea_hi_feat", "rea_lr_out", "rea_lr_feat",
         "rea_auc1_out", "rea_auc1_feat", "rea_tpr5_out", "rea_tpr5_feat", "rea_tpr1_out", "rea_tpr1_feat",
         "rea_auc_ood_feat", "rea_ood_gap", "rea_ood_gap_feat", "rea_steps_feat", "rea_refs", *WORK]


def run_dir(s: Setting, stage: str, method: str, p1, p2, extras: dict | None = None) -> Path:
    """A run's folder (the one place the summary knows run folder names); ``extras`` as in
    :func:`unlearn.store.identity.settings_suffix`: the forget run's non-default settings, plus the
    attack's for the attack stage (``{"attack": {...}}``)."""
    attack_only = {"attack"}
    if stage != "mia_mu_attack" and extras:
        extras = {k: v for k, v in extras.items() if k not in attack_only}
    return s.stage_dir(stage, method, p1, p2, extras)


def strongest(per_lr: dict, level: str):
    """(lr, verdict) at ``level`` with the highest two-sided AUC (else the first lr)."""
    best = None
    for lr, r in (per_lr or {}).items():
        v = r.get(level)
        if v is None:
            continue
        auc = (v.get("retrain_game") or {}).get("auc", -1.0)
        if best is None or auc > best[2]:
            best = (lr, v, auc)
    return (best[0], best[1]) if best else (None, None)


def attack_cells(res: dict | None) -> dict:
    """The ReA numbers of one attack results.json (NaN / None where absent)."""
    nan = float("nan")
    out = {k: nan for k in ("rea_index_out", "rea_auc2_out", "rea_bacc_out", "rea_index_feat", "rea_auc2_feat",
                            "rea_bacc_feat", "rea_auc_ood", "rea_steps_out",
                            *(k for k in EXTRA if k not in WORK))}
    out.update(rea_dir_out=None, rea_dir_feat=None, rea_dir_ood=None)
    if not res:
        return out
    primary = next(iter(res.get("per_lr") or {}), None)  # the first relearning lr: the verdict's, fixed beforehand
    for short, level in LEVEL_KEYS.items():
        area = ((res["per_lr"][primary].get(level) or {}).get("area") if primary else None) or {}
        if area:
            seeds = [r["seed"] for r in res.get("references", [])]
            out[f"_stat_{short}"] = area["model"]["member"]
            out[f"_refs_{short}"] = dict(zip(seeds, (r["member"] for r in area["references"])))
    ood = ((res["per_lr"][primary].get("output") or {}).get("ood_game") if primary else None) or {}
    gaps = (ood.get("gap_null") or {}).get("values", [])
    if "gap" in ood and len(gaps) == len(res.get("references", [])):
        out["_stat_ood"] = ood["gap"]
        out["_refs_ood"] = dict(zip([r["seed"] for r in res["references"]], gaps))
    out["rea_refs"] = len(res.get("references", []))
    for short, level in LEVEL_KEYS.items():
        lr, v = strongest(res.get("per_lr"), level)
        if v is None:
            continue
        out[f"rea_lr_{short}"] = float(lr)
        ix, g, o = v.get("index"), v.get("retrain_game") or {}, v["ood_game"]
        if ix:
            if not index_defined(ix["null"]["band"]):
                out[f"_undefined_{short}"] = True
            else:
                out[f"rea_index_{short}"], (out[f"rea_lo_{short}"], out[f"rea_hi_{short}"]) = ix["index"], ix["ci"]
            out[f"rea_dir_{short}"] = ix["direction"]
        for col, key in (("auc2", "auc"), ("bacc", "balanced_accuracy_at_fpr_5"), ("auc1", "auc_one_sided"),
                         ("tpr5", "tpr_at_fpr_5"), ("tpr1", "tpr_at_fpr_1")):
            out[f"rea_{col}_{short}"] = g.get(key, nan)
        out["rea_auc_ood" if short == "out" else "rea_auc_ood_feat"] = o["auc"]
        out["rea_ood_gap" if short == "out" else "rea_ood_gap_feat"] = o["gap"]
        if short == "out":
            out["rea_dir_ood"] = o["direction"]
        out[f"rea_steps_{short}"] = v["steps_to_threshold"]["model"]["member"]
    return out


def cell(s: Setting, method, p1, p2, extras: dict | None = None) -> dict:
    """All table numbers of one run (NaN / None where a stage is missing)."""
    nan = float("nan")
    row = {k: nan for k in [*(k for k, _ in COLUMNS), *WORK]}
    f = read_ok_results(run_dir(s, "unlearning", method, p1, p2, extras) / "results.json")
    row["_forget"] = f is not None
    if f:
        row.update({k: f["metrics"][k] for k in ("d_t", "d_f", "d_r", "mia")}, time=f["time"])
        row["work"] = (f.get("work") or {}).get("retain_epochs", nan)
        row["zrf"] = f["metrics"].get("zrf", nan)  # runs made before ZRF was recorded have none
    row.update(attack_cells(read_ok_results(run_dir(s, "mia_mu_attack", method, p1, p2, extras) / "results.json")))
    v = read_ok_results(run_dir(s, "visualization", method, p1, p2, extras) / "results.json")
    if v:
        t = v["metrics"]["tsne"]
        row.update(variance=t["intra_class_variance"], silhouette=t["silhouette"], overlap=t["overlap"])
    return row


PER_METHOD = {"verdict_out", "verdict_feat", "verdict_ood", "rea_diff_out", "rea_diff_feat"}  # over replicates: verdicts()


def _numeric_keys():
    return [k for k, _ in COLUMNS if k not in TEXT and k not in PER_METHOD] + EXTRA


def _aggregate(per_seed: list[dict], n_requested: int) -> dict:
    """Mean, std (ddof=1) and count of every numeric key over seeds; directions as votes."""
    row = {"seeds": sum(bool(c.get("_forget")) for c in per_seed), "seeds_requested": n_requested}
    for k in _numeric_keys():
        vals = np.array([c[k] for c in per_seed], dtype=float)
        ok = vals[~np.isnan(vals)]
        row[k] = float(ok.mean()) if len(ok) else float("nan")
        row[k + "_std"] = float(ok.std(ddof=1)) if len(ok) > 1 else float("nan")
        row[k + "_n"] = int(len(ok))
    for short in LEVEL_KEYS:  # the index's interval: the widest over the seeds
        row[f"rea_index_{short}_undefined"] = sum(bool(c.get(f"_undefined_{short}")) for c in per_seed)
        lo, hi = [c[f"rea_lo_{short}"] for c in per_seed], [c[f"rea_hi_{short}"] for c in per_seed]
        row[f"rea_lo_{short}"] = float(np.nanmin(lo)) if np.isfinite(lo).any() else float("nan")
        row[f"rea_hi_{short}"] = float(np.nanmax(hi)) if np.isfinite(hi).any() else float("nan")
    for k in TEXT - PER_METHOD:
        votes = Counter(c[k] for c in per_seed if c[k])
        row[k + "_n"] = sum(votes.values())
        if not votes:
            row[k] = None
        else:
            label, n = votes.most_common(1)[0]
            row[k] = label if n == row[k + "_n"] else f"{label} ({n}/{row[k + '_n']})"
    return row


def run_extras(entry, *, weight_path=None, attack: dict | None = None, dataset: str = "") -> dict:
    """Folder-name extras of a method-list entry ``(method, para1, para2[, options])`` as run.py runs it."""
    extras = entry_settings(entry[0], entry[3] if len(entry) > 3 else None, weight_path=weight_path)[2]
    return {**extras, **attack_extras(dataset, attack or {})}


def time_pct(s: Setting, seconds: float, retrain, *, weight_path=None, attack: dict | None = None,
             key: str = "time") -> float:
    """``seconds`` as % of the time of the ``retrain`` run (its method-list entry) of the same seed; NaN
    when that run has not finished. ``key="work"``: the same for retain-set epochs of training examples."""
    ex = run_extras(retrain, weight_path=weight_path, attack=attack, dataset=s.dataset)
    f = read_ok_results(run_dir(s, "unlearning", *retrain[:3], ex) / "results.json")
    rt = (f["time"] if key == "time" else (f.get("work") or {}).get("retain_epochs")) if f else None
    return 100 * seconds / rt if rt and not math.isnan(rt) else float("nan")


def model_statistics(per_run: list[dict], short: str) -> tuple[list[float], dict]:
    """A method's model statistics at one level, one per replicate (mean over its seeds), and the
    references' (seed -> mean over the seeds that measured it), from :func:`cell` dicts."""
    by_rep: dict[int, list[float]] = {}
    refs: dict[int, list[float]] = {}
    for c in per_run:
        if f"_stat_{short}" in c:
            by_rep.setdefault(c["_replicate"], []).append(c[f"_stat_{short}"])
            for seed, v in c[f"_refs_{short}"].items():
                refs.setdefault(seed, []).append(v)
    return [float(np.mean(v)) for v in by_rep.values()], {s: float(np.mean(v)) for s, v in refs.items()}


def verdicts(rows: list[dict], per_run: list[list[dict]], *, alpha: float | None = None,
             margin_sd: float | None = None) -> None:
    """Fill each row's ``verdict_*`` and ``rea_diff_*``: the replicated decision at each level, Holm
    across the rows except ``baseline`` (the anchor: a check of the attack, not a claim)."""
    alpha = float(config.REA_ALPHA if alpha is None else alpha)
    k_sd = float(config.REA_MARGIN_SD if margin_sd is None else margin_sd)
    for short in GAMES:
        stats = [model_statistics(cells, short) for cells in per_run]  # aligned with rows
        pooled: dict[int, list[float]] = {}
        for _, refs in stats:
            for seed, v in refs.items():
                pooled.setdefault(seed, []).append(v)
        ref_means = np.array([np.mean(v) for v in pooled.values()], dtype=float)
        margin = k_sd * float(ref_means.std(ddof=1)) if ref_means.size > 1 else float("nan")
        got = decide_family({i: x for i, (x, _) in enumerate(stats)}, ref_means, margin=margin, alpha=alpha,
                            outside=[i for i, r in enumerate(rows) if r["method"] == "baseline"])
        for i, r in enumerate(rows):
            d = got[i]
            adjusted = d is not None and r["method"] != "baseline"
            r[f"verdict_{short}"] = None if d is None else d.label
            r[f"rea_diff_{short}"] = float("nan") if d is None else d.diff
            r[f"rea_diff_{short}_std"] = float("nan")
            r[f"rea_diff_{short}_n"] = 0 if d is None else d.n_method
            r[f"verdict_{short}_n"] = 0 if d is None else d.n_method
            r[f"decision_{short}"] = None if d is None else d.as_dict()
            r[f"verdict_p_{short}"] = float("nan") if d is None else d.p_adjusted if adjusted else d.p_diff
            r[f"verdict_p_equiv_{short}"] = float("nan") if d is None else d.p_equiv


def summarise(base: Setting, methods, seeds, *, weight_path=None, attack: dict | None = None,
              replicates=(0,)) -> list[dict]:
    """Rows of mean/std over replicates and seeds, ``time_pct`` against the retrain run of the same
    replicate and seed, and the replicated verdicts (:func:`verdicts`)."""
    retrain = next((m for m in methods if m[0] == "retrain"), None)
    rows, per_run = [], []
    for entry in methods:
        method, p1, p2 = entry[:3]
        cells = []
        for p in replicates:
            for seed in seeds:
                s = replace(base, seed=seed, pretrain_seed=p)
                c = cell(s, method, p1, p2, run_extras(entry, weight_path=weight_path, attack=attack,
                                                       dataset=base.dataset))
                c["_replicate"] = p
                if retrain:
                    for key in ("time", "work"):
                        c[f"{key}_pct"] = time_pct(s, c[key], retrain, weight_path=weight_path, attack=attack,
                                                   key=key)
                cells.append(c)
        per_run.append(cells)
        row = {"method": method, "para1": fmt_para(p1), "para2": fmt_para(p2),
               **_aggregate(cells, len(seeds) * len(replicates))}
        row["replicates"] = len({c["_replicate"] for c in cells if c.get("_forget")})
        row["replicates_requested"] = len(replicates)
        rows.append(row)
    verdicts(rows, per_run)
    return rows


def null_row(base: Setting, methods, seeds, *, weight_path=None, attack: dict | None = None) -> dict | None:
    """The reference population against itself, from the first attack results.json of each seed:
    index and two-sided AUC / balanced accuracy of each reference against the others, and the
    OOD game played by each reference (values pooled over seeds: mean +- sd)."""
    vals: dict[str, list] = {k: [] for k in ("rea_index_out", "rea_auc2_out", "rea_bacc_out", "rea_index_feat",
                                             "rea_auc2_feat", "rea_bacc_feat", "rea_auc_ood")}
    bands: dict[str, list] = {"out": [], "feat": []}
    refs = []
    for seed in seeds:
        s = replace(base, seed=seed)
        res = next((r for m in methods if (r := read_ok_results(run_dir(
            s, "mia_mu_attack", *m[:3], run_extras(m, weight_path=weight_path, attack=attack, dataset=base.dataset))
            / "results.json"))), None)
        if not res:
            continue
        refs.append(len(res.get("references", [])))
        for short, level in LEVEL_KEYS.items():
            _, v = strongest(res.get("per_lr"), level)
            if not v or not v.get("index"):
                continue
            vals[f"rea_index_{short}"] += v["index"]["null"]["values"]
            bands[short].append(v["index"]["null"]["band"])
            game = (v.get("retrain_game") or {}).get("null") or {}
            vals[f"rea_auc2_{short}"] += game.get("auc", {}).get("values", [])
            vals[f"rea_bacc_{short}"] += game.get("balanced_accuracy_at_fpr_5", {}).get("values", [])
            if short == "out":
                vals["rea_auc_ood"] += v["ood_game"]["null"]["values"]
    if not refs:
        return None
    row = {"method": f"null ({'/'.join(map(str, sorted(set(refs))))} refs)", "para1": "", "para2": "",
           "seeds": len(refs), "seeds_requested": len(seeds)}
    for k in _numeric_keys():
        row[k] = row[k + "_std"] = float("nan")
        row[k + "_n"] = 0
    for k, v in vals.items():
        a = np.array(v, dtype=float)
        row[k] = float(a.mean()) if a.size else float("nan")
        row[k + "_std"] = float(a.std(ddof=1)) if a.size > 1 else float("nan")
        row[k + "_n"] = row["seeds"]
    for short in LEVEL_KEYS:
        b = np.array(bands[short], dtype=float).reshape(-1, 2)
        row[f"rea_lo_{short}"], row[f"rea_hi_{short}"] = (float(np.nanmin(b[:, 0])), float(np.nanmax(b[:, 1]))) \
            if b.size and np.isfinite(b).any() else (float("nan"), float("nan"))
    row.update(rea_dir_out="", rea_dir_feat="", rea_dir_ood="", null=True)
    return row


def sense_checks(rows: list[dict], null: dict | None, *, k_sd: float = 2.0) -> None:
    """Do the effect sizes agree in sense with each verdict? Sets ``sense_{out,feat}``: a method called
    ``residual`` or ``over-suppressed`` should be told apart from retrained models by the two-sided AUC
    (above the null row's mean + ``k_sd`` sd), one called ``equivalent`` should not; ``agrees`` or
    ``disagrees: ...``, None where there is no verdict to check (undetermined, or no null row)."""
    for short in LEVEL_KEYS:
        key = f"rea_auc2_{short}"
        top = null[key] + k_sd * null[key + "_std"] if null and np.isfinite([null[key], null[key + "_std"]]).all() \
            else float("nan")
        for r in rows:
            label, auc2 = r.get(f"verdict_{short}"), r.get(key, float("nan"))
            r[f"sense_{short}"] = None
            if r.get("method") == "baseline" or not np.isfinite([top, auc2]).all() or label not in (
                    "residual", "over-suppressed", "equivalent"):
                continue
            apart = auc2 > top
            if apart == (label != "equivalent"):
                r[f"sense_{short}"] = "agrees"
            else:
                r[f"sense_{short}"] = (f"disagrees: {label} but two-sided AUC {auc2:.2f} "
                                       f"{'above' if apart else 'within'} the null's {top:.2f}")


def _fmt(v, std, digits):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}" + ("" if std is None or math.isnan(std) else f" ± {std:.{digits}f}")


def format_cell(r: dict, k: str) -> str:
    """One markdown cell: mean (± std over seeds), the index's interval, ``(n=k)`` for missing seeds."""
    if k in PER_METHOD:
        return _verdict_cell(r, k)
    if k in TEXT:
        text = r.get(k) or "–"
    else:
        text = _fmt(r[k], r[k + "_std"], DIGITS.get(k, 2))
        short = k.rsplit("_", 1)[-1]
        if k.startswith("rea_index_") and text != "–":
            lo, hi = r.get(f"rea_lo_{short}"), r.get(f"rea_hi_{short}")
            if lo is not None and np.isfinite([lo, hi]).all():
                text += f" [{lo:.2f}, {hi:.2f}]"
        if k.startswith("rea_index_") and text == "–" and r.get(f"{k}_undefined"):
            return f"undefined (anchor inside the references' band in {r[k + '_undefined']} runs)"
    n = r.get(k + "_n")
    if not r.get("null") and text != "–" and n is not None and n < r["seeds_requested"]:
        text += f" (n={n})"
    return text


def _verdict_cell(r: dict, k: str) -> str:
    """A per-method cell: the verdict with its (Holm-adjusted) p and its number of models, or the effect."""
    d = r.get(f"decision_{k.rsplit('_', 1)[-1]}")
    if r.get("null") or not d:
        return "–"
    if k.startswith("rea_diff_"):
        return _fmt(d["diff"], None, DIGITS.get(k, 3)) + (
            f" [{d['ci'][0]:.3f}, {d['ci'][1]:.3f}]" if np.isfinite(d["ci"]).all() else "")
    p = d["p_adjusted"] if np.isfinite(d["p_adjusted"]) else d["p_diff"]
    p_text = f"p {p:.2g}" if np.isfinite(p) else "no test"
    if d["label"] == "equivalent":
        p_text = f"TOST p {d['p_equiv']:.2g}"
    sense = r.get(f"sense_{k.rsplit('_', 1)[-1]}") or ""
    flag = f"; {sense}" if sense.startswith("disagrees") else ""
    return f"{d['label']} ({p_text}; {d['n_method']}/{r.get('replicates_requested', 1)} models{flag})"


def to_markdown(rows) -> str:
    head = ["method", "para1", "para2", "runs", "replicates"] + [k for k, _ in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vals = [r["method"], r["para1"], r["para2"], f"{r['seeds']}/{r['seeds_requested']}",
                f"{r['replicates']}/{r['replicates_requested']}" if "replicates" in r else ""]
        lines.append("| " + " | ".join(vals + [format_cell(r, k) for k, _ in COLUMNS]) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows) -> str:
    buf = io.StringIO()
    keys = ["method", "para1", "para2", "seeds", "seeds_requested", "replicates", "replicates_requested"]
    for k, _ in COLUMNS:
        keys += [k, k + "_n"] if k in TEXT else [k, k + "_std", k + "_n"]
    keys += [x for k in EXTRA for x in (k, k + "_std", k + "_n")]
    keys += [f"verdict_{p}_{short}" for short in GAMES for p in ("p", "p_equiv")] + ["rea_diff_ood"]
    keys += [f"sense_{short}" for short in LEVEL_KEYS] + [f"rea_index_{short}_undefined" for short in LEVEL_KEYS]
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    blank = lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v  # noqa: E731
    w.writerows({k: blank(v) for k, v in r.items()} for r in rows)
    return buf.getvalue()


def plot_comparison(stem: Path, rows, null: dict | None = None):
    """Each method beside its ``_our`` variant: the reminiscence index with its interval at
    the output and the feature level against the references' null band, and D_t."""
    import matplotlib  # lazy: start-up time

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: start-up time

    by = {r["method"]: r for r in rows}
    pairs = [(m, m + "_our") for m in by if m + "_our" in by]
    if not pairs:
        return
    fig, axes = plt.subplots(1, 3, figsize=(max(11, 1.8 * len(pairs) + 5), 4.8), layout="constrained")
    x = np.arange(len(pairs))
    styles = ((-0.17, 0, "plain method", "tab:red", "o"), (0.17, 1, "with Over-Unlearning & Replay (_our)",
                                                          "tab:blue", "s"))
    for ax, short in zip(axes[:2], LEVEL_KEYS):
        if null and np.isfinite([null.get(f"rea_lo_{short}", np.nan), null.get(f"rea_hi_{short}", np.nan)]).all():
            ax.axhspan(null[f"rea_lo_{short}"], null[f"rea_hi_{short}"], color="grey", alpha=0.25,
                       label="retrained references: null band (95% prediction)")
        ax.axhline(0, color="black", lw=0.8, ls="--", label="0 = like retraining")
        ax.axhline(1, color="black", lw=0.8, ls=":", label="1 = like the never-unlearned model")
        for off, idx, label, color, marker in styles:
            v = np.array([by[p[idx]][f"rea_index_{short}"] for p in pairs], dtype=float)
            lo = np.array([by[p[idx]][f"rea_lo_{short}"] for p in pairs], dtype=float)
            hi = np.array([by[p[idx]][f"rea_hi_{short}"] for p in pairs], dtype=float)
            err = np.vstack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)])
            ax.errorbar(x + off, v, yerr=np.nan_to_num(err), fmt=marker, color=color, capsize=3, ms=5, label=label)
        ax.set_xticks(x, [p[0] for p in pairs], rotation=45, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(pairs) - 0.4)
        ax.set_title(f"reminiscence index, {LEVEL_KEYS[short]} level (95% interval)", fontsize=9)
        ax.set_ylabel("index")
    for off, idx, label, color, _ in styles:
        axes[2].bar(x + off, [by[p[idx]]["d_t"] for p in pairs], 0.34, color=color, label=label)
    axes[2].set_xticks(x, [p[0] for p in pairs], rotation=45, ha="right", fontsize=8)
    axes[2].set_title("D_t: retain-class test accuracy (%)", fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=8)
    save_figure(fig, stem)
    plt.close(fig)


def write_summary(base: Setting, methods, seeds, *, weight_path=None, attack: dict | None = None,
                  replicates=(0,)) -> tuple[list[dict], str]:
    """``weight_path``, ``attack`` and ``replicates`` as run.py passed them, so the runs' folders are found."""
    rows = summarise(base, methods, seeds, weight_path=weight_path, attack=attack, replicates=replicates)
    null = null_row(base, methods, seeds, weight_path=weight_path, attack=attack)
    sense_checks(rows, null)
    table = rows + ([null] if null else [])
    md = to_markdown(table)
    root = Path(base.log_root)
    title = (f"# {base.tag}, forget class {base.forget_class}, seeds {list(seeds)}, replicates (pretraining "
             f"seeds) {list(replicates)}\n\n")
    legend = "\n".join(f"- `{k}`: {d}" for k, d in COLUMNS)
    legend += ("\n- `runs`: runs (replicate x seed) with a finished forget run / requested; `(n=k)`: a cell from k "
               "runs; `replicates`: pretrained models with a finished run / requested"
               f"\n- verdicts: alpha {config.REA_ALPHA}, equivalence margin {config.REA_MARGIN_SD} reference sd; "
               "the Holm family is every row but `baseline`, at each level; a verdict cell says `disagrees` when "
               "the two-sided AUC (mean over runs) is not beyond the `null` row's mean + 2 sd for a residual / "
               "over-suppressed verdict, or is beyond it for an equivalent one"
               "\n- `rea_index_*`: `undefined` in a run whose anchor (the never-unlearned model, index 1) lies "
               "inside the references' band: the ratio then divides by a distance indistinguishable from 0"
               "\n- `null` row: each retrained reference scored against the others (mean ± sd of their values; "
               "index interval = the null band, a 95% prediction interval for one more retrained model)")
    atomic_write_text(root / "summary.md", title + md + "\n" + legend + "\n")
    atomic_write_text(root / "summary.csv", to_csv(rows))  # one row per method; the null row is in the .md
    plot_comparison(root / "summary_comparison", rows, null)
    return rows, md
