"""One unlearning run in memory: the method, or for ``_our``/OUR its Over-Unlearning & Replay."""
from __future__ import annotations

import time
from pathlib import Path

from ..store.setting import Setting
from . import Context
from .our2024 import ReplayConfig, run_our

DEFAULT_BATCH_SIZE = 64


def method_context(setting: Setting, *, model, data, device, generator, options: dict, batch_size=None,
                   progress: bool = True, start=None) -> Context:
    """The Context a method runs on, for the forget stage and the tuner's in-memory trials alike: the batch
    size given (``-b``, else ``--opt batch_size``; else 64, and the method may use its own), the options,
    and the checkpoints of ``start`` (the file the model was loaded from; a pretraining ``best.pth``
    brings its ``last.pth``)."""
    given = batch_size or options.get("batch_size")
    return Context(model=model, data=data, device=device, generator=generator,
                   batch_size=int(given or DEFAULT_BATCH_SIZE), batch_size_given=given is not None, progress=progress,
                   options=dict(options), new_model=setting.new_model, checkpoints=start_checkpoints(start),
                   cache_dir=setting.stage_root("method_cache"))


def start_checkpoints(start) -> tuple[Path, ...]:
    """``start`` and, when it is a pretraining ``best.pth`` with a distinct ``last.pth`` beside it, that too."""
    if start is None:
        return ()
    start = Path(start)
    last = start.with_name("last.pth")
    return (start, last) if start.name == "best.pth" and last.is_file() else (start,)


def run_method(spec, our: bool, ctx: Context, para1, para2, *, replay: ReplayConfig, on_mid=None):
    """(model, seconds, phases) of one unlearning run on ``ctx``: the method, or for ``_our``/OUR its
    Over-Unlearning & Replay (phases: their seconds; None for a plain method). Raises Diverged."""
    t0 = time.perf_counter()
    if our:
        model, phases = run_our(spec, ctx, para1, para2, replay=replay, on_mid=on_mid)
        return model, phases["over_seconds"] + phases["replay_seconds"], phases
    model = spec.fn(ctx, para1, para2)
    return model, time.perf_counter() - t0, None
