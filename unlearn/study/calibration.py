"""The calibration of the verdict itself (``studies/calibration.py``, ``docs/calibration.md``).

The replicated decision (:func:`unlearn.evaluation.rea.decide.decide_means`: a permutation test of
the model labels for K >= 2, the prediction t-test for K = 1, TOST for equivalence) labels a method
``residual``, ``over-suppressed``, ``equivalent`` or ``undetermined`` from K model statistics of the
method against R of retrained references. Its error rates were so far only simulated
(:mod:`unlearn.evaluation.rea.calibration`, normal statistics). Here they are measured on real
Digits models:

* **Negative controls.** N retrained models (forget-stage ``retrain`` runs of the method list's
  entry, seeds ``config.REFERENCE_SEED_BASE + 0..N-1``, run through run.py's job graph, resumable).
  Every split of them into K "method" models and R references is an experiment whose truth is known:
  the method *is* retraining. ``residual`` and ``over-suppressed`` are false differences,
  ``equivalent`` is the right call. Random disjoint (K, R) splits reuse the same N models, so their
  rates are the rates of experiments drawn without replacement from *these* models, not of N / (K + R)
  independent experiments; :func:`disjoint_splits` gives the independent ones (few), and
  :func:`population_spread` how far a rate over splits of N normal models strays from its expectation.
* **Positive controls.** The ``held_out`` models of the highest seeds (never references here; the
  references are the others) each get a known dose of the forget class: k steps of plain SGD (no
  momentum, no weight decay), each on ``DOSE_BATCH`` forget-class training samples plus as many
  retain samples, at the pretraining lr (:func:`dose_models`; the doses of one model are the prefixes
  of one trajectory, dose 0 is the retrained model itself). Power: every K-subset of the dosed models
  at one dose against the R references (:func:`power_rows`). Why no momentum: with the pretraining
  optimiser (momentum 0.9) the dose broke the models from 4 steps on (the run of commit 08c6dd9: mean
  retain-class test accuracy 99.7% at dose 0, 73.4% at dose 4, 22.4% at dose 8), so its power curve
  measured breakage, not residual knowledge, and was not monotone. Every run measures that again on
  accuracies alone (:func:`dose_accuracies` with the pretraining optimiser) and the document shows it
  beside the plain-SGD doses.

The model statistic (:func:`model_statistic`): the mean over the attack's trials of a model's
forget-class ("member") curve area (:func:`unlearn.evaluation.rea.stats.curve_area`) at one level, at
the dataset's first relearning lr, with ``config.ATTACK[dataset]`` and the attack seed 0 (the same
candidate sets for every model; :class:`unlearn.evaluation.rea.population.Relearner`, curves cached
as the attack caches them). The margin: ``config.REA_MARGIN_SD`` x the sd of each experiment's
references (:func:`unlearn.evaluation.rea.decide.margin_from_refs`).

Pure functions on arrays of model statistics first (tested on synthetic ones in
tests/test_calibration.py), then the runs, the figures, the document and the command line.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import config
from ..core.cli import Parser, positive_int
from ..core.engine import accuracy, resolve_device, sgd
from ..core.errors import UsageError
from ..core.recipe import pretrain_recipe
from ..evaluation.rea import reference as ref
from ..evaluation.rea import stats as S
from ..evaluation.rea.calibration import decide_arrays, simulate_rates
from ..evaluation.rea.decide import LABELS, decide_means, margin_from_refs
from ..evaluation.rea.population import LEVELS, AttackConfig, Relearner
from ..methods import pretrain_l1
from ..methods.entries import entry_for
from ..pipeline.runner import pretrain_jobs, reference_jobs, run_jobs
from ..store.checkpoint import atomic_write_json, atomic_write_text, save_checkpoint, save_figure
from ..store.identity import file_sha256
from ..store.setting import Setting
from .plan import grid_entries, setting

COMMAND = "python studies/calibration.py"
DATASET = "Digits"
N_MODELS = 30
KS = (1, 3)
RS = (3, 5, 10, 20)
N_SPLITS = 20000  # random splits per (K, R): Monte Carlo sd of a 5% rate 0.15 points
SPREAD_SPLITS = 2000  # per simulated population in population_spread (50 x 20000 exact permutation tests: too slow)
HELD_OUT = 10  # the models of the highest seeds: dosed, never references in the power part
DOSES = (0, 1, 2, 4, 8, 16)
DOSE_BATCH = 8  # forget-class samples per dose step, and as many retain samples
DOSE_MOMENTUM = 0.0  # plain SGD: momentum 0.9 (the pretraining optimiser's) broke the models (module docstring)
DOSE_WEIGHT_DECAY = 0.0  # plain SGD: a dose step is p - lr * grad
POWER_K = 3  # the dosed method's models per experiment (and K = 1); its references: every model not held out
ATTACK_SEED = 0
ALPHA = 0.05
DOSE_VERSION = "dose-2"  # bump when dose_models changes what a dose file holds
FALSE = ("residual", "over-suppressed")


# ---------------------------------------------------------------- pure functions (synthetic-testable)

def draw_splits(n: int, k: int, r: int, n_splits: int, rng: np.random.Generator) -> np.ndarray:
    """``n_splits`` random (K method, R reference) splits of ``n`` models: rows of ``k + r`` distinct
    model indices, the first ``k`` the method's. Rows are independent draws (models recur across rows)."""
    if k < 1 or r < 1 or k + r > n:
        raise ValueError(f"need 1 <= K, 1 <= R and K + R <= {n}, got K={k} R={r}")
    return np.argsort(rng.random((n_splits, n)), axis=1)[:, : k + r]


def disjoint_splits(n: int, k: int, r: int, rng: np.random.Generator) -> np.ndarray:
    """One random partition of ``n`` models into ``n // (k + r)`` disjoint (K, R) splits: experiments
    that share no model, hence independent when the models are."""
    if k < 1 or r < 1 or k + r > n:
        raise ValueError(f"need 1 <= K, 1 <= R and K + R <= {n}, got K={k} R={r}")
    m = n // (k + r)
    return rng.permutation(n)[: m * (k + r)].reshape(m, k + r)


def decide_split(method: np.ndarray, refs: np.ndarray, *, margin_sd: float, alpha: float = ALPHA):
    """The replicated decision of one experiment: model statistics of the method's models and of the
    references; margin = ``margin_sd`` x the references' sd, as :func:`margin_from_refs` sets it."""
    refs = np.asarray(refs, float)
    margin = margin_from_refs(refs[:, None], margin_sd)
    return decide_means(np.asarray(method, float), refs, margin=margin, alpha=alpha)


def label_splits(stats: np.ndarray, splits: np.ndarray, k: int, *, margin_sd: float,
                 alpha: float = ALPHA) -> np.ndarray:
    """The label of every split (:func:`draw_splits` rows) of the model statistics ``stats``: the
    rule of :func:`decide_split` vectorised (:func:`decide_arrays`, checked label for label against
    it by the tests), since one permutation test per split would take hours here."""
    stats = np.asarray(stats, float)
    m, refs = stats[splits[:, :k]], stats[splits[:, k:]]
    margin = margin_sd * refs.std(1, ddof=1) if refs.shape[1] >= 2 else np.nan
    return decide_arrays(m, refs, margin, alpha)


