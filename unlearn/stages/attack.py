"""The Reminiscence Attack (Xiao et al.), with verdicts calibrated on retrained reference models.

Residual knowledge left by approximate unlearning makes a forgotten class come
back faster when the model is briefly retrained on a few of its samples
(:mod:`unlearn.evaluation.rea.relearn`). Every model relearns the same ``trials`` candidate sets
of the forget class (members) and of the OOD classes relabelled as the forget
class, with the same step plans, at two levels:

* ``output``: the model as it is (the paper's attack);
* ``feature``: the forget row of the classifier reset to one fixed random
  initialisation shared by every model, so what is measured is what the features
  still know, not how far the output row was pushed down.

Verdicts (:mod:`unlearn.evaluation.rea.verdict`) compare the model with a *reference population*
of R models retrained from independent seeds (:mod:`unlearn.evaluation.rea.reference`, curves
cached on disk) and with the never-unlearned model it started from (the anchor):
a graded reminiscence index (0 = like retraining, 1 = like the anchor, < 0 =
over-suppressed) with a bootstrap interval and a null band, a two-sided
cross-fitted game (AUC, balanced accuracy and TPR at 5% / 1% FPR), and the paper's
OOD game with the references' value as its null.

Deviations from the paper's code (2025 ``rea.py``), all deliberate: the statistic
is the area under the accuracy curve (steps-to-90% is still reported); one
pool of the first ``num_ood_dataset`` OOD classes gives the OOD candidate sets
(``trials`` sets in all, not per class); each curve gets a fresh optimiser.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

import config
from ..core.cli import device_arg, nonneg_int, positive_float, positive_int
from ..core.engine import resolve_device
from ..core.errors import UsageError
from ..core.runinfo import environment
from ..evaluation.rea import stats as S
from ..evaluation.rea import reference as ref
from ..evaluation.rea import verdict as V
from ..evaluation.rea.population import LEVELS, AttackConfig, Relearner, candidate_sets, population  # noqa: F401  (public API)
from ..evaluation.rea.relearn import relearn_curve, relearn_curves, reset_forget_row, run_curves  # noqa: F401  (public API)
from ..methods import resolve_paras
from ..methods.cli import extras_from_args, parser as forget_parser
from ..store.checkpoint import atomic_write_json, atomic_write_text
from ..store.identity import attack_extras, run_identity
from ..store.runs import missing_unlearned_model, newest_retrain_model
from ..store.setting import Setting, fmt_para


def unlearned_model_path(setting: Setting, method: str, para1, para2, extras: dict | None = None) -> Path:
    """Where the forget stage wrote the model to attack; ``extras``: the forget run's non-default settings."""
    return setting.stage_dir("unlearning", method, para1, para2, extras) / "model.pth"


def attack_dir(setting: Setting, method: str, para1, para2, extras: dict | None = None) -> Path:
    """The attack's run folder; ``extras``: the forget run's and the attack's non-default settings."""
    return setting.stage_dir("mia_mu_attack", method, para1, para2, extras)


def _stats(curves: dict, fn) -> dict:
    return {g: np.array([fn(a) for a in curves[g][0]]) for g in ref.GROUPS}


def _references(setting: Setting, cfg: AttackConfig) -> tuple[list[tuple[int, Path]], str | None]:
    """The reference models found, and a one-line note when the calibrated verdict is unavailable.

    With fewer than 2 references and none at all, today's single retrain model of the same seed
    (if any) stands in, uncalibrated.
    """
    refs = ref.find_references(setting, cfg.retrain_refs)
    if len(refs) >= 2:
        return refs, None
    missing = [s for s in ref.reference_seeds(cfg.retrain_refs) if s not in {r[0] for r in refs}]
    note = (f"calibrated verdict unavailable: {len(refs)} of {cfg.retrain_refs} reference retrain runs found "
            f"(at least 2 needed); train them with: {ref.retrain_command(setting, missing or [ref.reference_seeds(2)[-1]])}")
    if not refs:
        same = newest_retrain_model(setting)
        refs = [(setting.seed, same)] if same else []
    return refs, note


