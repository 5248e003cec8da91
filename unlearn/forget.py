"""Forget one class with a registered method (``forget_full_class_main_*.py``).

Writes ``unlearning/{method}-{para1}-{para2}/``: ``model.pth`` (and ``mid.pth``
for ``_our``), ``log.tsv`` (``d_t d_f d_r mia time``, as the paper's code) and,
last, ``results.json`` with every metric, the resolved config and the status.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .checkpoint import atomic_write_json, atomic_write_text, read_ok_results, save_checkpoint
from .cli import base_parser, device_arg, finite_float, nonneg_float, nonneg_int, positive_float
from .engine import resolve_device, seed_everything
from .errors import Diverged, UsageError
from .identity import normal_value, run_identity
from .methods import Context, check_options, check_paras, get_method, list_methods, pretrain_l1, resolve_paras
from .metrics import evaluate_unlearning
from .our import ReplayConfig, run_our
from .runinfo import environment
from .setting import Setting, fmt_para

class _RawEpilogFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help and the methods table kept as written."""


TSV_COLUMNS = ["d_t", "d_f", "d_r", "mia", "time"]


def methods_epilog() -> str:
    """What para1/para2 mean for each method, and their defaults, for ``--help``."""
    lines = ["methods (para1 / para2, defaults; _our: over-unlearning defaults):"]
    for name in list_methods(include_our=False):
        spec, _ = get_method(name)
        our = f"; _our {spec.over_defaults}" if spec.approximate and not spec.is_our else ""
        lines.append(f"  {name}: {spec.para1} / {spec.para2}, {spec.defaults}{our}. {spec.summary}")
        if spec.options:
            lines.append(f"      --opt: {spec.options_text}")
        if spec.space or spec.over_space:
            lines.append(f"      --tune: {spec.space_text}")
    return "\n".join(lines)


def parser(dataset_default: str):
    p = base_parser("Unlearn one class with a registered method (append _our for Over-Unlearning & Replay).",
                    dataset_default)
    p.epilog = methods_epilog()
    p.formatter_class = _RawEpilogFormatter
    p.add_argument("-method", "--method", required=True, choices=list_methods(), metavar="METHOD",
                   help="one of: " + ", ".join(list_methods()))
    p.add_argument("--forget_class", "--forget-class", type=int, default=None,
                   help="class to forget, as a dataset label (default from config.py)")
    p.add_argument("-weight_path", "--weight_path", "--weight-path", dest="weight_path", default=None,
                   help="pretrained checkpoint (default log_files/model/pretrain/{net}-{dataset}-{classes}/best.pth)")
    p.add_argument("--para1", type=finite_float, default=None, help="first method parameter (usually the learning rate)")
    p.add_argument("--para2", type=finite_float, default=None, help="second method parameter (usually epochs)")
    p.add_argument("--mask_path", "--mask-path", dest="mask_path", default=None, help="SalUn saliency mask (.pt)")
    p.add_argument("--replay_epochs", type=nonneg_int, default=None,
                   help="_our: Replay epochs (default per method; 0: over-unlearning only)")
    p.add_argument("--replay_lr", type=positive_float, default=None,
                   help=f"_our: Replay learning rate (default {ReplayConfig().lr})")
    p.add_argument("--replay_l1", type=nonneg_float, default=None,
                   help=f"_our: Replay L1 weight (default {ReplayConfig().l1})")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="method-specific option, e.g. --opt alpha=0.9 (repeatable)")
    return p


def parse_options(pairs) -> dict:
    out = {}
    for p in pairs:
        if "=" not in p:
            raise UsageError(f"--opt {p!r} is not KEY=VALUE; write e.g. --opt alpha=0.9")
        k, v = p.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def replay_config(spec, *, epochs=None, lr=None, l1=None) -> tuple[ReplayConfig, dict]:
    """The Replay settings of ``spec``'s ``_our`` run and those of them that differ from the defaults."""
    default = ReplayConfig(epochs=spec.replay_epochs)
    given = {"epochs": epochs, "lr": lr, "l1": l1}
    given = {k: normal_value(v, getattr(default, k)) for k, v in given.items() if v is not None}
    given = {k: v for k, v in given.items() if v != getattr(default, k)}
    return ReplayConfig(**{**vars(default), **given}), {f"replay_{k}": v for k, v in given.items()}


