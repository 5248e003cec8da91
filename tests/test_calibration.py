"""The calibration study (unlearn/study/calibration_rates.py, calibration_runs.py,
calibration_findings.py, calibration_report.py) on synthetic model statistics and untrained models:
no real training, no curves."""
import json

import numpy as np
import pytest

from unlearn.evaluation.rea.decide import LABELS, decide_means
from unlearn.study import calibration_findings as findings
from unlearn.study import calibration_rates as rates
from unlearn.study import calibration_report as report
from unlearn.study import calibration_runs as runs


@pytest.mark.parametrize("k,r", [(1, 3), (3, 5), (3, 20), (1, 20)])
def test_splits_are_disjoint(k, r):
    rng = np.random.default_rng(0)
    sp = rates.draw_splits(30, k, r, 500, rng)
    assert sp.shape == (500, k + r)
    assert all(len(set(row)) == k + r for row in sp)  # method and references never share a model
    assert sp.min() >= 0 and sp.max() < 30
    part = rates.disjoint_splits(30, k, r, rng)
    assert part.shape == (30 // (k + r), k + r)
    assert len(set(part.ravel())) == part.size  # no model in two experiments
    with pytest.raises(ValueError):
        rates.draw_splits(10, 3, 8, 5, rng)


def test_labels_are_decide_means_and_rates_sum_to_one():
    rng = np.random.default_rng(1)
    stats = rng.normal(0.3, 0.05, 30)
    sp = rates.draw_splits(30, 3, 10, 300, rng)
    lab = rates.label_splits(stats, sp, 3, margin_sd=1.5)
    for i in range(0, 300, 10):  # the vectorised rule gives decide_means' label
        m, refs = stats[sp[i, :3]], stats[sp[i, 3:]]
        assert lab[i] == decide_means(m, refs, margin=1.5 * refs.std(ddof=1)).label == rates.decide_split(
            m, refs, margin_sd=1.5).label
    assert len(set(lab)) >= 2
    rt = rates.rates(lab)
    assert sum(rt[k] for k in LABELS) == pytest.approx(1.0)
    assert rt["false_difference"] == pytest.approx(rt["residual"] + rt["over-suppressed"])
    for row in rates.negative_control(stats, Ks=(1, 3), Rs=(3, 20), n_splits=100, margin_sd=1.5):
        assert sum(row[k] for k in LABELS) == pytest.approx(1.0)
        assert sum(row["disjoint"]["counts"].values()) == row["disjoint"]["n"] == 30 // (row["K"] + row["R"])


def test_method_groups():
    rng = np.random.default_rng(2)
    g = rates.method_groups(10, 3, 2000, rng)
    assert len(g) == 120 and len({tuple(x) for x in g}) == 120  # every triple once
    g = rates.method_groups(10, 3, 50, rng)
    assert g.shape == (50, 3) and all(len(set(x)) == 3 for x in g)


def test_dose_zero_reproduces_the_negative_control():
    rng = np.random.default_rng(3)
    stats = rng.normal(0.3, 0.05, 30)
    refs, held = stats[:20], stats[20:]
    sd = refs.std(ddof=1)
    dosed = {0: held, 4: held + 4 * sd}
    rows = {r["dose"]: r for r in rates.power_rows(dosed, refs, k=3, margin_sd=1.5)}
    groups = rates.method_groups(10, 3, 2000, rng)
    splits = np.hstack([groups + 20, np.broadcast_to(np.arange(20), (len(groups), 20))])
    neg = rates.rates(rates.label_splits(stats, splits, 3, margin_sd=1.5))
    assert {k: rows[0][k] for k in LABELS} == {k: neg[k] for k in LABELS}
    assert rows[0]["paired_shift_sd"] == 0.0
    assert rows[4]["paired_shift_sd"] == pytest.approx(4.0)
    assert rows[4]["residual"] > 0.9  # a 4 sd dose is found


def _metrics(broken: bool):
    """Per held-out model and dose: test accuracies that break the model at dose 4 or that do not."""
    return [{"seed": s, **{str(k): {"forget_test": 0.0 if k < 4 else 90.0,
                                    "retain_test": 95.0 if k < 4 or not broken else 50.0} for k in (0, 1, 4)}}
            for s in range(1020, 1030)]


def _numbers(rng, *, broken=True):
    stats = {lv: rng.normal(0.3, 0.05, 30) for lv in ("output", "feature")}
    dosed = {lv: {k: s[20:] + {0: 0.0, 1: 0.25, 4: 0.08}[k] for k in (0, 1, 4)} for lv, s in stats.items()}
    out = rates.analyse(stats, dosed, held_out=10, n_splits=150, margin_sd=1.5, n_sim=500, n_pop=4)
    out.update(dataset="Digits", tag="SmallCNN-Digits-10", forget_class=4, ood=[8, 9], doses=[0, 1, 4],
               attack={"trials": 10, "steps": 20, "unlearn_data_percent": 16.0, "retain_per_step": 14, "seed": 0,
                       "lr_used": 0.05, "retrain_refs": 20},
               replicates=3, retrain_entry=["retrain", None, None], seeds=list(range(1000, 1030)),
               held_out_seeds=list(range(1020, 1030)), split_seed=0,
               dose={"forget_per_step": 8, "retain_per_step": 8, "lr": 0.05, "momentum": 0.0, "weight_decay": 0.0},
               dose_metrics=_metrics(broken),
               pretraining_optimiser={"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
               dose_metrics_pretraining_optimiser=_metrics(True))
    return out


_TIMINGS = {"last": {"runs": {"seconds": 1.0, "ran": 0, "runs": 31},
                     "statistics": {"seconds": 2.0, "computed": 0, "cached": 60}, "total": {"seconds": 3.0}}, "work": {}}


def test_document_from_synthetic_numbers(tmp_path):
    numbers = _numbers(np.random.default_rng(4))
    path = report.write_document(tmp_path, numbers, _TIMINGS)
    text = path.read_text()
    assert "## Negative controls" in text and "## What it shows" in text and "nan" not in text.lower()
    assert "Large doses break the model" in text and "Dose 1 is invisible to accuracy" in text
    for fig in ("negative_controls", "power", "statistics"):
        assert (tmp_path / "calibration" / f"{fig}.png").stat().st_size > 0
    saved = json.loads((tmp_path / "calibration" / "numbers.json").read_text())
    assert saved["levels"]["output"]["power"]["3"][0]["n"] == 120
    assert saved["dose_metrics"][0]["4"] == {"forget_test": 90.0, "retain_test": 50.0}


def test_document_of_an_intact_dose(tmp_path):
    """Plain-SGD doses that leave the model intact, pretraining-optimiser ones that break it: the document
    says both, shows the accuracies in the power tables and states the K = 3, R = 20 requirement."""
    numbers = _numbers(np.random.default_rng(5), broken=False)
    text = report.write_document(tmp_path, numbers, _TIMINGS).read_text()
    assert "Large doses break the model" not in text
    assert "The dose teaches the forget class without breaking the model" in text
    assert "Why the dose has no momentum" in text and "from dose 4 on it breaks the models" in text
    assert "so from dose 4 on it breaks the models and its power curve" in text  # "What was run"
    assert "| 4 | 90.0 [90.0, 90.0] | 95.0 [95.0, 95.0] |" in text  # the power tables' accuracy columns
    assert "### The 5.0% requirement at K = 3, R = 20" in text
    for lv, q in findings.requirement(numbers).items():
        row = next(r for r in numbers["levels"][lv]["negative_control"] if (r["K"], r["R"]) == (3, 20))
        assert q["false_difference"] == row["residual"] + row["over-suppressed"]
        assert f"**{lv} level: {findings.percent(q['false_difference'])} ± {findings.percent(q['sd'])}**" in text


def test_doses_are_one_trajectory_and_reused(tmp_path):
    """16 tiny SGD steps on an untrained SmallCNN: dose 0 is the source file, doses are written once and
    reused (same bytes) when asked again."""
    import torch

    from unlearn.store.checkpoint import save_checkpoint
    from unlearn.store.identity import file_sha256

    base = runs.base_setting(tmp_path)
    src = tmp_path / "model.pth"
    save_checkpoint(src, base.new_model("cpu"), model_name=base.net, num_classes=base.num_outputs,
                    dataset=base.dataset, class_map=base.split.class_map)
    data = base.load_data(torch.device("cpu"))
    made = runs.dose_models(base, 1020, src, (0, 1, 4), data=data, device=torch.device("cpu"))
    assert made[0][0] == src and sorted(made) == [0, 1, 4]
    sums = {k: file_sha256(p) for k, (p, _) in made.items()}
    assert len(set(sums.values())) == 3  # every dose moved the model
    stamps = {k: p.stat().st_mtime_ns for k, (p, _) in made.items()}
    again = runs.dose_models(base, 1020, src, (0, 1, 4), data=data, device=torch.device("cpu"))
    assert {k: p.stat().st_mtime_ns for k, (p, _) in again.items()} == stamps
    assert {k: m for k, (_, m) in again.items()} == {k: m for k, (_, m) in made.items()}


def test_dose_step_is_plain_sgd():
    """Three dose steps on a tiny model: each is p - lr * grad at the current parameters (no momentum, no
    weight decay). With the pretraining optimiser's momentum the second step would differ."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    opt, lr = runs.dose_optimizer(model, 0.05), 0.05
    for _ in range(3):
        before = [p.detach().clone() for p in model.parameters()]
        grads = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y), list(model.parameters()))
        runs.dose_step(model, opt, x, y)
        for p, b, g in zip(model.parameters(), before, grads):
            assert torch.allclose(p.detach(), b - lr * g, atol=1e-7)
    heavy = torch.nn.Linear(4, 3)
    heavy.load_state_dict(model.state_dict())
    opt = runs.dose_optimizer(heavy, lr, momentum=0.9, weight_decay=0.0)
    runs.dose_step(heavy, opt, x, y)
    before = [p.detach().clone() for p in heavy.parameters()]
    grads = torch.autograd.grad(torch.nn.functional.cross_entropy(heavy(x), y), list(heavy.parameters()))
    runs.dose_step(heavy, opt, x, y)
    assert not all(torch.allclose(p.detach(), b - lr * g, atol=1e-7)
                   for p, b, g in zip(heavy.parameters(), before, grads))  # the check can see momentum


def test_dose_models_step_without_momentum(tmp_path):
    """dose_models on an untrained SmallCNN: the step from dose 1 to dose 2 is p - lr * grad of the second
    batch at dose 1's parameters, and the files record momentum 0 and weight decay 0."""
    import itertools

    import torch
    import torch.nn.functional as F

    from unlearn.core.recipe import pretrain_recipe
    from unlearn.store.checkpoint import save_checkpoint

    base = runs.base_setting(tmp_path)
    src = tmp_path / "model.pth"
    save_checkpoint(src, base.new_model("cpu"), model_name=base.net, num_classes=base.num_outputs,
                    dataset=base.dataset, class_map=base.split.class_map)
    cpu = torch.device("cpu")
    data = base.load_data(cpu)
    made = runs.dose_models(base, 1020, src, (0, 1, 2), data=data, device=cpu)
    lr = pretrain_recipe(base.dataset).lr
    m1, _ = base.load_model(made[1][0], cpu)
    m2, _ = base.load_model(made[2][0], cpu)
    x, y = next(itertools.islice(runs.dose_batches(data, 1020, 2), 1, None))  # the second step's batch
    m1.train()
    params = [p for p in m1.parameters()]
    grads = torch.autograd.grad(F.cross_entropy(m1(x), y), params)
    for p1, p2, g in zip(params, m2.parameters(), grads):
        assert torch.allclose(p2.detach(), p1.detach() - lr * g, atol=1e-6, rtol=1e-5)
    rec = torch.load(made[2][0], map_location="cpu", weights_only=True)["dose_record"]
    assert rec["momentum"] == 0.0 and rec["weight_decay"] == 0.0 and rec["lr"] == lr


def test_permutation_bound_is_the_exact_false_difference_rate():
    """Every split of 23 distinct values into 3 and 20: the permutation test rejects exactly the bound's count."""
    import itertools

    from unlearn.evaluation.rea.calibration import permutation_p_arrays

    x = np.random.default_rng(6).normal(size=23)  # distinct values: no two splits tie
    splits = [list(c) + [i for i in range(23) if i not in c] for c in itertools.combinations(range(23), 3)]
    p = permutation_p_arrays(x[[s[:3] for s in splits]], x[[s[3:] for s in splits]])
    rejected, total, rate = findings.permutation_bound(3, 20, 0.05)
    assert (rejected, total) == (88, 1771) and rate == pytest.approx(88 / 1771)
    assert int(np.sum(p < 0.05)) == rejected
    assert findings.permutation_bound(3, 3, 0.05)[0] == 0  # 20 splits: p >= 0.1, never rejected
