"""Downsampled ImageNet 64x64 (``Imagenet64``), restricted to a class subset.

Reads the official pickles ``Imagenet64_train/train_data_batch_{1..10}`` and
``Imagenet64_val/val_data`` (dicts with ``data``: N x 12288 uint8 channel-planar
3x64x64 and 1-based ``labels``; the ``.npz`` variants are accepted too). Train
batches are read one at a time and only the selected classes' rows are kept,
so memory stays bounded by one batch plus the subset.
"""
from __future__ import annotations

import os
import pickle
import re
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from datasets.base import RawDataset, register_dataset
from datasets.cifar import _check_options, _one_line, _str_keys
from unlearn.core.errors import UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NUM_IMAGENET_CLASSES = 1000
NUM_TRAIN_BATCHES = 10
_TRAIN_DIR = "Imagenet64_train"
_VAL_DIR = "Imagenet64_val"
_OPTIONS = {"classes", "image_size"}
_RESIZE_CHUNK = 2048
_HOW = (
    "download Imagenet64_train and Imagenet64_val (downsampled 64x64 ImageNet, https://image-net.org/download-images) "
    "and unzip them under DIR, or pass --data-root DIR containing Imagenet64_train/ and Imagenet64_val/"
)


def parse_classes(classes) -> list[int]:
    """``classes`` option -> list of 0-based ImageNet class ids.

    An int ``n`` (or a string "n") means the first n classes 0..n-1; a list (or a
    comma-separated string "3,17,42") is taken verbatim, in that order.
    """
    if classes is None:
        classes = 100
    if isinstance(classes, str):
        parts = [p for p in re.split(r"[,\s]+", classes.strip()) if p]
        try:
            vals = [int(p) for p in parts]
        except ValueError:
            raise UsageError(f"Imagenet64 option classes={classes!r} is not an int or a comma-separated list of class ids") from None
        classes = vals[0] if len(vals) == 1 and "," not in classes else vals
    if isinstance(classes, bool):
        raise UsageError("Imagenet64 option classes must be an int n (first n classes) or a list of class ids")
    if isinstance(classes, (int, np.integer)):
        n = int(classes)
        if not 1 <= n <= NUM_IMAGENET_CLASSES:
            raise UsageError(f"Imagenet64 option classes={n} must be between 1 and {NUM_IMAGENET_CLASSES}")
        return list(range(n))
    try:
        ids = [int(c) for c in classes]
    except (TypeError, ValueError):
        raise UsageError("Imagenet64 option classes must be an int n (first n classes) or a list of class ids") from None
    if not ids:
        raise UsageError("Imagenet64 option classes is an empty list; give at least one class id")
    bad = [c for c in ids if not 0 <= c < NUM_IMAGENET_CLASSES]
    if bad:
        raise UsageError(f"Imagenet64 class ids must be 0-based in 0..{NUM_IMAGENET_CLASSES - 1}; got {bad[:5]}")
    if len(set(ids)) != len(ids):
        raise UsageError("Imagenet64 option classes lists a class id more than once")
    return ids


def _find(path: str) -> str | None:
    for p in (path, path + ".npz"):
        if os.path.isfile(p):
            return p
    return None


