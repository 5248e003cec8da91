"""Tests of the dataset loaders on tiny fixtures written in the exact official formats."""
from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest
import torch

import datasets
from datasets import fashion, get_dataset
from unlearn.core.errors import UsageError

# ----------------------------------------------------------------------------- CIFAR-100

# (fine id, official coarse id): apple->fruit_and_vegetables, aquarium_fish->fish,
# baby->people, bear->large_carnivores, beaver->aquatic_mammals, worm->non-insect_invertebrates.
CIFAR_PAIRS = [(0, 4), (1, 1), (2, 14), (3, 8), (4, 0), (99, 13)]
COARSE_NAMES = [
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2",
]
FINE_NAMES = ["apple", "aquarium_fish", "baby", "bear", "beaver"] + [f"fine_{i}" for i in range(5, 99)] + ["worm"]


def _cifar_split(n: int, seed: int, bytes_keys: bool):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 200, size=(n, 3072), dtype=np.uint8)
    pairs = [CIFAR_PAIRS[i % len(CIFAR_PAIRS)] for i in range(n)]
    d = {
        "filenames": [f"img_{i}.png" for i in range(n)],
        "fine_labels": [f for f, _ in pairs],
        "coarse_labels": [c for _, c in pairs],
        "data": data,
    }
    if bytes_keys:
        d = {k.encode(): v for k, v in d.items()}
    return d


