"""Settings that forget the class a user picks: a per-method Optuna search scored against retraining.

``run.py --tune`` (every method of the list) and ``tune_method.py`` (one method) run, per
(dataset, net, forget class, OOD set, seed, method), an Optuna study over the search space the
method declares at registration (:func:`unlearn.methods.search_space`).

**Objective** (minimised): closeness to the retrained model of the same setting and seed,
``|d_f - d_f,retrain| + w * max(0, d_t,retrain - d_t)`` with ``w`` = ``--tune_dt_weight`` (2):
forgetting counts point for point, and each point of retain-test accuracy lost below retraining
counts double, so utility is not traded for forgetting. The retrain metrics come from the newest
finished ``retrain`` run of that setting and seed (trained first, through the job graph, when
there is none); the baseline's d_t from the pretrained model.

**Replicates**: every trial runs on each replicate's pretrained model (``run.py --replicates``,
default ``config.REPLICATES``: pretraining seeds 0..K-1) and is scored by the worst of them
(:mod:`unlearn.tune.evaluator`): the largest objective, and the target met only when every replicate
meets it against its own baseline. A setting tuned on one model is a setting for that model; one that
holds on three is likelier to hold on the model another CPU makes.

**Trials** run in memory in a worker process that loads the data and the pretrained weights once
(a Digits trial costs about a second per replicate); they write no run folder, so the grid's tree and its
summary never see them. Each trial starts from the same seed as a forget run of that setting
(:func:`unlearn.stages.forget.unlearn_run`). The ``config.py`` setting is enqueued as the first trial,
so the best setting is never worse than the default. A trial is **pruned** (Optuna's
``TrialPruned``) when it diverges (non-finite loss or weights, after the run or at an ``_our``
run's mid point) or collapses (d_t after the run below half the baseline's). Over-unlearning is
allowed to collapse at the mid point: on Digits (forget class 4), 8 of 12 defaults measured (OUR, _our)
there sit at 14-29% d_t, near chance, and replay brings all 12 to 97.4-99.7%.

**Storage**: ``log_files/tune/{net}-{dataset}-{classes}/forget{c}-ood{a}_{b}/seed{s}/{method}/``
holds ``study.db`` (Optuna's SQLite storage), ``best.json`` (best setting, its metrics, trials,
seconds, study), ``history.png`` and ``importance.png``. The study's name hashes what its trials
depend on (starting checkpoint, space, objective, reference), so a study is resumed only when
its trials still count: a killed tuning resumes where it stood, and ``--jobs N`` workers (or SLURM
jobs) share one study. ``--tune_trials`` is the budget of finished (complete or pruned) trials.

**Use**: ``run.py``'s grid takes, per method, the setting of ``best.json`` for its setting and its
first seed when the checkpoint it was tuned on is unchanged (:func:`unlearn.tune.grid.tuned_entries`), and passes
``--opt tuned_from=<study>``, which the forget stage records in ``results.json``.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from ..core.errors import UsageError
from ..methods import check_space, get_method, pretrain_l1, search_space
from ..methods.entries import entry_for, normalise_entry
from ..pipeline.runner import build_jobs, run_jobs
from ..pipeline.slurm import Array, run_jobs_slurm, sbatch_text
from ..store.checkpoint import atomic_write_text
from ..store.setting import Setting
from .evaluator import Evaluator
from .folders import relative, settings_folder, study_folder
from .report import done_text, finish, report_text
from .studies import ensure_default, open_study
from .tasks import NOT_TUNED, plan_tasks, reference_metrics
from .worker import WorkerSpec, main as worker_main, run_worker, run_workers_local, run_workers_submitit


def prerequisite_jobs(base: Setting, entries, *, seeds, weight_path=None, extra_pretrain=(), replicates=(0,)) -> list:
    """Pretraining of every replicate (dense and L1-sparse, as the methods need) and the retrain run of each
    seed on the first replicate (retraining does not start from a pretrained model): the grid's own
    commands (``unlearn.pipeline.runner.build_jobs``), so the grid reuses them."""
    tuned = [normalise_entry(e) for e in entries if e[0] not in NOT_TUNED]
    jobs = build_jobs(base, methods=[entry_for("retrain", entries), *tuned], seeds=list(seeds),
                      stages=["pretrain", "forget"], attack={}, extra_pretrain=list(extra_pretrain),
                      weight_path=weight_path, method_l1=lambda m: pretrain_l1(m, base.dataset), retrain_refs=0,
                      replicates=tuple(replicates))
    first = replace(base, pretrain_seed=replicates[0]).replicate_tag
    groups = {f"forget:seed{s}{first}" for s in seeds}  # the first replicate's forget runs
    return [j for j in jobs if j.name.startswith("pretrain")
            or (j.name.startswith("forget:retrain-") and j.group in groups)]


def tune(base: Setting, entries, *, seeds, trials: int, sampler_seed: int = 0, dt_weight: float = 2.0,
         jobs: int = 1, threads: int | None = None, weight_path=None, device="auto", spaces=None,
         extra_pretrain=(), dry_run: bool = False, progress: bool = True, cluster=None,
         write_table: bool = True, replicates=(0,)) -> int:
    """Tune every tunable entry for each seed; print and write the table. Returns the exit code.

    ``replicates``: the pretraining seeds every trial runs on; a setting is scored by its worst
    replicate (:mod:`unlearn.tune.evaluator`), so what it recommends holds on models nobody tuned on.

    ``cluster``: :class:`unlearn.pipeline.slurm.ClusterOptions` to run the prerequisites and the workers
    through submitit (SLURM or its local executor); else they run here (``jobs`` workers).
    ``write_table``: also write the table to ``summary.md`` in the setting's folder (run.py).
    """
    entries = [normalise_entry(e) for e in entries]
    tunable, skipped = tunable_entries(entries, spaces)
    replicates = tuple(replicates)
    pre = prerequisite_jobs(base, entries, seeds=seeds, weight_path=weight_path, extra_pretrain=extra_pretrain,
                            replicates=replicates)
    if dry_run:
        _print_plan(base, tunable, skipped, pre, seeds=seeds, trials=trials, jobs=jobs, weight_path=weight_path,
                    cluster=cluster, progress=progress, replicates=replicates)
        return 0
    status = _run_prerequisites(pre, cluster, progress=progress)
    failed = {k: v for k, v in status.items() if v[0] != 0}
    if failed:
        print(f"tuning needs the pretrained model(s) and a retrain run of each seed; {len(failed)} failed:",
              file=sys.stderr)
        for k, (_, tail) in failed.items():
            print(f"  {k}: {tail}", file=sys.stderr)
        return 1
    for seed in seeds:
        _tune_seed(replace(base, seed=seed, pretrain_seed=replicates[0]), tunable, skipped, trials=trials,
                   sampler_seed=sampler_seed, dt_weight=dt_weight, jobs=jobs, threads=threads, weight_path=weight_path,
                   device=device, spaces=spaces, progress=progress, cluster=cluster, write_table=write_table,
                   replicates=replicates)
    return 0


def tunable_entries(entries, spaces=None) -> tuple[list, list[str]]:
    """(the entries to tune, the names of those without a search space); every space checked before anything
    runs. Baseline and retrain are never tuned."""
    tunable = [e for e in entries if e[0] not in NOT_TUNED and ((spaces or {}).get(e[0]) or search_space(e[0]))]
    skipped = [e[0] for e in entries if e[0] not in NOT_TUNED and e not in tunable]
    if not tunable:
        raise UsageError("no method to tune: baseline and retrain are not tuned, and the methods given declare no "
                         "search space")
    for e in tunable:
        spec, our = get_method(e[0])
        check_space(spec, (spaces or {}).get(e[0]) or search_space(e[0]), our=our)
    return tunable, skipped


def _print_plan(base: Setting, tunable, skipped, pre, *, seeds, trials, jobs, weight_path, cluster, progress,
                replicates=(0,)):
    """``--dry-run``: the prerequisites' commands, the workers' sbatch options and each study's folder."""
    print(f"# tuning {len(tunable)} method(s) x {len(seeds)} seed(s), {trials} trials each, {jobs} worker(s)"
          f", each trial on {len(replicates)} replicate(s) (pretraining seeds {', '.join(map(str, replicates))}; "
          "scored by the worst)"
          + (f" through submitit ({cluster.cluster})" if cluster else ""))
    if skipped:
        print(f"# no search space (not tuned): {', '.join(skipped)}")
    _run_prerequisites(pre, cluster, dry_run=True, progress=progress)
    if cluster is not None and cluster.cluster == "slurm":
        text = sbatch_text(cluster, Array("tune", [None] * jobs, [], []), None)
        print(f"# tuning workers: one array of {jobs} job(s), after the runs above; sbatch options:")
        print("".join(f"#   {x}\n" for x in text.splitlines() if x.startswith("#SBATCH")), end="")
    for seed in seeds:
        s = replace(base, seed=seed)
        for e in tunable:
            folder = study_folder(s, e[0], weight_path)
            print(f"# tune {e[0]} seed {seed}: {relative(folder, s.log_root)} ({done_text(folder)})")


