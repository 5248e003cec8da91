"""Dataset records and the dataset registry.

Every loader returns a :class:`RawDataset`: the whole train and test sets as
uint8 image tensors (N, C, H, W) with int64 labels in the dataset's own label
space. Class-wise splitting, normalisation and device placement happen later,
once, in :mod:`datasets.splits`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from unlearn.core.errors import UsageError


@dataclass
class RawDataset:
    """A labelled image dataset held entirely in memory as tensors."""

    name: str
    x_train: torch.Tensor  # uint8, (N, C, H, W)
    y_train: torch.Tensor  # int64, (N,)
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip: bool = True  # horizontal flip is a valid augmentation (not for digits)
    crop_padding: int = 4
    class_names: list[str] = field(default_factory=list)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])


_REGISTRY: dict[str, Callable[..., RawDataset]] = {}


def register_dataset(name: str):
    """Register a loader ``fn(root, **options) -> RawDataset`` under ``name``."""

    def deco(fn):
        _REGISTRY[name] = fn
        return fn

    return deco


def list_datasets() -> list[str]:
    return sorted(_REGISTRY)


def canonical_dataset_name(name: str) -> str:
    """Map a case-insensitive name (``CIFAR20``, ``cifar20``) to its registered spelling."""
    def norm(s: str) -> str:
        return str(s).lower().replace("-", "").replace("_", "")

    lookup = {norm(k): k for k in _REGISTRY}
    key = norm(name)
    if key not in lookup:
        raise UsageError(
            f"unknown dataset {name!r}; choose one of {', '.join(list_datasets())} (case-insensitive)"
        )
    return lookup[key]


def get_dataset(name: str, root: str, **options) -> RawDataset:
    """Load dataset ``name`` (case-insensitive) from ``root``."""
    return _REGISTRY[canonical_dataset_name(name)](root, **options)
