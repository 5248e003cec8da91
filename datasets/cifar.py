"""CIFAR-100 loaders: ``Cifar100`` (100 fine labels) and ``Cifar20`` (20 coarse superclasses).

Both read the official python pickles (``cifar-100-python/{train,test,meta}``,
the files torchvision uses). Cifar20 takes the coarse labels straight from the
files' ``coarse_labels`` so the fine->superclass relation is the official one.
"""
from __future__ import annotations

import os
import pickle

import numpy as np
import torch

from datasets.base import RawDataset, register_dataset
from unlearn.core.errors import UsageError

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
_DIR = "cifar-100-python"
_FILES = ("train", "test", "meta")
_OPTIONS = {"download"}


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _check_options(name: str, options: dict, allowed: set) -> dict:
    """Drop ``None`` options (meaning "default"); reject unknown ones."""
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise UsageError(
            f"{name} does not take option(s) {', '.join(unknown)}; "
            f"valid: {', '.join(sorted(allowed)) or 'none'}"
        )
    return options


def _str_keys(d) -> dict:
    """Python-2 pickles loaded with bytes keys: decode them (values stay as they are)."""
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}


def _load_pickle(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except Exception as e:  # truncated / not a pickle / wrong format
        raise UsageError(
            f"cannot read {path} ({_one_line(e)}); the file is corrupt: delete it and download CIFAR-100 again"
        ) from None
    if not isinstance(obj, dict):
        raise UsageError(f"{path} is not a CIFAR-100 pickle (got {type(obj).__name__}); download CIFAR-100 again")
    return _str_keys(obj)


def _names(meta: dict, key: str, path: str) -> list[str]:
    names = meta.get(key)
    if names is None:
        raise UsageError(f"{path} lacks {key!r}; the file is corrupt: download CIFAR-100 again")
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


def _split(path: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One split as (images uint8 (N,3,32,32), fine int64 (N,), coarse int64 (N,))."""
    d = _load_pickle(path)
    try:
        data = np.asarray(d["data"], dtype=np.uint8)
        fine = np.asarray(d["fine_labels"], dtype=np.int64)
        coarse = np.asarray(d["coarse_labels"], dtype=np.int64)
        # Rows are channel-planar: 1024 R values, then 1024 G, then 1024 B.
        x = data.reshape(-1, 3, 32, 32)
    except (KeyError, ValueError, TypeError) as e:
        raise UsageError(
            f"{path} does not have the CIFAR-100 layout ({_one_line(e)}); download CIFAR-100 again"
        ) from None
    if not (len(x) == len(fine) == len(coarse)):
        raise UsageError(f"{path} has {len(x)} images but {len(fine)}/{len(coarse)} labels; download CIFAR-100 again")
    if len(fine) and (fine.min() < 0 or fine.max() >= 100 or coarse.min() < 0 or coarse.max() >= 20):
        raise UsageError(f"{path} has labels out of range (fine 0..99, coarse 0..19); download CIFAR-100 again")
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(fine), torch.from_numpy(coarse)


def _ensure_files(root: str, download: bool) -> str:
    base = os.path.join(root, _DIR)
    missing = [f for f in _FILES if not os.path.isfile(os.path.join(base, f))]
    if not missing:
        return base
    why = "downloading is disabled"
    if download:
        try:
            import torchvision

            torchvision.datasets.CIFAR100(root, train=True, download=True)
        except Exception as e:  # offline: URLError and friends
            why = _one_line(e)
        missing = [f for f in _FILES if not os.path.isfile(os.path.join(base, f))]
        if not missing:
            return base
    raise UsageError(
        f"CIFAR-100 not found under {base} (missing {', '.join(missing)}) and it cannot be downloaded ({why}); "
        f"download it or pass --data-root DIR containing {_DIR}/"
    )


def _load(name: str, root: str, coarse: bool, options: dict) -> RawDataset:
    options = _check_options(name, options, _OPTIONS)
    base = _ensure_files(root, bool(options.get("download", True)))
    meta_path = os.path.join(base, "meta")
    meta = _load_pickle(meta_path)
    x_tr, fine_tr, coarse_tr = _split(os.path.join(base, "train"))
    x_te, fine_te, coarse_te = _split(os.path.join(base, "test"))

    # Sanity check of the official relation: each fine class lies in exactly one superclass.
    pairs = torch.unique(torch.stack([torch.cat([fine_tr, fine_te]), torch.cat([coarse_tr, coarse_te])]), dim=1)
    if pairs.shape[1] != torch.unique(pairs[0]).numel():
        raise UsageError(
            f"{base}: a fine label maps to several coarse labels, so the files are corrupt; download CIFAR-100 again"
        )

    if coarse:
        y_tr, y_te, k, names = coarse_tr, coarse_te, 20, _names(meta, "coarse_label_names", meta_path)
    else:
        y_tr, y_te, k, names = fine_tr, fine_te, 100, _names(meta, "fine_label_names", meta_path)
    if len(names) != k:
        raise UsageError(f"{meta_path} lists {len(names)} class names instead of {k}; download CIFAR-100 again")
    return RawDataset(
        name=name,
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        num_classes=k,
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
        hflip=True,
        crop_padding=4,
        class_names=names,
    )


@register_dataset("Cifar100")
def load_cifar100(root: str, **options) -> RawDataset:
    """CIFAR-100 with its 100 fine labels. Option ``download`` (default True) tries torchvision if absent."""
    return _load("Cifar100", root, coarse=False, options=options)


@register_dataset("Cifar20")
def load_cifar20(root: str, **options) -> RawDataset:
    """CIFAR-100 images labelled with the 20 official coarse superclasses."""
    return _load("Cifar20", root, coarse=True, options=options)
