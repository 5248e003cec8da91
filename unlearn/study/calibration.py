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
  independent experiments; :func:`.calibration_rates.disjoint_splits` gives the independent ones
  (few), and :func:`.calibration_rates.population_spread` how far a rate over splits of N normal
  models strays from its expectation.
* **Positive controls.** The ``held_out`` models of the highest seeds (never references here; the
  references are the others) each get a known dose of the forget class: k steps of plain SGD (no
  momentum, no weight decay), each on ``DOSE_BATCH`` forget-class training samples plus as many
  retain samples, at the pretraining lr (:func:`.calibration_runs.dose_models`; the doses of one
  model are the prefixes of one trajectory, dose 0 is the retrained model itself). Power: every
  K-subset of the dosed models at one dose against the R references
  (:func:`.calibration_rates.power_rows`). Why no momentum: with the pretraining optimiser (momentum
  0.9) the dose broke the models from 4 steps on (the run of commit 08c6dd9: mean retain-class test
  accuracy 99.7% at dose 0, 73.4% at dose 4, 22.4% at dose 8), so its power curve measured breakage,
  not residual knowledge, and was not monotone. Every run measures that again on accuracies alone
  (:func:`.calibration_runs.dose_accuracies` with the pretraining optimiser) and the document shows
  it beside the plain-SGD doses.

The model statistic (:func:`.calibration_runs.model_statistic`): the mean over the attack's trials of
a model's forget-class ("member") curve area (:func:`unlearn.evaluation.rea.stats.curve_area`) at one
level, at the dataset's first relearning lr, with ``config.ATTACK[dataset]`` and the attack seed 0
(the same candidate sets for every model; :class:`unlearn.evaluation.rea.population.Relearner`,
curves cached as the attack caches them). The margin: ``config.REA_MARGIN_SD`` x the sd of each
experiment's references (:func:`unlearn.evaluation.rea.decide.margin_from_refs`).

The study lives in five modules of ``unlearn/study/``; their imports point one way (the runs and the
findings import the rates, the report imports the findings and the rates, this module all four):

* ``calibration_rates``: the design's sizes and the pure functions on arrays of model statistics
  (splits, decisions, label rates, power rows, the whole analysis), tested on synthetic statistics
  in tests/test_calibration.py;
* ``calibration_runs``: the retrain runs, the model statistics, the dosed models and their files,
  and ``run_study``, which does all of it and returns the numbers of the document;
* ``calibration_findings``: what the document reads off those numbers (its sentences, the alpha
  requirement, its number formats);
* ``calibration_report``: the figures, the tables and ``write_document``;
* this module: the command line of ``studies/calibration.py``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import config
from ..core.cli import Parser, positive_int
from ..evaluation.rea.population import LEVELS
from ..store.checkpoint import atomic_write_json
from .calibration_findings import percent
from .calibration_rates import HELD_OUT, N_MODELS, N_SPLITS, POWER_K
from .calibration_report import write_document
from .calibration_runs import base_setting, run_study


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
            print(f"{lv} K={r['K']} R={r['R']}: false residual {percent(r['residual'])}, false over-suppressed "
                  f"{percent(r['over-suppressed'])}, equivalent {percent(r['equivalent'])}")
        for r in numbers["levels"][lv]["power"][str(POWER_K)]:
            print(f"{lv} dose {r['dose']}: residual {percent(r['residual'])}, equivalent {percent(r['equivalent'])}, "
                  f"undetermined {percent(r['undetermined'])}, over-suppressed {percent(r['over-suppressed'])}, "
                  f"shift {r['shift_sd']:.2f} sd")
    print(f"{time.perf_counter() - t0:.0f}s -> {path}")
    return 0