def _read_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(data uint8 (N, 12288), labels int64 (N,) 1-based) from one official file."""
    try:
        if path.endswith(".npz"):
            with np.load(path) as z:
                d = {k: z[k] for k in ("data", "labels") if k in z.files}
        else:
            with open(path, "rb") as f:
                d = pickle.load(f, encoding="latin1")
            if not isinstance(d, dict):
                raise TypeError(f"expected a dict, got {type(d).__name__}")
            d = _str_keys(d)
        data = np.asarray(d["data"], dtype=np.uint8)
        labels = np.asarray(d["labels"], dtype=np.int64).reshape(-1)
    except Exception as e:
        raise UsageError(f"cannot read {path} ({_one_line(e)}); the file is corrupt: download it again") from None
    if data.ndim != 2 or data.shape[1] != 3 * 64 * 64 or len(data) != len(labels):
        raise UsageError(
            f"{path} has data of shape {tuple(data.shape)} and {len(labels)} labels, expected N x 12288 and N; "
            "is it the 64x64 version? download Imagenet64 again"
        )
    if len(labels) and (labels.min() < 1 or labels.max() > NUM_IMAGENET_CLASSES):
        raise UsageError(f"{path} has labels outside 1..{NUM_IMAGENET_CLASSES}; the file is corrupt: download it again")
    return data, labels


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize of uint8 (N,3,64,64) images, chunk by chunk to bound memory."""
    if size == x.shape[-1]:
        return x
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
    for i in range(0, x.shape[0], _RESIZE_CHUNK):
        chunk = x[i : i + _RESIZE_CHUNK].float()
        y = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[i : i + _RESIZE_CHUNK] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _select(path: str, lut: np.ndarray, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of one file whose class is selected, as resized uint8 images and re-indexed labels."""
    data, labels = _read_batch(path)
    new = lut[labels]
    keep = new >= 0
    x = torch.from_numpy(np.ascontiguousarray(data[keep]).reshape(-1, 3, 64, 64))
    del data
    return _resize(x, size), torch.from_numpy(new[keep].astype(np.int64))


def _train_files(root: str) -> list[str]:
    tdir = os.path.join(root, _TRAIN_DIR)
    present = {}
    if os.path.isdir(tdir):
        for fname in os.listdir(tdir):
            m = re.fullmatch(r"train_data_batch_(\d+)(\.npz)?", fname)
            if m:
                present.setdefault(int(m.group(1)), os.path.join(tdir, fname))
    if not present:
        raise UsageError(
            f"ImageNet64 train batches not found under {tdir} (need train_data_batch_1..{NUM_TRAIN_BATCHES}) "
            f"and it cannot be downloaded automatically; {_HOW}"
        )
    missing = [i for i in range(1, max(present) + 1) if i not in present]
    if missing:
        raise UsageError(
            f"ImageNet64 train batch file(s) missing under {tdir}: "
            f"{', '.join(f'train_data_batch_{i}' for i in missing)}; {_HOW}"
        )
    if len(present) < NUM_TRAIN_BATCHES:
        warnings.warn(
            f"only {len(present)} of {NUM_TRAIN_BATCHES} ImageNet64 train batches under {tdir}; "
            "using a partial training set"
        )
    return [present[i] for i in sorted(present)]


@register_dataset("Imagenet64")
def load_imagenet64(root: str, **options) -> RawDataset:
    """ImageNet 64x64 restricted to ``classes`` (default the first 100), resized to ``image_size`` (default 32).

    Labels are re-indexed 0..len(classes)-1 in the order of the class list.
    """
    options = _check_options("Imagenet64", options, _OPTIONS)
    class_ids = parse_classes(options.get("classes", 100))
    size = options.get("image_size", 32)
    try:
        size = int(size)
    except (TypeError, ValueError):
        size = -1
    if not 1 <= size <= 64:
        raise UsageError(f"Imagenet64 option image_size={options.get('image_size')!r} must be an int in 1..64 (32 or 64)")

    train_files = _train_files(root)
    val_file = _find(os.path.join(root, _VAL_DIR, "val_data"))
    if val_file is None:
        raise UsageError(
            f"ImageNet64 validation file {os.path.join(root, _VAL_DIR, 'val_data')} not found "
            f"and it cannot be downloaded automatically; {_HOW}"
        )

    lut = np.full(NUM_IMAGENET_CLASSES + 1, -1, dtype=np.int64)  # 1-based file label -> new label
    lut[np.asarray(class_ids) + 1] = np.arange(len(class_ids))

    xs, ys = [], []
    for path in train_files:
        x, y = _select(path, lut, size)
        xs.append(x)
        ys.append(y)
    x_tr, y_tr = torch.cat(xs), torch.cat(ys)
    del xs, ys
    x_te, y_te = _select(val_file, lut, size)
    return RawDataset(
        name="Imagenet64",
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        num_classes=len(class_ids),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        hflip=True,
        crop_padding=max(1, size // 8),  # 4 at 32x32, 8 at 64x64
        class_names=[f"imagenet_{c}" for c in class_ids],
    )
