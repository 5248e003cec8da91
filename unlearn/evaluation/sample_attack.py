"""The sample-wise attacks of the paper's 2025 code, on one model: the plain LiRA (``mia_lira.py -task
mia_lira``) and the sample-wise Reminiscence Attack (``rea_reminiscence_random.py``: fine-tune on the
retain set, then ``mia_lira.py -task rea``).

* Targets (:func:`pick_targets`): members are forget samples, non-members in-distribution test samples,
  ``np.random.choice`` of 500 each without replacement (all forget samples when there are fewer), as
  ``mia_lira.py``; here under a seed of their own so every model is scored on the same targets.
* Retain fine-tuning (:func:`retain_finetune`): the whole retain set, shuffled batches of 256, no
  augmentation, train mode; 3 epochs at ``lrs[0]`` then 3 at ``lrs[1]``, a fresh optimiser for each
  (``fit_one_cycle`` of ``utils/overall_utils.py``: SGD momentum 0.9, weight decay 5e-4, constant lr;
  AdamW with weight decay 1e-4 for ViT); ResNet18 0.01 then 0.005, ViT 1e-4 then 5e-5.
* LiRA (:func:`lira_statistics`, :func:`lira_summary`): the shadows' scores on the targets (:mod:`unlearn.evaluation.shadows`)
  and the model's, online and offline with fixed variance (:mod:`unlearn.evaluation.lira`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from datasets.splits import TensorSet
from ..core.engine import LoopConfig, Sized, ce_step, sgd, train_epochs
from ..core.errors import UsageError
from .lira import RocSummary, lira_offline, lira_online, roc_summary
from .shadows import ShadowDesign, pool


@dataclass(frozen=True)
class Targets:
    """The samples an attack scores: their positions in the shadows' pool, membership, images and labels."""

    pool_positions: np.ndarray
    member: np.ndarray
    samples: TensorSet


def pick_targets(data, *, members: int = 500, non_members: int = 500, seed: int = 0) -> Targets:
    """Up to ``members`` forget samples and ``non_members`` in-distribution test samples, drawn under ``seed``."""
    if not getattr(data, "sample_wise", False):
        raise UsageError("LiRA's targets are forget samples of a sample-wise split; use forget_sample_main.py")
    if int(members) < 1 or int(non_members) < 1:
        raise UsageError(f"LiRA needs at least one member and one non-member target, got {members} and {non_members}")
    in_train = data.in_train.idx.cpu().numpy()
    forget = np.searchsorted(in_train, data.forget_train.idx.cpu().numpy())
    test = len(in_train) + np.arange(len(data.in_test))
    rng = np.random.RandomState(int(seed))
    non = rng.choice(test, size=min(int(non_members), len(test)), replace=False)
    mem = forget if len(forget) <= int(members) else rng.choice(forget, size=int(members), replace=False)
    pos = np.concatenate([non, mem])
    ps = pool(data)
    return Targets(pool_positions=pos, member=np.arange(len(pos)) >= len(non),
                   samples=ps.subset(torch.as_tensor(pos, dtype=torch.long, device=ps.idx.device), "lira_targets"))


@dataclass(frozen=True)
class RetainFinetune:
    """The sample-wise Reminiscence Attack's fine-tuning: per phase an lr and a number of epochs."""

    lrs: tuple = (0.01, 0.005)
    epochs: tuple = (3, 3)
    batch_size: int = 256
    optimizer: str = "sgd"  # "adamw" for ViT, as the paper's fit_one_cycle

    def __post_init__(self):
        if len(self.lrs) != len(self.epochs) or not self.lrs:
            raise UsageError(f"retain fine-tuning needs one epoch count per lr, got lrs {self.lrs}, epochs {self.epochs}")
        if any(float(lr) <= 0 for lr in self.lrs) or any(int(e) < 0 for e in self.epochs):
            raise UsageError(f"retain fine-tuning lrs must be > 0 and epochs >= 0, got {self.lrs} and {self.epochs}")
        if self.optimizer not in ("sgd", "adamw"):
            raise UsageError(f"retain fine-tuning optimizer {self.optimizer!r} is not one of: sgd, adamw")


