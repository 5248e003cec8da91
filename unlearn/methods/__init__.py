"""Registry of class-wise unlearning methods (one module each, SalUn-style).

``get_method("negative_grad_our")`` returns the spec of ``negative_grad`` and
``our=True``: the ``_our`` suffix selects Over-Unlearning & Replay
(:mod:`unlearn.methods.our2024`) for any approximate method, implemented once. A method
registered with ``is_our=True`` (the paper's 2025 ``OUR``) is that protocol
by itself: ``get_method("OUR")`` also answers ``our=True`` and it has no
``_our`` variant.

Every method declares its ``--opt`` options at registration (:class:`Option`:
name, type, default, meaning, and in which phase it applies);
:func:`check_options` rejects an unknown key or a bad value in one line.

It also declares where ``run.py --tune`` searches (:class:`Param`): ``space`` for
the method itself, ``over_space`` for its ``_our`` variant (the Over-Unlearning
settings and ``replay_epochs``). :func:`check_space` validates a space in one
line (at registration, and again when a tuner uses one, possibly overridden).
"""
from __future__ import annotations

import functools
import importlib
import math
from dataclasses import dataclass
from typing import Callable

import config
from ..core.errors import UsageError
from .base import Context, random_other_labels, relabel_union, train_ce  # noqa: F401

OUR_SUFFIX = "_our"
PHASES = ("both", "plain", "over")


@dataclass(frozen=True)
class Option:
    """A method option (``--opt name=value``): its type, default and meaning.

    ``phase`` says where it applies: ``plain`` only to the method itself, ``over``
    only to its ``_our`` variant's Over-Unlearning phase, ``both`` to either.
    ``default`` None means "derived at run time", as the meaning says.
    """

    name: str
    type: type
    default: object
    meaning: str
    phase: str = "both"
    choices: tuple = ()

    def coerce(self, value, method: str):
        """``value`` as this option's type; a one-line UsageError when it cannot be."""
        bad = UsageError(f"--opt {self.name}={value!r} of {method} must be {self._what()} ({self.meaning})")
        if self.type is bool:
            if isinstance(value, bool) or value in (0, 1):
                return bool(value)
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
                return value.lower() in ("true", "yes", "on")
            raise bad
        if self.type in (int, float) and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if self.type is int:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
                raise bad
            return int(value)
        if self.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad
            return float(value)
        value = str(value)
        if self.choices and value not in self.choices:
            raise bad
        return value

    def _what(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        return {bool: "true or false", int: "a whole number", float: "a finite number"}.get(self.type, "text")

    def describe(self) -> str:
        where = {"plain": " (method only)", "over": " (_our only)", "both": ""}[self.phase]
        return f"{self.name}={self.default}: {self.meaning}{where}"


def option(name: str, type_: type, default, meaning: str, *, phase: str = "both", choices: tuple = ()) -> Option:
    assert phase in PHASES, phase
    return Option(name, type_, default, meaning, phase, tuple(choices))


# Options every method takes (read by the forget stage, not by the method). ``tuned_from`` is only recorded:
# run.py sets it on a setting it took from a tuning study (unlearn/tune/search.py), so results.json names that study.
COMMON_OPTIONS = (option("batch_size", int, None, "batch size, as -b (default: the run's or the method's own)"),
                  option("tuned_from", str, None, "the tuning study this setting came from (set by run.py; "
                                                  "recorded, not read)"))
# Options of every Over-Unlearning & Replay run (unlearn/methods/our2024.py).
REPLAY_OPTIONS = (option("replay_schedule", str, "paper2024",
                         "Replay learning-rate schedule: paper2024 (the 2024 code's warm-up, peaking near 2x lr), "
                         "constant, or stepped (the 2025 OUR: half the epochs at lr, a third at 0.5x, the rest at "
                         "0.2x)", choices=("paper2024", "constant", "stepped")),)


SPACE_KINDS = ("float", "int", "choice")


@dataclass(frozen=True)
class Param:
    """One dimension of a method's search space (``run.py --tune``).

    ``name`` is ``para1``, ``para2``, a declared option of the run, or (``_our`` and
    OUR only) ``replay_epochs``. ``kind`` float or int take ``low``..``high``
    (inclusive, ``log`` for a log scale); ``choice`` takes ``choices``.
    """

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    kind: str = "float"
    choices: tuple = ()

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.name} in {{{', '.join(map(str, self.choices))}}}"
        scale = " log" if self.log else ""
        return f"{self.name} {self.low:g}..{self.high:g}{scale}{' int' if self.kind == 'int' else ''}"