def _tune_seed(s: Setting, tunable, skipped, *, trials, sampler_seed, dt_weight, jobs, threads, weight_path, device,
               spaces, progress, cluster, write_table, replicates=(0,)):
    """One seed: plan its studies, run the workers (submitit, ``jobs`` processes or here), write and print the
    table."""
    t0 = time.perf_counter()
    evaluator = Evaluator(s, weight_path=weight_path, device=device, replicates=replicates)
    reference = reference_metrics(s)
    if reference is None:
        raise UsageError(f"no finished retrain run of seed {s.seed} for this class split under {s.log_root}; "
                         "rerun without --dry-run")
    baseline = evaluator.baseline()
    tasks = plan_tasks(s, tunable, budget=trials, sampler_seed=sampler_seed, dt_weight=dt_weight,
                       baseline=baseline, reference=reference, weight_path=weight_path, spaces=spaces,
                       replicates=replicates)
    for task in tasks:
        ensure_default(open_study(task), task)
    n_threads = threads or max(1, (os.cpu_count() or 1) // max(jobs, 1))
    where = {"log_root": str(Path(s.log_root).resolve()), "data_root": str(Path(s.data_root).resolve())}
    spec = WorkerSpec(setting={**s.as_dict(), **where}, tasks=tuple(tasks), device=device, threads=n_threads,
                      weight_path=str(Path(weight_path).resolve()) if weight_path else None, progress=progress,
                      replicates=replicates)
    if cluster is not None:
        run_workers_submitit(spec, jobs, cluster)
    elif jobs > 1:
        run_workers_local(spec, jobs, settings_folder(s, weight_path))
    else:
        run_worker(spec, evaluator)
    results = [finish(task, plots=True) for task in tasks]
    wall = time.perf_counter() - t0
    folder = settings_folder(s, weight_path)
    text = report_text(s, results, baseline=baseline, reference=reference, wall=wall, trials=trials, jobs=jobs,
                       skipped=skipped)
    print(text)
    if write_table:
        atomic_write_text(folder / "summary.md", text + "\n")
        print(f"tuning table: {folder / 'summary.md'}")


def _run_prerequisites(jobs, cluster, *, dry_run=False, progress=True):
    """Run (or, dry, print) the prerequisite jobs here or through submitit; {name: (exit code, last line)}."""
    if cluster is not None:
        return run_jobs_slurm(jobs, cluster, dry_run=dry_run, progress=progress)

    return run_jobs(jobs, n_jobs=1, dry_run=dry_run, progress=progress, batch=True)


if __name__ == "__main__":  # a worker, as ``python -m unlearn.tune.worker``: the workers' module name before
    sys.exit(worker_main())
