"""What every unlearning method receives, and the helpers they share.

A method is a function ``fn(ctx: Context, para1, para2) -> nn.Module`` that
returns the unlearned model (usually ``ctx.model`` modified in place). It is
registered with :func:`unlearn.methods.register_method`, which also records what
``para1`` / ``para2`` mean for it (as the paper's ``mu_method_list`` uses them)
and how its Over-Unlearning phase differs (see :mod:`unlearn.methods.our2024`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from datasets.splits import SplitData, TensorSet
from ..core.errors import UsageError
from ..core.engine import LoopConfig, Sized, ce_step, sgd, train_epochs


def shuffled_batches(ts: TensorSet, batch_size: int, generator: torch.Generator):
    """``batches(epoch)``: a fresh shuffle of ``ts`` each epoch, sized so progress bars know the epoch's length."""
    steps = -(-len(ts) // batch_size)
    return lambda epoch: Sized(ts.batches(batch_size, shuffle=True, generator=generator), steps)


@dataclass
class Context:
    """Everything a method may use. ``over`` is True in the Over-Unlearning phase of ``_our``."""

    model: nn.Module
    data: SplitData
    device: torch.device
    generator: torch.Generator
    batch_size: int = 64
    batch_size_given: bool = False  # -b or --opt batch_size was passed; methods with their own default defer to it
    progress: bool = True
    over: bool = False
    options: dict = field(default_factory=dict)  # method-specific extras (alpha, mask_path, ...)
    new_model: Callable[[], nn.Module] | None = None  # a freshly initialised model of the same architecture
    declared: dict | None = None  # name -> Option the running method declared (set by the registry)
    checkpoints: tuple[Path, ...] = ()  # the model it started from and, beside a best.pth, its last.pth (RUM)
    cache_dir: Path | None = None  # where a method may cache what depends only on its inputs (RUM's proxy)

    @property
    def retain(self) -> TensorSet:
        return self.data.retain_train

    @property
    def forget(self) -> TensorSet:
        return self.data.forget_train

    @property
    def num_classes(self) -> int:
        return self.data.split.num_in

    @property
    def forget_index(self) -> int:
        """The forgotten class as a model output; a sample-wise run forgets samples, not a class."""
        if getattr(self.data, "sample_wise", False):
            raise UsageError("this method needs a forget class and a sample-wise run has none; "
                             "pick a method registered without class_only")
        return self.data.split.forget_index

    def method_batch_size(self, default: int) -> int:
        """The batch size for a method whose own default differs from the run's (e.g. Bad Teacher's 256)."""
        return self.batch_size if self.batch_size_given else default

    def opt(self, name: str, default=None):
        """A method option from ``--opt key=value``, else its declared default, else ``default``.

        Reading an option the running method did not declare is a programming error (KeyError), so
        what ``--help`` and the option check list is exactly what the methods read.
        """
        if self.declared is None:  # a Context used outside the registry (unit tests)
            return self.options.get(name, default)
        if name not in self.declared:
            raise KeyError(f"option {name!r} is read but not declared by the running method")
        o = self.declared[name]
        if self.options.get(name) is not None:
            return o.coerce(self.options[name], "this method")
        return default if o.default is None else o.default

    def loop(self, epochs: int, desc: str, **kw) -> LoopConfig:
        return LoopConfig(epochs=int(epochs), batch_size=kw.pop("batch_size", self.batch_size), desc=desc,
                          progress=self.progress, **kw)

    def shuffled(self, ts: TensorSet, batch_size: int | None = None):
        """``batches(epoch)`` for :func:`train_epochs`: a fresh shuffle of ``ts`` each epoch (with a length)."""
        return shuffled_batches(ts, batch_size or self.batch_size, self.generator)

    def subsample(self, ts: TensorSet, fraction: float) -> TensorSet:
        """A random fraction of a split (at least one sample when the fraction is positive)."""
        n = max(1, int(round(fraction * len(ts)))) if fraction > 0 else 0
        return ts.sample(n, self.generator)


def train_ce(ctx: Context, ts: TensorSet, *, lr: float, epochs: int, l1=0.0, desc: str = "finetune",
             momentum: float = 0.9, weight_decay: float = 5e-4, cosine: bool = False) -> nn.Module:
    """Cross-entropy fine-tuning of ``ctx.model`` on ``ts`` (SGD), optionally with an L1 penalty."""
    opt = sgd(ctx.model, lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(int(epochs), 1)) if cosine else None
    train_epochs(ctx.model, ctx.shuffled(ts), ce_step, opt, loop=ctx.loop(epochs, desc, l1=l1), scheduler=sched,
                 generator=ctx.generator)
    return ctx.model


def relabel_union(retain: TensorSet, forget: TensorSet, labels: torch.Tensor) -> TensorSet:
    """Retain samples with their labels plus forget samples with ``labels`` (one per forget sample).

    Labels live in a copy of the label vector, so no image is copied.
    """
    y = retain.y_all.clone()
    y[forget.idx] = labels.to(y.device)
    return TensorSet(retain.x_all, y, torch.cat([retain.idx, forget.idx]), "relabelled")


def random_other_labels(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """For each label, a uniformly random *different* class."""
    shift = torch.randint(1, num_classes, labels.shape, generator=generator).to(labels.device)
    return (labels + shift) % num_classes
