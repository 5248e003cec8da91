"""The sample-wise attack stage (``mia_on_mu_main_sample.py``): the paper's 2025 plain LiRA and its
sample-wise Reminiscence Attack on the model ``forget_sample_main.py`` wrote.

For one unlearned model: the LiRA shadows of the setting (trained once, cached:
:mod:`unlearn.evaluation.shadows`), the targets (forget vs test samples), then

* ``plain``: LiRA, online and offline, on the unlearned model (``mia_lira.py -task mia_lira``);
* ``rea``: the same after fine-tuning a copy on the retain set (``rea_reminiscence_random.py``, then
  ``mia_lira.py -task rea``).

It writes ``results.json`` (both levels' AUC, best balanced accuracy, TPR at 1% and 10% FPR; the
fine-tuned model's accuracies), ``scores.npz`` (every target's per-example statistics at both levels,
``{level}_{online,offline}``, the model's own score ``{level}_score`` (mean over queries; what the
summary's per-example test against the retrained models reads), membership and pool position) and log-scale ROC curves and score histograms (PNG and PDF).
Deviations from the paper's code are those of :mod:`unlearn.evaluation.lira` and
:mod:`unlearn.evaluation.shadows` (declared there).
"""
from __future__ import annotations

import copy
import io
import sys
import time
from dataclasses import asdict

import numpy as np
import torch

import config
from ..core.cli import device_arg, nonneg_int, positive_float, positive_int
from ..core.engine import resolve_device, seed_everything
from ..core.recipe import augmentation, pretrain_recipe
from ..core.errors import UsageError
from ..core.runinfo import environment
from ..evaluation.metrics import evaluate_unlearning
from ..evaluation.sample_attack import SampleAttackConfig, lira_statistics, lira_summary, pick_targets, retain_finetune
from ..evaluation.shadows import query_scores, train_shadows
from ..methods import resolve_paras
from ..methods.cli import extras_from_args, parser as forget_parser
from ..store.checkpoint import atomic_write_bytes, atomic_write_json, save_figure
from ..store.identity import run_identity
from ..store.setting import Setting, fmt_para

LEVELS = ("plain", "rea")


def _plots(out, title: str, stats: dict, member: np.ndarray):
    """Log-scale ROC curves (the convention of the LiRA literature) and per-example score histograms.

    The axes start at the resolution of the targets (1 / non-members, 1 / members): a rate below it
    cannot be measured, so a curve's value at FPR 0 is drawn there."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: start-up time
    from matplotlib.figure import Figure  # lazy: start-up time
    from sklearn.metrics import roc_curve  # lazy: start-up time

    fig = Figure(figsize=(5.0, 4.5), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    lo_x, lo_y = 1.0 / max(int((~member).sum()), 1), 1.0 / max(int(member.sum()), 1)
    for (level, kind), x in stats.items():
        fpr, tpr, _ = roc_curve(member, x)
        ax.plot(np.maximum(fpr, lo_x), np.maximum(tpr, lo_y), label=f"{level} {kind}", lw=1.2)
    ax.plot([lo_x, 1], [lo_x, 1], color="grey", ls=":", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo_x, 1)
    ax.set_ylim(lo_y, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, out / "roc", bbox_inches="tight")
    fig = Figure(figsize=(8.0, 3.2), dpi=150)
    FigureCanvasAgg(fig)
    for i, level in enumerate(LEVELS):
        ax = fig.add_subplot(1, 2, i + 1)
        x = stats[(level, "online")]
        ax.hist([x[~member], x[member]], bins=30, label=["non-members (test)", "members (forget)"], alpha=0.7)
        ax.set_title(f"{level}: online LiRA statistic", fontsize=9)
        ax.legend(fontsize=7)
    save_figure(fig, out / "scores", bbox_inches="tight")


def sample_attack(setting: Setting, *, method: str, para1, para2, cfg: SampleAttackConfig, device="auto",
                  progress: bool = True, forget_extras: dict | None = None, argv: list[str] | None = None) -> dict:
    """Attack the model ``forget_sample_main.py`` wrote for ``method``; write results, scores and plots."""
    if not setting.sample_wise:
        raise UsageError("the sample-wise attack needs a sample-wise setting (--forget_percent)")
    path = setting.stage_dir("unlearning", method, para1, para2, forget_extras) / "model.pth"
    if not path.is_file():
        raise UsageError(f"no unlearned model at {path}; run: python forget_sample_main.py --dataset "
                         f"{setting.dataset} -method {method} --para1 {fmt_para(para1)} --para2 {fmt_para(para2)}"
                         f" --forget_percent {fmt_para(setting.forget_percent)}")
    design, finetune = cfg.design(), cfg.finetune()
    device = resolve_device(device)
    data = setting.load_data(device)
    targets = pick_targets(data, members=cfg.members, non_members=cfg.non_members, seed=cfg.target_seed)
    model, _ = setting.load_model(path, device, fix="rerun forget_sample_main.py")
    out = setting.stage_dir("mia_sample_attack", method, para1, para2, forget_extras)
    (out / "results.json").unlink(missing_ok=True)
    t0 = time.perf_counter()
    shadow_paths, keep = train_shadows(setting, design, data, device=device, progress=progress)
    t_shadows = time.perf_counter() - t0
    augment = augmentation(pretrain_recipe(setting.dataset), data.raw)
    shadow_scores = np.stack([query_scores(setting.load_model(p, device)[0], targets.samples, queries=cfg.queries,
                                           augment=augment) for p in shadow_paths])
    gen = seed_everything(setting.train_seed)
    tuned = retain_finetune(copy.deepcopy(model), data.retain_train, finetune, generator=gen, progress=progress)
    models = {"plain": model, "rea": tuned}
    summaries, stats = {}, {}
    raw = {}
    for level, m in models.items():
        mine = query_scores(m, targets.samples, queries=cfg.queries, augment=augment)
        raw[level] = mine.mean(axis=1)
        got = lira_statistics(mine, targets, shadow_scores, keep)
        summaries[level] = {k: v.as_dict() for k, v in lira_summary(got, targets).items()}
        stats.update({(level, k): v for k, v in got.items()})
    buf = io.BytesIO()
    np.savez(buf, member=targets.member, pool_positions=targets.pool_positions,
             **{f"{lv}_{k}": v for (lv, k), v in stats.items()}, **{f"{lv}_score": v for lv, v in raw.items()})
    atomic_write_bytes(out / "scores.npz", buf.getvalue())
    _plots(out, f"{method} ({fmt_para(para1)}, {fmt_para(para2)}), {setting.tag}, forget "
                f"{fmt_para(setting.forget_percent)}%", stats, targets.member)
    seconds = time.perf_counter() - t0
    identity = run_identity(argv if argv is not None else ["<api>", method, str(para1), str(para2)],
                            dataset=setting.dataset, inputs=[path, *shadow_paths])
    results = {"status": "ok", "method": method, "para1": para1, "para2": para2, "model": str(path),
               "levels": summaries, "rea_model_metrics": evaluate_unlearning(tuned, data, seed=setting.seed),
               "targets": {"members": int(targets.member.sum()), "non_members": int((~targets.member).sum())},
               "shadows": [str(p) for p in shadow_paths],
               "config": {**setting.as_dict(), **asdict(cfg), "device": str(device)},
               "seconds": seconds, "seconds_shadows": t_shadows, "environment": environment(),
               "identity": identity}
    atomic_write_json(out / "results.json", results)
    return results


def shadows_only(setting: Setting, *, cfg: SampleAttackConfig, device="auto", progress: bool = True) -> dict:
    """``--shadows-only``: train (or find cached) the setting's LiRA shadows; no unlearned model needed."""
    design = cfg.design()
    device = resolve_device(device)
    t0 = time.perf_counter()
    paths, _ = train_shadows(setting, design, setting.load_data(device), device=device, progress=progress)
    return {"shadows": [str(p) for p in paths], "seconds": time.perf_counter() - t0}