def rates(labels) -> dict:
    """The rate of each label of :data:`LABELS` (they sum to 1), plus ``false_difference``
    (``residual`` + ``over-suppressed``) and ``n``."""
    lab = np.asarray(labels, dtype=object)
    if lab.size == 0:
        raise ValueError("no labels")
    out = {k: float(np.mean(lab == k)) for k in LABELS}
    out["false_difference"] = out["residual"] + out["over-suppressed"]
    out["n"] = int(lab.size)
    return out


def counts(labels) -> dict:
    lab = np.asarray(labels, dtype=object)
    return {k: int(np.sum(lab == k)) for k in LABELS}


def binomial_ci(k: int, n: int, level: float = 0.95) -> list[float]:
    """The exact (Clopper-Pearson) interval of a rate k / n."""
    from scipy.stats import binomtest  # lazy: start-up time

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
    return [float(ci.low), float(ci.high)]


def negative_control(stats: np.ndarray, *, Ks=KS, Rs=RS, n_splits: int = N_SPLITS, margin_sd: float,
                     alpha: float = ALPHA, seed: int = 0) -> list[dict]:
    """Label rates of retrained-vs-retrained experiments: for each (K, R), ``n_splits`` random splits
    (:func:`draw_splits`) and one partition into disjoint ones (:func:`disjoint_splits`).
    ``stats``: the N model statistics of one level. One row per (K, R), in order."""
    stats = np.asarray(stats, float)
    n = stats.size
    rows = []
    for i, (k, r) in enumerate(itertools.product(Ks, Rs)):
        rng = np.random.default_rng([seed, i])
        lab = label_splits(stats, draw_splits(n, k, r, n_splits, rng), k, margin_sd=margin_sd, alpha=alpha)
        part = disjoint_splits(n, k, r, rng)
        dlab = label_splits(stats, part, k, margin_sd=margin_sd, alpha=alpha)
        c = counts(dlab)
        false = c["residual"] + c["over-suppressed"]
        rows.append({"K": k, "R": r, **rates(lab),
                     "disjoint": {"n": int(len(part)), "counts": c, "false_difference": false,
                                  "false_difference_ci": binomial_ci(false, len(part)),
                                  "equivalent_ci": binomial_ci(c["equivalent"], len(part))}})
    return rows


def simulated_expectation(*, Ks=KS, Rs=RS, margin_sd: float, alpha: float = ALPHA, n_sim: int = 40000,
                          seed: int = 0) -> list[dict]:
    """What the normal model of :mod:`unlearn.evaluation.rea.calibration` predicts for the same
    (K, R) at shift 0 (with equal spreads its rates depend on nothing else)."""
    return [simulate_rates(K=k, R=r, shift_sd=0.0, margin_sd=margin_sd, n_sim=n_sim, seed=seed + i, alpha=alpha)
            for i, (k, r) in enumerate(itertools.product(Ks, Rs))]


def population_spread(*, n: int, Ks=KS, Rs=RS, n_splits: int = SPREAD_SPLITS, n_pop: int = 50, margin_sd: float,
                      alpha: float = ALPHA, seed: int = 0) -> list[dict]:
    """How far a rate over random splits of one population of ``n`` models strays from its
    expectation: ``n_pop`` populations of ``n`` normal model statistics, each split as
    :func:`negative_control` does (vectorised rule, :func:`decide_arrays`); per (K, R) the sd over
    populations of each label's rate. The Monte Carlo error of the splits (about
    sqrt(p (1 - p) / n_splits)) is included; most of the spread is the population's."""
    rows = []
    for i, (k, r) in enumerate(itertools.product(Ks, Rs)):
        rng = np.random.default_rng([seed, 1000 + i])
        per = {lab: [] for lab in (*LABELS, "false_difference")}
        for _ in range(n_pop):
            s = rng.normal(size=n)
            sp = draw_splits(n, k, r, n_splits, rng)
            m, rf = s[sp[:, :k]], s[sp[:, k:]]
            lab = decide_arrays(m, rf, margin_sd * rf.std(1, ddof=1), alpha)
            rt = rates(lab)
            for key in per:
                per[key].append(rt[key])
        rows.append({"K": k, "R": r, "n_pop": n_pop, "n_splits": n_splits, **{f"sd_{key}": float(np.std(v, ddof=1)) for key, v in per.items()},
                     **{f"mean_{key}": float(np.mean(v)) for key, v in per.items()}})
    return rows


def method_groups(n: int, k: int, n_max: int, rng: np.random.Generator) -> np.ndarray:
    """K-subsets of ``n`` dosed models: all of them when there are at most ``n_max``, else ``n_max``
    random ones (distinct models within a subset)."""
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= K <= {n}, got {k}")
    if math.comb(n, k) <= n_max:
        return np.array(list(itertools.combinations(range(n), k)), dtype=int).reshape(-1, k)
    return np.argsort(rng.random((n_max, n)), axis=1)[:, :k]


def power_rows(dosed: dict, refs: np.ndarray, *, k: int = POWER_K, n_max: int = N_SPLITS, margin_sd: float,
               alpha: float = ALPHA, seed: int = 0) -> list[dict]:
    """Label rates of dosed methods against fixed references: ``dosed`` {dose: statistics of the held-out
    models (same order at every dose)}, ``refs`` the references' statistics. The same K-subsets
    (:func:`method_groups`) at every dose. Also the mean shift in reference sd: of the dosed models'
    mean from the references' (``shift_sd``) and, paired, from the same models undosed
    (``paired_shift_sd``, when dose 0 is given)."""
    refs = np.asarray(refs, float)
    sd = float(refs.std(ddof=1))
    first = np.asarray(next(iter(dosed.values())), float)
    groups = method_groups(first.size, k, n_max, np.random.default_rng([seed, k]))
    base = np.asarray(dosed[0], float) if 0 in dosed else None
    rows = []
    for dose, values in dosed.items():
        v = np.asarray(values, float)
        lab = decide_arrays(v[groups], np.broadcast_to(refs, (len(groups), refs.size)),
                            margin_from_refs(refs[:, None], margin_sd), alpha)  # decide_split, vectorised
        row = {"dose": dose, "K": k, "R": int(refs.size), **rates(lab),
               "mean": float(v.mean()), "shift_sd": float((v.mean() - refs.mean()) / sd)}
        if base is not None:
            d = (v - base) / sd
            row.update(paired_shift_sd=float(d.mean()), paired_shift_sd_spread=float(d.std(ddof=1)) if d.size > 1 else 0.0)
        rows.append(row)
    return rows


def describe(stats) -> dict:
    """Mean, sd, extremes and the Shapiro-Wilk normality p-value of model statistics."""
    from scipy.stats import shapiro  # lazy: start-up time

    s = np.asarray(stats, float)
    return {"n": int(s.size), "mean": float(s.mean()), "sd": float(s.std(ddof=1)), "min": float(s.min()),
            "max": float(s.max()), "shapiro_p": float(shapiro(s).pvalue) if s.size >= 3 else math.nan}