def _level_verdict(mine: dict, pop: dict, cfg: AttackConfig, seed: int) -> dict:
    area = lambda c: _stats(c, S.curve_area)
    steps = lambda c: _stats(c, lambda a: S.steps_to_threshold(a, threshold=cfg.threshold))
    res = V.assess(area(mine), [area(r) for r in pop["refs"]], area(pop["anchor"]), seed=seed)
    paper = [S.membership_score(a, threshold=cfg.threshold) for a in mine["member"][0]]
    paper_ood = [S.membership_score(a, threshold=cfg.threshold) for a in mine["ood"][0]]
    res["ood_game"]["paper_statistic"] = {k: v for k, v in S.roc_summary(paper, paper_ood).items()
                                          if k not in ("fpr", "tpr")}
    mean = lambda d: {g: float(v.mean()) for g, v in d.items()}
    res["area"] = {"model": mean(area(mine)), "anchor": mean(area(pop["anchor"])),
                   "references": [mean(area(r)) for r in pop["refs"]]}
    res["steps_to_threshold"] = {"model": mean(steps(mine)), "anchor": mean(steps(pop["anchor"])),
                                 "references": [mean(steps(r)) for r in pop["refs"]], "cap": cfg.steps}
    return res


def _write_curves(path: Path, curves: dict):
    rows = ["group\ttrial\tstep\tloss\tacc"]
    for g in ref.GROUPS:
        for t, (a, l) in enumerate(zip(*curves[g])):
            rows += [f"{g}\t{t}\t{s + 1}\t{l[s]:.6f}\t{a[s]:.4f}" for s in range(len(a))]
    atomic_write_text(path, "\n".join(rows) + "\n")


def _plots(out: Path, tag: str, title: str, mine: dict, pop: dict, threshold: float):
    """One figure per lr: relearning curves at each level against the reference band, and the ROC
    curves of the OOD game and of the one-sided retrain game (the model against all references)."""
    panels, rocs = {}, {}
    for level in LEVELS:
        area = _stats(mine[level], S.curve_area)
        refs = [r["member"][0] for r in pop[level]["refs"]]
        groups = {"forget class, this model": mine[level]["member"][0],
                  "OOD relabelled, this model": mine[level]["ood"][0],
                  "forget class, never unlearned": pop[level]["anchor"]["member"][0]}
        panels[level] = (groups, refs)
        rocs[f"{level}: OOD game"] = S.roc_summary(area["member"], area["ood"])
        if refs:
            rocs[f"{level}: vs references"] = S.roc_summary(area["member"], [S.curve_area(a) for r in refs for a in r])
    S.plot_relearning_panels(out / f"relearning_{tag}", panels, title=title, threshold=threshold, rocs=rocs,
                             formats=("png",), dpi=110)  # the PDF would double a Digits attack's rendering time


def _line(method: str, lr, level: str, v: dict) -> str:
    o = v["ood_game"]
    b = o["gap_null"]["band"]
    tail = (f"OOD game AUC {o['auc']:.3f} (references {o['null']['mean']:.3f}), forget-OOD gap {o['gap']:.2f} "
            f"(null band {b[0]:.2f}..{b[1]:.2f}) {o['direction']}")
    if v["index"] is None:
        return f"{method} lr {lr} {level}: no reference model; {tail}"
    ix, g = v["index"], v["retrain_game"]
    head = (f"{method} lr {lr} {level}: index {ix['index']:.2f} [{ix['ci'][0]:.2f}, {ix['ci'][1]:.2f}] "
            f"{ix['direction']} (null band {ix['null']['band'][0]:.2f}..{ix['null']['band'][1]:.2f})")
    if "auc" in g:
        head += f"; two-sided AUC {g['auc']:.3f} bal.acc {g['balanced_accuracy_at_fpr_5']:.3f} " \
                f"TPR@5%FPR {g['tpr_at_fpr_5']:.3f}"
    return f"{head}; {tail}"


