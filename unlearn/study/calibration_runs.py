"""The calibration study's runs: from a log root to the numbers of its document.

What the study is and why it is built so: :mod:`unlearn.study.calibration` (its docstring). Here: the
setting, the N forget-stage ``retrain`` runs through run.py's job graph (resumable) and the retrained
models they leave, each model's statistic (its mean member curve area, curves cached as the attack
caches them), the dosed models and their files (one plain-SGD trajectory per held-out model; files made
from the same record are reused), the same trajectories with the pretraining optimiser (accuracies
only), and :func:`run_study`, which does all of that and hands the statistics to
:func:`unlearn.study.calibration_rates.analyse`. The design and the analysis come from
:mod:`unlearn.study.calibration_rates`; the document is :mod:`unlearn.study.calibration_report`'s.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import config
from ..core.engine import accuracy, resolve_device, sgd
from ..core.errors import UsageError
from ..core.recipe import pretrain_recipe
from ..evaluation.rea import reference as ref
from ..evaluation.rea import stats as S
from ..evaluation.rea.population import LEVELS, AttackConfig, Relearner
from ..methods import pretrain_l1
from ..methods.entries import entry_for
from ..pipeline.runner import pretrain_jobs, reference_jobs, run_jobs
from ..store.checkpoint import save_checkpoint
from ..store.identity import file_sha256
from ..store.setting import Setting
from .calibration_rates import ALPHA, COMMAND, DOSE_BATCH, DOSES, HELD_OUT, KS, N_MODELS, N_SPLITS, RS, analyse
from .plan import grid_entries, setting

DATASET = "Digits"
DOSE_MOMENTUM = 0.0  # plain SGD: momentum 0.9 (the pretraining optimiser's) broke the models (dose_models)
DOSE_WEIGHT_DECAY = 0.0  # plain SGD: a dose step is p - lr * grad
ATTACK_SEED = 0
DOSE_VERSION = "dose-2"  # bump when dose_models changes what a dose file holds


def base_setting(log_root) -> Setting:
    return setting(DATASET, log_root)


def attack_config(dataset: str = DATASET) -> AttackConfig:
    return AttackConfig(**config.ATTACK[dataset])


def reference_runs(base: Setting, n: int, *, jobs: int = 1, dry_run: bool = False, progress: bool = True) -> dict:
    """Pretraining (the forget stage loads it) and ``n`` forget-stage ``retrain`` runs of the method
    list's entry, seeds ``config.REFERENCE_SEED_BASE + 0..n-1``, through run.py's job graph: finished
    runs are reused. Returns :func:`run_jobs`'s status."""
    retrain = entry_for("retrain", grid_entries(base.dataset))
    pre = pretrain_jobs(base, [retrain], stages=["pretrain"], method_l1=lambda m: pretrain_l1(m, base.dataset))
    refs = reference_jobs(base, retrain, n, deps=[j.name for j in pre])
    return run_jobs(pre + refs, n_jobs=jobs, dry_run=dry_run, progress=progress, batch=jobs == 1)


def retrained_models(base: Setting, n: int) -> list[tuple[int, Path]]:
    found = ref.find_references(base, n)
    if len(found) < n:
        missing = sorted(set(ref.reference_seeds(n)) - {s for s, _ in found})
        raise UsageError(f"{len(found)} of {n} retrained models found (missing seeds {missing[:5]}); "
                         f"run {COMMAND} again (finished runs are reused)")
    return found


def model_statistic(rl: Relearner, path: Path, *, lr: float, level: str, desc: str = "") -> tuple[float, bool]:
    """(the mean member curve area of the model file ``path``, whether its curves came from the cache)."""
    curves, hit = rl.cached(Path(path), lr=lr, level=level, desc=desc or Path(path).parent.name)
    return float(np.mean([S.curve_area(a) for a in curves["member"][0]])), hit


def dose_dir(base: Setting) -> Path:
    return base.stage_root("calibration_doses")


def dose_record(source: Path, seed: int, dose: int, lr: float) -> dict:
    """What determines a dose file: the source model's bytes, the dose, its batches' seed, the optimiser."""
    return {"version": DOSE_VERSION, "source_sha256": file_sha256(source), "seed": int(seed), "dose": int(dose),
            "forget_per_step": DOSE_BATCH, "retain_per_step": DOSE_BATCH, "lr": float(lr),
            "momentum": DOSE_MOMENTUM, "weight_decay": DOSE_WEIGHT_DECAY}


