"""What the calibration document says, read off the study's numbers.

What the study is and why it is built so: :mod:`unlearn.study.calibration` (its docstring). Here: the
document's number formats (:func:`percent`, :func:`fixed`), the readings its tables and its prose share
(each dose's test accuracies and their means, the doses that leave the models intact, the paired
shifts), the margin below which one method model can never be called equivalent, the project's alpha
requirement at its K and R (:func:`requirement`, :func:`requirement_lines`) and the sentences of "What
it shows" (:func:`findings`). Everything is computed from the ``numbers`` of
:func:`unlearn.study.calibration_runs.run_study`, so a rerun cannot contradict the text. Only the design
(:mod:`unlearn.study.calibration_rates`) is imported; the document itself is written by
:mod:`unlearn.study.calibration_report`.
"""
from __future__ import annotations

import math

import numpy as np

from ..evaluation.rea.population import LEVELS
from .calibration_rates import DOSE_BATCH, POWER_K, binomial_ci


def percent(x) -> str:
    """A rate as the document prints it (``0.048`` -> ``4.8%``; ``–`` when missing or not finite)."""
    return "–" if x is None or not np.isfinite(x) else f"{100 * x:.1f}%"


def fixed(x, d=3) -> str:
    """A number with ``d`` decimals as the document prints it (``–`` when missing or not finite)."""
    return "–" if x is None or not np.isfinite(x) else f"{x:.{d}f}"


def dose_accuracy(numbers: dict, key: str = "dose_metrics") -> dict:
    """{dose: {"forget_test": [...], "retain_test": [...]}}: each dosed model's test accuracies (%), in the
    order of the held-out seeds, from ``numbers[key]`` (the plain-SGD doses, or
    ``dose_metrics_pretraining_optimiser``)."""
    return {d: {a: [m[str(d)][a] for m in numbers[key]] for a in ("forget_test", "retain_test")}
            for d in numbers["doses"]}



INTACT_POINTS = 5.0  # a dose leaves the model intact while its mean retain-class test accuracy is within this of dose 0's


def dose_effects(numbers: dict, key: str = "dose_metrics") -> dict:
    """{dose: mean forget- and retain-class test accuracy of the dosed models, and the lowest retain one}
    (``key``: as in :func:`dose_accuracy`)."""
    return {d: {"forget_test": float(np.mean(a["forget_test"])), "retain_test": float(np.mean(a["retain_test"])),
                "retain_min": float(min(a["retain_test"]))} for d, a in dose_accuracy(numbers, key).items()}


def intact_doses(numbers: dict, key: str = "dose_metrics") -> list:
    """The doses before the first one whose mean retain-class test accuracy falls more than
    :data:`INTACT_POINTS` below dose 0's."""
    eff, doses = dose_effects(numbers, key), numbers["doses"]
    floor = eff[doses[0]]["retain_test"] - INTACT_POINTS
    bad = next((i for i, d in enumerate(doses) if eff[d]["retain_test"] < floor), len(doses))
    return doses[:bad]


def _power_row(numbers: dict, lv: str, dose) -> dict:
    return next(r for r in numbers["levels"][lv]["power"][str(POWER_K)] if r["dose"] == dose)


def paired_mean(numbers: dict, lv: str, dose) -> float:
    return _power_row(numbers, lv, dose).get("paired_shift_sd", math.nan)


def moves(numbers: dict, lv: str, dose) -> tuple[int, int, int]:
    """(models whose statistic rose from dose 0, models whose statistic fell, models) at ``dose``."""
    L = numbers["levels"][lv]["dosed"]
    d = np.asarray(L[str(dose)]) - np.asarray(L[str(numbers["doses"][0])])
    return int((d > 0).sum()), int((d < 0).sum()), int(d.size)


def paired_spread(numbers: dict, lv: str, dose) -> float:
    return _power_row(numbers, lv, dose).get("paired_shift_sd_spread", math.nan)


def k1_equivalence_bound(R: int, alpha: float) -> float:
    """The smallest margin (in reference sd) at which one method model (K = 1) can ever be called
    equivalent with R references: TOST needs ``margin - t_{1-alpha, R-1} * sd * sqrt(1 + 1/R) > |diff| >= 0``,
    and the margin is ``margin_sd`` x the same sd."""
    from scipy.stats import t as student_t  # lazy: start-up time

    return float(student_t.ppf(1 - alpha, R - 1) * math.sqrt(1 + 1 / R))


