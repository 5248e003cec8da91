"""scikit-learn's bundled 8x8 handwritten digits (``Digits``): a tiny offline dataset.

The 1797 images (values 0..16) are scaled to uint8 0..255 and split once with a
fixed stratified 70/30 ``train_test_split`` (seed 0), so every run sees the same split.
"""
from __future__ import annotations

import numpy as np
import torch

from datasets.base import RawDataset, register_dataset
from datasets.cifar import _check_options

TEST_FRACTION = 0.3
SPLIT_SEED = 0


@register_dataset("Digits")
def load_digits(root: str, **options) -> RawDataset:
    """Digits (N,1,8,8) uint8, 10 classes; ``root`` is unused (the data ships with scikit-learn)."""
    _check_options("Digits", options, set())
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    d = sk_load_digits()
    x = np.rint(d.data.astype(np.float64) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8).reshape(-1, 1, 8, 8)
    y = d.target.astype(np.int64)
    idx_tr, idx_te = train_test_split(
        np.arange(len(y)), test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y
    )
    x_tr = torch.from_numpy(np.ascontiguousarray(x[idx_tr]))
    # Normalisation statistics of the train split (cheap to compute, so never stale).
    px = x_tr.double() / 255.0
    mean, std = float(px.mean()), float(px.std())
    return RawDataset(
        name="Digits",
        x_train=x_tr,
        y_train=torch.from_numpy(y[idx_tr]),
        x_test=torch.from_numpy(np.ascontiguousarray(x[idx_te])),
        y_test=torch.from_numpy(y[idx_te]),
        num_classes=10,
        mean=(mean,),
        std=(std,),
        hflip=False,  # mirrored digits are different symbols
        crop_padding=1,
        class_names=[str(i) for i in range(10)],
    )
