"""What makes results hold on another machine: tie-proof model selection, and UNLEARN_FP_PERTURB (another
CPU's floating-point path, made here)."""
import math

import pytest
import torch

from conftest import run_script
from models import get_model
from unlearn.core.engine import perturb_init
from unlearn.core.errors import UsageError
from unlearn.store.identity import config_fingerprint, fp_perturbation
from unlearn.stages.pretrain import better_epoch


def test_a_tie_goes_to_the_later_epoch():
    assert better_epoch(433, 433) and better_epoch(434, 433) and not better_epoch(432, 433)


@pytest.mark.numerical
def test_pretraining_keeps_the_last_of_the_best_epochs(digits, pretrained):
    """Among the eligible epochs with the most correct test samples, the latest is kept."""
    n = len(digits.load_data("cpu").in_test)
    counts = [round(e["test_acc"] * n) for e in pretrained["epochs"]]
    eligible = range(pretrained["config"]["best_from_epoch"] - 1, len(counts))
    top = max(counts[i] for i in eligible)
    assert pretrained["best_epoch"] == 1 + max(i for i in eligible if counts[i] == top)


def _fresh():
    torch.manual_seed(0)
    return get_model("SmallCNN", 8, in_channels=1, image_size=8)


def test_perturbation_moves_half_the_nonzero_weights_by_one_ulp():
    before = {k: v.clone() for k, v in _fresh().state_dict().items()}
    m = perturb_init(_fresh(), 1)
    moved = total = 0
    for name, p in m.named_parameters():
        b = before[name]
        changed = p != b
        up, down = torch.nextafter(b, torch.full_like(b, math.inf)), torch.nextafter(b, torch.full_like(b, -math.inf))
        assert bool(((p == up) | (p == down))[changed].all())  # one ulp, no more
        assert not changed[b == 0].any()  # zeros stay zero
        moved += int(changed.sum())
        total += int((b != 0).sum())
    assert 0.4 < moved / total < 0.6
    params = dict(m.named_parameters())
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items() if k not in params)  # buffers


def test_perturbation_is_reproducible_per_level_and_off_at_zero():
    a, b, c, off = perturb_init(_fresh(), 1), perturb_init(_fresh(), 1), perturb_init(_fresh(), 2), perturb_init(_fresh(), 0)
    fresh = _fresh()
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert any(not torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters()))
    assert all(torch.equal(x, y) for x, y in zip(off.parameters(), fresh.parameters()))


def test_perturbation_leaves_the_global_random_state_alone():
    m = _fresh()
    state = torch.get_rng_state()
    perturb_init(m, 3)
    assert torch.equal(state, torch.get_rng_state())


def test_perturbation_is_read_from_the_environment_and_is_part_of_the_identity(monkeypatch):
    monkeypatch.delenv("UNLEARN_FP_PERTURB", raising=False)
    plain = config_fingerprint("Digits")
    assert fp_perturbation() == 0
    monkeypatch.setenv("UNLEARN_FP_PERTURB", "0")
    assert fp_perturbation() == 0 and config_fingerprint("Digits") == plain
    monkeypatch.setenv("UNLEARN_FP_PERTURB", "2")
    assert fp_perturbation() == 2 and config_fingerprint("Digits") != plain
    monkeypatch.setenv("UNLEARN_FP_PERTURB", "yes")
    with pytest.raises(UsageError, match="UNLEARN_FP_PERTURB"):
        fp_perturbation()


def test_a_bad_perturbation_is_one_line_exit_2_and_writes_nothing(tmp_path):
    r = run_script("pretrain_model_cifar20.py", "--dataset", "Digits", "--log-root", tmp_path / "logs",
                   env={"UNLEARN_FP_PERTURB": "-1"})
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip()
    assert "\n" not in line and "UNLEARN_FP_PERTURB" in line
    assert not (tmp_path / "logs").exists()