def permutation_bound(k: int, r: int, alpha: float) -> tuple[int, int, float]:
    """The largest false-difference rate the exact two-sided permutation test can have at K, R: (splits
    rejected, splits, their ratio). p = 2 min(count below, count above) / C(K + R, K), counting the observed
    split; ``p < alpha`` holds for the ``t`` most extreme splits in each tail, ``t = ceil(alpha C / 2) - 1``."""
    c = math.comb(k + r, k)
    t = max(math.ceil(alpha * c / 2) - 1, 0)
    return 2 * t, c, 2 * t / c


def requirement(numbers: dict) -> dict:
    """The negative-control row of each level at the project's setting (K = ``numbers["replicates"]``
    method models, R = ``attack["retrain_refs"]`` references): its false-difference rate against alpha,
    with the between-population sd and the normal model's expectation of that rate."""
    K, R = numbers["replicates"], numbers["attack"]["retrain_refs"]
    sp = next(r for r in numbers["population_spread"] if (r["K"], r["R"]) == (K, R))
    sim = next(r for r in numbers["simulated"] if (r["K"], r["R"]) == (K, R))
    out = {}
    for lv in LEVELS:
        r = next(x for x in numbers["levels"][lv]["negative_control"] if (x["K"], x["R"]) == (K, R))
        out[lv] = {"K": K, "R": R, "residual": r["residual"], "over-suppressed": r["over-suppressed"],
                   "false_difference": r["false_difference"], "n": r["n"], "sd": sp["sd_false_difference"],
                   "normal": sim["residual"] + sim["over-suppressed"], "disjoint": r["disjoint"],
                   "excess_sd": (r["false_difference"] - numbers["alpha"]) / sp["sd_false_difference"]}
    return out


def requirement_lines(numbers: dict) -> list[str]:
    """One plain sentence per level: the false residual + over-suppressed rate at the project's K, R
    against the alpha requirement."""
    a, out = numbers["alpha"], []
    for lv, q in requirement(numbers).items():
        fd, n_models = q["false_difference"], len(numbers["seeds"])
        if fd <= a:
            verdict = f"**Within** the {percent(a)} requirement ({100 * (a - fd):.2f} points below it)."
        else:
            pts = 100 * (fd - a)
            verdict = (f"**Above** the {percent(a)} requirement by {pts:.{2 if pts >= 0.01 else 3}f} points, "
                       f"{q['excess_sd']:.2f} between-population sd: "
                       + (f"within twice that spread, so these {n_models} models do not show that the rate of the "
                          f"population they come from exceeds {percent(a)}." if q["excess_sd"] <= 2 else
                          "more than twice that spread, so the rule errs more often on these models than the "
                          "requirement allows."))
        if q["K"] >= 2:
            _, _, bound = permutation_bound(q["K"], q["R"], a)
            k_false = round(fd * q["n"])
            lo, hi = binomial_ci(k_false, q["n"])
            verdict += (f" The permutation test's exact bound here is {100 * bound:.2f}%; {k_false} of {q['n']} "
                        f"splits ({100 * fd:.2f}%, exact 95% interval [{100 * lo:.2f}%, {100 * hi:.2f}%]) are "
                        + ("consistent with it." if lo <= bound else "more than the bound allows."))
        d = q["disjoint"]
        out.append(f"**{lv} level: {percent(fd)} ± {percent(q['sd'])}** (between populations of {n_models} normal "
                   f"models) false differences: false residual {percent(q['residual'])} + false over-suppressed "
                   f"{percent(q['over-suppressed'])} over {q['n']} splits at K = {q['K']}, R = {q['R']} (the normal "
                   f"model expects {percent(q['normal'])}). {verdict} The disjoint splits give {d['n']} independent "
                   f"experiment{'s' if d['n'] != 1 else ''} at this size ({d['false_difference']} false).")
    return out


