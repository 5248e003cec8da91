"""Over-Unlearning & Replay (the paper's defence), implemented once for every method.

Over-Unlearning runs the method with ``ctx.over = True``: stronger settings and
no or minimal retain data, pushing the forget class's residual knowledge out
even at the cost of retain accuracy. Replay then fine-tunes on the retain data
with an L1 penalty, which restores utility without bringing the class back.

Replay follows the paper's 2024 code (``utils/utils.py`` ``fit_one_cycle`` as the
``*_our`` functions of ``forget_full_class_strategies.py`` call it): SGD (momentum
0.9, weight decay 5e-4), batch 64 (the run's batch size), no augmentation, and a
learning rate that warms up linearly from 0 over two epochs, because that helper
keeps stepping its per-step warm-up through the second epoch: the lr reaches
about twice the nominal one (0.02 for lr 0.01) at the end of epoch 2, then drops
back to the nominal lr (``--opt replay_schedule=paper2024``, the default).
``constant`` keeps the nominal lr throughout; ``stepped`` is the 2025 OUR's
schedule (see :func:`stepped_epochs`). Each stepped stage restarts the optimiser,
as the 2025 code calls its helper once per stage.

Deliberate deviations: the 2024 helper takes no L1 argument (its ``_our`` code
passes one and cannot run as released); the L1 weight 5e-5 is the 2025 code's.
The 2024 helper's MultiStep decay (gamma 0.8 at epoch 4 or 6, depending on the
method) only touches the fifth epoch of 5-epoch replays; it is left out.

A method registered with ``is_our`` (the 2025 ``OUR``) is its own Over-Unlearning phase; its
Replay is this one, with the schedule it declares (``stepped``).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from ..core.engine import ce_step, sgd, train_epochs
from . import spec_options
from .base import Context, train_ce


@dataclass
class ReplayConfig:
    """The Replay phase: SGD fine-tuning on retain data with an L1 penalty (paper: 3 to 5 epochs, lr 0.01)."""

    epochs: int = 3
    lr: float = 0.01
    l1: float = 5e-5


def paper2024_factor(steps_per_epoch: int):
    """Per-step lr factor of the 2024 replay: step/N over the first two epochs (0 -> ~2), then 1."""
    n = max(int(steps_per_epoch), 1)
    return lambda step: step / n if step < 2 * n else 1.0


def stepped_epochs(epochs: int) -> list[tuple[int, float]]:
    """(epochs, lr factor) stages of the 2025 OUR replay: 6 epochs -> 3 at 1x, 2 at 0.5x, 1 at 0.2x.

    Other totals keep the proportions: half (rounded up) at 1x, two thirds of the rest
    (rounded up) at 0.5x, the remainder at 0.2x.
    """
    epochs = int(epochs)
    n1 = math.ceil(epochs / 2)
    n2 = math.ceil((epochs - n1) * 2 / 3)
    return [(n, f) for n, f in ((n1, 1.0), (n2, 0.5), (epochs - n1 - n2, 0.2)) if n > 0]


def replay_phase(ctx: Context, cfg: ReplayConfig, schedule: str):
    """Fine-tune ``ctx.model`` on the retain data with ``cfg``'s L1 weight under ``schedule``."""
    if schedule == "constant":
        return train_ce(ctx, ctx.retain, lr=cfg.lr, epochs=cfg.epochs, l1=cfg.l1, desc="replay")
    if schedule == "stepped":
        for i, (n, f) in enumerate(stepped_epochs(cfg.epochs)):
            train_ce(ctx, ctx.retain, lr=cfg.lr * f, epochs=n, l1=cfg.l1, desc=f"replay stage {i + 1}")
        return ctx.model
    batches = ctx.shuffled(ctx.retain)
    opt = sgd(ctx.model, cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, paper2024_factor(len(batches(0))))
    train_epochs(ctx.model, batches, ce_step, opt, loop=ctx.loop(cfg.epochs, "replay", l1=cfg.l1), scheduler=sched,
                 step_scheduler=True, generator=ctx.generator)
    return ctx.model


def run_our(spec, ctx: Context, para1, para2, *, replay: ReplayConfig, on_mid=None):
    """Over-unlearn with ``spec`` (``para1``/``para2`` are its over-unlearning settings), then replay.

    ``on_mid(model, seconds)`` is called between the phases (outside the timed
    region) so the mid point can be saved and evaluated. Returns
    ``(model, {"over_seconds", "replay_seconds"})``.
    """
    ctx.declared = spec_options(spec, True)
    ctx.over = True
    t0 = time.perf_counter()
    ctx.model = spec.fn(ctx, para1, para2)
    over_seconds = time.perf_counter() - t0
    if on_mid is not None:
        on_mid(ctx.model, over_seconds)
    ctx.over = False
    t1 = time.perf_counter()
    model = replay_phase(ctx, replay, ctx.opt("replay_schedule"))
    return model, {"over_seconds": over_seconds, "replay_seconds": time.perf_counter() - t1}
