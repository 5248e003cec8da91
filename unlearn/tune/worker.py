"""The workers that run a tuning's trials: here, as ``python -m unlearn.tune.worker`` processes (``--jobs N``)
or as submitit jobs; each loads the data and the weights once."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ..pipeline.runner import ROOT, job_env
from ..pipeline.slurm import Array, make_executor, slurm_parameters
from ..store.setting import Setting
from .evaluator import CAUGHT, Evaluator, make_objective
from .studies import finished_trials, open_study, quiet
from .tasks import Task


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs: the setting (its roots absolute), the tasks, where and how to run them. Travels
    to worker processes as JSON (:meth:`to_json`, ``asdict``) and to submitit jobs pickled."""

    setting: dict  # Setting.as_dict()
    tasks: tuple  # of Task
    device: str = "auto"
    threads: int | None = None  # torch threads
    weight_path: str | None = None  # the starting checkpoint, when not the pretrained model
    progress: bool = True
    worker: int = 0  # the worker's index: part of its sampler's seed
    replicates: tuple = (0,)  # pretraining seeds every trial runs on

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        d = json.loads(text)
        return cls(**{**d, "tasks": tuple(Task(**t) for t in d["tasks"]), "replicates": tuple(d["replicates"])})


def run_worker(spec: WorkerSpec, evaluator: Evaluator | None = None) -> dict:
    """A worker: runs trials of each task's study until its budget of finished trials is reached.

    Loads the data and weights once (or uses ``evaluator``). Returns {study: trials finished here}.
    """
    from optuna.study import MaxTrialsCallback  # lazy: start-up time
    from optuna.trial import TrialState  # lazy: start-up time

    quiet()
    if spec.threads:
        torch.set_num_threads(int(spec.threads))
    setting = Setting(**spec.setting)
    evaluator = evaluator or Evaluator(setting, weight_path=spec.weight_path, device=spec.device,
                                       replicates=spec.replicates)
    ran = {}
    for task in spec.tasks:
        probe = open_study(task)
        done = finished_trials(probe)
        if done >= task.budget:
            ran[task.study] = 0
            continue
        # a fresh stream per study, worker and resumption: a resumed study does not redraw its first trials
        key = f"{task.sampler_seed}/{task.study}/{spec.worker}/{done}"
        seed = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
        study = open_study(task, sampler_seed=seed)
        mine, failed = [], []

        def count(st, trial):  # a method that fails every time must not keep a worker busy forever
            (failed if trial.state == TrialState.FAIL else mine).append(trial.number)
            if len(failed) >= max(3, task.budget):
                st.stop()

        study.optimize(make_objective(task, evaluator),
                       callbacks=[MaxTrialsCallback(task.budget, states=(TrialState.COMPLETE, TrialState.PRUNED)),
                                  count], catch=CAUGHT, gc_after_trial=False)
        ran[task.study] = len(mine)
        complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        best = min(complete, key=lambda t: t.value) if complete else None
        print(f"{task.method}: {finished_trials(study)}/{task.budget} trials ({len(mine)} by this worker"
              + (f", {len(failed)} failed" if failed else "") + ")"
              + (f", best objective {best.value:.2f} (d_f {best.user_attrs['metrics']['d_f']:.1f}, d_t "
                 f"{best.user_attrs['metrics']['d_t']:.1f})" if best else ", no complete trial"), flush=True)
    return ran


def main():
    """``python -m unlearn.tune.worker`` with a worker spec on stdin (what ``--jobs N`` starts N times)."""
    ran = run_worker(WorkerSpec.from_json(sys.stdin.read()))
    print(json.dumps({"ran": ran}), flush=True)
    return 0


def run_workers_local(spec: WorkerSpec, n: int, folder: Path):
    """``n`` worker processes (``python -m unlearn.tune.worker``) on the same studies; logs in ``worker{i}.log``."""
    folder.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(n):
        log = open(folder / f"worker{i}.log", "w")
        p = subprocess.Popen([sys.executable, "-m", "unlearn.tune.worker"], stdin=subprocess.PIPE, stdout=log,
                             stderr=subprocess.STDOUT, cwd=ROOT, env=job_env(None), text=True)
        p.stdin.write(replace(spec, worker=i, progress=False).to_json())
        p.stdin.close()
        procs.append((p, log))
    bad = []
    for i, (p, log) in enumerate(procs):
        if p.wait() != 0:
            bad.append(i)
        log.close()
    if bad:
        raise RuntimeError(f"tuning worker(s) {bad} failed; see {folder}/worker{bad[0]}.log")


def run_workers_submitit(spec: WorkerSpec, n: int, cluster):
    """``n`` workers as submitit jobs (one array on SLURM), each running :func:`run_worker`."""
    ex = make_executor(cluster)
    threads = cluster.cpus_per_job if not cluster.gpus_per_job else None
    if cluster.cluster == "slurm":
        ex.update_parameters(**slurm_parameters(cluster, Array("tune", [None] * n, [], []), None))
    with ex.batch():
        handles = [ex.submit(run_worker, replace(spec, worker=i, threads=threads or spec.threads, progress=False))
                   for i in range(n)]
    print(f"submitted {n} tuning worker(s): {', '.join(h.job_id for h in handles)}", flush=True)
    for h in handles:
        h.result()  # raises with the job's error when it failed


if __name__ == "__main__":
    sys.exit(main())
