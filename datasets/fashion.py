"""Fashion-MNIST (``FashionMNIST``) parsed straight from the idx files with numpy.

Looks in ``{root}/FashionMNIST/raw/`` (torchvision's layout), then in the Debian
package's ``/usr/share/datasets/fashion-mnist/``; both plain and ``.gz`` files work.
"""
from __future__ import annotations

import gzip
import os

import numpy as np
import torch

from datasets.base import RawDataset, register_dataset
from datasets.cifar import _check_options, _one_line
from unlearn.core.errors import UsageError

SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_MAGIC = {3: 2051, 1: 2049}  # ndim -> magic number (0x00000803 images, 0x00000801 labels)
_OPTIONS = {"download"}


def read_idx(path: str, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte idx file (``.gz`` or plain) with ``ndim`` big-endian dimensions."""
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            buf = f.read()
    except Exception as e:
        raise UsageError(f"cannot read {path} ({_one_line(e)}); the file is corrupt: download Fashion-MNIST again") from None
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise UsageError(f"{path} is too short to be an idx file; download Fashion-MNIST again")
    magic, *dims = (int(v) for v in np.frombuffer(buf, dtype=">i4", count=1 + ndim))
    if magic != _MAGIC[ndim]:
        raise UsageError(f"{path} has magic number {magic}, expected {_MAGIC[ndim]}; download Fashion-MNIST again")
    if len(buf) - header != int(np.prod(dims)):
        raise UsageError(
            f"{path} holds {len(buf) - header} bytes of data, expected {int(np.prod(dims))} for shape {tuple(dims)}; "
            "the file is truncated: download Fashion-MNIST again"
        )
    return np.frombuffer(buf, dtype=np.uint8, offset=header).reshape(dims)


def _locate(directory: str) -> dict[str, str] | None:
    """Paths of the four files in ``directory`` (plain preferred over .gz), or None if any is missing."""
    found = {}
    for key, stem in _FILES.items():
        for p in (os.path.join(directory, stem), os.path.join(directory, stem + ".gz")):
            if os.path.isfile(p):
                found[key] = p
                break
        else:
            return None
    return found


@register_dataset("FashionMNIST")
def load_fashion_mnist(root: str, **options) -> RawDataset:
    """Fashion-MNIST (N,1,28,28) uint8, 10 classes. Option ``download`` (default True) tries torchvision last."""
    options = _check_options("FashionMNIST", options, _OPTIONS)
    raw = os.path.join(root, "FashionMNIST", "raw")
    files = _locate(raw) or _locate(SYSTEM_DIR)
    why = "downloading is disabled"
    if files is None and options.get("download", True):
        try:
            import torchvision

            torchvision.datasets.FashionMNIST(root, train=True, download=True)
        except Exception as e:  # offline
            why = _one_line(e)
        files = _locate(raw)
    if files is None:
        raise UsageError(
            f"Fashion-MNIST not found under {raw} or {SYSTEM_DIR} and it cannot be downloaded ({why}); "
            f"run `apt-get install dataset-fashion-mnist` or pass --data-root DIR containing FashionMNIST/raw/"
        )
    arrays = {k: read_idx(p, 3 if k.startswith("x") else 1) for k, p in files.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(x) != len(y) or x.shape[1:] != (28, 28):
            raise UsageError(
                f"Fashion-MNIST {split} files disagree ({x.shape} images, {len(y)} labels); download Fashion-MNIST again"
            )
        if len(y) and y.max() > 9:
            raise UsageError(f"{files[f'y_{split}']} has labels above 9; download Fashion-MNIST again")
    t = {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}  # copy: frombuffer arrays are read-only
    return RawDataset(
        name="FashionMNIST",
        x_train=t["x_train"].unsqueeze(1),
        y_train=t["y_train"].long(),
        x_test=t["x_test"].unsqueeze(1),
        y_test=t["y_test"].long(),
        num_classes=10,
        mean=(0.2860,),
        std=(0.3530,),
        hflip=True,
        crop_padding=2,
        class_names=list(CLASS_NAMES),
    )