def forget_extras(*, options=None, replay_extras=None, weight_path=None, batch_size=None, mask_path=None,
                  method: str | None = None) -> dict:
    """The non-default settings of a forget run: they go into its folder name (see unlearn.identity).

    With ``method``, its options are first brought to their declared types (``check_options``), as the
    run will use them: ``weight_decay=1`` and ``weight_decay=1.0`` name the same folder.
    """
    options = check_options(method, options) if method is not None else dict(options or {})
    return {"options": options, **(replay_extras or {}),
            "weight_path": str(weight_path) if weight_path else None, "batch_size": batch_size,
            "mask_path": str(mask_path) if mask_path else None}


REPLAY_KEYS = ("replay_epochs", "replay_lr", "replay_l1")


def entry_settings(method: str, options=None, *, weight_path=None) -> tuple[dict, list[str], dict]:
    """A method-list entry's options dict as run.py runs it: (method options, replay flags, folder extras).

    Besides the method's own ``--opt`` options, an ``_our`` entry may set ``replay_epochs``,
    ``replay_lr`` and ``replay_l1`` (the forget stage's ``--replay_*`` flags); the folder extras
    are those the forget stage derives from the same command (:func:`extras_from_args`).
    """
    options = dict(options or {})
    replay = {k[len("replay_"):]: options.pop(k) for k in REPLAY_KEYS if k in options}
    flags = [x for k, v in replay.items() for x in (f"--replay_{k}", str(v))]
    _, replay_extras = replay_config(get_method(method)[0], **replay) if replay else (None, {})
    return options, flags, forget_extras(options=options, replay_extras=replay_extras, weight_path=weight_path,
                                         method=method)


def entry_replay(method: str, options=None) -> ReplayConfig:
    """The Replay settings a method-list entry's options dict gives its ``_our`` run."""
    given = {k[len("replay_"):]: v for k, v in dict(options or {}).items() if k in REPLAY_KEYS}
    return replay_config(get_method(method)[0], **given)[0]


def run_method(spec, our: bool, ctx: Context, para1, para2, *, replay: ReplayConfig, on_mid=None):
    """(model, seconds, phases) of one unlearning run on ``ctx``: the method, or for ``_our``/OUR its
    Over-Unlearning & Replay (phases: their seconds; None for a plain method). Raises Diverged."""
    t0 = time.perf_counter()
    if our:
        model, phases = run_our(spec, ctx, para1, para2, replay=replay, on_mid=on_mid)
        return model, phases["over_seconds"] + phases["replay_seconds"], phases
    model = spec.fn(ctx, para1, para2)
    return model, time.perf_counter() - t0, None


def finished_retrain_runs(setting: Setting) -> list[tuple[Path, dict]]:
    """(run folder, results) of every ``retrain`` run of this class split and seed that finished ok, newest first."""
    runs = []
    for res in setting.stage_dir("unlearning", "retrain", 0, 0).parent.glob("retrain-*/results.json"):
        r = read_ok_results(res)
        c = (r or {}).get("config", {})
        if r and c.get("seed") == setting.seed and c.get("forget_class") == setting.forget_class \
                and sorted(c.get("ood_classes", [])) == sorted(setting.ood_classes):
            runs.append((res.stat().st_mtime, res.parent, r))
    return [(folder, r) for _, folder, r in sorted(runs, key=lambda t: t[0], reverse=True)]