def param(name: str, low=None, high=None, *, log: bool = False, kind=float, choices=()) -> Param:
    """A :class:`Param`; ``kind`` is ``float``, ``int`` or ``"choice"`` (the type or its name)."""
    kind = {float: "float", int: "int"}.get(kind, kind)
    return Param(name, low, high, bool(log), kind, tuple(choices))


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its function, what para1/para2 mean, defaults, its options and its ``_our`` settings."""

    name: str
    fn: Callable
    para1: str
    para2: str
    defaults: tuple
    approximate: bool = True  # has an _our variant (exact methods and OUR itself do not)
    over_defaults: tuple | None = None  # (para1, para2) of the Over-Unlearning phase
    replay_epochs: int = 3
    our_pretrain_l1: float = 0.0  # >0: _our starts from the L1-sparse pretrained model
    summary: str = ""
    options: tuple = ()  # declared Options
    is_our: bool = False  # the method *is* Over-Unlearning & Replay (OUR): fn is its over phase, no _our variant
    space: tuple = ()  # Params searched by run.py --tune for the method (for OUR: OUR's, replay included)
    over_space: tuple = ()  # Params searched for its _our variant (Over-Unlearning settings, replay_epochs)
    class_only: str = ""  # why the method needs a forget class (undefined in the sample-wise scenario); "" if it does not

    @property
    def options_text(self) -> str:
        """The declared options, for ``--help``."""
        return "; ".join(o.describe() for o in self.options)

    @property
    def space_text(self) -> str:
        """Where ``run.py --tune`` searches, for ``--help``: the method's space, then its ``_our`` variant's."""
        text = ", ".join(p.describe() for p in self.space) or "nothing"
        if self.approximate:
            text += "; _our: " + (", ".join(p.describe() for p in self.over_space) or "nothing")
        return text


_REGISTRY: dict[str, MethodSpec] = {}
_MODULES = ["baseline", "retrain", "finetune", "negative_grad", "amnesiac", "badteacher", "ssd_tuning", "wfisher",
            "fisher_forgetting", "unsir", "ft_prune", "salun", "scrub", "boundary_shrink", "sfron", "rum", "our2025"]


def register_method(name: str, *, para1: str, para2: str, defaults: tuple, approximate: bool = True,
                    over_defaults: tuple | None = None, replay_epochs: int = 3, our_pretrain_l1: float = 0.0,
                    options=(), is_our: bool = False, space=(), over_space=(), class_only: str = ""):
    """Register ``fn(ctx, para1, para2) -> model``; its docstring's first line is its summary.

    ``options``: the :class:`Option` s the method reads with ``ctx.opt``. ``is_our``: the method is
    an Over-Unlearning & Replay protocol of its own; ``fn`` is its Over-Unlearning phase and the
    Replay of :mod:`unlearn.methods.our2024` follows (its options may set their own defaults, e.g.
    ``replay_schedule``). ``space`` / ``over_space``: the :class:`Param` s ``run.py --tune``
    searches for the method and for its ``_our`` variant; checked here (:func:`check_space`).
    ``class_only``: why the method is defined only when a whole class is forgotten (it reads
    ``ctx.forget_index``); such a method is refused in the sample-wise scenario.
    """

    def deco(fn):
        doc = (fn.__doc__ or "").strip().splitlines()
        names = [o.name for o in options]
        assert len(set(names)) == len(names), f"{name}: an option is declared twice"
        spec = MethodSpec(name, _declaring(fn, name), para1, para2, tuple(defaults), approximate and not is_our,
                          tuple(over_defaults) if over_defaults else tuple(defaults), replay_epochs,
                          our_pretrain_l1, doc[0] if doc else "", tuple(options), is_our, tuple(space),
                          tuple(over_space), class_only)
        if over_space and not spec.approximate:
            raise UsageError(f"{name} has no _our variant, so over_space must be empty (put OUR's settings in space)")
        check_space(spec, spec.space, our=is_our)
        if spec.approximate:
            check_space(spec, spec.over_space, our=True)
        _REGISTRY[name] = spec
        return fn

    return deco


def _declaring(fn, name: str):
    """``fn`` that first tells ``ctx`` which options it declared (so ``ctx.opt`` knows types and defaults)."""
    @functools.wraps(fn)
    def run(ctx, para1, para2):
        if ctx.declared is None:
            spec = _REGISTRY[name]
            ctx.declared = spec_options(spec, ctx.over or spec.is_our)
        return fn(ctx, para1, para2)

    return run


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
    """(spec, our) for ``name``; an unknown name is a UsageError listing the valid ones.

    ``our`` is True for ``<name>_our`` and for a method that is Over-Unlearning & Replay itself (OUR).
    """
    _load_all()
    our = name.endswith(OUR_SUFFIX)
    base = name[: -len(OUR_SUFFIX)] if our else name
    spec = _REGISTRY.get(base)
    if spec is None or (our and not spec.approximate):
        raise UsageError(f"unknown method {name!r}; choose one of {', '.join(list_methods())}")
    return spec, our or spec.is_our


def declared_options(name: str) -> dict[str, Option]:
    """The options run ``name`` (``_our`` included) accepts: common, its phase's own and, for _our, Replay's."""
    return spec_options(*get_method(name))


def spec_options(spec: MethodSpec, our: bool) -> dict[str, Option]:
    wrapped = our and not spec.is_our  # a _our variant: the method runs in its over phase
    phase = "over" if wrapped else "plain"
    out = {o.name: o for o in COMMON_OPTIONS}
    if our:
        out.update({o.name: o for o in REPLAY_OPTIONS})
    out.update({o.name: o for o in spec.options if o.phase in ("both", phase)})
    return out


def check_options(name: str, options) -> dict:
    """Reject an unknown ``--opt`` key (listing the valid ones) or a value of the wrong type, in one line.

    Returns the options coerced to their declared types (the input is not modified).
    """
    declared = declared_options(name)
    out = {}
    for key, value in dict(options or {}).items():
        if key not in declared:
            spec, our = get_method(name)
            elsewhere = [o for o in spec.options if o.name == key]
            hint = ""
            if elsewhere:
                hint = (f" (it applies to {spec.name}{OUR_SUFFIX} only)" if elsewhere[0].phase == "over"
                        else f" (it applies to {spec.name} only, not to its Over-Unlearning phase)")
            raise UsageError(f"--opt {key} is not an option of {name}{hint}; its options are: "
                             f"{', '.join(sorted(declared))}")
        out[key] = value if value is None else declared[key].coerce(value, name)
    return out


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
    spec, our = get_method(name)
    if not our:
        return 0.0
    return float(config.OUR_PRETRAIN_L1.get(dataset, {}).get(spec.name, spec.our_pretrain_l1))


def check_paras(name: str, para1, para2):
    """Reject parameters a method cannot use (a non-positive learning rate, fractional epochs) in one line."""
    spec, our = get_method(name)
    for flag, meaning, v in (("--para1", spec.para1, para1), ("--para2", spec.para2, para2)):
        if meaning == "unused":
            continue
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise UsageError(f"{flag} {v} of {name} ({meaning}) must be a finite number")
        if "learning rate" in meaning and (v < 0 or (v == 0 and "(0 = " not in meaning)):
            raise UsageError(f"{flag} {v} of {name} is a {meaning} and must be positive")
        base = meaning.split(" (")[0]
        if base.endswith("epochs") and (v < 0 or float(v) != int(v)):
            raise UsageError(f"{flag} {v} of {name} is a number of {base.split()[-1]} and must be a whole "
                             "number >= 0")


def search_space(name: str) -> tuple:
    """The declared search space of run ``name``: the method's ``space``, or ``over_space`` for ``<name>_our``."""
    spec, our = get_method(name)
    return spec.over_space if our and not spec.is_our else spec.space


