"""The calibration study's report: ``docs/calibration.md``, its figures and ``numbers.json``.

What the study is and why it is built so: :mod:`unlearn.study.calibration` (its docstring). Here: the
figures (label rates of the negative controls against R, the power of the dosed models and what a dose
does to their accuracy, the model statistics by dose), the Markdown tables, the limits of the
calibration, and :func:`write_document`, which writes all of them from the ``numbers`` of
:func:`unlearn.study.calibration_runs.run_study`, each file atomically. The sentences read off the
numbers and the number formats come from :mod:`unlearn.study.calibration_findings`, the design from
:mod:`unlearn.study.calibration_rates`; nothing here runs or trains anything.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..evaluation.rea.population import LEVELS
from ..store.checkpoint import atomic_write_json, atomic_write_text, save_figure
from .calibration_findings import (dose_accuracy, dose_effects, findings, fixed, intact_doses, percent,
                                   permutation_bound, requirement, requirement_lines)
from .calibration_rates import COMMAND, KS, POWER_K, RS


# ---------------------------------------------------------------- figures

def _dose_axis(ax, doses):
    ax.set_xticks(range(len(doses)), [str(d) for d in doses])
    ax.set_xlabel("dose: SGD steps on forget-class samples")


def plot_negative(stem, numbers: dict) -> list[str]:
    """Label rates of retrained-vs-retrained experiments against R, one panel per level and K."""
    from matplotlib.figure import Figure  # lazy: start-up time

    fig = Figure(figsize=(10, 7), layout="constrained")
    axes = fig.subplots(len(LEVELS), len(KS), squeeze=False, sharey=True)
    sim = {(r["K"], r["R"]): r for r in numbers["simulated"]}
    for i, lv in enumerate(LEVELS):
        rows = numbers["levels"][lv]["negative_control"]
        for j, k in enumerate(KS):
            ax = axes[i, j]
            rs = [r for r in rows if r["K"] == k]
            x = [r["R"] for r in rs]
            for key, colour in (("false_difference", "crimson"), ("residual", "tab:red"),
                                ("over-suppressed", "tab:blue"), ("equivalent", "tab:green"),
                                ("undetermined", "0.5")):
                ax.plot(x, [r[key] for r in rs], "o-", color=colour, label=key.replace("_", " "),
                        lw=2 if key == "false_difference" else 1)
            for key, colour in (("equivalent", "tab:green"),):
                ax.plot(x, [sim[(k, r)][key] for r in x], ":", color=colour, label="equivalent, normal model")
            ax.plot(x, [sim[(k, r)]["residual"] + sim[(k, r)]["over-suppressed"] for r in x], ":", color="crimson",
                    label="false difference, normal model")
            ax.axhline(numbers["alpha"], color="k", lw=0.6, ls="--")
            ax.set_xscale("log")
            ax.minorticks_off()
            ax.set_xticks(x, [str(v) for v in x])
            ax.set_title(f"{lv} level, K = {k}")
            ax.set_xlabel("R (references)")
            ax.set_ylabel("rate over splits")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"{numbers['tag']}: retrained models split into method and references "
                 f"({numbers['n_splits']} splits of {len(numbers['seeds'])} models; dashed: alpha)")
    return save_figure(fig, stem, formats=("png",), dpi=110)


def plot_power(stem, numbers: dict) -> list[str]:
    """Label rates of dosed methods (K = 3 and K = 1) against the R references, per level, by dose, and
    what the dose does to the models' test accuracy (forget class, retain classes)."""
    from matplotlib.figure import Figure  # lazy: start-up time

    doses = numbers["doses"]
    fig = Figure(figsize=(15, 4.8), layout="constrained")
    axes = fig.subplots(1, len(LEVELS) + 1)
    for ax, lv in zip(axes, LEVELS):
        for k, style in ((str(POWER_K), "o-"), ("1", "s--")):
            rows = numbers["levels"][lv]["power"][k]
            for key, colour in (("residual", "tab:red"), ("equivalent", "tab:green"), ("undetermined", "0.5"),
                                ("over-suppressed", "tab:blue")):
                ax.plot(range(len(doses)), [r[key] for r in rows], style, color=colour, ms=4,
                        label=f"{key}, K = {k}", lw=1.5 if k != "1" else 0.8)
        ax.axhline(numbers["alpha"], color="k", lw=0.6, ls="--")
        _dose_axis(ax, doses)
        ax.set_ylabel("rate")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{lv} level")
    h, lab = axes[0].get_legend_handles_labels()
    fig.legend(h, lab, loc="outside lower center", ncol=4, fontsize=7)
    ax = axes[-1]
    for key, colour in (("forget_test", "tab:red"), ("retain_test", "tab:green")):
        v = np.array([[m[str(d)][key] for d in doses] for m in numbers["dose_metrics"]])
        for row in v:
            ax.plot(range(len(doses)), row, "-", color=colour, alpha=0.3, lw=0.7)
        ax.plot(range(len(doses)), v.mean(0), "o-", color=colour, label=key.replace("_", " ") + " accuracy (mean)")
        if numbers.get("dose_metrics_pretraining_optimiser"):
            w = np.array([[m[str(d)][key] for d in doses] for m in numbers["dose_metrics_pretraining_optimiser"]])
            ax.plot(range(len(doses)), w.mean(0), "x:", color=colour,
                    label=f"{key.replace('_', ' ')}, momentum {numbers['pretraining_optimiser']['momentum']:g} (mean)")
    _dose_axis(ax, doses)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("what the dose does (plain SGD: each model, mean bold;\ndotted: with the pretraining optimiser)", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle(f"{numbers['tag']}: dosed retrained models against "
                 f"{len(numbers['seeds']) - len(numbers['held_out_seeds'])} references")
    return save_figure(fig, stem, formats=("png",), dpi=110)


def plot_statistics(stem, numbers: dict) -> list[str]:
    """Each held-out model's statistic by dose, over the references' mean and margin band."""
    from matplotlib.figure import Figure  # lazy: start-up time

    doses = numbers["doses"]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    for ax, lv in zip(fig.subplots(1, len(LEVELS)), LEVELS):
        L = numbers["levels"][lv]
        d = L["power_refs"]
        ax.axhspan(d["mean"] - numbers["margin_sd"] * d["sd"], d["mean"] + numbers["margin_sd"] * d["sd"],
                   color="0.88", label=f"references: mean ± {numbers['margin_sd']:g} sd (margin)")
        ax.axhline(d["mean"], color="0.4", lw=0.8)
        vals = np.array([L["dosed"][str(k)] for k in doses])  # (doses, models)
        for j in range(vals.shape[1]):
            ax.plot(range(len(doses)), vals[:, j], "-", color="tab:red", alpha=0.35, lw=0.8)
        ax.plot(range(len(doses)), vals.mean(1), "o-", color="tab:red", label="held-out models (mean bold)")
        ax.plot(np.full(len(L["statistics"]), -0.35), L["statistics"], "_", color="k", ms=8,
                label="all retrained models")
        _dose_axis(ax, doses)
        ax.set_ylabel("model statistic: mean member curve area")
        ax.set_title(f"{lv} level")
        ax.legend(fontsize=7)
    fig.suptitle(f"{numbers['tag']}: the model statistic of dosed retrained models")
    return save_figure(fig, stem, formats=("png",), dpi=110)


# ---------------------------------------------------------------- the document

def _md(header, rows) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(out + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def negative_table(numbers: dict, lv: str) -> str:
    sim = {(r["K"], r["R"]): r for r in numbers["simulated"]}
    spread = {(r["K"], r["R"]): r for r in numbers["population_spread"]}
    head = ["K", "R", "false residual", "false over-suppressed", "false difference (sum)", "± between populations",
            "normal model", "equivalent", "± between populations", "normal model", "undetermined",
            "disjoint splits: false / equivalent / n"]
    rows = []
    for r in numbers["levels"][lv]["negative_control"]:
        s, sp, d = sim[(r["K"], r["R"])], spread[(r["K"], r["R"])], r["disjoint"]
        rows.append([r["K"], r["R"], percent(r["residual"]), percent(r["over-suppressed"]),
                     f"**{percent(r['false_difference'])}**", percent(sp["sd_false_difference"]),
                     percent(s["residual"] + s["over-suppressed"]), percent(r["equivalent"]),
                     percent(sp["sd_equivalent"]), percent(s["equivalent"]), percent(r["undetermined"]),
                     f"{d['false_difference']} / {d['counts']['equivalent']} / {d['n']}"])
    return _md(head, rows)


def _acc(values) -> str:
    return f"{np.mean(values):.1f} [{min(values):.1f}, {max(values):.1f}]"


def power_table(numbers: dict, lv: str, k: str) -> str:
    head = ["dose", "forget-class test acc. (%) mean [min, max]", "retain-class test acc. (%) mean [min, max]",
            "shift (ref. sd)", "paired shift (ref. sd)", "residual", "equivalent", "undetermined", "over-suppressed",
            "experiments"]
    acc = dose_accuracy(numbers)
    rows = [[r["dose"], _acc(acc[r["dose"]]["forget_test"]), _acc(acc[r["dose"]]["retain_test"]),
             fixed(r["shift_sd"], 2), f"{fixed(r['paired_shift_sd'], 2)} ± {fixed(r['paired_shift_sd_spread'], 2)}",
             f"**{percent(r['residual'])}**", percent(r["equivalent"]), percent(r["undetermined"]),
             percent(r["over-suppressed"]), r["n"]]
            for r in numbers["levels"][lv]["power"][k]]
    return _md(head, rows)


def stats_table(numbers: dict) -> str:
    head = ["level", "models", "mean", "sd", "min", "max", "Shapiro-Wilk p", "power references: mean", "sd",
            f"margin ({numbers['margin_sd']:g} sd)"]
    rows = []
    for lv in LEVELS:
        d, p = numbers["levels"][lv]["describe"], numbers["levels"][lv]["power_refs"]
        rows.append([lv, d["n"], fixed(d["mean"]), fixed(d["sd"]), fixed(d["min"]), fixed(d["max"]),
                     fixed(d["shapiro_p"]), fixed(p["mean"]), fixed(p["sd"]), fixed(numbers["margin_sd"] * p["sd"])])
    return _md(head, rows)


def dose_effect_table(numbers: dict) -> str:
    """Each dose's test accuracies (mean [min, max] over the dosed models): the plain-SGD doses of the
    study and, when measured, the same trajectories with the pretraining optimiser."""
    pre = numbers.get("dose_metrics_pretraining_optimiser")
    o = numbers.get("pretraining_optimiser", {})
    head = ["dose", "forget-class test acc. (%): plain SGD (the dose)", "retain-class: plain SGD"]
    if pre:
        head += [f"forget-class: momentum {o['momentum']:g}, weight decay {o['weight_decay']:g}",
                 f"retain-class: momentum {o['momentum']:g}, weight decay {o['weight_decay']:g}"]
    acc = dose_accuracy(numbers)
    pacc = dose_accuracy(numbers, "dose_metrics_pretraining_optimiser") if pre else None
    rows = []
    for d in numbers["doses"]:
        row = [d, _acc(acc[d]["forget_test"]), _acc(acc[d]["retain_test"])]
        if pre:
            row += [_acc(pacc[d]["forget_test"]), _acc(pacc[d]["retain_test"])]
        rows.append(row)
    return _md(head, rows)


def write_document(out: Path, numbers: dict, timings: dict) -> Path:
    """``out/calibration.md`` and ``out/calibration/`` (figures, numbers.json), each written atomically."""
    figs = out / "calibration"
    figs.mkdir(parents=True, exist_ok=True)
    plot_negative(figs / "negative_controls", numbers)
    plot_power(figs / "power", numbers)
    plot_statistics(figs / "statistics", numbers)
    a = numbers["attack"]
    n = len(numbers["seeds"])
    held = numbers["held_out_seeds"]
    when = "; ".join(f"{k} {v['seconds']:.0f} s" + (f" ({v['ran']} of {v['runs']} runs ran)" if "ran" in v else "")
                     + (f" ({v['computed']} curve sets computed, {v['cached']} cached)" if "computed" in v else "")
                     for k, v in timings["last"].items())
    first = timings.get("work", {})
    work = "; ".join(f"{k} {v['seconds']:.0f} s" for k, v in first.items()) or "not recorded"
    d = numbers["dose"]
    doses, po = numbers["doses"], numbers.get("pretraining_optimiser")
    pe = pbroken = None
    if numbers.get("dose_metrics_pretraining_optimiser"):
        pe = dose_effects(numbers, "dose_metrics_pretraining_optimiser")
        pbroken = [k for k in doses if k not in intact_doses(numbers, "dose_metrics_pretraining_optimiser")]
    req = requirement(numbers)
    K, R = next(iter(req.values()))["K"], next(iter(req.values()))["R"]
    bound = permutation_bound(K, R, numbers["alpha"])
    parts = [
        "# Calibration of the Reminiscence Attack's verdict on Digits\n",
        f"Made by `{COMMAND}` (`unlearn/study/calibration.py`); every number below is computed by it from the "
        f"runs under its log root and is also in [`calibration/numbers.json`](calibration/numbers.json). "
        f"Rerunning reuses finished runs and cached curves.\n",
        "## What was run\n",
        f"- **Models.** {n} retrained {numbers['tag']} models (forget class {numbers['forget_class']}, OOD "
        f"{numbers['ood']}): forget-stage `retrain` runs of the method list's entry {numbers['retrain_entry']}, "
        f"seeds {numbers['seeds'][0]}..{numbers['seeds'][-1]} (`config.REFERENCE_SEED_BASE` + 0..{n - 1}), run "
        f"through run.py's job graph.",
        f"- **Model statistic.** The mean over the attack's {a['trials']} trials of the forget-class (member) curve "
        f"area, at the output and the feature level, relearning lr {a['lr_used']}, the attack configuration of "
        f"`config.ATTACK['{numbers['dataset']}']` ({a['unlearn_data_percent']}% of the forget class as candidates, "
        f"{a['steps']} steps, {a['retain_per_step']} retain samples per step) and attack seed {a['seed']}: every "
        f"model relearns the same candidate sets with the same step plans.",
        f"- **Decision.** `decide_means` (for K >= 2 the permutation test of the pooled t statistic over every "
        f"split of the K + R models, for K = 1 the prediction t-test; TOST for equivalence; alpha "
        f"{numbers['alpha']}) with margin `config.REA_MARGIN_SD` = {numbers['margin_sd']:g} x the sd of each "
        f"experiment's references. The splits here are labelled by its vectorised form (`decide_arrays`, the "
        f"same rule, checked label for label by the tests).",
        f"- **Negative controls.** For K in {list(KS)} and R in {list(RS)}: {numbers['n_splits']} random splits of "
        f"the {n} models into K \"method\" models and R references, each decided; and one random partition of the "
        f"{n} models into disjoint splits (floor({n} / (K + R)) experiments that share no model).",
        f"- **Positive controls.** The {len(held)} models of the highest seeds ({held[0]}..{held[-1]}) are never "
        f"references here; the references are the other {n - len(held)}. Each held-out model gets a dose of "
        f"k in {numbers['doses']} steps of plain SGD, each on {d['forget_per_step']} forget-class training samples + "
        f"{d['retain_per_step']} retain samples (lr {d['lr']} = the pretraining lr, momentum {d['momentum']:g}, "
        f"weight decay {d['weight_decay']:g}: each step is p - lr x grad; batches drawn from a generator seeded with "
        f"the model's seed). The doses of one model are prefixes of one trajectory (a larger dose continues a smaller "
        f"one), and dose 0 is the retrained model itself. Power: every K = {POWER_K} subset of the dosed models (and "
        f"each one alone, K = 1) against the {n - len(held)} references."
        + (f" No momentum: with the pretraining optimiser (momentum {po['momentum']:g}, weight decay "
           f"{po['weight_decay']:g}) the same batches give a mean retain-class test accuracy of "
           f"{fixed(pe[doses[0]]['retain_test'], 1)}% at dose 0, "
           + ", ".join(f"{fixed(pe[k]['retain_test'], 1)}% at dose {k}" for k in doses[1:])
           + " in this run (accuracies only; table below)"
           + (f", so from dose {pbroken[0]} on it breaks the models and its power curve would measure breakage, "
              f"not residual knowledge." if pbroken else ".")
           if pe else ""),
        f"- **Wall time.** This invocation: {when}. Invocations that did the work (summed): {work}.\n",
        "## The model statistics\n",
        stats_table(numbers), "",
        "![statistics](calibration/statistics.png)\n",
        "## Negative controls: retrained against retrained\n",
        "Every experiment here compares retrained models with retrained models, so `residual` and `over-suppressed` "
        "are false differences and `equivalent` is the right call. *These rates are not rates of independent "
        f"experiments*: the {numbers['n_splits']} splits reuse the same {n} models, so they are the label rates of "
        f"experiments drawn without replacement from these {n} models. How far such a rate can stray from the rate "
        f"of the population the models come from is the \"± between populations\" column: the sd of the same rate "
        f"over {numbers['population_spread'][0]['n_pop']} simulated populations of {n} normal model statistics, "
        f"each split {numbers['population_spread'][0].get('n_splits', numbers['n_splits'])} times at random (fewer "
        f"splits than here where the cost demands it, so this spread is if anything too wide). \"normal model\" is "
        f"the rate `unlearn/evaluation/rea/calibration.py` predicts for independent normal experiments "
        f"({numbers['simulated'][0]['n_sim']} of them). The last column counts the labels of the disjoint splits, "
        "the only independent experiments these models give. For K >= 2 the difference test is a permutation test: "
        "within a split the K + R retrained models are exchangeable, so its false-difference rate over the splits "
        "of *any* fixed set of models is at most alpha by construction "
        f"(at K = {K}, R = {R}: {bound[0]} of the {bound[1]} splits of a split's models, {percent(bound[2])}); a "
        "measured rate above that is the Monte Carlo error of drawing the splits.\n",
    ]
    for lv in LEVELS:
        parts += [f"### {lv} level\n", negative_table(numbers, lv), ""]
        dis = [r for r in numbers["levels"][lv]["negative_control"] if r["disjoint"]["n"] >= 2]
        if dis:
            parts += ["Disjoint splits, false-difference rate with its exact 95% interval: " + "; ".join(
                f"K = {r['K']}, R = {r['R']}: {r['disjoint']['false_difference']}/{r['disjoint']['n']} "
                f"[{percent(r['disjoint']['false_difference_ci'][0])}, "
                f"{percent(r['disjoint']['false_difference_ci'][1])}]"
                for r in dis) + ".\n"]
    parts += [f"### The {percent(numbers['alpha'])} requirement at K = {K}, R = {R}\n",
              f"K = {K} method models (`config.REPLICATES['{numbers['dataset']}']`) against R = {R} references "
              f"(`config.ATTACK['{numbers['dataset']}']['retrain_refs']`) is how the project decides. A method that "
              f"is retraining must be called `residual` or `over-suppressed` at most alpha = "
              f"{percent(numbers['alpha'])} of the time.\n",
              *[f"- {x}" for x in requirement_lines(numbers)], "",
              "![negative controls](calibration/negative_controls.png)\n",
              "## Positive controls: retrained models with a known dose of the forget class\n",
              "What a dose does to the held-out models (test accuracy on the forget class and on the retain classes, "
              "mean [min, max] over the models; every model's values are in `dose_metrics` of numbers.json)"
              + (", and what the same trajectories do with the pretraining optimiser (accuracies only, "
                 "`dose_metrics_pretraining_optimiser`)" if pe else "") + ":\n",
              dose_effect_table(numbers), "",
              "Shift: the dosed models' mean statistic minus the references' mean, in reference sd; paired: each "
              "model's dosed minus its own undosed statistic (mean ± sd over the models), in reference sd.\n"]
    for lv in LEVELS:
        parts += [f"### {lv} level, K = {POWER_K} (all subsets of the held-out models)\n",
                  power_table(numbers, lv, str(POWER_K)), "",
                  f"### {lv} level, K = 1 (each held-out model alone)\n", power_table(numbers, lv, "1"), ""]
    parts += ["![power](calibration/power.png)\n", "## What it shows\n", *[f"- {s}" for s in findings(numbers)], "",
              caveats(numbers)]
    atomic_write_text(out / "calibration.md", "\n".join(parts) + "\n")
    atomic_write_json(figs / "numbers.json", {**numbers, "timings": timings})
    return out / "calibration.md"


def caveats(numbers: dict) -> str:
    n_refs = len(numbers["seeds"]) - len(numbers["held_out_seeds"])
    return f"""## Limits of this calibration

- One dataset (Digits), one attack seed (one set of candidate sets and step plans) and one relearning lr: the
  rates are conditional on them. A different attack seed changes every model's statistic at once.
- The negative-control rates over splits reuse the same models (see above); the disjoint splits are
  independent but few, so their intervals are wide.
- A dose is an idealised residual: a few steps of ordinary training on the forget class, not what an
  unlearning method leaves behind; its doses are nested (one trajectory per model), so the dose curves of one
  model are not independent of each other.
- The dose is plain SGD on batches half of which are forget-class samples, at the pretraining lr; the ladder of
  doses ({", ".join(map(str, numbers["doses"]))} steps) is coarse, so the range between "invisible to accuracy"
  and "class learnt" is seen at a few points only.
- The power part's references are fixed (the same {n_refs} models in every experiment), so its rates are
  conditional on them; dose 0 gives the false-difference rate for these references and these held-out models.
"""