def reminiscence_attack(setting: Setting, *, method: str, para1, para2, cfg: AttackConfig, device="auto",
                        progress: bool = True, forget_extras: dict | None = None, attack_extras: dict | None = None,
                        argv: list[str] | None = None) -> dict:
    """Attack the model the forget stage wrote for ``method``; write curves, plots and results.json.

    ``forget_extras`` / ``attack_extras`` are the non-default settings that name the forget run's
    and this run's folders (:mod:`unlearn.store.identity`); ``argv`` goes into the run's identity, with
    the attacked model, the anchor and the references as its input files. An old results.json
    is removed before anything is written.
    """
    path = unlearned_model_path(setting, method, para1, para2, forget_extras)
    if not path.is_file():
        raise UsageError(missing_unlearned_model(
            setting, path, f"-method {method} --para1 {fmt_para(para1)} --para2 {fmt_para(para2)}"))
    cfg.validate(setting)
    device = resolve_device(device)
    model, _ = setting.load_model(path, device, fix="rerun the forget stage")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    anchor = ref.anchor_path(setting, method=method, model_path=path)
    if not anchor.is_file():
        raise UsageError(f"the never-unlearned model {anchor} (the index's anchor) is missing; run: "
                         f"{setting.pretrain_command()}")
    t0 = time.perf_counter()
    rl = Relearner(setting, cfg, device, progress=progress)
    refs, note = _references(setting, cfg)
    pop, counts = population(rl, refs, anchor)
    t_pop = time.perf_counter() - t0
    out = attack_dir(setting, method, para1, para2, {**(forget_extras or {}), **(attack_extras or {})})
    (out / "results.json").unlink(missing_ok=True)
    identity = run_identity(argv if argv is not None else ["<api>", method, str(para1), str(para2)],
                            dataset=setting.dataset, inputs=[path, anchor, *[p for _, p in refs]])
    per_lr, lines = {}, []
    for lr in cfg.relearning_lr:
        tag = f"lr{fmt_para(lr)}"
        mine, verdicts = {}, {}
        for level in LEVELS:
            mine[level] = rl.curves(state, lr=lr, level=level, desc=f"{method} {tag} {level}")
            v = _level_verdict(mine[level], pop[lr][level], cfg, setting.seed)
            area = _stats(mine[level], S.curve_area)
            v["ood_game"]["roc"] = {k: x for k, x in S.roc_summary(area["member"], area["ood"]).items()
                                    if k not in ("fpr", "tpr")}
            v["curves"] = {g: S.summarise_curves(mine[level][g][0], threshold=cfg.threshold) for g in ref.GROUPS}
            verdicts[level] = v
            _write_curves(out / "curves" / f"{tag}_{level}.tsv", mine[level])
            lines.append(_line(method, lr, level, v))
        _plots(out, tag, f"{method} ({setting.tag}), relearning lr {fmt_para(lr)}", mine, pop[lr], cfg.threshold)
        per_lr[str(lr)] = verdicts
    seconds = time.perf_counter() - t0
    n_curves = len(cfg.relearning_lr) * len(LEVELS) * len(ref.GROUPS) * cfg.trials
    results = {"status": "ok", "method": method, "para1": para1, "para2": para2, "model": str(path),
               "calibrated": note is None, "calibration_note": note,
               "statistic": "area under the relearning accuracy curve (mean candidate accuracy over the steps)",
               "references": [{"seed": s, "model": str(p)} for s, p in refs], "anchor": str(anchor),
               "reference_curves": counts, "candidates_per_set": rl.n, "levels": list(LEVELS),
               "config": {**setting.as_dict(), **asdict(cfg), "device": str(device)}, "per_lr": per_lr,
               "seconds": seconds, "seconds_references": t_pop, "curves": n_curves, "curves_per_batch": rl.batch,
               "seconds_per_curve": (seconds - t_pop) / n_curves, "environment": environment(), "identity": identity}
    atomic_write_json(out / "results.json", results)
    results["lines"] = ([note] if note else []) + lines
    return results