def findings(numbers: dict) -> list[str]:
    """The sentences of "What it shows", each read off the numbers (so a rerun cannot contradict them)."""
    a = numbers["alpha"]
    spread = {(r["K"], r["R"]): r for r in numbers["population_spread"]}
    sim = {(r["K"], r["R"]): r for r in numbers["simulated"]}
    out = []
    for lv in LEVELS:
        L = numbers["levels"][lv]
        rows = L["negative_control"]
        worst = max(rows, key=lambda r: r["false_difference"])
        above = [r for r in rows if r["false_difference"] > a + 2 * spread[(r["K"], r["R"])]["sd_false_difference"]]
        out.append(f"**{lv} level, negative controls.** The false-difference rate (residual + over-suppressed) over "
                   f"splits ranges {percent(min(r['false_difference'] for r in rows))}-"
                   f"{percent(worst['false_difference'])} "
                   f"(worst at K = {worst['K']}, R = {worst['R']}; alpha {percent(a)}). "
                   + ("No cell exceeds alpha by more than twice the between-population spread of 30 normal models."
                      if not above else
                      f"{len(above)} cell(s) exceed alpha by more than twice the between-population spread: "
                      + ", ".join(f"K = {r['K']}, R = {r['R']}: {percent(r['false_difference'])}" for r in above) + ".")
                   + " Equivalent (the right call): "
                   + ", ".join(f"K = {r['K']}, R = {r['R']}: {percent(r['equivalent'])} (normal model "
                               f"{percent(sim[(r['K'], r['R'])]['equivalent'])})"
                               for r in rows if r["R"] in (3, 20)) + ".")
        res = {r["dose"]: r for r in L["power"][str(POWER_K)]}
        doses = numbers["doses"]
        first = next((d for d in doses if res[d]["residual"] >= 0.8), None)
        r0 = res[doses[0]]
        neg = next(r for r in rows if r["K"] == POWER_K and r["R"] == r0["R"]) if any(
            r["K"] == POWER_K and r["R"] == r0["R"] for r in rows) else None
        intact = intact_doses(numbers)
        falls = [(x, y) for x, y in zip(doses, doses[1:]) if res[y]["residual"] < res[x]["residual"] - 0.1]
        s = (f"**{lv} level, positive controls (K = {POWER_K}, R = {r0['R']}).** At dose 0 (the held-out retrained "
             f"models themselves) the labels are residual {percent(r0['residual'])}, over-suppressed "
             f"{percent(r0['over-suppressed'])}, equivalent {percent(r0['equivalent'])}: the held-out models' mean "
             f"lies {fixed(r0['shift_sd'], 2)} reference sd from the references'")
        s += (f" (over random K = {POWER_K}, R = {r0['R']} splits of all {len(numbers['seeds'])} models, equivalent "
              f"{percent(neg['equivalent'])}, over-suppressed {percent(neg['over-suppressed'])}), so this fixed split "
              f"is one draw and the dose effects are best read paired. " if neg else ". ")
        s += (f"Residual reaches 80% first at dose {first} (paired shift {fixed(res[first]['paired_shift_sd'], 2)} "
              f"reference sd). " if first is not None else
              f"Residual never reaches 80% (largest: {percent(max(r['residual'] for r in res.values()))}). ")
        s += ("Over the doses that leave the model intact (" + ", ".join(map(str, intact)) + "), residual: "
              + ", ".join(f"{percent(res[d]['residual'])} at {d}" for d in intact) + ". ")
        if falls:
            s += ("Power is not monotone in the dose: residual falls "
                  + ", ".join(f"from {percent(res[x]['residual'])} at dose {x} to "
                              f"{percent(res[y]['residual'])} at dose {y}"
                              for x, y in falls) + ".")
        out.append(s)
    eff = dose_effects(numbers)
    doses, intact = numbers["doses"], intact_doses(numbers)
    broken = [d for d in doses if d not in intact]
    if broken:
        low = min(doses, key=lambda d: eff[d]["retain_test"])
        out.append(f"**Large doses break the model.** From dose {broken[0]} the mean retain-class test accuracy falls "
                   f"from {fixed(eff[doses[0]]['retain_test'], 1)}% (dose 0) to "
                   f"{fixed(eff[broken[0]]['retain_test'], 1)}% (lowest: {fixed(eff[low]['retain_test'], 1)}% at dose "
                   f"{low}, one model at {fixed(eff[low]['retain_min'], 1)}%) while the forget class is "
                   f"{fixed(eff[broken[0]]['forget_test'], 1)}% right: with {DOSE_BATCH} of {2 * DOSE_BATCH} "
                   f"samples per step from the forget class at lr {numbers['dose']['lr']} and momentum "
                   f"{numbers['dose']['momentum']}, the forget class crowds out the others. Such a model is no small "
                   f"residual. At dose {low} the statistic "
                   + " and ".join(f"rises for {up} and falls for {down} of the {n} models at the {lv} level (paired "
                                  f"shift {fixed(paired_mean(numbers, lv, low), 2)} ± "
                                  f"{fixed(paired_spread(numbers, lv, low), 2)} reference sd)" for lv, (up, down, n) in
                                  ((lv, moves(numbers, lv, low)) for lv in LEVELS))
                   + f"; a likely reason is that the relearning steps ({numbers['attack']['retain_per_step']} "
                   f"retain samples beside each candidate) then mostly repair the retain classes. The power curves "
                   f"from dose {broken[0]} on measure this breakage, not a dose of residual knowledge.")
    else:
        d0, last = eff[doses[0]], eff[doses[-1]]
        learnt = next((d for d in doses if eff[d]["forget_test"] >= 50.0), None)
        out.append(f"**The dose teaches the forget class without breaking the model.** With plain SGD (momentum "
                   f"{numbers['dose']['momentum']:g}, weight decay {numbers['dose']['weight_decay']:g}) the mean "
                   f"forget-class test accuracy is " + ", ".join(f"{fixed(eff[d]['forget_test'], 1)}%" for d in doses)
                   + f" at doses {', '.join(map(str, doses))}"
                   + (f" (above 50% first at dose {learnt})" if learnt is not None else "")
                   + f", while the mean retain-class test accuracy stays between "
                   f"{fixed(min(e['retain_test'] for e in eff.values()), 1)}% and "
                   f"{fixed(max(e['retain_test'] for e in eff.values()), 1)}% (dose 0: {fixed(d0['retain_test'], 1)}%; "
                   f"lowest single model {fixed(min(e['retain_min'] for e in eff.values()), 1)}%; every dose within "
                   f"{INTACT_POINTS:g} points of dose 0). At dose {doses[-1]} the forget class is "
                   f"{fixed(last['forget_test'], 1)}% right.")
    if numbers.get("dose_metrics_pretraining_optimiser"):
        key, o = "dose_metrics_pretraining_optimiser", numbers["pretraining_optimiser"]
        pe, pint = dose_effects(numbers, key), intact_doses(numbers, key)
        pbroken = [d for d in doses if d not in pint]
        s = (f"**Why the dose has no momentum.** The same trajectories (same lr {o['lr']:g}, same batches) with the "
             f"pretraining optimiser (momentum {o['momentum']:g}, weight decay {o['weight_decay']:g}), measured in "
             f"this run on accuracies alone, take the mean retain-class test accuracy from "
             f"{fixed(pe[doses[0]]['retain_test'], 1)}% at dose 0 to " + ", ".join(
                 f"{fixed(pe[d]['retain_test'], 1)}% at dose {d}" for d in doses[1:]))
        if pbroken:
            plow = min(doses, key=lambda d: pe[d]["retain_test"])
            s += (f": from dose {pbroken[0]} on it breaks the models (lowest single model "
                  f"{fixed(pe[plow]['retain_min'], 1)}% at dose {plow}), so a power curve over those doses would "
                  f"measure breakage, not residual knowledge.")
        else:
            s += f": within {INTACT_POINTS:g} points of dose 0 at every dose here."
        out.append(s)
    hidden = [d for d in intact if d and eff[d]["forget_test"] <= 1.0]
    for d in hidden:
        o, f = _power_row(numbers, "output", d), _power_row(numbers, "feature", d)
        if max(o["residual"], f["residual"]) < 0.5:
            continue
        out.append(f"**Dose {d} is invisible to accuracy, not to the attack.** Its models still get "
                   f"{fixed(eff[d]['forget_test'], 1)}% of the forget class's test images right (dose 0: "
                   f"{fixed(eff[doses[0]]['forget_test'], 1)}%), yet K = {POWER_K} experiments call it residual in "
                   f"{percent(o['residual'])} at the output level (paired shift {fixed(o['paired_shift_sd'], 2)} "
                   f"reference sd) "
                   f"and {percent(f['residual'])} at the feature level ({fixed(f['paired_shift_sd'], 2)}).")
    small = [d for d in intact if d]
    if small:
        po = [paired_mean(numbers, "output", d) for d in small]
        pf = [paired_mean(numbers, "feature", d) for d in small]
        less = max(pf) < max(po)
        out.append(f"**The feature level sees small doses {'less' if less else 'as well or better'}.** "
                   f"Paired shifts at the intact doses {small}: output " + ", ".join(fixed(x, 2) for x in po)
                   + ", feature " + ", ".join(fixed(x, 2) for x in pf) + " reference sd."
                   + (" The feature level resets the forget row of the classifier, so what a few steps did to "
                      "that row does not count there." if less else ""))
    k1 = [r for lv in LEVELS for r in numbers["levels"][lv]["negative_control"] if r["K"] == 1]
    bounds = {R: k1_equivalence_bound(R, a) for R in sorted({r["R"] for r in k1})}
    if k1 and all(r["equivalent"] == 0 for r in k1) and all(b > numbers["margin_sd"] for b in bounds.values()):
        out.append(f"**K = 1 can never be called equivalent at this margin.** With one method model TOST needs a "
                   f"margin above t(1 - alpha, R - 1) x sqrt(1 + 1/R) reference sd: "
                   + ", ".join(f"R = {R}: {b:.2f}" for R, b in bounds.items())
                   + f", all above {numbers['margin_sd']:g}. The negative controls at K = 1 are therefore "
                   f"`undetermined` whenever they are not a false difference: one model per method can show a "
                   f"difference, never its absence.")
    return out
