"""LiRA's shadow population for the sample-wise scenario, trained once per design and cached.

As the paper's 2025 code (``train.py`` with ``--num_shadow``/``--shadow_id``, ``mia_lira.py``): the
shadows train on random subsets of one *pool*, the training and test samples together (its
``ConcatDataset([trainset, testset])``; ours: the in-distribution classes of both, in that order), each
sample in exactly ``n_in`` of the ``n_shadows`` subsets (:func:`unlearn.evaluation.lira.inclusion_design`;
the paper: 8 shadows, ``pkeep`` 0.83, so 6 of 8). Each shadow is trained from scratch with the
dataset's pretraining recipe (:mod:`unlearn.core.recipe`: the same optimiser, schedule and augmentation
as the models attacked; the paper's shadows use its ``train.py`` recipe, SGD 0.1 for ResNet), over
``epochs`` of it if given (scaled milestones), seeded per shadow.

Cache: ``stage_root("lira_shadows")/<key>/shadow{s}.pth``, the key a hash of everything that
determines a shadow (dataset, net, class split, pool contents, recipe, design, the shadow's seed, the
code version, the torch threads on a CPU). A file counts only if it loads and carries the key, so a
killed training leaves nothing that is reused, and any change of its inputs trains anew.

Queries (:func:`query_scores`): the sample itself, then ``queries - 1`` augmented copies (random crop
with the dataset's padding and, where the dataset flips, a horizontal flip; one fixed generator), the
paper's 10 augmented queries, for a dataset trained with augmentation; 1 query where it trains without
(Digits, FashionMNIST), since copies its models never saw would add no information about membership.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from datasets.splits import TensorSet, augment_batch
from ..core.engine import predict, seed_everything
from ..core.errors import UsageError
from ..core.recipe import fit, pretrain_recipe
from ..store.checkpoint import save_checkpoint
from ..store.setting import Setting
from .lira import inclusion_design, logit_scaled_confidence

CODE_VERSION = "lira-shadows-1"


@dataclass(frozen=True)
class ShadowDesign:
    """How many shadows, how many of them hold each sample, the design's seed, and their training length."""

    n_shadows: int = 8
    n_in: int = 6
    seed: int = 0
    epochs: int | None = None  # None: the pretraining recipe's

    def __post_init__(self):
        if int(self.n_shadows) < 2 or not 0 < int(self.n_in) < int(self.n_shadows):
            raise UsageError(f"LiRA needs at least 2 shadows and each sample in some but not all of them; got "
                             f"{self.n_shadows} shadows holding each sample {self.n_in} times (e.g. --shadows 8 "
                             f"--shadow_in 6)")
        if self.epochs is not None and int(self.epochs) < 1:
            raise UsageError(f"shadow epochs {self.epochs} must be at least 1")

    def inclusion(self, n_samples: int) -> np.ndarray:
        return inclusion_design(n_samples, int(self.n_shadows), int(self.n_in), seed=int(self.seed))


def pool(data) -> TensorSet:
    """The in-distribution training samples, then the in-distribution test samples, as one TensorSet."""
    tr, te = data.in_train, data.in_test
    x = torch.cat([tr.x, te.x])
    y = torch.cat([tr.y, te.y])
    return TensorSet(x, y, torch.arange(len(x), device=x.device), "lira_pool")


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def shadow_key(setting: Setting, design: ShadowDesign, pool_digest: list[str], shadow: int) -> str:
    """The cache key of one shadow: a hash of everything that determines it (``pool_digest``: the pool's
    images' and labels' sha256)."""
    material = {"version": CODE_VERSION, "dataset": setting.dataset, "net": setting.net,
                "split": {"classes": setting.classes, "ood": list(setting.ood_classes)},
                "pool": list(pool_digest), "recipe": shadow_recipe(setting, design).as_dict(),
                "design": asdict(design), "shadow": int(shadow), "threads": torch.get_num_threads()}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]


def _valid(path: Path, key: str) -> bool:
    try:
        return torch.load(path, map_location="cpu", weights_only=True).get("lira_key") == key
    except Exception:  # missing, truncated, not a checkpoint
        return False


def shadow_recipe(setting: Setting, design: ShadowDesign):
    """The pretraining recipe, over the design's epochs when it names them."""
    recipe = pretrain_recipe(setting.dataset)
    return recipe.with_epochs(design.epochs) if design.epochs else recipe


def train_shadows(setting: Setting, design: ShadowDesign, data, *, device,
                  progress: bool = False) -> tuple[list[Path], np.ndarray]:
    """The design's shadow checkpoints on ``data``'s pool (trained where no valid cached one exists) and
    its inclusion matrix ``(n_shadows, len(pool))``."""
    ps = pool(data)
    keep = design.inclusion(len(ps))
    recipe = shadow_recipe(setting, design)
    digest = [_digest(ps.x), _digest(ps.y)]
    paths = []
    for s in range(int(design.n_shadows)):
        key = shadow_key(setting, design, digest, s)
        path = setting.stage_root("lira_shadows") / key / f"shadow{s}.pth"
        if not _valid(path, key):
            gen = seed_everything(int(design.seed) * 1000 + s)
            model = setting.new_model(device)
            sub = ps.subset(torch.as_tensor(np.flatnonzero(keep[s]), dtype=torch.long, device=ps.idx.device))
            fit(model, sub, recipe, raw=data.raw, generator=gen, desc=f"shadow {s}", progress=progress)
            path.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(path, model, model_name=setting.net, num_classes=setting.num_outputs,
                            dataset=setting.dataset, class_map=setting.split.class_map,
                            config={"design": asdict(design), "shadow": s, "recipe": recipe.as_dict()},
                            extra={"lira_key": key})
        paths.append(path)
    return paths, keep


def query_scores(model, ts: TensorSet, *, queries: int = 1, augment: dict | None = None, seed: int = 0) -> np.ndarray:
    """``(len(ts), queries)`` LiRA scores of ``model``: the samples, then ``queries - 1`` augmented copies
    (``augment``: :func:`datasets.splits.augment_batch`'s ``padding`` and ``hflip``, given only for a
    dataset trained with augmentation) under one fixed generator, so every model sees the same queries."""
    if int(queries) < 1:
        raise UsageError(f"queries {queries} must be at least 1")
    if int(queries) > 1 and not augment:
        raise UsageError(f"{queries} queries need augmented copies, and this dataset trains without "
                         f"augmentation; pass --queries 1")
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    out = []
    for q in range(int(queries)):
        x = ts.x if q == 0 else augment_batch(ts.x, generator=g, **augment)
        out.append(logit_scaled_confidence(predict(model, x).cpu().numpy(), ts.y.cpu().numpy()))
    return np.stack(out, axis=1)
