"""``tune_method.py``: tune one method's settings (see :mod:`unlearn.tune.search`), and the tuning flags
it shares with ``run.py --tune``."""
from __future__ import annotations

import argparse

import config
from ..core.cli import add_forget_class, base_parser, nonneg_int, positive_float, positive_int
from ..core.errors import UsageError
from ..methods import get_method, list_methods
from ..methods.entries import entry_for
from ..pipeline.slurm import add_slurm_args, cluster_options
from ..store.setting import Setting
from .search import tune
from .space import parse_space
from .tasks import NOT_TUNED


def add_tune_args(p, *, trials_default: int = 20):
    """The tuning flags shared by ``run.py --tune`` and ``tune_method.py``."""
    g = p.add_argument_group("tuning (run.py --tune, tune_method.py)")
    g.add_argument("--tune_trials", "--tune-trials", type=positive_int, default=trials_default,
                   help="finished (complete or pruned) trials per method and seed; a resumed study runs the rest")
    g.add_argument("--tune_seed", "--tune-seed", type=nonneg_int, default=0, help="seed of Optuna's sampler")
    g.add_argument("--tune_dt_weight", "--tune-dt-weight", type=positive_float, default=2.0,
                   help="w of the objective |d_f - d_f,retrain| + w * max(0, d_t,retrain - d_t)")
    g.add_argument("--tune_threads", "--tune-threads", type=positive_int, default=None,
                   help="torch threads per worker (None: CPUs / workers)")
    return g


def spaces_epilog() -> str:
    """Every method's declared search space (and its _our variant's), for ``--help``."""
    lines = ["search spaces (run.py --tune; para1/para2 as forget_full_class_main_cifar20.py --help explains):"]
    for name in list_methods(include_our=False):
        spec, _ = get_method(name)
        if spec.space or spec.over_space:
            lines.append(f"  {name}: {spec.space_text}")
    return "\n".join(lines)


def parser():
    class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
        """Defaults in the help and the spaces kept as written."""

    p = base_parser("Tune one method's settings for a forget class (an Optuna study scored against retraining; "
                    "see run.py --tune for every method).", "Digits")
    p.formatter_class = Formatter
    p.epilog = spaces_epilog()
    p.add_argument("-method", "--method", required=True, metavar="METHOD",
                   help="a method with a search space (listed below; append _our for its _our variant)")
    add_forget_class(p)
    p.add_argument("-weight_path", "--weight_path", "--weight-path", dest="weight_path", default=None)
    p.add_argument("--space", action="append", default=[], metavar="NAME=LOW:HIGH[:log][:int]",
                   help="override one dimension of the declared space (NAME=A,B,C for a choice); repeatable")
    p.add_argument("--jobs", type=positive_int, default=1, help="worker processes sharing the study")
    p.add_argument("--pretrain-epochs", type=positive_int, default=None,
                   help="pretraining epochs when the model is missing (as run.py's)")
    p.add_argument("--dry-run", action="store_true", help="print what would run and stop")
    p.add_argument("--replicates", type=positive_int, default=None,
                   help="pretrained models (pretraining seeds 0..K-1) every trial runs on, scored by the worst "
                        "(default: config.REPLICATES; 1 with -weight_path)")
    add_tune_args(p)
    add_slurm_args(p)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    setting = Setting.from_args(args)
    get_method(args.method)  # unknown names fail first
    listed = config.MU_METHOD_LIST.get(setting.dataset, [])
    entry = entry_for(args.method, listed)
    if args.method in NOT_TUNED:
        raise UsageError(f"{args.method} is not tuned (it has no settings to search); pick another method")
    spaces = {args.method: parse_space(args.method, args.space)}
    if not spaces[args.method]:
        raise UsageError(f"{args.method} declares no search space; give one with --space NAME=LOW:HIGH")
    cluster = None
    if args.executor != "local":
        cluster = cluster_options(args, setting)
    extra = ["--epochs", str(args.pretrain_epochs)] if args.pretrain_epochs else []
    k = 1 if args.weight_path else (args.replicates or config.REPLICATES.get(setting.dataset, 1))
    if args.weight_path and (args.replicates or 1) > 1:
        raise UsageError("a given checkpoint (-weight_path) is one replicate; drop it or drop --replicates")
    return tune(setting, [entry_for("retrain", listed), entry], seeds=[setting.seed], trials=args.tune_trials,
                sampler_seed=args.tune_seed, replicates=tuple(range(k)),
                dt_weight=args.tune_dt_weight, jobs=args.jobs, threads=args.tune_threads or args.threads,
                weight_path=args.weight_path, device=args.device, spaces=spaces, extra_pretrain=extra,
                dry_run=args.dry_run, progress=args.progress, cluster=cluster, write_table=False)
