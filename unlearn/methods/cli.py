"""The forget stage's command line, which the attack stage extends (same -method --para1 --para2
and folder-naming flags), and the settings it gives a run."""
from __future__ import annotations

import argparse
import json

from ..core.cli import (add_forget_class, base_parser, finite_float, nonneg_float, nonneg_int,
                        positive_float)
from ..core.errors import UsageError
from . import get_method, list_methods
from .entries import forget_extras, replay_config
from .our2024 import ReplayConfig


class _RawEpilogFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help and the methods table kept as written."""


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


def sample_methods() -> list[str]:
    """The methods defined without a forget class (``_our`` included): what the sample-wise scenario runs."""
    return [m for m in list_methods() if not get_method(m)[0].class_only]


def parser(dataset_default: str, *, scenario: str = "class"):
    """The forget stage's flags; ``scenario="sample"``: ``--forget_percent`` and ``--forget_seed`` instead of
    ``--forget_class``, and only the methods defined without a forget class."""
    sample = scenario == "sample"
    what = "a random share of the training samples" if sample else "one class"
    p = base_parser(f"Unlearn {what} with a registered method (append _our for Over-Unlearning & Replay).",
                    dataset_default)
    p.epilog = methods_epilog()
    p.formatter_class = _RawEpilogFormatter
    names = sample_methods() if sample else list_methods()
    p.add_argument("-method", "--method", required=True, choices=names, metavar="METHOD",
                   help="one of: " + ", ".join(names))
    if sample:
        p.add_argument("--forget_percent", "--forget-percent", dest="forget_percent", type=finite_float, default=None,
                       help="percent of the in-distribution training samples to forget, in (0, 100) (default "
                            "config.FORGET_PERCENT; the paper's -forget_perc 0.1 is 10 here)")
        p.add_argument("--forget_seed", "--forget-seed", type=nonneg_int, default=0,
                       help="seed of the forget set's draw (every method and replicate forgets the same samples)")
    else:
        add_forget_class(p)
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


def extras_from_args(args) -> tuple[ReplayConfig, dict]:
    """Replay settings and folder-name extras of a forget (or attack) command line."""
    spec, _ = get_method(args.method)
    replay, replay_extras = replay_config(spec, epochs=args.replay_epochs, lr=args.replay_lr, l1=args.replay_l1)
    extras = forget_extras(options=parse_options(args.opt), replay_extras=replay_extras, weight_path=args.weight_path,
                           batch_size=args.batch_size, mask_path=args.mask_path, method=args.method)
    return replay, extras
