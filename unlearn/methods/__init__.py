"""Registry of class-wise unlearning methods (one module each, SalUn-style).

``get_method("negative_grad_our")`` returns the spec of ``negative_grad`` and
``our=True``: the ``_our`` suffix selects Over-Unlearning & Replay
(:mod:`unlearn.our`) for any approximate method, implemented once.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from ..errors import UsageError
from .base import Context, random_other_labels, relabel_union, train_ce  # noqa: F401

OUR_SUFFIX = "_our"


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its function, what para1/para2 mean, defaults, and its ``_our`` settings."""

    name: str
    fn: Callable
    para1: str
    para2: str
    defaults: tuple
    approximate: bool = True  # exact methods (baseline, retrain) have no _our variant
    over_defaults: tuple | None = None  # (para1, para2) of the Over-Unlearning phase
    replay_epochs: int = 3
    our_pretrain_l1: float = 0.0  # >0: _our starts from the L1-sparse pretrained model
    summary: str = ""


_REGISTRY: dict[str, MethodSpec] = {}
_MODULES = ["baseline", "retrain", "finetune", "negative_grad", "amnesiac", "badteacher", "ssd_tuning", "wfisher",
            "fisher_forgetting", "unsir", "ft_prune", "salun", "scrub", "boundary_shrink"]


def register_method(name: str, *, para1: str, para2: str, defaults: tuple, approximate: bool = True,
                    over_defaults: tuple | None = None, replay_epochs: int = 3, our_pretrain_l1: float = 0.0):
    """Register ``fn(ctx, para1, para2) -> model``; its docstring's first line is its summary."""

    def deco(fn):
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = MethodSpec(name, fn, para1, para2, tuple(defaults), approximate,
                                     tuple(over_defaults) if over_defaults else tuple(defaults), replay_epochs,
                                     our_pretrain_l1, doc[0] if doc else "")
        return fn

    return deco


def _load_all():
    for m in _MODULES:
        try:
            importlib.import_module(f"{__name__}.{m}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{m}":
                raise


def list_methods(include_our: bool = True) -> list[str]:
    """Registered method names, plus ``<name>_our`` for every approximate method."""
    _load_all()
    names = list(_REGISTRY)
    if include_our:
        names += [n + OUR_SUFFIX for n, s in _REGISTRY.items() if s.approximate]
    return names


def get_method(name: str) -> tuple[MethodSpec, bool]:
    """(spec, our) for ``name``; an unknown name is a UsageError listing the valid ones."""
    _load_all()
    our = name.endswith(OUR_SUFFIX)
    base = name[: -len(OUR_SUFFIX)] if our else name
    spec = _REGISTRY.get(base)
    if spec is None or (our and not spec.approximate):
        raise UsageError(f"unknown method {name!r}; choose one of {', '.join(list_methods())}")
    return spec, our


def resolve_paras(name: str, para1=None, para2=None) -> tuple:
    """``(para1, para2)`` with ``None`` replaced by the method's defaults (over-unlearning defaults for ``_our``).

    Every stage resolves through here, so they agree on a run's folder name.
    """
    spec, our = get_method(name)
    d1, d2 = spec.over_defaults if our else spec.defaults
    return (d1 if para1 is None else para1), (d2 if para2 is None else para2)


def pretrain_l1(name: str, dataset: str) -> float:
    """The L1 weight of the pretrained model ``name`` starts from (0: the dense model).

    ``_our`` variants of some methods start from an L1-sparse model (``our_pretrain_l1``);
    ``config.OUR_PRETRAIN_L1`` can set another weight for a dataset.
    """
    import config

    spec, our = get_method(name)
    if not our:
        return 0.0
    return float(config.OUR_PRETRAIN_L1.get(dataset, {}).get(spec.name, spec.our_pretrain_l1))


def check_paras(name: str, para1, para2):
    """Reject parameters a method cannot use (a non-positive learning rate, fractional epochs) in one line."""
    import math

    spec, our = get_method(name)
    for flag, meaning, v in (("--para1", spec.para1, para1), ("--para2", spec.para2, para2)):
        if meaning == "unused":
            continue
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise UsageError(f"{flag} {v} of {name} ({meaning}) must be a finite number")
        if "learning rate" in meaning and v <= 0:
            raise UsageError(f"{flag} {v} of {name} is a {meaning} and must be positive")
        if meaning.endswith("epochs") and (v < 0 or float(v) != int(v)):
            raise UsageError(f"{flag} {v} of {name} is a number of {meaning.split()[-1]} and must be a whole "
                             "number >= 0")
