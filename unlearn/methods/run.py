"""One unlearning run in memory: the method, or for ``_our``/OUR its Over-Unlearning & Replay."""
from __future__ import annotations

import time

from . import Context
from .our2024 import ReplayConfig, run_our


def run_method(spec, our: bool, ctx: Context, para1, para2, *, replay: ReplayConfig, on_mid=None):
    """(model, seconds, phases) of one unlearning run on ``ctx``: the method, or for ``_our``/OUR its
    Over-Unlearning & Replay (phases: their seconds; None for a plain method). Raises Diverged."""
    t0 = time.perf_counter()
    if our:
        model, phases = run_our(spec, ctx, para1, para2, replay=replay, on_mid=on_mid)
        return model, phases["over_seconds"] + phases["replay_seconds"], phases
    model = spec.fn(ctx, para1, para2)
    return model, time.perf_counter() - t0, None
