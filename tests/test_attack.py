"""The Reminiscence Attack on Digits: the reference population, its cache, both levels, bad input."""
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import config
from conftest import DIGITS_ATTACK, ROOT, run_script
from unlearn.evaluation.rea import reference as ref
from unlearn.stages.attack import AttackConfig, Relearner, reference_curves, reminiscence_attack, relearn_curve, relearn_curves
from unlearn.stages.forget import unlearn_run
from unlearn.methods import resolve_paras
from unlearn.evaluation.rea.relearn import classifier_keys, reset_forget_row

# The tests marked numerical assert an outcome of the pretrained model; CI runs them perturbed too. The
# others test mechanics (caches, files, batching of models made here) that no pretrained model changes.

CFG = DIGITS_ATTACK  # the shipped configuration, 5 references
R = CFG["retrain_refs"]
N_CACHE = 2 * (R + 1)  # references and the anchor, at both levels
RETRAIN = resolve_paras(*next(m for m in config.MU_METHOD_LIST["Digits"] if m[0] == "retrain")[:3])


@pytest.fixture(scope="module")
def population(digits, pretrained):
    """The default reference population (retrain runs of seeds 1000..) and the retrain run of seed 0."""
    for seed in [digits.seed, *ref.reference_seeds(CFG["retrain_refs"])]:
        unlearn_run(dataclasses.replace(digits, seed=seed), method="retrain", para1=RETRAIN[0], para2=RETRAIN[1],
                    device="cpu", progress=False)
    return ref.find_references(digits, CFG["retrain_refs"])


@pytest.fixture(scope="module")
def attacked(digits, population):
    out = {}
    for method, p1, p2 in (("baseline", 0, 0), ("retrain", *RETRAIN)):
        if method == "baseline":
            unlearn_run(digits, method=method, para1=p1, para2=p2, device="cpu", progress=False)
        out[method] = reminiscence_attack(digits, method=method, para1=p1, para2=p2, cfg=AttackConfig(**CFG),
                                          device="cpu", progress=False)
    return out


def _verdict(res, level):
    (v,) = res["per_lr"].values()
    return v[level]


def test_population_found_in_seed_order(population):
    assert [s for s, _ in population] == [1000 + r for r in range(CFG["retrain_refs"])]
    assert all(p.is_file() for _, p in population)


@pytest.mark.numerical
@pytest.mark.parametrize("level", ["output", "feature"])
def test_baseline_is_the_anchor_and_outside_the_null_band(attacked, level):
    v = _verdict(attacked["baseline"], level)
    ix = v["index"]
    assert ix["index"] == pytest.approx(1.0) and ix["ci"] == pytest.approx([1.0, 1.0])  # same weights as the anchor
    assert ix["index"] > ix["null"]["band"][1] and ix["direction"] == "residual"
    assert v["retrain_game"]["auc"] >= 0.9 and v["retrain_game"]["auc_one_sided"] >= 0.9
    assert v["ood_game"]["auc"] > v["ood_game"]["null"]["mean"]


@pytest.mark.numerical
@pytest.mark.parametrize("level", ["output", "feature"])
def test_independent_retrain_is_inside_the_null_band(attacked, level):
    v = _verdict(attacked["retrain"], level)
    lo, hi = v["index"]["null"]["band"]
    assert lo < v["index"]["index"] < hi and v["index"]["direction"] == "inside null band"
    assert v["retrain_game"]["balanced_accuracy_at_fpr_5"] < 0.9


def test_results_and_outputs_written(attacked, digits):
    res = attacked["baseline"]
    out = digits.stage_dir("mia_mu_attack", "baseline", 0, 0)
    disk = json.loads((out / "results.json").read_text())
    assert disk["status"] == "ok" and disk["calibrated"] and disk["calibration_note"] is None
    assert [r["seed"] for r in disk["references"]] == ref.reference_seeds(R)
    assert disk["anchor"] == str(digits.pretrain_dir() / "best.pth") and res["candidates_per_set"] == 20
    (v,) = disk["per_lr"].values()
    for level in ("output", "feature"):
        s = v[level]["steps_to_threshold"]
        assert len(s["references"]) == R and 1 <= s["model"]["member"] <= CFG["steps"] + 1
        assert set(v[level]["reference_pairs"]) == {f"{i}-{j}" for i in range(R) for j in range(i + 1, R)}
        lines = (out / "curves" / f"lr{CFG['relearning_lr'][0]}_{level}.tsv").read_text().splitlines()
        assert lines[0] == "group\ttrial\tstep\tloss\tacc" and len(lines) == 1 + 2 * CFG["trials"] * CFG["steps"]
    assert (out / f"relearning_lr{CFG['relearning_lr'][0]}.png").stat().st_size > 0


def test_reference_curves_computed_once(attacked):
    # the first attack computed references and anchor at both levels, the second read them
    assert attacked["baseline"]["reference_curves"] == {"cached": 0, "computed": N_CACHE}
    assert attacked["retrain"]["reference_curves"] == {"cached": N_CACHE, "computed": 0}