def analyse(stats: dict, dosed: dict, *, held_out: int, n_splits: int = N_SPLITS, margin_sd: float,
            alpha: float = ALPHA, seed: int = 0, n_sim: int = 40000, n_pop: int = 50) -> dict:
    """The whole analysis from model statistics: ``stats`` {level: the N models' statistics, by seed},
    ``dosed`` {level: {dose: the held-out models' statistics}}; the held-out models are the last
    ``held_out`` of the N, the power part's references all the others. Returns ``levels`` (per level:
    the statistics, their description, the negative controls, the power rows for K = POWER_K and 1,
    the power references' description), ``simulated`` and ``population_spread``."""
    levels = {}
    for lv, values in stats.items():
        s = np.asarray(values, float)
        refs = s[: s.size - held_out]
        d = {int(k): np.asarray(v, float) for k, v in dosed[lv].items()}
        levels[lv] = {
            "statistics": [float(x) for x in s], "describe": describe(s),
            "negative_control": negative_control(s, n_splits=n_splits, margin_sd=margin_sd, alpha=alpha, seed=seed),
            "dosed": {str(k): [float(x) for x in v] for k, v in d.items()},
            "power": {str(k): power_rows(d, refs, k=k, n_max=n_splits, margin_sd=margin_sd, alpha=alpha, seed=seed)
                      for k in (POWER_K, 1)},
            "power_refs": describe(refs),
        }
    n = len(next(iter(stats.values())))
    return {"levels": levels, "alpha": alpha, "margin_sd": margin_sd, "n_splits": n_splits,
            "simulated": simulated_expectation(margin_sd=margin_sd, alpha=alpha, n_sim=n_sim, seed=seed),
            "population_spread": population_spread(n=n, n_splits=min(n_splits, SPREAD_SPLITS), n_pop=n_pop,
                                                   margin_sd=margin_sd, alpha=alpha, seed=seed)}


# ---------------------------------------------------------------- the runs

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
    """The dose's optimiser: by default plain SGD, each step ``p - lr * grad`` (see the module docstring
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


# ---------------------------------------------------------------- figures

def _dose_axis(ax, doses):
    ax.set_xticks(range(len(doses)), [str(d) for d in doses])
    ax.set_xlabel("dose: SGD steps on forget-class samples")


def plot_negative(stem, numbers: dict) -> list[str]:
    """Label rates of retrained-vs-retrained experiments against R, one panel per level and K."""
    from matplotlib.figure import Figure  # lazy: start-up time

    fig = Figure(figsize=(10, 7), layout="constrained")
    axes = fig.subplots(len(LEVELS), len(KS), squeeze=False, sharey=True)
    sim = {(r["K"], r["R"]): r for r in numbers["simulated"]}
    for i, lv in enumerate(LEVELS):
        rows = numbers["levels"][lv]["negative_control"]
        for j, k in enumerate(KS):
            ax = axes[i, j]
            rs = [r for r in rows if r["K"] == k]
            x = [r["R"] for r in rs]
            for key, colour in (("false_difference", "crimson"), ("residual", "tab:red"),
                                ("over-suppressed", "tab:blue"), ("equivalent", "tab:green"),
                                ("undetermined", "0.5")):
                ax.plot(x, [r[key] for r in rs], "o-", color=colour, label=key.replace("_", " "),
                        lw=2 if key == "false_difference" else 1)
            for key, colour in (("equivalent", "tab:green"),):
                ax.plot(x, [sim[(k, r)][key] for r in x], ":", color=colour, label="equivalent, normal model")
            ax.plot(x, [sim[(k, r)]["residual"] + sim[(k, r)]["over-suppressed"] for r in x], ":", color="crimson",
                    label="false difference, normal model")
            ax.axhline(numbers["alpha"], color="k", lw=0.6, ls="--")
            ax.set_xscale("log")
            ax.minorticks_off()
            ax.set_xticks(x, [str(v) for v in x])
            ax.set_title(f"{lv} level, K = {k}")
            ax.set_xlabel("R (references)")
            ax.set_ylabel("rate over splits")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"{numbers['tag']}: retrained models split into method and references "
                 f"({numbers['n_splits']} splits of {len(numbers['seeds'])} models; dashed: alpha)")
    return save_figure(fig, stem, formats=("png",), dpi=110)


def plot_power(stem, numbers: dict) -> list[str]:
    """Label rates of dosed methods (K = 3 and K = 1) against the R references, per level, by dose, and
    what the dose does to the models' test accuracy (forget class, retain classes)."""
    from matplotlib.figure import Figure  # lazy: start-up time

    doses = numbers["doses"]
    fig = Figure(figsize=(15, 4.8), layout="constrained")
    axes = fig.subplots(1, len(LEVELS) + 1)
    for ax, lv in zip(axes, LEVELS):
        for k, style in ((str(POWER_K), "o-"), ("1", "s--")):
            rows = numbers["levels"][lv]["power"][k]
            for key, colour in (("residual", "tab:red"), ("equivalent", "tab:green"), ("undetermined", "0.5"),
                                ("over-suppressed", "tab:blue")):
                ax.plot(range(len(doses)), [r[key] for r in rows], style, color=colour, ms=4,
                        label=f"{key}, K = {k}", lw=1.5 if k != "1" else 0.8)
        ax.axhline(numbers["alpha"], color="k", lw=0.6, ls="--")
        _dose_axis(ax, doses)
        ax.set_ylabel("rate")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{lv} level")
    h, lab = axes[0].get_legend_handles_labels()
    fig.legend(h, lab, loc="outside lower center", ncol=4, fontsize=7)
    ax = axes[-1]
    for key, colour in (("forget_test", "tab:red"), ("retain_test", "tab:green")):
        v = np.array([[m[str(d)][key] for d in doses] for m in numbers["dose_metrics"]])
        for row in v:
            ax.plot(range(len(doses)), row, "-", color=colour, alpha=0.3, lw=0.7)
        ax.plot(range(len(doses)), v.mean(0), "o-", color=colour, label=key.replace("_", " ") + " accuracy (mean)")
        if numbers.get("dose_metrics_pretraining_optimiser"):
            w = np.array([[m[str(d)][key] for d in doses] for m in numbers["dose_metrics_pretraining_optimiser"]])
            ax.plot(range(len(doses)), w.mean(0), "x:", color=colour,
                    label=f"{key.replace('_', ' ')}, momentum {numbers['pretraining_optimiser']['momentum']:g} (mean)")
    _dose_axis(ax, doses)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("what the dose does (plain SGD: each model, mean bold;\ndotted: with the pretraining optimiser)", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle(f"{numbers['tag']}: dosed retrained models against "
                 f"{len(numbers['seeds']) - len(numbers['held_out_seeds'])} references")
    return save_figure(fig, stem, formats=("png",), dpi=110)


def plot_statistics(stem, numbers: dict) -> list[str]:
    """Each held-out model's statistic by dose, over the references' mean and margin band."""
    from matplotlib.figure import Figure  # lazy: start-up time

    doses = numbers["doses"]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    for ax, lv in zip(fig.subplots(1, len(LEVELS)), LEVELS):
        L = numbers["levels"][lv]
        d = L["power_refs"]
        ax.axhspan(d["mean"] - numbers["margin_sd"] * d["sd"], d["mean"] + numbers["margin_sd"] * d["sd"],
                   color="0.88", label=f"references: mean ± {numbers['margin_sd']:g} sd (margin)")
        ax.axhline(d["mean"], color="0.4", lw=0.8)
        vals = np.array([L["dosed"][str(k)] for k in doses])  # (doses, models)
        for j in range(vals.shape[1]):
            ax.plot(range(len(doses)), vals[:, j], "-", color="tab:red", alpha=0.35, lw=0.8)
        ax.plot(range(len(doses)), vals.mean(1), "o-", color="tab:red", label="held-out models (mean bold)")
        ax.plot(np.full(len(L["statistics"]), -0.35), L["statistics"], "_", color="k", ms=8,
                label="all retrained models")
        _dose_axis(ax, doses)
        ax.set_ylabel("model statistic: mean member curve area")
        ax.set_title(f"{lv} level")
        ax.legend(fontsize=7)
    fig.suptitle(f"{numbers['tag']}: the model statistic of dosed retrained models")
    return save_figure(fig, stem, formats=("png",), dpi=110)


# ---------------------------------------------------------------- the document

def _p(x) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{100 * x:.1f}%"


def _f(x, d=3) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{d}f}"