def retrain_seconds(setting: Setting) -> float | None:
    """Seconds of the newest finished ``retrain`` run of the same setting and seed, if any."""
    runs = finished_retrain_runs(setting)
    return runs[0][1]["time"] if runs else None


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
    gen = seed_everything(setting.seed)
    model, _ = setting.load_model(weight_path, device, fix=f"run: {setting.pretrain_command(l1)}")
    data = setting.load_data(device)
    out = setting.stage_dir("unlearning", method, para1, para2, extras)
    (out / "results.json").unlink(missing_ok=True)
    identity = run_identity(argv if argv is not None else ["<api>", method, str(para1), str(para2), repr(extras)],
                            dataset=setting.dataset, inputs=[weight_path, mask_path])
    options = dict(options or {})
    if mask_path:
        options["mask_path"] = str(mask_path)
    given = batch_size or options.get("batch_size")
    batch_size = int(given or 64)
    ctx = Context(model=model, data=data, device=device, generator=gen, batch_size=batch_size,
                  batch_size_given=given is not None, progress=progress,
                  options=options, new_model=setting.new_model)
    resolved = {**setting.as_dict(), "method": method, "base_method": spec.name, "our": our, "para1": para1,
                "para2": para2, "para1_meaning": spec.para1, "para2_meaning": spec.para2, "batch_size": batch_size,
                "weight_path": str(weight_path), "options": options, "device": str(device),
                "replay": vars(replay) if our else None}
    meta = dict(model_name=setting.net, num_classes=setting.num_outputs, dataset=setting.dataset,
                class_map=setting.split.class_map, config=resolved)
    results = {"status": "ok", "method": method, "para1": para1, "para2": para2, "config": resolved,
               "identity": identity}
    mid = {}

    def on_mid(m, seconds):
        mid.update(metrics=evaluate_unlearning(m, data, seed=setting.seed), seconds=seconds)
        save_checkpoint(out / "mid.pth", m, **meta, extra={"phase": "over-unlearning"})

    t0 = time.perf_counter()
    try:
        model, seconds, phases = run_method(spec, our, ctx, para1, para2, replay=replay, on_mid=on_mid)
        if our:
            results.update(phases=phases, mid=mid)
    except Diverged as d:
        results.update(status="diverged", diverged={"step": d.step, "loss": str(d.loss)},
                       time=time.perf_counter() - t0, metrics=None, environment=environment())
        atomic_write_json(out / "results.json", results)
        return results
    metrics = evaluate_unlearning(model, data, seed=setting.seed)
    ref = retrain_seconds(setting)
    results.update(metrics=metrics, time=seconds, retrain_time=ref,
                   time_pct_retrain=100 * seconds / ref if ref else None, environment=environment())
    save_checkpoint(out / "model.pth", model, **meta)
    row = [metrics["d_t"], metrics["d_f"], metrics["d_r"], metrics["mia"], seconds]
    atomic_write_text(out / "log.tsv", "\t".join(TSV_COLUMNS) + "\n" + "\t".join(f"{v:.4f}" for v in row) + "\n")
    atomic_write_json(out / "results.json", results)
    return results


def extras_from_args(args) -> tuple[ReplayConfig, dict]:
    """Replay settings and folder-name extras of a forget (or attack) command line."""
    spec, _ = get_method(args.method)
    replay, replay_extras = replay_config(spec, epochs=args.replay_epochs, lr=args.replay_lr, l1=args.replay_l1)
    extras = forget_extras(options=parse_options(args.opt), replay_extras=replay_extras, weight_path=args.weight_path,
                           batch_size=args.batch_size, mask_path=args.mask_path, method=args.method)
    return replay, extras


def main(argv=None, dataset_default: str = "Cifar20"):
    import sys

    args = parser(dataset_default).parse_args(argv)
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
    print(f"{args.method} ({fmt_para(res['para1'])}, {fmt_para(res['para2'])}): d_t {m['d_t']:.2f} d_f {m['d_f']:.2f} "
          f"d_r {m['d_r']:.2f} forget_test {m['forget_test']:.2f} mia {m['mia']:.2f} time {res['time']:.2f}s -> {out}")
    return 0
