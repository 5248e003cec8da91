"""A tuning's results: each study's ``best.json`` and plots, and the table run.py and tune_method.py print."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

from ..store.checkpoint import atomic_write_json, save_figure
from ..store.setting import Setting
from .space import entry_text
from .studies import FINISHED, open_study, trial_counts
from .tasks import OBJECTIVE, TARGET_DF, TARGET_DT_DROP, Task


def _trial_rows(study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name not in FINISHED:
            continue
        m = t.user_attrs.get("metrics")
        secs = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else 0.0
        rows.append({"number": t.number, "state": t.state.name, "value": t.value, "metrics": m,
                     "entry": t.user_attrs.get("entry"), "default": bool(t.user_attrs.get("default")),
                     "pruned": t.user_attrs.get("pruned"), "seconds": secs})
    return rows


def why_missed(rows: list[dict], *, d_t_min: float) -> str:
    """Why no trial meets the target, from the trials themselves."""
    measured = [r for r in rows if r["metrics"]]
    if not measured:
        return f"every one of {len(rows)} trials diverged"
    forgot = [r["metrics"]["d_t"] for r in measured if r["metrics"]["d_f"] <= TARGET_DF]
    kept = [r["metrics"]["d_f"] for r in measured if r["metrics"]["d_t"] >= d_t_min]
    parts = []
    if forgot:
        parts.append(f"the {len(forgot)} trials that forget (d_f <= {TARGET_DF:g}) keep d_t {max(forgot):.1f} at best")
    else:
        parts.append(f"no trial forgets (lowest d_f {min(r['metrics']['d_f'] for r in measured):.1f})")
    if kept:
        parts.append(f"the {len(kept)} that keep d_t >= {d_t_min:.1f} reach d_f {min(kept):.1f} at best")
    else:
        parts.append(f"none keeps d_t >= {d_t_min:.1f} (highest {max(r['metrics']['d_t'] for r in measured):.1f})")
    pruned = [r["pruned"].split(" ")[0] for r in rows if r["pruned"]]
    if pruned:
        parts.append(", ".join(f"{pruned.count(k)} {k}" for k in sorted(set(pruned))))
    return f"of {len(rows)} trials, " + "; ".join(parts)


def finish(task: Task, *, wall_seconds: float | None = None, plots: bool = True) -> dict:
    """Write ``best.json`` (atomically) and the history/importance PNGs of a task's study; returns best.json."""
    study = open_study(task)
    rows = _trial_rows(study)
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    d_t_min = task.baseline_d_t - TARGET_DT_DROP
    best = min(complete, key=lambda r: r["value"]) if complete else None
    default = next((r for r in rows if r["default"]), None)
    counts = trial_counts(study)
    out = {
        "method": task.method, **task.setting, "study": task.study, "storage": task.ref.split("#")[0],
        "study_ref": task.ref, "objective": OBJECTIVE, "dt_weight": task.dt_weight,
        "reference": task.reference, "baseline_d_t": task.baseline_d_t, "replicates": task.replicates,
        "target": {"d_f_max": TARGET_DF, "d_t_min": d_t_min},
        "space": [p.describe() for p in task.params()],
        "default_entry": task.entry, "default": None, "entry": None, "params": None, "metrics": None,
        "value": None, "meets_target": False, "reason": None,
        "trials": {"finished": len(rows), "complete": len(complete), "pruned": counts.get("PRUNED", 0),
                   "failed": counts.get("FAIL", 0), "budget": task.budget},
        "seconds": round(sum(r["seconds"] for r in rows), 2),
        "wall_seconds": None if wall_seconds is None else round(wall_seconds, 2), "inputs": task.inputs,
    }
    if default:
        out["default"] = {"metrics": default["metrics"], "value": default["value"], "pruned": default["pruned"]}
    if best:
        m = best["metrics"]
        out.update(entry=best["entry"], params=study.trials[best["number"]].params, metrics=m, value=best["value"],
                   best_is_default=best["default"], trial=best["number"],
                   meets_target=m["d_f"] <= TARGET_DF and m.get("d_t_drop", task.baseline_d_t - m["d_t"])
                   <= TARGET_DT_DROP)
    if not out["meets_target"]:
        out["reason"] = why_missed(rows, d_t_min=d_t_min)
        errors = [t.user_attrs["error"] for t in study.get_trials(deepcopy=False) if "error" in t.user_attrs]
        if errors:
            out["reason"] += f"; {len(errors)} trials failed (first: {errors[0]})"
    folder = Path(task.folder)
    if plots:
        out["plots"] = save_plots(study, folder)
    atomic_write_json(folder / "best.json", out)
    return out