def read_dose(path: Path, record: dict) -> dict | None:
    """The dose file's recorded metrics when it exists and was made from ``record``; else None."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # missing or unreadable: redo
        return None
    got = obj.get("dose_record") if isinstance(obj, dict) else None
    return obj.get("dose_metrics") if got == record else None


def dose_batches(data, seed: int, steps: int):
    """The ``steps`` batches of one dose trajectory, in order: each ``DOSE_BATCH`` random forget-class
    training samples followed by as many retain samples, drawn from a generator seeded with ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    for _ in range(steps):
        f, r = data.forget_train.sample(DOSE_BATCH, g), data.retain_train.sample(DOSE_BATCH, g)
        yield torch.cat([f.x, r.x]), torch.cat([f.y, r.y])


def dose_optimizer(model, lr: float, *, momentum: float = DOSE_MOMENTUM, weight_decay: float = DOSE_WEIGHT_DECAY):
    """The dose's optimiser: by default plain SGD, each step ``p - lr * grad`` (see :func:`dose_models`
    for why not the pretraining optimiser's momentum 0.9)."""
    return sgd(model, lr, momentum=momentum, weight_decay=weight_decay)


def dose_step(model, opt, x, y) -> None:
    """One dose step: cross-entropy on the batch (``x``, ``y``) in train mode, one ``opt`` step."""
    model.train()
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def dose_trajectory(model, data, seed: int, doses, opt):
    """Run the ``max(doses)`` steps of one dose trajectory on ``model`` in place (:func:`dose_batches`,
    :func:`dose_step` with ``opt``), yielding each dose of ``doses`` (> 0) once the model has had it."""
    for step, (x, y) in enumerate(dose_batches(data, seed, max(doses)), 1):
        dose_step(model, opt, x, y)
        if step in doses:
            yield step


def _test_accuracies(model, data) -> dict:
    return {"forget_test": 100 * accuracy(model, data.forget_test),
            "retain_test": 100 * accuracy(model, data.retain_test)}


def dose_models(base: Setting, seed: int, source: Path, doses=DOSES, *, data, device) -> dict:
    """The dosed versions of one retrained model: {dose: (model file, metrics)}.

    One trajectory of ``max(doses)`` steps of plain SGD (:func:`dose_optimizer`: the dataset's
    pretraining lr, no momentum, no weight decay; a fresh optimiser; train mode), each on
    ``DOSE_BATCH`` random forget-class training samples and as many retain samples
    (:func:`dose_batches`, seeded with the model's ``seed``); dose k is the model after k steps, written
    to ``calibration_doses/seed{seed}/k{k}.pth`` (dose 0: ``source`` itself). Files made from the same
    record are reused. Metrics: forget- and retain-class test accuracy (%).

    No momentum because the pretraining optimiser's momentum 0.9 broke the models: its steps grow
    along the trajectory, and in the run of commit 08c6dd9 the mean retain-class test accuracy fell
    from 99.7% (dose 0) to 73.4% at dose 4 and 22.4% at dose 8, so the power curve measured breakage,
    not residual knowledge. Without momentum the forget class is learnt (mean forget-class test accuracy
    0, 0, 0, 85.6 and 99.3% at doses 1, 2, 4, 8, 16) while the mean retain-class test accuracy stays at
    98.7% or more (lowest single model 97.1%), in the run of this change; :func:`dose_accuracies`
    measures the pretraining optimiser again in every run, and the document reads both off."""
    lr = pretrain_recipe(base.dataset).lr
    folder = dose_dir(base) / f"seed{seed}"
    paths = {k: (source if k == 0 else folder / f"k{k}.pth") for k in doses}
    records = {k: dose_record(source, seed, k, lr) for k in doses}
    known = {k: read_dose(paths[k], records[k]) for k in doses if k}
    model, obj = base.load_model(source, device, fix="rerun the retrain run")
    out = {0: (source, _test_accuracies(model, data))} if 0 in doses else {}
    if all(v is not None for v in known.values()):
        return {**out, **{k: (paths[k], known[k]) for k in doses if k}}
    meta = dict(model_name=base.net, num_classes=base.num_outputs, dataset=base.dataset,
                class_map=base.split.class_map, config=obj.get("config", {}))
    for step in dose_trajectory(model, data, seed, doses, dose_optimizer(model, lr)):
        m = _test_accuracies(model, data)
        save_checkpoint(paths[step], model, **meta, extra={"dose_record": records[step], "dose_metrics": m})
        out[step] = (paths[step], m)
    return out


def dose_accuracies(base: Setting, seed: int, source: Path, doses=DOSES, *, data, device, momentum: float,
                    weight_decay: float) -> dict:
    """{dose: forget- and retain-class test accuracy (%)} of the same trajectory as :func:`dose_models`
    (same lr, same batches) with another optimiser, no files: the study runs it with the pretraining
    optimiser's momentum and weight decay to show what the plain-SGD dose avoids."""
    model, _ = base.load_model(source, device, fix="rerun the retrain run")
    out = {0: _test_accuracies(model, data)} if 0 in doses else {}
    opt = dose_optimizer(model, pretrain_recipe(base.dataset).lr, momentum=momentum, weight_decay=weight_decay)
    for step in dose_trajectory(model, data, seed, doses, opt):
        out[step] = _test_accuracies(model, data)
    return out


