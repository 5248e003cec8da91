"""Forget one class with a registered method (``forget_full_class_main_*.py``).

Writes ``unlearning/{method}-{para1}-{para2}/``: ``model.pth`` (and ``mid.pth``
for ``_our``), ``log.tsv`` (``d_t d_f d_r mia time``, as the paper's code) and,
last, ``results.json`` with every metric (ZRF included), the resolved config and the status.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from ..core.cli import device_arg
from ..core.engine import metered, resolve_device, seed_everything
from ..core.errors import Diverged, UsageError
from ..core.runinfo import environment
from ..evaluation.metrics import evaluate_unlearning
from ..methods import check_options, check_paras, get_method, pretrain_l1, resolve_paras
from ..methods.cli import extras_from_args, parse_options, parser, sample_methods
from ..methods.entries import forget_extras, replay_config  # noqa: F401  (tests reach them as forget.*)
from ..methods.our2024 import ReplayConfig
from ..methods.run import method_context, run_method
from ..store.checkpoint import atomic_write_json, atomic_write_text, save_checkpoint
from ..store.identity import run_identity
from ..store.runs import retrain_seconds
from ..store.setting import Setting, fmt_para


TSV_COLUMNS = ["d_t", "d_f", "d_r", "mia", "time"]


def unlearn_run(setting: Setting, *, method: str, para1=None, para2=None, weight_path=None, batch_size=None,
                device="auto", mask_path=None, replay: ReplayConfig | None = None, options=None,
                progress: bool = True, extras: dict | None = None, argv: list[str] | None = None) -> dict:
    """Run one unlearning method end to end and write its run folder. Returns results.

    ``extras`` (:func:`forget_extras`) name the folder; ``argv`` (the stand-alone command's
    arguments) goes into the run's identity, so run.py reuses the run only for the same command.
    Before anything is written, an old ``results.json`` in the folder is removed: a failed or
    killed rerun never leaves a folder that looks complete.
    """
    spec, our = get_method(method)
    if setting.sample_wise and spec.class_only:
        raise UsageError(f"{method} needs a forget class ({spec.class_only}); sample-wise, pick one of: "
                         f"{', '.join(sample_methods())}")
    para1, para2 = resolve_paras(method, para1, para2)
    check_paras(method, para1, para2)
    check_options(method, options)
    l1 = pretrain_l1(method, setting.dataset)
    weight_path = Path(weight_path) if weight_path else setting.pretrain_dir(l1) / "best.pth"
    if mask_path is not None and not Path(mask_path).is_file():
        raise UsageError(f"mask {mask_path} not found; make one with: python generate_mask.py --dataset "
                         f"{setting.dataset} -net {setting.net}")
    replay = replay or ReplayConfig(epochs=spec.replay_epochs)
    device = resolve_device(device)
    gen = seed_everything(setting.train_seed)
    model, _ = setting.load_model(weight_path, device, fix=f"run: {setting.pretrain_command(l1)}")
    data = setting.load_data(device)
    out = setting.stage_dir("unlearning", method, para1, para2, extras)
    (out / "results.json").unlink(missing_ok=True)
    identity = run_identity(argv if argv is not None else ["<api>", method, str(para1), str(para2), repr(extras)],
                            dataset=setting.dataset, inputs=[weight_path, mask_path])
    options = dict(options or {})
    if mask_path:
        options["mask_path"] = str(mask_path)
    ctx = method_context(setting, model=model, data=data, device=device, generator=gen, options=options,
                         batch_size=batch_size, progress=progress, start=weight_path)
    resolved = {**setting.as_dict(), "method": method, "base_method": spec.name, "our": our, "para1": para1,
                "para2": para2, "para1_meaning": spec.para1, "para2_meaning": spec.para2, "batch_size": ctx.batch_size,
                "weight_path": str(weight_path), "options": options, "device": str(device),
                "replay": vars(replay) if our else None}
    meta = dict(model_name=setting.net, num_classes=setting.num_outputs, dataset=setting.dataset,
                class_map=setting.split.class_map, config=resolved)
    results = {"status": "ok", "method": method, "para1": para1, "para2": para2, "config": resolved,
               "identity": identity}
    mid = {}
    with torch.random.fork_rng(devices=[]):  # ZRF's random model, the same for every method of the setting
        torch.manual_seed(setting.seed)
        random_model = setting.new_model(device)

    def evaluate(m):
        return evaluate_unlearning(m, data, seed=setting.seed, random_model=random_model)

    def on_mid(m, seconds):
        mid.update(metrics=evaluate(m), seconds=seconds)
        save_checkpoint(out / "mid.pth", m, **meta, extra={"phase": "over-unlearning"})

    t0 = time.perf_counter()
    try:
        with metered() as work:
            model, seconds, phases = run_method(spec, our, ctx, para1, para2, replay=replay, on_mid=on_mid)
        results["work"] = {"examples": work.examples, "steps": work.steps,
                           "retain_epochs": work.examples / max(len(data.retain_train), 1)}
        if our:
            results.update(phases=phases, mid=mid)
    except Diverged as d:
        results.update(status="diverged", diverged={"step": d.step, "loss": str(d.loss)},
                       time=time.perf_counter() - t0, metrics=None, environment=environment())
        atomic_write_json(out / "results.json", results)
        return results
    metrics = evaluate(model)
    ref = retrain_seconds(setting)
    results.update(metrics=metrics, time=seconds, retrain_time=ref,
                   time_pct_retrain=100 * seconds / ref if ref else None, environment=environment())
    save_checkpoint(out / "model.pth", model, **meta)
    row = [metrics["d_t"], metrics["d_f"], metrics["d_r"], metrics["mia"], seconds]
    atomic_write_text(out / "log.tsv", "\t".join(TSV_COLUMNS) + "\n" + "\t".join(f"{v:.4f}" for v in row) + "\n")
    atomic_write_json(out / "results.json", results)
    return results


def main(argv=None, dataset_default: str = "Cifar20", scenario: str = "class"):
    """The forget stage: one class (``forget_full_class_main_*.py``) or, ``scenario="sample"``, a random
    share of the training samples (``forget_sample_main.py``)."""
    args = parser(dataset_default, scenario=scenario).parse_args(argv)
    setting = Setting.from_args(args)
    replay, extras = extras_from_args(args)
    res = unlearn_run(setting, method=args.method, para1=args.para1, para2=args.para2, weight_path=args.weight_path,
                      batch_size=args.batch_size, device=device_arg(args), mask_path=args.mask_path, replay=replay,
                      options=parse_options(args.opt), progress=args.progress, extras=extras,
                      argv=sys.argv[1:] if argv is None else list(argv))
    out = setting.stage_dir("unlearning", args.method, res["para1"], res["para2"], extras)
    if res["status"] != "ok":
        print(f"{args.method}: {res['status']} at step {res['diverged']['step']} -> {out}")
        return 1
    m = res["metrics"]
    ft = f" forget_test {m['forget_test']:.2f}" if "forget_test" in m else ""
    print(f"{args.method} ({fmt_para(res['para1'])}, {fmt_para(res['para2'])}): d_t {m['d_t']:.2f} d_f {m['d_f']:.2f} "
          f"d_r {m['d_r']:.2f}{ft} mia {m['mia']:.2f} time {res['time']:.2f}s -> {out}")
    return 0
