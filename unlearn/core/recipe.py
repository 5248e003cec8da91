"""A dataset's training recipe, written once for pretraining and for ``retrain``.

The paper's pretraining: SGD (momentum 0.9, weight decay 5e-4), a linear warm-up
epoch, then MultiStepLR (gamma 0.2) at the dataset's milestones; no data
augmentation in the 2024 code (``config.DATASETS[...]["augment"]``). ``retrain``,
the gold standard, is this same recipe on the retain data only, so that a
retrained model and the pretrained one differ in nothing but the forget class.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

import config
from .engine import LoopConfig, Sized, ce_step, sgd, train_epochs


@dataclass(frozen=True)
class TrainRecipe:
    """Everything that determines how a model is trained from scratch."""

    lr: float
    epochs: int
    batch_size: int
    momentum: float
    weight_decay: float
    gamma: float
    warmup_epochs: int
    milestones: tuple
    augment: bool

    def as_dict(self) -> dict:
        return {**asdict(self), "milestones": list(self.milestones)}

    def with_epochs(self, epochs: int) -> "TrainRecipe":
        """The recipe over another number of epochs, milestones scaled with it (unchanged when equal)."""
        epochs = int(epochs)
        if epochs == self.epochs:
            return self
        scaled = tuple(sorted({max(1, round(m * epochs / max(self.epochs, 1))) for m in self.milestones}))
        return replace(self, epochs=epochs, milestones=scaled)


def pretrain_recipe(dataset: str) -> TrainRecipe:
    """The dataset's pretraining recipe from config.py (PRETRAIN_DEFAULTS merged with DATASETS[dataset])."""
    cfg = config.dataset_config(dataset)
    return TrainRecipe(lr=float(cfg["lr"]), epochs=int(cfg["epochs"]), batch_size=int(cfg["batch_size"]),
                       momentum=float(cfg["momentum"]), weight_decay=float(cfg["weight_decay"]),
                       gamma=float(cfg["gamma"]), warmup_epochs=int(cfg["warmup_epochs"]),
                       milestones=tuple(cfg["milestones"]), augment=bool(cfg.get("augment", False)))


def warmup_multistep(optimizer, *, steps_per_epoch: int, warmup_epochs: int, milestones, gamma: float):
    """Per-step LR factor: linear warm-up over ``warmup_epochs``, then MultiStep decay by epoch."""

    def factor(step: int) -> float:
        epoch = step // max(steps_per_epoch, 1)
        if epoch < warmup_epochs:
            return (step + 1) / (steps_per_epoch * warmup_epochs)
        return gamma ** sum(epoch >= m for m in milestones)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def augmentation(recipe: TrainRecipe, raw) -> dict | None:
    """:func:`datasets.splits.augment_batch`'s arguments for ``raw`` when ``recipe`` augments, else None."""
    return dict(padding=raw.crop_padding, hflip=raw.hflip) if recipe.augment else None


def fit(model, ts, recipe: TrainRecipe, *, raw, generator, l1=0.0, desc: str = "train", progress: bool = True,
        on_epoch_end=None) -> tuple[list[dict], torch.optim.Optimizer]:
    """Train ``model`` on the TensorSet ``ts`` with ``recipe``; returns (per-epoch history, optimiser)."""
    opt = sgd(model, recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    steps = -(-len(ts) // recipe.batch_size)
    sched = warmup_multistep(opt, steps_per_epoch=steps, warmup_epochs=recipe.warmup_epochs,
                             milestones=recipe.milestones, gamma=recipe.gamma)
    def epoch_end(epoch, record):
        record["lr"] = opt.param_groups[0]["lr"]
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)

    augment = augmentation(recipe, raw)
    loop = LoopConfig(epochs=recipe.epochs, batch_size=recipe.batch_size, l1=l1, desc=desc, progress=progress,
                      augment=augment)
    history = train_epochs(model, lambda e: Sized(ts.batches(recipe.batch_size, shuffle=True, generator=generator),
                                                  steps),
                           ce_step, opt, loop=loop, scheduler=sched, step_scheduler=True, on_epoch_end=epoch_end,
                           generator=generator)
    return history, opt
