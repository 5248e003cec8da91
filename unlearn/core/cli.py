"""Command-line flags shared by the stage scripts.

The paper's spellings (``-net``, ``-dataset``, ``-b`` ...) are kept as aliases
of GNU-style flags so existing command lines keep working.
"""
from __future__ import annotations

import argparse
import math

import torch

from datasets import list_datasets
from models import list_models


def _number(kind, test, what):
    """An argparse type: ``kind`` (int or float) that must satisfy ``test``; the error names ``what``."""
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}")
        if (kind is float and not math.isfinite(v)) or not test(v):
            raise argparse.ArgumentTypeError(f"{text} must be {what}")
        return v

    parse.__name__ = what
    return parse


positive_int = _number(int, lambda v: v > 0, "a whole number > 0")
nonneg_int = _number(int, lambda v: v >= 0, "a whole number >= 0")
positive_float = _number(float, lambda v: v > 0, "a number > 0")
nonneg_float = _number(float, lambda v: v >= 0, "a number >= 0")
finite_float = _number(float, lambda v: True, "a finite number")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit code 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


def base_parser(description: str, dataset_default: str) -> argparse.ArgumentParser:
    p = Parser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("-dataset", "--dataset", default=dataset_default,
                   help=f"dataset, case-insensitive: {', '.join(list_datasets())}")
    p.add_argument("-net", "--net", default=None, help=f"model ({', '.join(list_models())}); default from config.py")
    p.add_argument("-classes", "--classes", type=int, default=None,
                   help="number of classes of the dataset, OOD included (default from config.py)")
    p.add_argument("--ood_classes", "--ood-classes", dest="ood_classes", type=nonneg_int, nargs="+", default=None,
                   help="classes held out as OOD, dataset labels (default from config.py)")
    p.add_argument("-seed", "--seed", type=nonneg_int, default=0)
    p.add_argument("--pretrain_seed", "--pretrain-seed", dest="pretrain_seed", type=nonneg_int, default=0,
                   help="which pretrained model (its pretraining seed): the experiment's replicate; in the "
                        "pretraining script, -seed is the pretraining seed")
    p.add_argument("-b", "--batch-size", "--batch_size", dest="batch_size", type=positive_int, default=None,
                   help="batch size (default from config.py / the method)")
    p.add_argument("-gpu", "--gpu", action="store_true", help="use CUDA (same as --device cuda)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--data-root", "--data_root", dest="data_root", default=None,
                   help="dataset folder (default ./data or $UNLEARN_DATA_ROOT)")
    p.add_argument("--log-root", "--log_root", dest="log_root", default=None,
                   help="output folder (default ./log_files or $UNLEARN_LOG_ROOT)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for torch (default: torch's choice; 1 is fastest for tiny models)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    return p


def add_forget_class(p, default=None):
    """``--forget_class`` / ``--forget-class``, declared once for every script that takes it (the forget and
    attack stages, the distribution stage, generate_mask.py, tune_method.py, run.py)."""
    return p.add_argument("--forget_class", "--forget-class", type=int, default=default,
                          help="class to forget, as a dataset label (default from config.py)")


def device_arg(args) -> str:
    """The device flag, honouring the paper's ``-gpu``; also applies ``--threads``."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    return "cuda" if args.gpu and args.device == "auto" else args.device