def check_space(spec: MethodSpec, space, *, our: bool) -> tuple:
    """Validate a search space of ``spec`` (its ``_our`` variant's when ``our``); a one-line UsageError if bad.

    Each name must be para1/para2 (unless unused), an option the run declares, or (for
    ``_our`` and OUR) ``replay_epochs``; numeric bounds finite with low < high, a log scale
    only above 0, whole bounds for an int (and for epochs and int options), and the option's
    type and valid values respected. Returns ``space``.
    """
    label = spec.name + (OUR_SUFFIX if our and not spec.is_our else "")
    declared = spec_options(spec, our)
    allowed = [n for n, m in (("para1", spec.para1), ("para2", spec.para2)) if m != "unused"]
    allowed += ["replay_epochs"] if our else []
    allowed += sorted(declared)
    seen = set()
    for p in space:
        where = f"search space of {label}: {p.name}"
        if not isinstance(p, Param):
            raise UsageError(f"search space of {label}: {p!r} is not a param(name, low, high, ...)")
        if p.name not in allowed:
            raise UsageError(f"search space of {label}: {p.name!r} is not a setting of {label}; choose from "
                             f"{', '.join(allowed)}")
        if p.name in seen:
            raise UsageError(f"{where} is declared twice")
        seen.add(p.name)
        if p.kind not in SPACE_KINDS:
            raise UsageError(f"{where} has kind {p.kind!r}; use float, int or choice")
        option = declared.get(p.name)
        meaning = {"para1": spec.para1, "para2": spec.para2, "replay_epochs": "epochs"}.get(p.name, "")
        if p.kind == "choice":
            if len(p.choices) < 2 or p.low is not None or p.high is not None or p.log:
                raise UsageError(f"{where}: a choice takes two or more choices and no low, high or log")
            if option is not None:
                for c in p.choices:
                    option.coerce(c, label)
            continue
        if p.choices:
            raise UsageError(f"{where}: choices only go with kind choice")
        bounds = (p.low, p.high)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bounds):
            raise UsageError(f"{where} needs finite numbers low and high (got {p.low!r}, {p.high!r})")
        if not p.low < p.high:
            raise UsageError(f"{where} low {p.low:g} must be below high {p.high:g}")
        if p.log and p.low <= 0:
            raise UsageError(f"{where} is on a log scale, so low must be above 0 (got {p.low:g})")
        whole = p.kind == "int" or meaning.split(" (")[0].endswith("epochs") or (option is not None
                                                                                 and option.type is int)
        if whole and p.kind != "int":
            raise UsageError(f"{where} is a whole number; declare it with kind=int")
        if p.kind == "int" and any(float(v) != int(v) for v in bounds):
            raise UsageError(f"{where} is an int, so low and high must be whole numbers (got {p.low:g}, {p.high:g})")
        if option is not None and option.type not in (int, float):
            raise UsageError(f"{where} is a {option.type.__name__} option; search it with kind=choice")
        if option is not None and option.default is None:
            raise UsageError(f"{where}: the option has no fixed default (it is derived at run time), so the "
                             "default setting could not be tried first; search another setting")
        if meaning and p.low < 0:
            raise UsageError(f"{where} ({meaning}) cannot be negative (low {p.low:g})")
        if "learning rate" in meaning and p.low <= 0 and "(0 = " not in meaning:
            raise UsageError(f"{where} is a {meaning}, so low must be above 0")
        if option is not None:
            for v in bounds:
                option.coerce(v, label)
    return tuple(space)