def reference_curves(setting: Setting, *, cfg: AttackConfig, device="auto", progress: bool = True) -> dict:
    """``--refs-only``: compute (or verify) the cached curves of the references and of the dense
    pretrained anchor for this setting, seed and attack configuration; no unlearned model needed."""
    cfg.validate(setting)
    anchor = ref.anchor_path(setting)
    if not anchor.is_file():
        raise UsageError(f"the pretrained model {anchor} is missing; run: {setting.pretrain_command()}")
    refs = ref.find_references(setting, cfg.retrain_refs)
    if not refs:
        raise UsageError(f"no reference retrain run found; run: "
                         f"{ref.retrain_command(setting, ref.reference_seeds(cfg.retrain_refs))}")
    t0 = time.perf_counter()
    rl = Relearner(setting, cfg, resolve_device(device), progress=progress)
    _, counts = population(rl, refs, anchor)
    missing = [s for s in ref.reference_seeds(cfg.retrain_refs) if s not in {r[0] for r in refs}]
    return {"references": [s for s, _ in refs], "missing": missing, **counts, "seconds": time.perf_counter() - t0,
            "cache": str(ref.cache_root(setting))}


def parser(dataset_default: str):
    p = forget_parser(dataset_default)
    p.description = "Reminiscence Attack on the model the forget script wrote for the same -method --para1 --para2."
    for a in p._actions:  # -method is not needed with --refs-only
        if a.dest == "method":
            a.required = False
    p.add_argument("--num_ood_dataset", type=positive_int, default=None, help="OOD classes used as non-members")
    p.add_argument("--unlearn_data_percent", type=positive_float, default=None,
                   help="candidate set size, percent of the forget class's training data")
    p.add_argument("--relearning_lr", type=positive_float, nargs="+", default=None,
                   help="one or several learning rates")
    p.add_argument("--trials", type=positive_int, default=None, help="curves per set type (candidate sets)")
    p.add_argument("--steps", type=positive_int, default=None, help="step cap of each curve")
    p.add_argument("--retain_per_step", type=nonneg_int, default=None, help="retain samples per step")
    p.add_argument("--retrain_refs", type=nonneg_int, default=None,
                   help="reference models: finished retrain runs with seeds REFERENCE_SEED_BASE + 0..R-1")
    p.add_argument("--refs-only", "--refs_only", dest="refs_only", action="store_true",
                   help="only compute (or verify) the cached reference and anchor curves; -method is ignored")
    p.add_argument("--curve_batch", type=nonneg_int, default=None,
                   help="curves relearned together as one vectorised model (default: 32 on a GPU, else "
                        "--cpu_curve_batch)")
    p.add_argument("--cpu_curve_batch", type=positive_int, default=None,
                   help="curves relearned together on a CPU (default: config.ATTACK, 1 unless set there)")
    return p


def main(argv=None, dataset_default: str = "Cifar20"):
    args = parser(dataset_default).parse_args(argv)
    setting = Setting.from_args(args)
    given = {k: getattr(args, k) for k in AttackConfig.__dataclass_fields__ if getattr(args, k, None) is not None}
    cfg = AttackConfig(**{**config.ATTACK[setting.dataset], **given})
    cfg.validate(setting)  # bad attack settings are reported before a missing model
    if args.refs_only:
        r = reference_curves(setting, cfg=cfg, device=device_arg(args), progress=args.progress)
        print(f"reference curves of seeds {r['references']} and the anchor: {r['cached']} cached, {r['computed']} "
              f"computed ({r['seconds']:.1f}s) -> {r['cache']}"
              + (f"; missing reference seeds {r['missing']}" if r["missing"] else ""))
        return 0
    if args.method is None:
        raise UsageError("-method is required (or pass --refs-only)")

    para1, para2 = resolve_paras(args.method, args.para1, args.para2)
    _, f_extras = extras_from_args(args)
    a_extras = attack_extras(setting.dataset, given)
    res = reminiscence_attack(setting, method=args.method, para1=para1, para2=para2, cfg=cfg,
                              device=device_arg(args), progress=args.progress, forget_extras=f_extras,
                              attack_extras=a_extras, argv=sys.argv[1:] if argv is None else list(argv))
    for line in res["lines"]:
        print(line)
    print(f"{res['curves']} curves, {res['seconds_per_curve']:.3f}s per curve, {res['seconds']:.1f}s in all -> "
          f"{attack_dir(setting, args.method, para1, para2, {**f_extras, **a_extras})}")
    return 0
