"""Over-Unlearning & Replay (the paper's defence), implemented once for every method.

Over-Unlearning runs the method with ``ctx.over = True``: stronger settings and
no or minimal retain data, pushing the forget class's residual knowledge out
even at the cost of retain accuracy. Replay then fine-tunes on the retain data
with an L1 penalty, which restores utility without bringing the class back.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from .methods.base import Context, train_ce


@dataclass
class ReplayConfig:
    """The Replay phase: SGD fine-tuning on retain data with an L1 penalty (paper: 3 to 5 epochs, lr 0.01)."""

    epochs: int = 3
    lr: float = 0.01
    l1: float = 5e-5


def run_our(spec, ctx: Context, para1, para2, *, replay: ReplayConfig, on_mid=None):
    """Over-unlearn with ``spec`` (``para1``/``para2`` are its over-unlearning settings), then replay.

    ``on_mid(model, seconds)`` is called between the phases (outside the timed
    region) so the mid point can be saved and evaluated. Returns
    ``(model, {"over_seconds", "replay_seconds"})``.
    """
    ctx.over = True
    t0 = time.perf_counter()
    ctx.model = spec.fn(ctx, para1, para2)
    over_seconds = time.perf_counter() - t0
    if on_mid is not None:
        on_mid(ctx.model, over_seconds)
    ctx.over = False
    t1 = time.perf_counter()
    model = train_ce(ctx, ctx.retain, lr=replay.lr, epochs=replay.epochs, l1=replay.l1, desc="replay")
    return model, {"over_seconds": over_seconds, "replay_seconds": time.perf_counter() - t1}
