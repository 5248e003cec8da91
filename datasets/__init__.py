"""Dataset loaders for class-wise unlearning experiments.

Importing this package imports every loader module so that the registry in
:mod:`datasets.base` is populated (``Cifar100``, ``Cifar20``, ``Imagenet64``,
``Digits``, ``FashionMNIST``).
"""
from datasets.base import (
    RawDataset,
    canonical_dataset_name,
    get_dataset,
    list_datasets,
    register_dataset,
)
from datasets import cifar, digits, fashion, imagenet64  # noqa: F401  (registers loaders)

__all__ = [
    "RawDataset",
    "canonical_dataset_name",
    "get_dataset",
    "list_datasets",
    "register_dataset",
]