def test_each_candidate_used_once_per_curve(digits, pretrained):
    """20 candidates, 20 steps: the plan holds every candidate exactly once (the paper's protocol)."""
    from unlearn.evaluation.rea.relearn import step_plan

    rl = Relearner(digits, AttackConfig(**CFG), torch.device("cpu"), progress=False)
    x, y = rl.sets["member"][0]
    xs, _ = step_plan(x, y, rl.retain, steps=CFG["steps"], retain_per_step=14, seed=5)
    firsts = xs[:, 0].flatten(1)
    assert len(x) == CFG["steps"] == len(torch.unique(firsts, dim=0)) == len(torch.unique(x.flatten(1), dim=0))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "nan", "shape", "key"])
def test_corrupt_reference_cache_is_recomputed(digits, attacked, damage):
    files = sorted(f for f in ref.cache_root(digits).glob("*/curves.npz")
                   if json.loads((f.parent / "meta.json").read_text())["steps"] == CFG["steps"])
    assert len(files) == N_CACHE
    victim = files[0]
    good = dict(np.load(victim))
    if damage == "garbage":
        victim.write_bytes(b"not an npz")
    elif damage == "truncated":
        victim.write_bytes(victim.read_bytes()[:100])
    else:
        bad = dict(good)
        if damage == "nan":
            bad["member_acc"] = bad["member_acc"].copy()
            bad["member_acc"][0, 0] = np.nan
        elif damage == "shape":
            bad["ood_loss"] = bad["ood_loss"][:, :-1]
        else:
            bad["key"] = np.array("0" * 24)
        np.savez(victim.with_suffix(".tmp.npz"), **bad)
        victim.with_suffix(".tmp.npz").replace(victim)
    r = reference_curves(digits, cfg=AttackConfig(**CFG), device="cpu", progress=False)
    assert (r["computed"], r["cached"]) == (1, N_CACHE - 1)
    again = dict(np.load(victim))
    for k in ("member_acc", "member_loss", "ood_acc", "ood_loss"):
        np.testing.assert_allclose(again[k], good[k])  # recomputed, the same curves


def test_a_changed_reference_file_changes_the_key(digits, attacked, tmp_path):
    """Curves are keyed by the checkpoint's bytes: a retrained reference is never served stale curves."""
    from unlearn.store.checkpoint import save_checkpoint

    cfg = AttackConfig(**{**CFG, "trials": 2, "steps": 3})
    rl = Relearner(digits, cfg, torch.device("cpu"), progress=False)
    _, path = ref.find_references(digits, 1)[0]
    copy = tmp_path / "model.pth"
    copy.write_bytes(path.read_bytes())
    assert rl.cached(copy, lr=0.05, level="output", desc="")[1] is False
    assert rl.cached(copy, lr=0.05, level="output", desc="")[1] is True
    model, obj = digits.load_model(copy, "cpu")
    with torch.no_grad():
        model.fc.bias.add_(0.1)
    save_checkpoint(copy, model, model_name=digits.net, num_classes=digits.num_outputs, dataset=digits.dataset,
                    class_map=obj["class_map"])
    assert rl.cached(copy, lr=0.05, level="output", desc="")[1] is False


def test_two_processes_computing_the_same_cache(digits, attacked):
    """run.py runs two attack processes at once: computing one cache twice must be harmless."""
    argv = [sys.executable, "mia_on_mu_main_cifar20_fullclass.py", "--dataset", "Digits", "--log-root",
            digits.log_root, "--refs-only", "--trials", "3", "--steps", "4", "--threads", "1", "--no-progress"]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    r = reference_curves(digits, cfg=AttackConfig(**{**CFG, "trials": 3, "steps": 4}), device="cpu", progress=False)
    assert (r["computed"], r["cached"]) == (0, N_CACHE)


