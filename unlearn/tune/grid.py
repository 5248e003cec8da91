"""The grid's side of tuning: which setting ``run.py`` runs per method, tuned or ``config.py``'s.

:func:`tuned_entries` replaces a method-list entry by the best setting of its study
(:mod:`unlearn.tune.search`) for the grid's setting and seed when one exists and was tuned on the
unchanged checkpoint; otherwise the entry, and so the command, stays exactly as it was.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..core.errors import UsageError
from ..methods import check_options, declared_options, get_method
from ..methods.entries import normalise_entry, replay_config
from ..store.identity import unchanged
from ..store.setting import Setting
from .folders import study_folder
from .space import entry_text
from .tasks import NOT_TUNED


def tuned_entries(setting: Setting, entries, *, weight_path=None) -> list[tuple[tuple, str]]:
    """Per method-list entry, (the entry the grid runs, what it is): the tuned setting of ``setting``'s
    seed when a ``best.json`` exists for it and the checkpoint it was tuned on is unchanged, else the entry.

    A tuned entry carries ``tuned_from`` (the study) among its options; the forget stage records it
    in results.json. A tuned setting equal to the default leaves the entry as it is.
    """
    out = []
    for entry in entries:
        method = entry[0]
        if method in NOT_TUNED:
            out.append((entry, "config.py default (not tuned)"))
            continue
        try:
            folder = study_folder(setting, method, weight_path)
        except UsageError:
            out.append((entry, "config.py default"))
            continue
        best = _read(folder / "best.json")
        if best is None or not best.get("entry"):
            out.append((entry, "config.py default"))
            continue
        if not all(unchanged(fp) for fp in best.get("inputs", [])) or not best.get("inputs"):
            out.append((entry, f"config.py default (study {best['study_ref']} was tuned on another checkpoint)"))
            continue
        tuned = _minimal(normalise_entry(best["entry"]), normalise_entry(entry))
        if _effective(tuned) == _effective(normalise_entry(entry)):
            out.append((entry, f"config.py default (the best of study {best['study_ref']})"))
            continue
        out.append(((tuned[0], tuned[1], tuned[2], {**tuned[3], "tuned_from": best["study_ref"]}),
                    f"tuned (study {best['study_ref']}, seed {setting.seed}): {entry_text(tuned)}"))
    return out


def _read(path: Path) -> dict | None:
    try:
        r = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return r if isinstance(r, dict) else None


def _defaults(method: str) -> dict:
    """The value every option and replay setting of ``method`` takes when not given."""
    spec, our = get_method(method)
    out = {k: o.default for k, o in declared_options(method).items() if o.default is not None}
    if our:
        out.update({f"replay_{k}": v for k, v in vars(replay_config(spec)[0]).items()})
    return out


def _effective(entry):
    """What a setting runs: para1, para2 and every option and replay setting, defaults filled in."""
    method, p1, p2, opts = entry
    given = check_options(method, {k: v for k, v in opts.items() if not k.startswith("replay_")})
    given.update({k: float(v) for k, v in opts.items() if k.startswith("replay_")})
    return method, float(p1), float(p2), {**_defaults(method), **given}


def _minimal(tuned, default):
    """``tuned`` without the options it sets to their default values that ``default`` does not set: the
    command says only what differs."""
    method, p1, p2, opts = tuned
    base = _defaults(method)
    keep = {k: v for k, v in opts.items() if k in default[3] or k not in base or base[k] != v}
    return method, p1, p2, keep