def save_plots(study, folder: Path) -> list[str]:
    """Optuna's optimisation history and parameter importances (matplotlib), as PNGs beside the study."""
    import matplotlib  # lazy: start-up time

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: start-up time
    import optuna.visualization.matplotlib as vis  # lazy: start-up time

    written = []
    for name, plot in (("history", vis.plot_optimization_history), ("importance", vis.plot_param_importances)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "too few trials": the plot then says all are equal
                ax = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError):  # e.g. importances need a complete trial
            continue
        fig = getattr(ax, "figure", None) or ax.flat[0].figure
        fig.set_size_inches(7, 4)
        fig.tight_layout()
        save_figure(fig, folder / name, formats=("png",), dpi=110)
        plt.close(fig)
        written.append(f"{name}.png")
    return written


def table(rows: list[dict]) -> str:
    """The per-method table of a tuning: best setting, its metrics, trials, seconds, target."""
    head = ["method", "best setting", "d_f", "d_t", "objective", "default d_f / d_t", "trials", "seconds", "target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for b in rows:
        m, d = b["metrics"], (b.get("default") or {}).get("metrics")
        t = b["trials"]
        trials = f"{t['finished']}" + (f" ({t['pruned']} pruned)" if t["pruned"] else "")
        lines.append("| " + " | ".join([
            b["method"], (entry_text(b["entry"]) + (" (default)" if b.get("best_is_default") else "")) if b["entry"]
            else "-", f"{m['d_f']:.1f}" if m else "-", f"{m['d_t']:.1f}" if m else "-",
            f"{b['value']:.2f}" if b["value"] is not None else "-", f"{d['d_f']:.1f} / {d['d_t']:.1f}" if d else "-",
            trials, f"{b['seconds']:.0f}", "yes" if b["meets_target"] else "**no**"]) + " |")
    return "\n".join(lines)


def done_text(folder: Path) -> str:
    best = folder / "best.json"
    if best.is_file():
        try:
            b = json.loads(best.read_text())
            return f"tuned before: {b['trials']['finished']} trials, best {entry_text(b['entry'])}" if b.get(
                "entry") else "tuned before"
        except (ValueError, KeyError, TypeError):
            pass
    return "resumes its study" if (folder / "study.db").is_file() else "new study"


def report_text(s: Setting, results, *, baseline, reference, wall, trials, jobs, skipped) -> str:
    head = (f"Tuning {s.dataset} ({s.net}), forget class {s.forget_class}, OOD {sorted(s.ood_classes)}, seed {s.seed}: "
            f"{len(results)} methods, budget {trials} trials each, {jobs} worker(s), {wall:.0f} s wall time.\n"
            f"Objective {OBJECTIVE}, w = {results[0]['dt_weight'] if results else '-'}; retrain d_f "
            f"{reference['d_f']:.1f}, d_t {reference['d_t']:.1f} ({reference['run']}); baseline d_t "
            f"{baseline['d_t']:.1f}; target d_f <= {TARGET_DF:g} and d_t >= {baseline['d_t'] - TARGET_DT_DROP:.1f}.\n")
    missed = [r for r in results if not r["meets_target"]]
    text = head + "\n" + table(results) + "\n"
    text += f"\n{len(results) - len(missed)} of {len(results)} meet the target."
    for r in missed:
        text += f"\n- {r['method']} misses: {r['reason']}"
    if skipped:
        text += f"\nNot tuned (no search space): {', '.join(skipped)}."
    return text