def retain_finetune(model, retain: TensorSet, cfg: RetainFinetune, *, generator: torch.Generator,
                    progress: bool = False):
    """Fine-tune ``model`` in place on ``retain``: each phase a fresh optimiser at its constant lr."""
    steps = -(-len(retain) // int(cfg.batch_size))
    for lr, epochs in zip(cfg.lrs, cfg.epochs):
        if int(epochs) == 0:
            continue
        opt = (torch.optim.AdamW(model.parameters(), lr=float(lr), weight_decay=1e-4) if cfg.optimizer == "adamw"
               else sgd(model, float(lr), momentum=0.9, weight_decay=5e-4))
        batches = lambda e: Sized(retain.batches(int(cfg.batch_size), shuffle=True, generator=generator), steps)  # noqa: E731
        train_epochs(model, batches, ce_step, opt, loop=LoopConfig(epochs=int(epochs), batch_size=int(cfg.batch_size),
                                                                     desc=f"retain fine-tuning (lr {lr})",
                                                                     progress=progress),
                     generator=generator)
    return model


def lira_statistics(target_scores: np.ndarray, targets: Targets, shadow_scores: np.ndarray,
                    inclusion: np.ndarray) -> dict[str, np.ndarray]:
    """Online and offline LiRA statistics per target: ``target_scores`` ``(N, Q)`` the attacked model's
    queries (:func:`unlearn.evaluation.shadows.query_scores`), ``shadow_scores`` ``(S, N, Q)`` the
    shadows' on the same targets, ``inclusion`` the shadows' ``(S, len(pool))`` design."""
    keep = np.asarray(inclusion, dtype=bool)[:, targets.pool_positions]
    return {"online": lira_online(shadow_scores, keep, target_scores),
            "offline": lira_offline(shadow_scores, keep, target_scores)}


def lira_summary(stats: dict[str, np.ndarray], targets: Targets) -> dict[str, RocSummary]:
    """Each statistic's ROC reading over the targets' membership."""
    return {k: roc_summary(v, targets.member) for k, v in stats.items()}


@dataclass(frozen=True)
class SampleAttackConfig:
    """Everything that determines a sample-wise attack: the shadow design, the targets, the queries and
    the Reminiscence Attack's retain fine-tuning (config.SAMPLE_ATTACK per dataset)."""

    shadows: int = 8
    shadow_in: int = 6
    shadow_epochs: int | None = None  # None: the pretraining recipe's
    members: int = 500
    non_members: int = 500
    target_seed: int = 0
    queries: int = 1
    rea_lrs: tuple = (0.01, 0.005)
    rea_epochs: tuple = (3, 3)
    rea_batch: int = 256
    rea_optimizer: str = "sgd"

    @classmethod
    def checked(cls, settings: dict) -> "SampleAttackConfig":
        """A config from ``settings`` (config.SAMPLE_ATTACK[dataset] with overrides), checked: an unknown key
        or a bad design is a one-line UsageError before anything runs."""
        unknown = sorted(set(settings) - set(cls.__dataclass_fields__))
        if unknown:
            raise UsageError(f"sample attack settings {unknown} are unknown; valid: {', '.join(cls.__dataclass_fields__)}")
        cfg = cls(**settings)
        cfg.design(), cfg.finetune()
        return cfg

    def design(self) -> ShadowDesign:
        return ShadowDesign(n_shadows=int(self.shadows), n_in=int(self.shadow_in), seed=0,
                            epochs=None if self.shadow_epochs is None else int(self.shadow_epochs))

    def finetune(self) -> RetainFinetune:
        return RetainFinetune(lrs=tuple(float(x) for x in self.rea_lrs), epochs=tuple(int(x) for x in self.rea_epochs),
                              batch_size=int(self.rea_batch), optimizer=self.rea_optimizer)
