"""A ``mu_method_list`` entry ``(method, para1, para2[, {option: value}])``: its parameters, its
Replay settings and the folder extras the forget stage derives from the same settings."""
from __future__ import annotations

from ..core.errors import UsageError
from ..store.identity import normal_value
from . import check_options, get_method, resolve_paras
from .our2024 import ReplayConfig


REPLAY_KEYS = ("replay_epochs", "replay_lr", "replay_l1")


def normalise_entry(entry) -> tuple:
    """A ``mu_method_list`` entry ``(method, para1, para2[, {option: value}])`` as a 4-tuple.

    ``None`` parameters become the method's defaults (over-unlearning defaults for
    ``_our``), exactly as the forget stage resolves them, so folder names agree; ``None``
    options are none. The one normalisation of an entry: run.py, the tuner (and the entries
    its ``best.json`` records), the study and the distribution stage's default runs.
    """
    if len(entry) not in (3, 4):
        raise UsageError(f"mu_method_list entry {entry!r} must be (method, para1, para2[, options])")
    p1, p2 = resolve_paras(entry[0], entry[1], entry[2])
    return (entry[0], p1, p2, dict(entry[3] or {}) if len(entry) == 4 else {})


def entry_for(method: str, entries) -> tuple:
    """The normalised entry of ``method`` in the method list ``entries``, else ``method`` at its defaults."""
    found = next((e for e in entries if e[0] == method), None)
    return normalise_entry(found if found is not None else (method, None, None))


def replay_config(spec, *, epochs=None, lr=None, l1=None) -> tuple[ReplayConfig, dict]:
    """The Replay settings of ``spec``'s ``_our`` run and those of them that differ from the defaults."""
    default = ReplayConfig(epochs=spec.replay_epochs)
    given = {"epochs": epochs, "lr": lr, "l1": l1}
    given = {k: normal_value(v, getattr(default, k)) for k, v in given.items() if v is not None}
    given = {k: v for k, v in given.items() if v != getattr(default, k)}
    return ReplayConfig(**{**vars(default), **given}), {f"replay_{k}": v for k, v in given.items()}


def forget_extras(*, options=None, replay_extras=None, weight_path=None, batch_size=None, mask_path=None,
                  method: str | None = None) -> dict:
    """The non-default settings of a forget run: they go into its folder name (see unlearn.store.identity).

    With ``method``, its options are first brought to their declared types (``check_options``), as the
    run will use them: ``weight_decay=1`` and ``weight_decay=1.0`` name the same folder.
    """
    options = check_options(method, options) if method is not None else dict(options or {})
    return {"options": options, **(replay_extras or {}),
            "weight_path": str(weight_path) if weight_path else None, "batch_size": batch_size,
            "mask_path": str(mask_path) if mask_path else None}


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
