"""The shared engine: seeding, device choice, the one epoch loop, evaluation.

Every stage (pretraining, each unlearning method, the attack) trains through
:func:`train_epochs`, so progress bars, L1 penalties, augmentation and the
non-finite-loss stop behave the same everywhere.
"""
from __future__ import annotations

import math
import random
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from datasets.splits import augment_batch
from .errors import Diverged, UsageError
from .runinfo import fp_perturbation


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator for data order."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


FP_PERTURB_SEED = 7919  # the perturbation pattern of level k is drawn from seed FP_PERTURB_SEED + k


def perturb_init(model: torch.nn.Module, level: int | None = None) -> torch.nn.Module:
    """Move about half of a fresh model's nonzero weights by one ulp, up or down (in place; level 0: none).

    A stand-in for another CPU (``UNLEARN_FP_PERTURB``, :func:`unlearn.core.runinfo.fp_perturbation`): machines
    differ by the rounding of their reductions, a relative 1e-7 per operation, which training amplifies
    into another model of the same quality. One ulp at initialisation is that difference, made here and
    reproducibly (the pattern comes from its own generator; the global random state is untouched).
    """
    level = fp_perturbation() if level is None else level
    if not level:
        return model
    g = torch.Generator().manual_seed(FP_PERTURB_SEED + level)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point():
                r = torch.rand(p.shape, generator=g).to(p.device)
                toward = torch.where(r < 0.25, torch.inf, -torch.inf).to(p.dtype)
                p.copy_(torch.where((r < 0.5) & (p != 0), torch.nextafter(p, toward), p))  # zeros stay zero
    return model


def resolve_device(name: str | None = "auto", gpu: bool = False) -> torch.device:
    """``auto`` picks CUDA when present (the paper's ``-gpu`` forces it)."""
    name = name or "auto"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name} requested but CUDA is not available; pass --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; pass --device auto, cpu or cuda[:N]") from None


def l1_norm(model: torch.nn.Module) -> torch.Tensor:
    """Sum of absolute parameter values (the L1-sparse penalty of Jia et al. 2023)."""
    return sum(p.abs().sum() for p in model.parameters())


class Sized:
    """An iterable of batches with a known length (so a progress bar can show it)."""

    def __init__(self, it: Iterable, length: int):
        self.it, self.length = it, int(length)

    def __iter__(self):
        return iter(self.it)

    def __len__(self):
        return self.length


@dataclass
class LoopConfig:
    """How to iterate: batch size, epochs, augmentation and an L1 weight (constant or per-epoch schedule)."""

    epochs: int
    batch_size: int = 64
    augment: dict | None = None  # kwargs of datasets.splits.augment_batch
    l1: float | Callable[[int], float] = 0.0
    desc: str = "train"
    progress: bool = True


@dataclass(eq=False)  # meters are told apart by identity (nested blocks may hold equal counts)
class Work:
    """Examples that went through a gradient computation (and optimiser steps) during a run: the
    price of unlearning in epochs, independent of the machine (the reproduction study's claim 2)."""

    examples: int = 0
    steps: int = 0


_METERS: list[Work] = []


@contextmanager
def metered():
    """Count, in the :class:`Work` it yields, every example of :func:`train_epochs` and of the
    methods' own gradient passes (:func:`record_work`) run inside the block."""
    w = Work()
    _METERS.append(w)
    try:
        yield w
    finally:
        _METERS.remove(w)


def record_work(examples: int, steps: int = 0) -> None:
    """Add to every open :func:`metered` block (a no-op outside one)."""
    for w in _METERS:
        w.examples += int(examples)
        w.steps += int(steps)


def batch_examples(batch) -> int:
    """Input examples in a batch tuple: the first dimension of its image tensors (3 or more
    dimensions; labels and soft targets have fewer), e.g. retain and forget halves of one step."""
    return sum(len(t) for t in batch if torch.is_tensor(t) and t.dim() >= 3)


def train_epochs(
    model: torch.nn.Module,
    batches: Callable[[int], Iterable],
    step_loss: Callable[[torch.nn.Module, tuple], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    loop: LoopConfig,
    scheduler=None,
    step_scheduler: bool = False,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    generator: torch.Generator | None = None,
) -> list[dict]:
    """The epoch loop written once.

    ``batches(epoch)`` yields batches (any tuple); ``step_loss(model, batch)``
    returns the loss to minimise. ``scheduler`` steps once per epoch, or once per
    optimiser step when ``step_scheduler``. Raises :class:`Diverged` on a non-finite loss.
    Returns one dict of averaged loss per epoch.
    """
    history, step = [], 0
    # One bar for the whole loop, counting optimiser steps; shown only once a loop has run for
    # `delay` seconds, so quick loops leave no empty bar behind (per-epoch bars printed "0it" each).
    bar = tqdm(total=None, desc=loop.desc, unit="step", leave=False, disable=not loop.progress, mininterval=1.0,
               delay=2.0)
    try:
        for epoch in range(loop.epochs):
            model.train()
            l1w = loop.l1(epoch) if callable(loop.l1) else loop.l1
            total, count = 0.0, 0
            epoch_batches = batches(epoch)
            if epoch == 0 and hasattr(epoch_batches, "__len__"):
                bar.total = loop.epochs * len(epoch_batches)
            bar.set_description(f"{loop.desc} {epoch + 1}/{loop.epochs}", refresh=False)
            for batch in epoch_batches:
                if loop.augment:
                    batch = (augment_batch(batch[0], generator=generator, **loop.augment), *batch[1:])
                loss = step_loss(model, batch)
                if l1w:
                    loss = loss + l1w * l1_norm(model)
                value = loss.item()
                if not math.isfinite(value):
                    raise Diverged(step, value)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                record_work(batch_examples(batch), steps=1)
                if scheduler is not None and step_scheduler:
                    scheduler.step()
                step += 1
                total += value
                count += 1
                bar.update(1)
            if scheduler is not None and not step_scheduler:
                scheduler.step()
            record = {"epoch": epoch + 1, "loss": total / max(count, 1)}
            history.append(record)
            bar.set_postfix(loss=f"{record['loss']:.4g}", refresh=False)
            if on_epoch_end is not None:
                on_epoch_end(epoch, record)
    finally:
        bar.close()
    return history


def ce_step(model, batch):
    """Cross-entropy on ``(x, y)``."""
    x, y = batch[0], batch[1]
    return F.cross_entropy(model(x), y)


def sgd(model, lr: float, *, momentum: float = 0.9, weight_decay: float = 5e-4, params=None):
    return torch.optim.SGD(params if params is not None else model.parameters(), lr=lr,
                           momentum=momentum, weight_decay=weight_decay)


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1024, features: bool = False) -> torch.Tensor:
    """Logits (or penultimate features) of ``x`` in eval mode, batched, without autograd."""
    was = model.training
    model.eval()
    fn = model.forward_features if features else model
    out = torch.cat([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]) if len(x) else torch.empty(0)
    model.train(was)
    return out


@torch.no_grad()
def accuracy(model: torch.nn.Module, data, batch_size: int = 1024) -> float:
    """Top-1 accuracy on a TensorSet (NaN when empty)."""
    if len(data) == 0:
        return float("nan")
    correct = 0
    was = model.training
    model.eval()
    for x, y in data.batches(batch_size):
        correct += (model(x).argmax(1) == y).sum().item()
    model.train(was)
    return correct / len(data)