def _md(header, rows) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(out + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def negative_table(numbers: dict, lv: str) -> str:
    sim = {(r["K"], r["R"]): r for r in numbers["simulated"]}
    spread = {(r["K"], r["R"]): r for r in numbers["population_spread"]}
    head = ["K", "R", "false residual", "false over-suppressed", "false difference (sum)", "± between populations",
            "normal model", "equivalent", "± between populations", "normal model", "undetermined",
            "disjoint splits: false / equivalent / n"]
    rows = []
    for r in numbers["levels"][lv]["negative_control"]:
        s, sp, d = sim[(r["K"], r["R"])], spread[(r["K"], r["R"])], r["disjoint"]
        rows.append([r["K"], r["R"], _p(r["residual"]), _p(r["over-suppressed"]), f"**{_p(r['false_difference'])}**",
                     _p(sp["sd_false_difference"]), _p(s["residual"] + s["over-suppressed"]), _p(r["equivalent"]),
                     _p(sp["sd_equivalent"]), _p(s["equivalent"]), _p(r["undetermined"]),
                     f"{d['false_difference']} / {d['counts']['equivalent']} / {d['n']}"])
    return _md(head, rows)


def _acc(values) -> str:
    return f"{np.mean(values):.1f} [{min(values):.1f}, {max(values):.1f}]"


def dose_accuracy(numbers: dict, key: str = "dose_metrics") -> dict:
    """{dose: {"forget_test": [...], "retain_test": [...]}}: each dosed model's test accuracies (%), in the
    order of the held-out seeds, from ``numbers[key]`` (the plain-SGD doses, or
    ``dose_metrics_pretraining_optimiser``)."""
    return {d: {a: [m[str(d)][a] for m in numbers[key]] for a in ("forget_test", "retain_test")}
            for d in numbers["doses"]}


def power_table(numbers: dict, lv: str, k: str) -> str:
    head = ["dose", "forget-class test acc. (%) mean [min, max]", "retain-class test acc. (%) mean [min, max]",
            "shift (ref. sd)", "paired shift (ref. sd)", "residual", "equivalent", "undetermined", "over-suppressed",
            "experiments"]
    acc = dose_accuracy(numbers)
    rows = [[r["dose"], _acc(acc[r["dose"]]["forget_test"]), _acc(acc[r["dose"]]["retain_test"]),
             _f(r["shift_sd"], 2), f"{_f(r['paired_shift_sd'], 2)} ± {_f(r['paired_shift_sd_spread'], 2)}",
             f"**{_p(r['residual'])}**", _p(r["equivalent"]), _p(r["undetermined"]), _p(r["over-suppressed"]), r["n"]]
            for r in numbers["levels"][lv]["power"][k]]
    return _md(head, rows)


def stats_table(numbers: dict) -> str:
    head = ["level", "models", "mean", "sd", "min", "max", "Shapiro-Wilk p", "power references: mean", "sd",
            f"margin ({numbers['margin_sd']:g} sd)"]
    rows = []
    for lv in LEVELS:
        d, p = numbers["levels"][lv]["describe"], numbers["levels"][lv]["power_refs"]
        rows.append([lv, d["n"], _f(d["mean"]), _f(d["sd"]), _f(d["min"]), _f(d["max"]), _f(d["shapiro_p"]),
                     _f(p["mean"]), _f(p["sd"]), _f(numbers["margin_sd"] * p["sd"])])
    return _md(head, rows)


def dose_effect_table(numbers: dict) -> str:
    """Each dose's test accuracies (mean [min, max] over the dosed models): the plain-SGD doses of the
    study and, when measured, the same trajectories with the pretraining optimiser."""
    pre = numbers.get("dose_metrics_pretraining_optimiser")
    o = numbers.get("pretraining_optimiser", {})
    head = ["dose", "forget-class test acc. (%): plain SGD (the dose)", "retain-class: plain SGD"]
    if pre:
        head += [f"forget-class: momentum {o['momentum']:g}, weight decay {o['weight_decay']:g}",
                 f"retain-class: momentum {o['momentum']:g}, weight decay {o['weight_decay']:g}"]
    acc = dose_accuracy(numbers)
    pacc = dose_accuracy(numbers, "dose_metrics_pretraining_optimiser") if pre else None
    rows = []
    for d in numbers["doses"]:
        row = [d, _acc(acc[d]["forget_test"]), _acc(acc[d]["retain_test"])]
        if pre:
            row += [_acc(pacc[d]["forget_test"]), _acc(pacc[d]["retain_test"])]
        rows.append(row)
    return _md(head, rows)


INTACT_POINTS = 5.0  # a dose leaves the model intact while its mean retain-class test accuracy is within this of dose 0's


def dose_effects(numbers: dict, key: str = "dose_metrics") -> dict:
    """{dose: mean forget- and retain-class test accuracy of the dosed models, and the lowest retain one}
    (``key``: as in :func:`dose_accuracy`)."""
    return {d: {"forget_test": float(np.mean(a["forget_test"])), "retain_test": float(np.mean(a["retain_test"])),
                "retain_min": float(min(a["retain_test"]))} for d, a in dose_accuracy(numbers, key).items()}


def intact_doses(numbers: dict, key: str = "dose_metrics") -> list:
    """The doses before the first one whose mean retain-class test accuracy falls more than
    :data:`INTACT_POINTS` below dose 0's."""
    eff, doses = dose_effects(numbers, key), numbers["doses"]
    floor = eff[doses[0]]["retain_test"] - INTACT_POINTS
    bad = next((i for i, d in enumerate(doses) if eff[d]["retain_test"] < floor), len(doses))
    return doses[:bad]


def _power_row(numbers: dict, lv: str, dose) -> dict:
    return next(r for r in numbers["levels"][lv]["power"][str(POWER_K)] if r["dose"] == dose)


def paired_mean(numbers: dict, lv: str, dose) -> float:
    return _power_row(numbers, lv, dose).get("paired_shift_sd", math.nan)


def moves(numbers: dict, lv: str, dose) -> tuple[int, int, int]:
    """(models whose statistic rose from dose 0, models whose statistic fell, models) at ``dose``."""
    L = numbers["levels"][lv]["dosed"]
    d = np.asarray(L[str(dose)]) - np.asarray(L[str(numbers["doses"][0])])
    return int((d > 0).sum()), int((d < 0).sum()), int(d.size)


def paired_spread(numbers: dict, lv: str, dose) -> float:
    return _power_row(numbers, lv, dose).get("paired_shift_sd_spread", math.nan)


def k1_equivalence_bound(R: int, alpha: float) -> float:
    """The smallest margin (in reference sd) at which one method model (K = 1) can ever be called
    equivalent with R references: TOST needs ``margin - t_{1-alpha, R-1} * sd * sqrt(1 + 1/R) > |diff| >= 0``,
    and the margin is ``margin_sd`` x the same sd."""
    from scipy.stats import t as student_t  # lazy: start-up time

    return float(student_t.ppf(1 - alpha, R - 1) * math.sqrt(1 + 1 / R))


def permutation_bound(k: int, r: int, alpha: float) -> tuple[int, int, float]:
    """The largest false-difference rate the exact two-sided permutation test can have at K, R: (splits
    rejected, splits, their ratio). p = 2 min(count below, count above) / C(K + R, K), counting the observed
    split; ``p < alpha`` holds for the ``t`` most extreme splits in each tail, ``t = ceil(alpha C / 2) - 1``."""
    c = math.comb(k + r, k)
    t = max(math.ceil(alpha * c / 2) - 1, 0)
    return 2 * t, c, 2 * t / c


def requirement(numbers: dict) -> dict:
    """The negative-control row of each level at the project's setting (K = ``numbers["replicates"]``
    method models, R = ``attack["retrain_refs"]`` references): its false-difference rate against alpha,
    with the between-population sd and the normal model's expectation of that rate."""
    K, R = numbers["replicates"], numbers["attack"]["retrain_refs"]
    sp = next(r for r in numbers["population_spread"] if (r["K"], r["R"]) == (K, R))
    sim = next(r for r in numbers["simulated"] if (r["K"], r["R"]) == (K, R))
    out = {}
    for lv in LEVELS:
        r = next(x for x in numbers["levels"][lv]["negative_control"] if (x["K"], x["R"]) == (K, R))
        out[lv] = {"K": K, "R": R, "residual": r["residual"], "over-suppressed": r["over-suppressed"],
                   "false_difference": r["false_difference"], "n": r["n"], "sd": sp["sd_false_difference"],
                   "normal": sim["residual"] + sim["over-suppressed"], "disjoint": r["disjoint"],
                   "excess_sd": (r["false_difference"] - numbers["alpha"]) / sp["sd_false_difference"]}
    return out


def requirement_lines(numbers: dict) -> list[str]:
    """One plain sentence per level: the false residual + over-suppressed rate at the project's K, R
    against the alpha requirement."""
    a, out = numbers["alpha"], []
    for lv, q in requirement(numbers).items():
        fd, n_models = q["false_difference"], len(numbers["seeds"])
        if fd <= a:
            verdict = f"**Within** the {_p(a)} requirement ({100 * (a - fd):.2f} points below it)."
        else:
            pts = 100 * (fd - a)
            verdict = (f"**Above** the {_p(a)} requirement by {pts:.{2 if pts >= 0.01 else 3}f} points, "
                       f"{q['excess_sd']:.2f} between-population sd: "
                       + (f"within twice that spread, so these {n_models} models do not show that the rate of the "
                          f"population they come from exceeds {_p(a)}." if q["excess_sd"] <= 2 else
                          "more than twice that spread, so the rule errs more often on these models than the "
                          "requirement allows."))
        if q["K"] >= 2:
            _, _, bound = permutation_bound(q["K"], q["R"], a)
            k_false = round(fd * q["n"])
            lo, hi = binomial_ci(k_false, q["n"])
            verdict += (f" The permutation test's exact bound here is {100 * bound:.2f}%; {k_false} of {q['n']} "
                        f"splits ({100 * fd:.2f}%, exact 95% interval [{100 * lo:.2f}%, {100 * hi:.2f}%]) are "
                        + ("consistent with it." if lo <= bound else "more than the bound allows."))
        d = q["disjoint"]
        out.append(f"**{lv} level: {_p(fd)} ± {_p(q['sd'])}** (between populations of {n_models} normal models) "
                   f"false differences: false residual {_p(q['residual'])} + false over-suppressed "
                   f"{_p(q['over-suppressed'])} over {q['n']} splits at K = {q['K']}, R = {q['R']} (the normal model "
                   f"expects {_p(q['normal'])}). {verdict} The disjoint splits give {d['n']} independent "
                   f"experiment{'s' if d['n'] != 1 else ''} at this size ({d['false_difference']} false).")
    return out


def findings(numbers: dict) -> list[str]:
    """The sentences of "What it shows", each read off the numbers (so a rerun cannot contradict them)."""
    a = numbers["alpha"]
    spread = {(r["K"], r["R"]): r for r in numbers["population_spread"]}
    sim = {(r["K"], r["R"]): r for r in numbers["simulated"]}
    out = []
    for lv in LEVELS:
        L = numbers["levels"][lv]
        rows = L["negative_control"]
        worst = max(rows, key=lambda r: r["false_difference"])
        above = [r for r in rows if r["false_difference"] > a + 2 * spread[(r["K"], r["R"])]["sd_false_difference"]]
        out.append(f"**{lv} level, negative controls.** The false-difference rate (residual + over-suppressed) over "
                   f"splits ranges {_p(min(r['false_difference'] for r in rows))}-{_p(worst['false_difference'])} "
                   f"(worst at K = {worst['K']}, R = {worst['R']}; alpha {_p(a)}). "
                   + ("No cell exceeds alpha by more than twice the between-population spread of 30 normal models."
                      if not above else
                      f"{len(above)} cell(s) exceed alpha by more than twice the between-population spread: "
                      + ", ".join(f"K = {r['K']}, R = {r['R']}: {_p(r['false_difference'])}" for r in above) + ".")
                   + " Equivalent (the right call): "
                   + ", ".join(f"K = {r['K']}, R = {r['R']}: {_p(r['equivalent'])} (normal model "
                               f"{_p(sim[(r['K'], r['R'])]['equivalent'])})" for r in rows if r["R"] in (3, 20)) + ".")
        res = {r["dose"]: r for r in L["power"][str(POWER_K)]}
        doses = numbers["doses"]
        first = next((d for d in doses if res[d]["residual"] >= 0.8), None)
        r0 = res[doses[0]]
        neg = next(r for r in rows if r["K"] == POWER_K and r["R"] == r0["R"]) if any(
            r["K"] == POWER_K and r["R"] == r0["R"] for r in rows) else None
        intact = intact_doses(numbers)
        falls = [(x, y) for x, y in zip(doses, doses[1:]) if res[y]["residual"] < res[x]["residual"] - 0.1]
        s = (f"**{lv} level, positive controls (K = {POWER_K}, R = {r0['R']}).** At dose 0 (the held-out retrained "
             f"models themselves) the labels are residual {_p(r0['residual'])}, over-suppressed "
             f"{_p(r0['over-suppressed'])}, equivalent {_p(r0['equivalent'])}: the held-out models' mean lies "
             f"{_f(r0['shift_sd'], 2)} reference sd from the references'")
        s += (f" (over random K = {POWER_K}, R = {r0['R']} splits of all {len(numbers['seeds'])} models, equivalent "
              f"{_p(neg['equivalent'])}, over-suppressed {_p(neg['over-suppressed'])}), so this fixed split is one "
              f"draw and the dose effects are best read paired. " if neg else ". ")
        s += (f"Residual reaches 80% first at dose {first} (paired shift {_f(res[first]['paired_shift_sd'], 2)} "
              f"reference sd). " if first is not None else
              f"Residual never reaches 80% (largest: {_p(max(r['residual'] for r in res.values()))}). ")
        s += ("Over the doses that leave the model intact (" + ", ".join(map(str, intact)) + "), residual: "
              + ", ".join(f"{_p(res[d]['residual'])} at {d}" for d in intact) + ". ")
        if falls:
            s += ("Power is not monotone in the dose: residual falls "
                  + ", ".join(f"from {_p(res[x]['residual'])} at dose {x} to {_p(res[y]['residual'])} at dose {y}"
                              for x, y in falls) + ".")
        out.append(s)
    eff = dose_effects(numbers)
    doses, intact = numbers["doses"], intact_doses(numbers)
    broken = [d for d in doses if d not in intact]
    if broken:
        low = min(doses, key=lambda d: eff[d]["retain_test"])
        out.append(f"**Large doses break the model.** From dose {broken[0]} the mean retain-class test accuracy falls "
                   f"from {_f(eff[doses[0]]['retain_test'], 1)}% (dose 0) to {_f(eff[broken[0]]['retain_test'], 1)}% "
                   f"(lowest: {_f(eff[low]['retain_test'], 1)}% at dose {low}, one model at "
                   f"{_f(eff[low]['retain_min'], 1)}%) while the forget class is {_f(eff[broken[0]]['forget_test'], 1)}% "
                   f"right: with {DOSE_BATCH} of {2 * DOSE_BATCH} samples per step from the forget class at lr "
                   f"{numbers['dose']['lr']} and momentum {numbers['dose']['momentum']}, the forget class crowds out the "
                   f"others. Such a model is no small residual. At dose {low} the statistic "
                   + " and ".join(f"rises for {up} and falls for {down} of the {n} models at the {lv} level (paired shift "
                                  f"{_f(paired_mean(numbers, lv, low), 2)} ± {_f(paired_spread(numbers, lv, low), 2)} "
                                  f"reference sd)" for lv, (up, down, n) in
                                  ((lv, moves(numbers, lv, low)) for lv in LEVELS))
                   + f"; a likely reason is that the relearning steps ({numbers['attack']['retain_per_step']} "
                   f"retain samples beside each candidate) then mostly repair the retain classes. The power curves "
                   f"from dose {broken[0]} on measure this breakage, not a dose of residual knowledge.")
    else:
        d0, last = eff[doses[0]], eff[doses[-1]]
        learnt = next((d for d in doses if eff[d]["forget_test"] >= 50.0), None)
        out.append(f"**The dose teaches the forget class without breaking the model.** With plain SGD (momentum "
                   f"{numbers['dose']['momentum']:g}, weight decay {numbers['dose']['weight_decay']:g}) the mean "
                   f"forget-class test accuracy is " + ", ".join(f"{_f(eff[d]['forget_test'], 1)}%" for d in doses)
                   + f" at doses {', '.join(map(str, doses))}"
                   + (f" (above 50% first at dose {learnt})" if learnt is not None else "")
                   + f", while the mean retain-class test accuracy stays between "
                   f"{_f(min(e['retain_test'] for e in eff.values()), 1)}% and "
                   f"{_f(max(e['retain_test'] for e in eff.values()), 1)}% (dose 0: {_f(d0['retain_test'], 1)}%; "
                   f"lowest single model {_f(min(e['retain_min'] for e in eff.values()), 1)}%; every dose within "
                   f"{INTACT_POINTS:g} points of dose 0). At dose {doses[-1]} the forget class is "
                   f"{_f(last['forget_test'], 1)}% right.")
    if numbers.get("dose_metrics_pretraining_optimiser"):
        key, o = "dose_metrics_pretraining_optimiser", numbers["pretraining_optimiser"]
        pe, pint = dose_effects(numbers, key), intact_doses(numbers, key)
        pbroken = [d for d in doses if d not in pint]
        s = (f"**Why the dose has no momentum.** The same trajectories (same lr {o['lr']:g}, same batches) with the "
             f"pretraining optimiser (momentum {o['momentum']:g}, weight decay {o['weight_decay']:g}), measured in "
             f"this run on accuracies alone, take the mean retain-class test accuracy from "
             f"{_f(pe[doses[0]]['retain_test'], 1)}% at dose 0 to " + ", ".join(
                 f"{_f(pe[d]['retain_test'], 1)}% at dose {d}" for d in doses[1:]))
        if pbroken:
            plow = min(doses, key=lambda d: pe[d]["retain_test"])
            s += (f": from dose {pbroken[0]} on it breaks the models (lowest single model "
                  f"{_f(pe[plow]['retain_min'], 1)}% at dose {plow}), so a power curve over those doses would "
                  f"measure breakage, not residual knowledge.")
        else:
            s += f": within {INTACT_POINTS:g} points of dose 0 at every dose here."
        out.append(s)
    hidden = [d for d in intact if d and eff[d]["forget_test"] <= 1.0]
    for d in hidden:
        o, f = _power_row(numbers, "output", d), _power_row(numbers, "feature", d)
        if max(o["residual"], f["residual"]) < 0.5:
            continue
        out.append(f"**Dose {d} is invisible to accuracy, not to the attack.** Its models still get "
                   f"{_f(eff[d]['forget_test'], 1)}% of the forget class's test images right (dose 0: "
                   f"{_f(eff[doses[0]]['forget_test'], 1)}%), yet K = {POWER_K} experiments call it residual in "
                   f"{_p(o['residual'])} at the output level (paired shift {_f(o['paired_shift_sd'], 2)} reference sd) "
                   f"and {_p(f['residual'])} at the feature level ({_f(f['paired_shift_sd'], 2)}).")
    small = [d for d in intact if d]
    if small:
        po = [paired_mean(numbers, "output", d) for d in small]
        pf = [paired_mean(numbers, "feature", d) for d in small]
        less = max(pf) < max(po)
        out.append(f"**The feature level sees small doses {'less' if less else 'as well or better'}.** "
                   f"Paired shifts at the intact doses {small}: output " + ", ".join(_f(x, 2) for x in po)
                   + ", feature " + ", ".join(_f(x, 2) for x in pf) + " reference sd."
                   + (" The feature level resets the forget row of the classifier, so what a few steps did to "
                      "that row does not count there." if less else ""))
    k1 = [r for lv in LEVELS for r in numbers["levels"][lv]["negative_control"] if r["K"] == 1]
    bounds = {R: k1_equivalence_bound(R, a) for R in sorted({r["R"] for r in k1})}
    if k1 and all(r["equivalent"] == 0 for r in k1) and all(b > numbers["margin_sd"] for b in bounds.values()):
        out.append(f"**K = 1 can never be called equivalent at this margin.** With one method model TOST needs a "
                   f"margin above t(1 - alpha, R - 1) x sqrt(1 + 1/R) reference sd: "
                   + ", ".join(f"R = {R}: {b:.2f}" for R, b in bounds.items())
                   + f", all above {numbers['margin_sd']:g}. The negative controls at K = 1 are therefore "
                   f"`undetermined` whenever they are not a false difference: one model per method can show a "
                   f"difference, never its absence.")
    return out


def write_document(out: Path, numbers: dict, timings: dict) -> Path:
    """``out/calibration.md`` and ``out/calibration/`` (figures, numbers.json), each written atomically."""
    figs = out / "calibration"
    figs.mkdir(parents=True, exist_ok=True)
    plot_negative(figs / "negative_controls", numbers)
    plot_power(figs / "power", numbers)
    plot_statistics(figs / "statistics", numbers)
    a = numbers["attack"]
    n = len(numbers["seeds"])
    held = numbers["held_out_seeds"]
    when = "; ".join(f"{k} {v['seconds']:.0f} s" + (f" ({v['ran']} of {v['runs']} runs ran)" if "ran" in v else "")
                     + (f" ({v['computed']} curve sets computed, {v['cached']} cached)" if "computed" in v else "")
                     for k, v in timings["last"].items())
    first = timings.get("work", {})
    work = "; ".join(f"{k} {v['seconds']:.0f} s" for k, v in first.items()) or "not recorded"
    d = numbers["dose"]
    doses, po = numbers["doses"], numbers.get("pretraining_optimiser")
    pe = pbroken = None
    if numbers.get("dose_metrics_pretraining_optimiser"):
        pe = dose_effects(numbers, "dose_metrics_pretraining_optimiser")
        pbroken = [k for k in doses if k not in intact_doses(numbers, "dose_metrics_pretraining_optimiser")]
    req = requirement(numbers)
    K, R = next(iter(req.values()))["K"], next(iter(req.values()))["R"]
    parts = [
        "# Calibration of the Reminiscence Attack's verdict on Digits\n",
        f"Made by `{COMMAND}` (`unlearn/study/calibration.py`); every number below is computed by it from the "
        f"runs under its log root and is also in [`calibration/numbers.json`](calibration/numbers.json). "
        f"Rerunning reuses finished runs and cached curves.\n",
        "## What was run\n",
        f"- **Models.** {n} retrained {numbers['tag']} models (forget class {numbers['forget_class']}, OOD "
        f"{numbers['ood']}): forget-stage `retrain` runs of the method list's entry {numbers['retrain_entry']}, "
        f"seeds {numbers['seeds'][0]}..{numbers['seeds'][-1]} (`config.REFERENCE_SEED_BASE` + 0..{n - 1}), run "
        f"through run.py's job graph.",
        f"- **Model statistic.** The mean over the attack's {a['trials']} trials of the forget-class (member) curve "
        f"area, at the output and the feature level, relearning lr {a['lr_used']}, the attack configuration of "
        f"`config.ATTACK['{numbers['dataset']}']` ({a['unlearn_data_percent']}% of the forget class as candidates, "
        f"{a['steps']} steps, {a['retain_per_step']} retain samples per step) and attack seed {a['seed']}: every "
        f"model relearns the same candidate sets with the same step plans.",
        f"- **Decision.** `decide_means` (for K >= 2 the permutation test of the pooled t statistic over every "
        f"split of the K + R models, for K = 1 the prediction t-test; TOST for equivalence; alpha "
        f"{numbers['alpha']}) with margin `config.REA_MARGIN_SD` = {numbers['margin_sd']:g} x the sd of each "
        f"experiment's references. The splits here are labelled by its vectorised form (`decide_arrays`, the "
        f"same rule, checked label for label by the tests).",
        f"- **Negative controls.** For K in {list(KS)} and R in {list(RS)}: {numbers['n_splits']} random splits of "
        f"the {n} models into K \"method\" models and R references, each decided; and one random partition of the "
        f"{n} models into disjoint splits (floor({n} / (K + R)) experiments that share no model).",
        f"- **Positive controls.** The {len(held)} models of the highest seeds ({held[0]}..{held[-1]}) are never "
        f"references here; the references are the other {n - len(held)}. Each held-out model gets a dose of "
        f"k in {numbers['doses']} steps of plain SGD, each on {d['forget_per_step']} forget-class training samples + "
        f"{d['retain_per_step']} retain samples (lr {d['lr']} = the pretraining lr, momentum {d['momentum']:g}, "
        f"weight decay {d['weight_decay']:g}: each step is p - lr x grad; batches drawn from a generator seeded with "
        f"the model's seed). The doses of one model are prefixes of one trajectory (a larger dose continues a smaller "
        f"one), and dose 0 is the retrained model itself. Power: every K = {POWER_K} subset of the dosed models (and "
        f"each one alone, K = 1) against the {n - len(held)} references."
        + (f" No momentum: with the pretraining optimiser (momentum {po['momentum']:g}, weight decay "
           f"{po['weight_decay']:g}) the same batches give a mean retain-class test accuracy of "
           f"{_f(pe[doses[0]]['retain_test'], 1)}% at dose 0, "
           + ", ".join(f"{_f(pe[k]['retain_test'], 1)}% at dose {k}" for k in doses[1:])
           + " in this run (accuracies only; table below)"
           + (f", so from dose {pbroken[0]} on it breaks the models and its power curve would measure breakage, "
              f"not residual knowledge." if pbroken else ".")
           if pe else ""),
        f"- **Wall time.** This invocation: {when}. Invocations that did the work (summed): {work}.\n",
        "## The model statistics\n",
        stats_table(numbers), "",
        "![statistics](calibration/statistics.png)\n",
        "## Negative controls: retrained against retrained\n",
        "Every experiment here compares retrained models with retrained models, so `residual` and `over-suppressed` "
        "are false differences and `equivalent` is the right call. *These rates are not rates of independent "
        f"experiments*: the {numbers['n_splits']} splits reuse the same {n} models, so they are the label rates of "
        f"experiments drawn without replacement from these {n} models. How far such a rate can stray from the rate "
        f"of the population the models come from is the \"± between populations\" column: the sd of the same rate "
        f"over {numbers['population_spread'][0]['n_pop']} simulated populations of {n} normal model statistics, "
        f"each split {numbers['population_spread'][0].get('n_splits', numbers['n_splits'])} times at random (fewer "
        f"splits than here where the cost demands it, so this spread is if anything too wide). \"normal model\" is the rate `unlearn/evaluation/rea/calibration.py` predicts for "
        f"independent normal experiments ({numbers['simulated'][0]['n_sim']} of them). The last column counts the "
        "labels of the disjoint splits, the only independent experiments these models give. For K >= 2 the "
        "difference test is a permutation test: within a split the K + R retrained models are exchangeable, so "
        "its false-difference rate over the splits of *any* fixed set of models is at most alpha by construction "
        f"(at K = {K}, R = {R}: {permutation_bound(K, R, numbers['alpha'])[0]} of the "
        f"{permutation_bound(K, R, numbers['alpha'])[1]} splits of a split's models, "
        f"{_p(permutation_bound(K, R, numbers['alpha'])[2])}); a measured rate above that is the Monte Carlo error "
        "of drawing the splits.\n",
    ]
    for lv in LEVELS:
        parts += [f"### {lv} level\n", negative_table(numbers, lv), ""]
        dis = [r for r in numbers["levels"][lv]["negative_control"] if r["disjoint"]["n"] >= 2]
        if dis:
            parts += ["Disjoint splits, false-difference rate with its exact 95% interval: " + "; ".join(
                f"K = {r['K']}, R = {r['R']}: {r['disjoint']['false_difference']}/{r['disjoint']['n']} "
                f"[{_p(r['disjoint']['false_difference_ci'][0])}, {_p(r['disjoint']['false_difference_ci'][1])}]"
                for r in dis) + ".\n"]
    parts += [f"### The {_p(numbers['alpha'])} requirement at K = {K}, R = {R}\n",
              f"K = {K} method models (`config.REPLICATES['{numbers['dataset']}']`) against R = {R} references "
              f"(`config.ATTACK['{numbers['dataset']}']['retrain_refs']`) is how the project decides. A method that "
              f"is retraining must be called `residual` or `over-suppressed` at most alpha = {_p(numbers['alpha'])} "
              f"of the time.\n",
              *[f"- {x}" for x in requirement_lines(numbers)], "",
              "![negative controls](calibration/negative_controls.png)\n",
              "## Positive controls: retrained models with a known dose of the forget class\n",
              "What a dose does to the held-out models (test accuracy on the forget class and on the retain classes, "
              "mean [min, max] over the models; every model's values are in `dose_metrics` of numbers.json)"
              + (", and what the same trajectories do with the pretraining optimiser (accuracies only, "
                 "`dose_metrics_pretraining_optimiser`)" if pe else "") + ":\n",
              dose_effect_table(numbers), "",
              "Shift: the dosed models' mean statistic minus the references' mean, in reference sd; paired: each "
              "model's dosed minus its own undosed statistic (mean ± sd over the models), in reference sd.\n"]
    for lv in LEVELS:
        parts += [f"### {lv} level, K = {POWER_K} (all subsets of the held-out models)\n",
                  power_table(numbers, lv, str(POWER_K)), "",
                  f"### {lv} level, K = 1 (each held-out model alone)\n", power_table(numbers, lv, "1"), ""]
    parts += ["![power](calibration/power.png)\n", "## What it shows\n", *[f"- {s}" for s in findings(numbers)], "",
              caveats(numbers)]
    atomic_write_text(out / "calibration.md", "\n".join(parts) + "\n")
    atomic_write_json(figs / "numbers.json", {**numbers, "timings": timings})
    return out / "calibration.md"


def caveats(numbers: dict) -> str:
    n_refs = len(numbers["seeds"]) - len(numbers["held_out_seeds"])
    return f"""## Limits of this calibration

- One dataset (Digits), one attack seed (one set of candidate sets and step plans) and one relearning lr: the
  rates are conditional on them. A different attack seed changes every model's statistic at once.
- The negative-control rates over splits reuse the same models (see above); the disjoint splits are
  independent but few, so their intervals are wide.
- A dose is an idealised residual: a few steps of ordinary training on the forget class, not what an
  unlearning method leaves behind; its doses are nested (one trajectory per model), so the dose curves of one
  model are not independent of each other.
- The dose is plain SGD on batches half of which are forget-class samples, at the pretraining lr; the ladder of
  doses ({", ".join(map(str, numbers["doses"]))} steps) is coarse, so the range between "invisible to accuracy"
  and "class learnt" is seen at a few points only.
- The power part's references are fixed (the same {n_refs} models in every experiment), so its rates are
  conditional on them; dose 0 gives the false-difference rate for these references and these held-out models.
"""


# ---------------------------------------------------------------- command line

def parser():
    p = Parser(description="Calibrate the Reminiscence Attack's replicated decision on retrained and dosed Digits "
                           "models and write docs/calibration.md.",
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", type=positive_int, default=N_MODELS, help="retrained models (negative controls)")
    p.add_argument("--held-out", "--held_out", dest="held_out", type=positive_int, default=HELD_OUT,
                   help="models of the highest seeds that get the doses")
    p.add_argument("--splits", type=positive_int, default=N_SPLITS, help="random splits per (K, R)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split draws")
    p.add_argument("--log-root", "--log_root", dest="log_root", default=str(Path(config.LOG_ROOT) / "calibration"))
    p.add_argument("--out", default="docs", help="folder of calibration.md and its figures (calibration/)")
    p.add_argument("--jobs", type=positive_int, default=1, help="parallel runs of the retrain job graph")
    p.add_argument("--device", default="auto", help="device of the relearning curves and the doses")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads of this process (curves, doses)")
    p.add_argument("--dry-run", action="store_true", help="print the retrain commands that would run and stop")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    base = base_setting(args.log_root)
    t0 = time.perf_counter()
    numbers = run_study(base, n_models=args.models, held_out=args.held_out, n_splits=args.splits, jobs=args.jobs,
                        device=args.device, progress=args.progress, seed=args.seed, dry_run=args.dry_run)
    if numbers is None:
        return 0
    last = {**numbers.pop("timings"), "total": {"seconds": time.perf_counter() - t0}}
    timing_file = Path(args.log_root) / "timings.json"
    try:
        work = json.loads(timing_file.read_text())
    except (OSError, ValueError):
        work = {}
    did = {"runs": last["runs"]["ran"] > 0, "statistics": last["statistics"]["computed"] > 0,
           "doses": last["doses"]["computed"] > 0}
    did.update(analysis=any(did.values()), total=any(did.values()))  # of the invocations that did some work
    for k, v in did.items():
        if v:
            w = work.setdefault(k, {"seconds": 0.0, "invocations": 0})
            w.update(seconds=w["seconds"] + last[k]["seconds"], invocations=w["invocations"] + 1)
    if any(did.values()):
        atomic_write_json(timing_file, work)
    path = write_document(Path(args.out), numbers, {"last": last, "work": work})
    for lv in LEVELS:
        for r in numbers["levels"][lv]["negative_control"]:
            print(f"{lv} K={r['K']} R={r['R']}: false residual {_p(r['residual'])}, false over-suppressed "
                  f"{_p(r['over-suppressed'])}, equivalent {_p(r['equivalent'])}")
        for r in numbers["levels"][lv]["power"][str(POWER_K)]:
            print(f"{lv} dose {r['dose']}: residual {_p(r['residual'])}, equivalent {_p(r['equivalent'])}, "
                  f"undetermined {_p(r['undetermined'])}, over-suppressed {_p(r['over-suppressed'])}, "
                  f"shift {r['shift_sd']:.2f} sd")
    print(f"{time.perf_counter() - t0:.0f}s -> {path}")
    return 0
