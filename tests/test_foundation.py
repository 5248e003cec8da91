"""Splits, pretraining, determinism, checkpoints and bad input of the foundation layer."""
import json

import pytest
import torch

from conftest import PRETRAIN_EPOCHS, run_inprocess, run_script
from datasets import get_dataset
from datasets.splits import ClassSplit, augment_batch, make_split_data
from models import get_model
from unlearn.store.checkpoint import load_checkpoint, save_checkpoint
from unlearn.core.errors import UsageError


def test_split_sizes_and_reindexing():
    raw = get_dataset("digits", "unused")
    split = ClassSplit(10, (8, 9), 4)
    data = make_split_data(raw, split)
    for train in (True, False):
        r, f, o = data.sets(train)
        assert len(r) + len(f) + len(o) == len(raw.y_train if train else raw.y_test)
        assert set(torch.cat([r.idx, f.idx, o.idx]).tolist()) == set(range(len(r) + len(f) + len(o)))
        assert set(r.y.tolist()) == {0, 1, 2, 3, 5, 6, 7}  # in-distribution re-indexed 0..7, forget (4) excluded
        assert set(f.y.tolist()) == {split.forget_index} and split.forget_index == 4
        assert set(o.y.tolist()) == {-1}
    assert split.class_map == {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 7}
    # a split shares the tensor: indices, not copies
    assert data.retain_train.x_all.data_ptr() == data.x_train.data_ptr()


def test_reindexing_skips_ood_classes():
    split = ClassSplit(20, (12, 16, 17, 18, 19), 13)
    assert split.num_in == 15 and split.forget_index == 12
    assert split.remap(torch.tensor([0, 12, 13, 19])).tolist() == [0, -1, 12, -1]


@pytest.mark.parametrize("forget,ood", [(10, (8, 9)), (-1, (8, 9)), (8, (8, 9))])
def test_bad_forget_class(forget, ood):
    with pytest.raises(UsageError):
        ClassSplit(10, ood, forget)


def test_augment_batch_shapes_and_content():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    same = augment_batch(x, padding=0, hflip=False)
    assert torch.equal(same, x)
    g = torch.Generator().manual_seed(0)
    out = augment_batch(x, padding=1, hflip=True, generator=g)
    assert out.shape == x.shape
    # every output pixel is an input pixel of the same image or the zero padding
    for i in range(2):
        assert set(out[i].flatten().tolist()) <= set(x[i].flatten().tolist()) | {0.0}


def test_pretrain_digits_accuracy(pretrained, digits):
    assert pretrained["status"] == "ok"
    assert pretrained["best_test_acc"] >= 0.9
    out = digits.pretrain_dir()
    assert (out / "best.pth").is_file() and (out / "last.pth").is_file()
    res = json.loads((out / "results.json").read_text())
    assert len(res["epochs"]) == PRETRAIN_EPOCHS and res["config"]["net"] == "SmallCNN"


def test_same_seed_same_weights(digits, tmp_path):
    from dataclasses import replace

    from unlearn.stages.pretrain import pretrain

    states = []
    for k in range(2):
        s = replace(digits, log_root=str(tmp_path / str(k)))
        pretrain(s, lr=0.05, epochs=2, batch_size=32, l1=0.0, device="cpu", progress=False)
        states.append(torch.load(s.pretrain_dir() / "last.pth", weights_only=True)["state_dict"])
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_checkpoint_mismatch_and_corruption(tmp_path, digits, pretrained):
    good = digits.pretrain_dir() / "best.pth"
    obj = load_checkpoint(good, model_name="SmallCNN", num_classes=8, dataset="Digits")
    assert obj["class_map"][4] == 4 and obj["config"]["dataset"] == "Digits"
    with pytest.raises(UsageError, match="ResNet18"):
        load_checkpoint(good, model_name="ResNet18")
    with pytest.raises(UsageError, match="output classes"):
        load_checkpoint(good, num_classes=10)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(good.read_bytes()[:100])
    with pytest.raises(UsageError, match="unreadable"):
        load_checkpoint(bad)
    with pytest.raises(UsageError, match="not found"):
        load_checkpoint(tmp_path / "missing.pth")


def test_checkpoint_of_another_layout_with_same_shapes_is_rejected(tmp_path):
    """A stride-1-stem SmallCNN has exactly the tensors of the stride-2 one FashionMNIST builds."""
    from unlearn.store.setting import Setting

    setting = Setting(net="SmallCNN", dataset="FashionMNIST", classes=10, forget_class=4, ood_classes=[8, 9])
    other = get_model("SmallCNN", 8, in_channels=1, image_size=28, stem_stride=1)
    assert {k: v.shape for k, v in other.state_dict().items()} == \
        {k: v.shape for k, v in setting.new_model().state_dict().items()}
    path = tmp_path / "old.pth"
    save_checkpoint(path, other, model_name="SmallCNN", num_classes=8, dataset="FashionMNIST", class_map={})
    with pytest.raises(UsageError, match="another layout.*; rerun"):
        setting.load_model(path, "cpu", fix="rerun")
    obj = torch.load(path, weights_only=True)
    del obj["architecture"]
    torch.save(obj, path)
    with pytest.raises(UsageError, match="no architecture fingerprint"):
        setting.load_model(path, "cpu")
    save_checkpoint(path, setting.new_model(), model_name="SmallCNN", num_classes=8, dataset="FashionMNIST",
                    class_map={})
    setting.load_model(path, "cpu")


def test_atomic_checkpoint_leaves_no_temp(tmp_path):
    m = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path / "a.pth", m, model_name="x", num_classes=2, dataset="d", class_map={0: 0})
    assert [p.name for p in tmp_path.iterdir()] == ["a.pth"]


@pytest.mark.parametrize("args,needle", [
    (["--dataset", "NoSuch"], "unknown dataset"),
    (["--dataset", "Digits", "-net", "NoNet"], "unknown model"),
    (["--dataset", "Digits", "-classes", "7"], "-classes"),
    (["--dataset", "Cifar20", "--data-root", "{tmp}/nodata", "--epochs", "1"], "CIFAR-100"),
])
def test_pretrain_bad_input_one_line_exit_2(tmp_path, args, needle):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = run_inprocess("pretrain_model_cifar20.py", *args, "--log-root", tmp_path / "logs")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "logs").exists()


def test_case_insensitive_dataset_cli(tmp_path):
    r = run_script("pretrain_model_cifar20.py", "--dataset", "DIGITS", "--epochs", "1", "--no-progress",
                   "--log-root", tmp_path, "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "model/pretrain/SmallCNN-Digits-10/best.pth").is_file()