@pytest.fixture
def cifar_root(tmp_path):
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    train = _cifar_split(12, 0, bytes_keys=False)
    # Recognisable channel-planar pixels: image 3 has R=255 everywhere, G=B=0; image 5 has B=250.
    train["data"][3, :1024] = 255
    train["data"][3, 1024:] = 0
    train["data"][5, 2048:] = 250
    test = _cifar_split(7, 1, bytes_keys=True)  # both str and bytes keys occur in the wild
    for name, obj in (("train", train), ("test", test),
                      ("meta", {"fine_label_names": FINE_NAMES, "coarse_label_names": COARSE_NAMES})):
        with open(base / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    return tmp_path, train, test


def test_cifar100_fine_labels_and_layout(cifar_root):
    root, train, test = cifar_root
    ds = get_dataset("Cifar100", str(root))
    assert ds.num_classes == 100 and len(ds.class_names) == 100 and ds.class_names[4] == "beaver"
    assert ds.x_train.shape == (12, 3, 32, 32) and ds.x_train.dtype == torch.uint8
    assert ds.x_test.shape == (7, 3, 32, 32)
    assert ds.y_train.dtype == torch.int64
    assert ds.y_train.tolist() == train["fine_labels"]
    assert ds.y_test.tolist() == test[b"fine_labels"]
    # Channel-planar: the first 1024 bytes are the R plane, row-major.
    assert (ds.x_train[3, 0] == 255).all() and (ds.x_train[3, 1:] == 0).all()
    assert (ds.x_train[5, 2] == 250).all()
    assert ds.x_train[0, 1, 2, 5] == train["data"][0, 1024 + 2 * 32 + 5]
    assert ds.hflip and ds.crop_padding == 4
    assert ds.mean == (0.5071, 0.4865, 0.4409)


def test_cifar20_coarse_labels(cifar_root):
    root, train, test = cifar_root
    ds = get_dataset("CIFAR20", str(root))
    assert ds.num_classes == 20 and ds.class_names == COARSE_NAMES
    assert ds.y_train.tolist() == train["coarse_labels"]
    assert ds.y_test.tolist() == test[b"coarse_labels"]
    fine = get_dataset("cifar100", str(root)).y_train
    relation = dict(zip(fine.tolist(), ds.y_train.tolist()))
    assert relation[0] == 4 and relation[4] == 0  # apple -> fruit_and_vegetables, beaver -> aquatic_mammals
    assert torch.equal(ds.x_train, get_dataset("cifar100", str(root)).x_train)


def test_cifar_missing_and_corrupt(tmp_path, cifar_root, monkeypatch):
    with pytest.raises(UsageError) as e:
        get_dataset("Cifar100", str(tmp_path / "nowhere"), download=False)
    msg = str(e.value)
    assert "\n" not in msg and "cifar-100-python" in msg and "--data-root" in msg

    import torchvision

    def offline(*a, **k):
        raise RuntimeError("no network\nat all")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    with pytest.raises(UsageError) as e:
        get_dataset("Cifar20", str(tmp_path / "nowhere"))
    assert "\n" not in str(e.value) and "no network" in str(e.value)

    root, _, _ = cifar_root
    (root / "cifar-100-python" / "test").write_bytes(b"\x80\x02garbage")
    with pytest.raises(UsageError, match="corrupt"):
        get_dataset("Cifar100", str(root))


# ----------------------------------------------------------------------------- ImageNet64

def _imagenet_batch(labels, seed):
    rng = np.random.default_rng(seed)
    n = len(labels)
    data = rng.integers(0, 256, size=(n, 12288), dtype=np.uint8)
    # Image i of this file is constant (10 * label) in the R plane: easy to check after resizing.
    for i, lab in enumerate(labels):
        data[i, :4096] = 10 * lab
    return {"data": data, "labels": list(labels), "mean": np.zeros(12288)}


@pytest.fixture
def imagenet_root(tmp_path):
    (tmp_path / "Imagenet64_train").mkdir()
    (tmp_path / "Imagenet64_val").mkdir()
    batches = {
        "Imagenet64_train/train_data_batch_1": [1, 2, 3, 4, 5, 1, 2],
        "Imagenet64_train/train_data_batch_2": [5, 4, 3, 3, 1],
        "Imagenet64_val/val_data": [1, 2, 3, 4, 5, 3],
    }
    for seed, (rel, labels) in enumerate(batches.items()):
        with open(tmp_path / rel, "wb") as f:
            pickle.dump(_imagenet_batch(labels, seed), f, protocol=4)
    return tmp_path


pytestmark_imagenet = pytest.mark.filterwarnings("ignore:only 2 of 10")


@pytestmark_imagenet
def test_imagenet64_class_subset_and_resize(imagenet_root):
    ds = get_dataset("imagenet64", str(imagenet_root), classes=3)
    assert ds.num_classes == 3
    assert ds.y_train.tolist() == [0, 1, 2, 0, 1, 2, 2, 0]  # file labels 1..3, batch order kept
    assert ds.y_test.tolist() == [0, 1, 2, 2]
    assert ds.x_train.shape == (8, 3, 32, 32) and ds.x_train.dtype == torch.uint8
    assert ds.x_test.shape == (4, 3, 32, 32)
    # A constant plane stays constant through the antialiased resize.
    expected_r = torch.tensor([10 * (y + 1) for y in ds.y_train.tolist()], dtype=torch.uint8)
    assert torch.equal(ds.x_train[:, 0].amin(dim=(1, 2)), expected_r)
    assert torch.equal(ds.x_train[:, 0].amax(dim=(1, 2)), expected_r)
    assert ds.mean == (0.485, 0.456, 0.406) and ds.std == (0.229, 0.224, 0.225)


@pytestmark_imagenet
def test_imagenet64_full_size_and_explicit_list(imagenet_root):
    ds = get_dataset("Imagenet64", str(imagenet_root), classes=[4, 0], image_size=64)
    assert ds.num_classes == 2 and ds.x_train.shape[1:] == (3, 64, 64)
    # Class list order: 0-based id 4 (file label 5) -> 0, id 0 (file label 1) -> 1.
    assert ds.y_train.tolist() == [1, 0, 1, 0, 1]
    with open(imagenet_root / "Imagenet64_train/train_data_batch_1", "rb") as f:
        raw = pickle.load(f)
    assert torch.equal(ds.x_train[0], torch.from_numpy(raw["data"][0].reshape(3, 64, 64)))
    assert torch.equal(ds.x_train[1], torch.from_numpy(raw["data"][4].reshape(3, 64, 64)))
    # Default: the first 100 classes (all 5 present here).
    assert get_dataset("Imagenet64", str(imagenet_root)).num_classes == 100


def test_imagenet64_missing(tmp_path, imagenet_root):
    with pytest.raises(UsageError, match="Imagenet64_train") as e:
        get_dataset("Imagenet64", str(tmp_path / "nowhere"))
    assert "\n" not in str(e.value)
    os.rename(imagenet_root / "Imagenet64_train/train_data_batch_2", imagenet_root / "Imagenet64_train/train_data_batch_3")
    with pytest.raises(UsageError, match="train_data_batch_2"):
        get_dataset("Imagenet64", str(imagenet_root))
    with pytest.raises(UsageError):
        get_dataset("Imagenet64", str(imagenet_root), classes=[1000])


# ----------------------------------------------------------------------------- Fashion-MNIST

def _idx_bytes(arr: np.ndarray) -> bytes:
    magic = 2051 if arr.ndim == 3 else 2049
    header = np.array([magic, *arr.shape], dtype=">i4").tobytes()
    return header + arr.astype(np.uint8).tobytes()


@pytest.fixture
def fashion_root(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.array([9, 0, 3, 3, 1, 7], dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([2, 5, 8, 6], dtype=np.uint8),
    }
    for name, arr in arrays.items():
        if name.startswith("train"):  # train as .gz, test uncompressed: both forms must work
            with gzip.open(raw / f"{name}.gz", "wb") as f:
                f.write(_idx_bytes(arr))
        else:
            (raw / name).write_bytes(_idx_bytes(arr))
    return tmp_path, arrays


def test_fashion_fixture(fashion_root):
    root, arrays = fashion_root
    ds = get_dataset("fashionmnist", str(root))
    assert ds.x_train.shape == (6, 1, 28, 28) and ds.x_test.shape == (4, 1, 28, 28)
    assert ds.x_train.dtype == torch.uint8 and ds.y_train.dtype == torch.int64
    assert ds.y_train.tolist() == [9, 0, 3, 3, 1, 7] and ds.y_test.tolist() == [2, 5, 8, 6]
    assert np.array_equal(ds.x_train[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert ds.num_classes == 10 and ds.class_names[9] == "Ankle boot"
    assert ds.hflip and ds.crop_padding == 2 and ds.mean == (0.2860,)


def test_fashion_missing_and_corrupt(tmp_path, fashion_root, monkeypatch):
    monkeypatch.setattr(fashion, "SYSTEM_DIR", str(tmp_path / "no-system-copy"))
    with pytest.raises(UsageError) as e:
        get_dataset("FashionMNIST", str(tmp_path / "nowhere"), download=False)
    msg = str(e.value)
    assert "\n" not in msg and "apt-get install dataset-fashion-mnist" in msg and "--data-root" in msg
    root, _ = fashion_root
    (root / "FashionMNIST/raw/t10k-labels-idx1-ubyte").write_bytes(np.array([2051, 4], ">i4").tobytes() + b"\0" * 4)
    with pytest.raises(UsageError, match="magic"):
        get_dataset("FashionMNIST", str(root))


@pytest.mark.skipif(not os.path.isdir(fashion.SYSTEM_DIR), reason="dataset-fashion-mnist not installed")
def test_fashion_debian_files(tmp_path):
    ds = get_dataset("FashionMNIST", str(tmp_path), download=False)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.num_classes == 10
    assert torch.equal(ds.y_train.bincount(), torch.full((10,), 6000))


# ----------------------------------------------------------------------------- Digits and registry

def test_digits_split_is_fixed():
    a = get_dataset("Digits", "unused")
    b = get_dataset("digits", "elsewhere")
    assert a.num_classes == 10 and len(a.x_train) + len(a.x_test) == 1797
    assert a.x_train.shape[1:] == (1, 8, 8) and a.x_train.dtype == torch.uint8
    assert int(a.x_train.max()) == 255 and not a.hflip and a.crop_padding == 1
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert len(a.x_test) == 540 and set(a.y_test.tolist()) == set(range(10))
    assert 0 < a.mean[0] < 1 and 0 < a.std[0] < 1


def test_registry_names():
    assert set(datasets.list_datasets()) >= {"Cifar100", "Cifar20", "Imagenet64", "Digits", "FashionMNIST"}
    for name, canon in [("CIFAR20", "Cifar20"), ("cifar20", "Cifar20"), ("fashionmnist", "FashionMNIST"),
                        ("Fashion-MNIST", "FashionMNIST"), ("imagenet64", "Imagenet64")]:
        assert datasets.canonical_dataset_name(name) == canon
    with pytest.raises(UsageError) as e:
        get_dataset("MNIST", "data")
    assert "Cifar100" in str(e.value) and "FashionMNIST" in str(e.value)
    with pytest.raises(UsageError, match="valid"):
        get_dataset("Digits", "data", colour=True)
