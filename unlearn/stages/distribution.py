"""``run-distribution-metric.py``: residual knowledge at the distribution level (the paper's appendix).

For each unlearned model: features of the training set (retain + forget; logits
as the paper, or ``--features penultimate``), a stratified subsample, t-SNE to
2-D (seed 42), and the forget class's intra-class variance, silhouette against
its nearest class and KDE overlap with the other classes, both in the t-SNE
plane and in the original feature space (where t-SNE distortions do not enter).
"""
from __future__ import annotations

import io
import re
import sys
import time

import numpy as np
import torch

import config
from ..core.cli import add_forget_class, base_parser, device_arg, finite_float, nonneg_int, positive_int
from ..core.engine import predict, resolve_device, seed_everything
from ..core.errors import UsageError
from ..core.runinfo import environment
from ..evaluation import distribution as D
from ..methods import get_method, resolve_paras
from ..methods.entries import entry_settings, normalise_entry
from ..store.checkpoint import atomic_write_bytes, atomic_write_json, read_ok_results
from ..store.identity import distribution_identity, is_fresh, run_identity
from ..store.runs import missing_unlearned_model
from ..store.setting import Setting, fmt_para


def parser(dataset_default: str = "Cifar20"):
    p = base_parser("Distribution metrics and t-SNE plots of unlearned models.", dataset_default)
    add_forget_class(p)
    p.add_argument("--runs", nargs="+", default=None, metavar="METHOD:PARA1:PARA2",
                   help="unlearned runs to analyse (default: the dataset's method list in config.py)")
    p.add_argument("--run_dirs", "--run-dirs", nargs="+", default=None, metavar="FOLDER",
                   help="unlearning run folders by name (e.g. finetune-0.1-20-1a2b3c4d), as run.py passes them")
    p.add_argument("-method", "--method", default=None, help="a single run (with --para1 --para2)")
    p.add_argument("--para1", type=finite_float, default=None)
    p.add_argument("--para2", type=finite_float, default=None)
    p.add_argument("--features", choices=["logits", "penultimate"], default="logits")
    p.add_argument("--max-points", "--max_points", dest="max_points", type=positive_int, default=5000)
    p.add_argument("--tsne-seed", type=nonneg_int, default=42)
    p.add_argument("--skip-done", action="store_true",
                   help="skip runs whose results are fresh (same model file and settings)")
    p.add_argument("--skip-missing", action="store_true",
                   help="analyse the runs whose model exists, report the others and exit 1")
    return p


def parse_runs(args, setting: Setting) -> list[tuple[str, str, str]]:
    """Run folder names under ``unlearning/`` and ``visualization/``."""
    if args.run_dirs:
        return list(args.run_dirs)
    if args.method:
        p1, p2 = resolve_paras(args.method, args.para1, args.para2)
        return [setting.run_name(args.method, p1, p2)]
    if args.runs:
        out = []
        for r in args.runs:
            parts = r.split(":")
            if len(parts) != 3:
                raise UsageError(f"--runs {r!r} is not METHOD:PARA1:PARA2 (e.g. negative_grad:0.01:2)")
            get_method(parts[0])
            out.append(setting.run_name(parts[0], *parts[1:]))
        return out

    entries = map(normalise_entry, config.MU_METHOD_LIST[setting.dataset])
    return [setting.run_name(m, p1, p2, entry_settings(m, opts)[2]) for m, p1, p2, opts in entries]


def run_dir(setting: Setting, stage: str, name: str):
    """The folder of run ``name`` (a folder name, as ``--run_dirs`` gives it) of ``stage``."""
    return setting.stage_root(stage) / name


def missing_model_message(setting: Setting, run: str, path) -> str:
    """One line naming the forget command that makes the missing model (read off the run's folder name)."""
    m = re.match(r"^([^-]+)-(-?[^-]+)-(-?[^-]+)", run)
    return missing_unlearned_model(setting, path, f"-method {m[1]} --para1 {m[2]} --para2 {m[3]}" if m
                                   else f"-method ... (run {run})")


