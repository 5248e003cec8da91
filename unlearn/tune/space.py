"""A method's search space and the settings in it: ``--space`` overrides, Optuna's suggestions, the values
an entry gives the dimensions and the entry a set of values gives."""
from __future__ import annotations

import json

from ..core.errors import UsageError
from ..methods import Param, check_space, get_method, search_space
from ..store.setting import fmt_para


def parse_space(method: str, texts) -> tuple:
    """The declared space of ``method`` with ``--space NAME=LOW:HIGH[:log][:int]`` / ``NAME=A,B,C`` overrides.

    An override replaces the declared dimension of that name or adds one; the result is
    validated (:func:`unlearn.methods.check_space`), so bad bounds are one line.
    """
    spec, our = get_method(method)
    space = {p.name: p for p in search_space(method)}
    for text in texts or ():
        name, eq, rest = text.partition("=")
        name = name.strip()
        if not eq or not name or not rest:
            raise UsageError(f"--space {text!r} is not NAME=LOW:HIGH[:log][:int] or NAME=A,B,C "
                             "(e.g. --space para1=1e-4:0.1:log)")
        if ":" in rest:
            parts = rest.split(":")
            flags = set(parts[2:])
            if len(parts) < 2 or flags - {"log", "int"}:
                raise UsageError(f"--space {text!r}: after LOW:HIGH only :log and :int may follow")
            try:
                low, high = float(parts[0]), float(parts[1])
            except ValueError:
                raise UsageError(f"--space {text!r}: LOW and HIGH must be numbers") from None
            kind = "int" if "int" in flags else "float"
            if kind == "int" and low.is_integer() and high.is_integer():
                low, high = int(low), int(high)
            space[name] = Param(name, low, high, "log" in flags, kind)
        else:
            choices = tuple(_json_or_text(c) for c in rest.split(","))
            space[name] = Param(name, kind="choice", choices=choices)
    return check_space(spec, tuple(space.values()), our=our)


def _json_or_text(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def _round(v: float) -> float:
    """Three significant digits: readable folder names, and the value a trial ran is the value reported."""
    return float(f"{v:.3g}")


def suggest(trial, space) -> dict:
    """One value per dimension from Optuna; floats rounded to 3 significant digits (the value run)."""
    out = {}
    for p in space:
        if p.kind == "choice":
            out[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.kind == "int":
            out[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
        else:
            v = trial.suggest_float(p.name, float(p.low), float(p.high), log=p.log)
            out[p.name] = v if trial.user_attrs.get("default") else _round(v)
    return out


def default_values(entry, space) -> dict:
    """The values of the space's dimensions in a method-list entry (its para1/para2, options, replay)."""
    method, p1, p2, opts = entry
    spec, our = get_method(method)
    declared = {o.name: o for o in spec.options}
    values = {"para1": p1, "para2": p2, "replay_epochs": opts.get("replay_epochs", spec.replay_epochs)}
    out = {}
    for p in space:
        v = values[p.name] if p.name in values else opts.get(p.name, getattr(declared.get(p.name), "default", None))
        if p.kind == "int" and v is not None:
            v = int(v)
        elif p.kind == "float" and v is not None:
            v = float(v)
        out[p.name] = v
    return out


def apply_values(entry, values: dict) -> tuple:
    """``entry`` with the searched values put in: para1/para2, then options (replay_epochs among them)."""
    method, p1, p2, opts = entry
    opts = dict(opts)
    for k, v in values.items():
        if k == "para1":
            p1 = v
        elif k == "para2":
            p2 = v
        else:
            opts[k] = v
    return (method, p1, p2, opts)


def entry_text(entry) -> str:
    """``0.01, 5, T=0.5, replay_epochs=4``: a setting as the table shows it."""
    _, p1, p2, opts = entry
    extra = [f"{k}={fmt_para(v) if isinstance(v, float) else v}" for k, v in opts.items() if k != "tuned_from"]
    return ", ".join([fmt_para(p1), fmt_para(p2), *extra])
