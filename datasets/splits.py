"""Class-wise splits: dataset + OOD classes + forget class -> index sets; and the sample-wise split.

The paper trains on the in-distribution classes only, re-indexed 0..K-1, and
forgets one of them. Every split is a vector of indices into one tensor that
holds the whole (normalised) train or test set, so nothing is copied into
Python lists and a split costs only its index vector.

The paper's 2025 sample-wise scenario forgets a random share of the training samples instead
(:func:`forget_sample_positions`, :meth:`SplitData.with_forget_samples`): the same in-distribution
classes and OOD classes, the same pretrained models, but the forget set is those samples with their
own labels, the retain set every other in-distribution training sample, and every in-distribution
test sample is a retain-test sample (no class is forgotten).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from unlearn.core.errors import UsageError
from .base import RawDataset


@dataclass(frozen=True)
class ClassSplit:
    """Which original classes are OOD, which one is forgotten, and the re-indexing."""

    num_classes: int  # classes of the dataset, OOD included
    ood_classes: tuple[int, ...]
    forget_class: int  # original label

    def __post_init__(self):
        bad = [c for c in self.ood_classes if not 0 <= c < self.num_classes]
        if bad:
            raise UsageError(f"OOD classes {bad} are out of range 0..{self.num_classes - 1}; fix ood_classes in config.py")
        if not 0 <= self.forget_class < self.num_classes:
            raise UsageError(
                f"forget class {self.forget_class} is out of range; pass --forget_class in 0..{self.num_classes - 1}"
            )
        if self.forget_class in self.ood_classes:
            raise UsageError(
                f"forget class {self.forget_class} is an OOD class {list(self.ood_classes)} (never trained on); "
                "pass another --forget_class"
            )

    @property
    def in_classes(self) -> list[int]:
        return [c for c in range(self.num_classes) if c not in self.ood_classes]

    @property
    def num_in(self) -> int:
        return len(self.in_classes)

    @property
    def class_map(self) -> dict[int, int]:
        """Original label -> model output index for in-distribution classes."""
        return {c: i for i, c in enumerate(self.in_classes)}

    @property
    def forget_index(self) -> int:
        """The forget class as a model output index."""
        return self.class_map[self.forget_class]

    def remap(self, y: torch.Tensor) -> torch.Tensor:
        """Original labels -> model indices; OOD labels become -1."""
        table = torch.full((self.num_classes,), -1, dtype=torch.long)
        for c, i in self.class_map.items():
            table[c] = i
        return table[y]


class TensorSet:
    """A split: indices into a shared tensor of images and labels.

    ``x`` is gathered on access; ``batches`` iterates mini-batches without
    materialising the split.
    """

    def __init__(self, x_all: torch.Tensor, y_all: torch.Tensor, idx: torch.Tensor, name: str = ""):
        self.x_all, self.y_all, self.name = x_all, y_all, name
        self.idx = idx.to(x_all.device)

    def __len__(self) -> int:
        return len(self.idx)

    @property
    def x(self) -> torch.Tensor:
        return self.x_all[self.idx]

    @property
    def y(self) -> torch.Tensor:
        return self.y_all[self.idx]

    def subset(self, positions: torch.Tensor, name: str | None = None) -> "TensorSet":
        """A subset by positions within this split."""
        return TensorSet(self.x_all, self.y_all, self.idx[positions.to(self.idx.device)], name or self.name)

    def sample(self, n: int, generator: torch.Generator, name: str | None = None) -> "TensorSet":
        """A random subset of ``min(n, len)`` elements."""
        perm = torch.randperm(len(self), generator=generator)[: min(n, len(self))]
        return self.subset(perm, name)

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None):
        order = torch.randperm(len(self), generator=generator).to(self.idx.device) if shuffle else None
        for s in range(0, len(self), batch_size):
            sel = self.idx[s : s + batch_size] if order is None else self.idx[order[s : s + batch_size]]
            yield self.x_all[sel], self.y_all[sel]


def concat(*sets: TensorSet, name: str = "") -> TensorSet:
    """Union of splits of the same underlying tensors."""
    return TensorSet(sets[0].x_all, sets[0].y_all, torch.cat([s.idx for s in sets]), name)


@dataclass
class SplitData:
    """All class-wise splits of one dataset, on one device, normalised once.

    ``y`` holds model indices (OOD samples are -1); ``y_orig`` the dataset labels.
    """

    split: ClassSplit
    raw: RawDataset
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    y_train_orig: torch.Tensor
    y_test_orig: torch.Tensor
    forget_samples: torch.Tensor | None = None  # sample-wise: positions in x_train of the forget set, else None

    @property
    def sample_wise(self) -> bool:
        return self.forget_samples is not None

    def with_forget_samples(self, percent: float, seed: int) -> "SplitData":
        """The sample-wise split: ``percent`` % of the in-distribution training samples forgotten
        (:func:`forget_sample_positions` over them, in dataset order), with their own labels."""
        pool = self.in_train.idx
        pick = forget_sample_positions(len(pool), percent, seed)
        return replace(self, forget_samples=pool[torch.as_tensor(pick, dtype=torch.long, device=pool.device)])

    def _by(self, train: bool, mask: torch.Tensor, name: str) -> TensorSet:
        x, y = (self.x_train, self.y_train) if train else (self.x_test, self.y_test)
        return TensorSet(x, y, torch.nonzero(mask).flatten(), name)

    def _masks(self, train: bool):
        y = self.y_train_orig if train else self.y_test_orig
        ood = torch.isin(y, torch.tensor(self.split.ood_classes, dtype=torch.long, device=y.device))
        if self.forget_samples is None:
            forget = y == self.split.forget_class
        else:
            forget = torch.zeros_like(ood)
            if train:
                forget[self.forget_samples] = True
        return ~ood & ~forget, forget, ood

    def sets(self, train: bool) -> tuple[TensorSet, TensorSet, TensorSet]:
        """(retain, forget, ood) of the train or test set."""
        r, f, o = self._masks(train)
        tag = "train" if train else "test"
        return self._by(train, r, f"retain_{tag}"), self._by(train, f, f"forget_{tag}"), self._by(train, o, f"ood_{tag}")

    @property
    def retain_train(self): return self.sets(True)[0]
    @property
    def forget_train(self): return self.sets(True)[1]
    @property
    def ood_train(self): return self.sets(True)[2]
    @property
    def retain_test(self): return self.sets(False)[0]
    @property
    def forget_test(self): return self.sets(False)[1]
    @property
    def ood_test(self): return self.sets(False)[2]

    @property
    def in_train(self) -> TensorSet:
        """All in-distribution training data (retain + forget): what pretraining sees."""
        r, f, _ = self._masks(True)
        return self._by(True, r | f, "in_train")

    @property
    def in_test(self) -> TensorSet:
        r, f, _ = self._masks(False)
        return self._by(False, r | f, "in_test")

    def ood_class_set(self, cls: int, train: bool = True) -> TensorSet:
        """The samples of one OOD class (original label ``cls``)."""
        y = self.y_train_orig if train else self.y_test_orig
        return self._by(train, y == cls, f"ood{cls}")

    def class_set(self, index: int, train: bool = True) -> TensorSet:
        """Samples of one in-distribution class, by model index."""
        y = self.y_train if train else self.y_test
        return self._by(train, y == index, f"class{index}")


def normalise(x: torch.Tensor, mean, std, device) -> torch.Tensor:
    """uint8 (N,C,H,W) -> float32 normalised, on ``device``, in chunks to bound memory."""
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    out = torch.empty(x.shape, dtype=torch.float32, device=device)
    for i in range(0, len(x), 8192):
        out[i : i + 8192] = (x[i : i + 8192].to(device).float() / 255.0 - m) / s
    return out


def pick_device_for(raw: RawDataset, device: torch.device, budget_fraction: float = 0.5) -> torch.device:
    """Keep the data on the GPU when it fits in a fraction of its free memory, else on the CPU."""
    if device.type != "cuda":
        return device
    need = 4 * (raw.x_train.numel() + raw.x_test.numel())
    free, _ = torch.cuda.mem_get_info(device)
    return device if need < budget_fraction * free else torch.device("cpu")


def check_forget_percent(percent) -> float:
    """The sample-wise forget percent as a float in (0, 100), else a one-line UsageError."""
    p = float(percent)
    if not 0 < p < 100:
        raise UsageError(f"forget percent {percent} is outside (0, 100); pass e.g. --forget_percent 10")
    return p


def forget_sample_positions(n: int, percent: float, seed: int) -> np.ndarray:
    """The sample-wise forget set as the paper's 2025 ``forget_sample_main.py`` draws it: ``np.random.choice``
    of ``int(n * percent / 100)`` of ``n`` positions without replacement, under ``seed`` (a
    ``RandomState``, the generator ``np.random.seed`` drives); sorted. The paper saves the draw of its
    first run and reuses it for every later seed: ours depends on the seed given, which run.py fixes
    per dataset so that every method, replicate and retrained model forgets the same samples."""
    k = int(n * check_forget_percent(percent) / 100)
    if not 0 < k < n:
        raise UsageError(f"forget percent {percent} of {n} training samples selects {k}; "
                         f"pass a percent that leaves at least one sample on each side")
    return np.sort(np.random.RandomState(seed).choice(np.arange(n), size=k, replace=False))


def make_split_data(raw: RawDataset, split: ClassSplit, device: torch.device | str = "cpu") -> SplitData:
    """Normalise ``raw`` once, place it on ``device`` (GPU when it fits) and attach the split."""
    if split.num_classes != raw.num_classes:
        raise UsageError(
            f"-classes {split.num_classes} does not match {raw.name}, which has {raw.num_classes} classes; "
            f"pass -classes {raw.num_classes}"
        )
    dev = pick_device_for(raw, torch.device(device))
    yo_tr, yo_te = raw.y_train.to(dev), raw.y_test.to(dev)
    return SplitData(
        split=split, raw=raw,
        x_train=normalise(raw.x_train, raw.mean, raw.std, dev),
        x_test=normalise(raw.x_test, raw.mean, raw.std, dev),
        y_train=split.remap(raw.y_train).to(dev), y_test=split.remap(raw.y_test).to(dev),
        y_train_orig=yo_tr, y_test_orig=yo_te,
    )


def augment_batch(x: torch.Tensor, *, padding: int, hflip: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop with zero padding and optional horizontal flip, on a whole batch of tensors.

    Padding is applied in normalised space with zeros (= the dataset mean), as
    is common for tensor-side augmentation.
    """
    n, _, h, w = x.shape
    if padding > 0:
        xp = torch.nn.functional.pad(x, (padding,) * 4)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
        rows = (dy.view(n, 1) + torch.arange(h, device=x.device).view(1, h))  # (n,h)
        cols = (dx.view(n, 1) + torch.arange(w, device=x.device).view(1, w))  # (n,w)
        bidx = torch.arange(n, device=x.device).view(n, 1, 1)
        x = xp.permute(0, 2, 3, 1)[bidx, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)
    if hflip:
        flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    return x.contiguous()