def analyse(setting: Setting, runs, *, features: str = "logits", max_points: int = 5000, tsne_seed: int = 42,
            device="auto") -> list[dict]:
    """Compute, plot and write the metrics of every run; returns their results.

    Each run's results.json records the model file it analysed (its identity), so
    ``--skip-done`` reuses it only while that model is unchanged.
    """
    paths = [(r, run_dir(setting, "unlearning", r) / "model.pth") for r in runs]
    for r, p in paths:  # every model must exist before anything is computed or written
        if not p.is_file():
            raise UsageError(missing_model_message(setting, r, p))
    if not paths:
        return []
    device = resolve_device(device)
    seed_everything(setting.seed)
    data = setting.load_data(device)
    train = data.in_train
    labels = train.y.cpu().numpy()
    keep = D.stratified_subsample(labels, max_points, seed=tsne_seed)
    x, y = train.x[torch_index(keep, train.x.device)], labels[keep]
    cls = setting.split.forget_index
    names = {i: (data.raw.class_names[c] if c < len(data.raw.class_names) else str(c))
             for c, i in setting.split.class_map.items()}
    out_all = []
    for name, p in paths:
        out = run_dir(setting, "visualization", name)
        (out / "results.json").unlink(missing_ok=True)
        model, ckpt = setting.load_model(p, device, fix="rerun the forget stage")
        cfg = ckpt.get("config", {})
        m, a, b = cfg.get("method", name), fmt_para(cfg.get("para1")), fmt_para(cfg.get("para2"))
        t0 = time.perf_counter()
        feats = predict(model, x, features=features == "penultimate").cpu().numpy().astype(np.float64)
        pts = D.tsne_2d(feats, seed=tsne_seed)
        ov = D.kde_overlap(pts, y, cls)
        metrics = {"tsne": D.distribution_metrics(pts, y, cls, overlap=ov),
                   "features": D.distribution_metrics(feats, y, cls)}
        title = f"{m} ({a}, {b}), {setting.tag}"
        D.plot_tsne(out / "tsne", pts, y, cls, class_names=names, title=title)
        D.plot_overlap(out / "kde_overlap", ov, title=title)
        buf = io.BytesIO()
        np.save(buf, np.column_stack([pts, y]).astype(np.float64))
        atomic_write_bytes(out / "tsne_points.npy", buf.getvalue())  # columns: x, y, label
        res = {"status": "ok", "method": m, "para1": a, "para2": b, "forget_index": cls, "features": features,
               "points": int(len(y)), "metrics": metrics, "seconds": time.perf_counter() - t0,
               "config": {**setting.as_dict(), "max_points": max_points, "tsne_seed": tsne_seed},
               "environment": environment(), "identity": run_identity(
                   distribution_identity(name, features=features, max_points=max_points, tsne_seed=tsne_seed),
                   dataset=setting.dataset, inputs=[p])}
        atomic_write_json(out / "results.json", res)
        t = metrics["tsne"]
        print(f"{m} ({a}, {b}): variance {t['intra_class_variance']:.2f} silhouette {t['silhouette']:.3f} "
              f"overlap {t['overlap']:.3f} -> {out}", flush=True)
        out_all.append(res)
    return out_all


def torch_index(idx, device):
    return torch.as_tensor(idx, dtype=torch.long, device=device)


def main(argv=None):
    args = parser().parse_args(argv)
    setting = Setting.from_args(args)
    runs = parse_runs(args, setting)
    if args.skip_done:
        argv = lambda r: distribution_identity(r, features=args.features, max_points=args.max_points,  # noqa: E731
                                               tsne_seed=args.tsne_seed)
        runs = [r for r in runs if not is_fresh(read_ok_results(run_dir(setting, "visualization", r) / "results.json"),
                                                argv=argv(r), dataset=setting.dataset)]
    missing = []
    if args.skip_missing:
        for r in runs:
            p = run_dir(setting, "unlearning", r) / "model.pth"
            if not p.is_file():
                missing.append(missing_model_message(setting, r, p))
        runs = [r for r in runs if (run_dir(setting, "unlearning", r) / "model.pth").is_file()]
    analyse(setting, runs, features=args.features, max_points=args.max_points, tsne_seed=args.tsne_seed,
            device=device_arg(args))
    for line in missing:
        print(f"skipped: {line}", file=sys.stderr)
    return 1 if missing else 0
