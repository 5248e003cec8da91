"""The Reminiscence Attack on Digits: calibration of both games, fresh optimisers, bad input."""
import json

import numpy as np
import pytest
import torch

from conftest import run_script
from unlearn.attack import AttackConfig, reminiscence_attack, relearn_curve, relearn_curves
from unlearn.forget import unlearn_run

CFG = dict(unlearn_data_percent=10.0, num_ood_dataset=1, retain_per_step=14, relearning_lr=[0.01], trials=30,
           steps=40)


@pytest.fixture(scope="module")
def attacked(digits, pretrained):
    out = {}
    for method, p1, p2 in (("retrain", 0.01, 15), ("baseline", 0, 0)):  # retrain first: the reference game
        unlearn_run(digits, method=method, para1=p1, para2=p2, device="cpu", progress=False)
        out[method] = reminiscence_attack(digits, method=method, para1=p1, para2=p2, cfg=AttackConfig(**CFG),
                                          device="cpu", progress=False)
    return out


def test_baseline_is_detected_in_retrain_game(attacked):
    games = attacked["baseline"]["per_lr"]["0.01"]["games"]
    assert games["retrain"]["auc"] >= 0.9
    assert games["ood"]["auc"] >= 0.9


def test_retrain_against_itself_is_chance(attacked):
    auc = attacked["retrain"]["per_lr"]["0.01"]["games"]["retrain"]["auc"]
    assert abs(auc - 0.5) <= 0.15


def test_outputs_written(attacked, digits):
    out = digits.stage_dir("mia_mu_attack", "baseline", 0, 0)
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "ok" and res["retrain_game"] == "ok"
    for stem in ("relearning_lr0.01", "roc_lr0.01"):
        assert (out / f"{stem}.png").stat().st_size > 0 and (out / f"{stem}.pdf").stat().st_size > 0
    logs = sorted((out / "curves" / "lr0.01").glob("member_*.tsv"))
    assert len(logs) == CFG["trials"]
    lines = logs[0].read_text().splitlines()
    assert lines[0] == "epoch\tloss(Train)\tacc(Train)" and len(lines) == CFG["steps"] + 1


def test_every_curve_restarts_from_unlearned_weights(digits, pretrained):
    model, _ = digits.load_model(digits.pretrain_dir() / "best.pth", "cpu")
    data = digits.load_data("cpu")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    cand = data.forget_train.sample(8, torch.Generator().manual_seed(0))
    y = torch.full((8,), digits.split.forget_index)
    kw = dict(lr=0.05, steps=5, retain_per_step=14, seed=3)
    a1, l1 = relearn_curve(model, state, cand.x, y, data.retain_train, **kw)
    _ = relearn_curve(model, state, cand.x, y, data.retain_train, **{**kw, "lr": 0.5, "seed": 9})
    a2, l2 = relearn_curve(model, state, cand.x, y, data.retain_train, **kw)
    assert l1[0] == l2[0] and np.array_equal(a1, a2) and np.array_equal(l1, l2)


@pytest.mark.parametrize("net", ["SmallCNN", "ViT", "ResNet18"])
def test_batched_curves_equal_one_at_a_time(net):
    """relearn_curves (vmap over stacked model copies) reproduces relearn_curve curve by curve."""
    from datasets.splits import TensorSet
    from models import get_model

    torch.manual_seed(0)
    model = get_model(net, 8, in_channels=3, image_size=32)
    x, y = torch.randn(120, 3, 32, 32), torch.randint(0, 8, (120,))
    retain = TensorSet(x, y, torch.arange(30, 120), "retain")
    states = [{k: v.clone() for k, v in model.state_dict().items()}]
    with torch.no_grad():  # a second, different starting point (as the retrained model in the attack)
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    states.append({k: v.clone() for k, v in model.state_dict().items()})
    curves = [(states[i % 2], x[6 * i: 6 * i + 6], torch.zeros(6, dtype=torch.long), 10 + i) for i in range(3)]
    kw = dict(lr=0.005, steps=8, retain_per_step=5)  # small: a diverging curve would amplify rounding
    acc, loss = relearn_curves(model, curves, retain, **kw)
    for i, (st, cx, cy, seed) in enumerate(curves):
        a, l = relearn_curve(model, st, cx, cy, retain, seed=seed, **kw)
        np.testing.assert_allclose(loss[i], l, rtol=2e-3)  # BatchNorm over 6 samples amplifies rounding a little
        assert np.abs(acc[i] - a).max() <= 1 / 6 + 1e-9  # at most one near-tie flips
    assert not np.allclose(loss[0], loss[1])


def test_missing_unlearned_model_names_forget_command(tmp_path, digits, pretrained):
    r = run_script("mia_on_mu_main_cifar20_fullclass.py", "--dataset", "Digits", "-method", "SCRUB",
                   "--log-root", tmp_path)
    assert r.returncode == 2
    line = r.stderr.strip()
    assert "\n" not in line and "forget_full_class_main" in line and "-method SCRUB" in line