def parser(dataset_default: str):
    p = forget_parser(dataset_default, scenario="sample")
    p.description = ("Plain LiRA and the sample-wise Reminiscence Attack (retain fine-tuning, then LiRA) on the "
                     "model forget_sample_main.py wrote for the same -method --para1 --para2.")
    for a in p._actions:  # -method is not needed with --shadows-only
        if a.dest == "method":
            a.required = False
    p.add_argument("--shadows-only", "--shadows_only", dest="shadows_only", action="store_true",
                   help="only train (or find cached) the LiRA shadows of this setting; -method is ignored")
    p.add_argument("--shadows", type=positive_int, default=None, help="LiRA shadow models (config.SAMPLE_ATTACK)")
    p.add_argument("--shadow_in", type=positive_int, default=None, help="shadows that train on each sample")
    p.add_argument("--shadow_epochs", type=positive_int, default=None, help="shadow training epochs (default: "
                   "the pretraining recipe's)")
    p.add_argument("--members", type=positive_int, default=None, help="forget samples scored (members)")
    p.add_argument("--non_members", type=positive_int, default=None, help="test samples scored (non-members)")
    p.add_argument("--target_seed", type=nonneg_int, default=None, help="seed of the targets' draw")
    p.add_argument("--queries", type=positive_int, default=None, help="queries per sample (1 without augmentation)")
    p.add_argument("--rea_lrs", type=positive_float, nargs="+", default=None, help="retain fine-tuning lrs, one per phase")
    p.add_argument("--rea_epochs", type=nonneg_int, nargs="+", default=None, help="epochs of each phase")
    return p


def main(argv=None, dataset_default: str = "Cifar20"):
    args = parser(dataset_default).parse_args(argv)
    setting = Setting.from_args(args)
    given = {k: getattr(args, k) for k in SampleAttackConfig.__dataclass_fields__ if getattr(args, k, None) is not None}
    cfg = SampleAttackConfig.checked({**config.SAMPLE_ATTACK.get(setting.dataset, {}), **given})  # before the model
    if args.shadows_only:
        r = shadows_only(setting, cfg=cfg, device=device_arg(args), progress=args.progress)
        print(f"{len(r['shadows'])} LiRA shadows ready ({r['seconds']:.1f}s) -> {setting.stage_root('lira_shadows')}")
        return 0
    if args.method is None:
        raise UsageError("-method is required (or pass --shadows-only)")
    para1, para2 = resolve_paras(args.method, args.para1, args.para2)
    _, f_extras = extras_from_args(args)
    res = sample_attack(setting, method=args.method, para1=para1, para2=para2, cfg=cfg, device=device_arg(args),
                        progress=args.progress, forget_extras=f_extras,
                        argv=sys.argv[1:] if argv is None else list(argv))
    for level in LEVELS:
        on, off = res["levels"][level]["online"], res["levels"][level]["offline"]
        print(f"{args.method} {level}: online AUC {on['auc']:.3f} TPR@1%FPR {on['tpr_at_1pct_fpr']:.3f} "
              f"TPR@10%FPR {on['tpr_at_10pct_fpr']:.3f}; offline AUC {off['auc']:.3f} "
              f"TPR@1%FPR {off['tpr_at_1pct_fpr']:.3f}")
    print(f"{res['targets']['members']} members, {res['targets']['non_members']} non-members, "
          f"{len(res['shadows'])} shadows, {res['seconds']:.1f}s -> "
          f"{setting.stage_dir('mia_sample_attack', args.method, para1, para2, f_extras)}")
    return 0