def test_refs_only_needs_no_method(digits, attacked):
    r = run_script("mia_on_mu_main_cifar20_fullclass.py", "--dataset", "Digits", "--log-root", digits.log_root,
                   "--refs-only", "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert f"{N_CACHE} cached, 0 computed" in r.stdout


@pytest.mark.numerical
def test_too_few_references_say_so_and_keep_the_games(digits, attacked):
    cfg = AttackConfig(**{**CFG, "retrain_refs": 1})
    res = reminiscence_attack(digits, method="baseline", para1=0, para2=0, cfg=cfg, device="cpu", progress=False)
    assert not res["calibrated"] and "1 of 1 reference" in res["calibration_note"]
    assert res["lines"][0].startswith("calibrated verdict unavailable") and "-seed" in res["lines"][0]
    v = _verdict(res, "output")
    assert v["index"]["direction"] == "undetermined" and "auc_one_sided" in v["retrain_game"]
    assert v["ood_game"]["auc"] >= 0.9
    cfg0 = AttackConfig(**{**CFG, "retrain_refs": 0})  # none: the same-seed retrain run stands in, uncalibrated
    res0 = reminiscence_attack(digits, method="baseline", para1=0, para2=0, cfg=cfg0, device="cpu", progress=False)
    assert not res0["calibrated"] and [r["seed"] for r in res0["references"]] == [digits.seed]


@pytest.mark.parametrize("net", ["SmallCNN", "ResNet18", "ViT", "WRN28_2"])
def test_feature_reset_gives_every_model_the_same_forget_row(net):
    from models import get_model

    a, b = (get_model(net, 6, in_channels=3, image_size=32) for _ in range(2))
    torch.manual_seed(1)
    for p in b.parameters():
        p.data.add_(torch.randn_like(p))
    wk, bk = classifier_keys(a, 6)
    ra, rb = (reset_forget_row(m, m.state_dict(), 2, 6) for m in (a, b))
    assert torch.equal(ra[wk][2], rb[wk][2]) and torch.equal(ra[bk][2], rb[bk][2])
    assert torch.equal(ra[wk][0], a.state_dict()[wk][0]) and not torch.equal(ra[wk][2], a.state_dict()[wk][2])
    a.load_state_dict(ra)  # still a valid state dict of the model


def test_feature_reset_finds_the_last_linear_without_get_classifier():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    assert classifier_keys(model, 3) == ("2.weight", "2.bias")
    with pytest.raises(ValueError, match="no get_classifier"):
        classifier_keys(model, 5)


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
    """relearn_curves (vmap over stacked model copies) reproduces relearn_curve curve by curve.

    In float64, so that the tolerance is the arithmetic's (:func:`curve_rtol`) and holds on any CPU: in
    float32 the two paths' reorderings differ by up to 2e-3 after 8 steps, machine-dependently, which
    would hide a real difference of that size; in float64 the bound is ~1e-11.
    """
    from datasets.splits import TensorSet
    from models import get_model

    torch.manual_seed(0)
    model = get_model(net, 8, in_channels=3, image_size=8).double()
    x, y = torch.randn(120, 3, 8, 8, dtype=torch.float64), torch.randint(0, 8, (120,))
    retain = TensorSet(x, y, torch.arange(30, 120), "retain")
    states = [{k: v.clone() for k, v in model.state_dict().items()}]
    with torch.no_grad():  # a second, different starting point (as a reference model in the attack)
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    states.append({k: v.clone() for k, v in model.state_dict().items()})
    curves = [(states[i % 2], x[6 * i: 6 * i + 6], torch.zeros(6, dtype=torch.long), 10 + i) for i in range(3)]
    kw = dict(lr=0.005, steps=8, retain_per_step=5)  # small: a diverging curve would amplify rounding
    acc, loss = relearn_curves(model, curves, retain, **kw)
    rtol = curve_rtol(model, batch=6, image=8 * 8, steps=kw["steps"], dtype=np.float64)
    for i, (st, cx, cy, seed) in enumerate(curves):
        a, l = relearn_curve(model, st, cx, cy, retain, seed=seed, **kw)
        np.testing.assert_allclose(loss[i], l, rtol=rtol)
        assert np.abs(acc[i] - a).max() <= 1 / 6 + 1e-9  # at most one near-tie flips
    assert np.abs(loss[0] - loss[1]).max() > 1e6 * rtol * np.abs(loss[0]).max()  # a real difference is far larger


def curve_rtol(model, *, batch: int, image: int, steps: int, dtype) -> float:
    """The rounding bound of two evaluations of one curve that sum in different orders.

    The batched (vmap) and the one-at-a-time path run the same arithmetic with the reductions ordered
    differently. The worst-case relative error of a sum of n terms is gamma_n ~ n * u (unit roundoff u;
    Higham), taken as n * eps (eps = 2u) for the two paths together; the longest reduction of a step is the
    larger of a layer's fan-in and a weight gradient's sum over the batch's positions (batch * image); each
    of the curve's steps starts from the previous one's weights, so the bounds add up over the steps.
    """
    fan_in = max(p[0].numel() for p in model.parameters() if p.dim() > 1)
    return steps * max(fan_in, batch * image) * float(np.finfo(dtype).eps)


def test_missing_unlearned_model_names_forget_command(tmp_path, digits, pretrained):
    r = run_script("mia_on_mu_main_cifar20_fullclass.py", "--dataset", "Digits", "-method", "SCRUB",
                   "--log-root", tmp_path)
    assert r.returncode == 2
    line = r.stderr.strip()
    assert "\n" not in line and "forget_full_class_main" in line and "-method SCRUB" in line


def test_bad_attack_input_is_one_line(tmp_path, digits, pretrained):
    r = run_script("mia_on_mu_main_cifar20_fullclass.py", "--dataset", "Digits", "--log-root", tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--refs-only" in r.stderr
    r = run_script("mia_on_mu_main_cifar20_fullclass.py", "--dataset", "Digits", "--log-root", tmp_path, "--refs-only")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "pretrain_model" in r.stderr
    assert not any(tmp_path.rglob("*.npz"))