def run_study(base: Setting, *, n_models: int = N_MODELS, held_out: int = HELD_OUT, doses=DOSES,
              n_splits: int = N_SPLITS, jobs: int = 1, device="auto", progress: bool = True, seed: int = 0,
              dry_run: bool = False) -> dict | None:
    """Everything: the retrain runs, every model statistic, the doses, the analysis. The numbers of
    the document (``numbers.json``), or None after ``dry_run``."""
    if n_models - held_out < 2 or n_models < max(KS) + max(RS):
        raise UsageError(f"{n_models} models with {held_out} held out: the negative controls need at least "
                         f"{max(KS) + max(RS)} models and the power part at least 2 references")
    t = {}
    t0 = time.perf_counter()
    status = reference_runs(base, n_models, jobs=jobs, dry_run=dry_run, progress=progress)
    if dry_run:
        return None
    failed = {k: v for k, v in status.items() if v[0] != 0}
    if failed:
        raise UsageError(f"{len(failed)} runs failed, e.g. {next(iter(failed.items()))}")
    t["runs"] = {"seconds": time.perf_counter() - t0, "ran": sum(v[1] != "already done" for v in status.values()),
                 "runs": len(status)}
    models = retrained_models(base, n_models)
    cfg = attack_config(base.dataset)
    cfg.validate(base)
    lr = float(cfg.relearning_lr[0])
    dev = resolve_device(device)
    t0 = time.perf_counter()
    rl = Relearner(replace(base, seed=ATTACK_SEED), cfg, dev, progress=progress)
    stats, hits = {lv: [] for lv in LEVELS}, {"cached": 0, "computed": 0}
    for s, path in models:
        for lv in LEVELS:
            v, hit = model_statistic(rl, path, lr=lr, level=lv, desc=f"seed{s} {lv}")
            stats[lv].append(v)
            hits["cached" if hit else "computed"] += 1
    t["statistics"] = {"seconds": time.perf_counter() - t0, **hits}

    t0 = time.perf_counter()
    data = base.load_data(dev)
    dosed_models = models[n_models - held_out:]
    recipe = pretrain_recipe(base.dataset)
    dose_info, dosed, dhits = [], {lv: {k: [] for k in doses} for lv in LEVELS}, {"cached": 0, "computed": 0}
    pre_info = []  # the same trajectories with the pretraining optimiser: accuracies only
    for s, path in dosed_models:
        made = dose_models(base, s, path, doses, data=data, device=dev)
        dose_info.append({"seed": s, **{str(k): m for k, (_, m) in made.items()}})
        pre = dose_accuracies(base, s, path, doses, data=data, device=dev, momentum=recipe.momentum,
                              weight_decay=recipe.weight_decay)
        pre_info.append({"seed": s, **{str(k): m for k, m in pre.items()}})
        for k, (p, _) in made.items():
            for lv in LEVELS:
                v, hit = model_statistic(rl, p, lr=lr, level=lv, desc=f"seed{s} dose {k} {lv}")
                dosed[lv][k].append(v)
                dhits["cached" if hit else "computed"] += 1
    t["doses"] = {"seconds": time.perf_counter() - t0, **dhits}

    t0 = time.perf_counter()
    margin_sd = float(config.REA_MARGIN_SD)
    out = {"dataset": base.dataset, "tag": base.tag, "forget_class": base.forget_class, "ood": base.ood_classes,
           "attack": {**config.ATTACK[base.dataset], "seed": ATTACK_SEED, "lr_used": lr},
           "retrain_entry": list(entry_for("retrain", grid_entries(base.dataset))[:3]),
           "seeds": [s for s, _ in models], "held_out_seeds": [s for s, _ in dosed_models],
           "margin_sd": margin_sd, "alpha": ALPHA, "n_splits": n_splits, "split_seed": seed, "doses": list(doses),
           "replicates": config.REPLICATES[base.dataset],
           "dose": {"forget_per_step": DOSE_BATCH, "retain_per_step": DOSE_BATCH, "lr": recipe.lr,
                    "momentum": DOSE_MOMENTUM, "weight_decay": DOSE_WEIGHT_DECAY},
           "dose_metrics": dose_info,
           "pretraining_optimiser": {"lr": recipe.lr, "momentum": recipe.momentum,
                                     "weight_decay": recipe.weight_decay},
           "dose_metrics_pretraining_optimiser": pre_info}
    out.update(analyse(stats, dosed, held_out=held_out, n_splits=n_splits, margin_sd=margin_sd, seed=seed))
    t["analysis"] = {"seconds": time.perf_counter() - t0}
    out["timings"] = t
    return out
