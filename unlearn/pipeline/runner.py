"""The pipeline behind ``run.py``: stage commands as a dependency graph, run in parallel, resumable.

Each run is a stage script command. With several jobs at once every run is its
own process; with one job at a time the runs of a stage and seed share one
process (:mod:`unlearn.pipeline.batch`; ``batch=False`` turns this off), which saves the
seconds each interpreter spends importing. Either way a failing run cannot take
the others down. A run is skipped only when its ``results.json`` is *fresh*
(:func:`unlearn.store.identity.is_fresh`: status ok, recorded for the same command,
config.py entries, input files and code) and nothing it depends on runs again;
``force`` reruns every job of the requested stages. A run counts as done only
when it exits 0 *and* leaves a fresh ``results.json``; every stage removes its
old ``results.json`` before writing anything, so a failed or killed rerun is
never mistaken for a finished one.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

import config
from ..methods.entries import entry_settings
from ..store.checkpoint import read_ok_results
from ..store.identity import attack_extras, distribution_identity, is_fresh
from ..store.setting import Setting, fmt_para
from .batch import save_run_log

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = {"pretrain": "pretrain_model_{d}.py", "forget": "forget_full_class_main_{d}.py",
           "attack": "mia_on_mu_main_{d}_fullclass.py", "distribution": "run-distribution-metric.py"}
PAPER_SCRIPT_DATASET = {"Cifar20": "cifar20", "Cifar100": "cifar100", "Imagenet64": "imagenet64"}


@dataclass
class Job:
    """One stage command; it need not run when every ``done`` results.json says ``ok``.

    With ``soft_deps`` it runs once its dependencies have finished, even if some failed
    (the distribution stage analyses whichever models exist).
    """

    name: str
    cmd: list[str]
    folder: Path
    done: list[Path]
    deps: list[str] = field(default_factory=list)
    soft_deps: bool = False
    group: str | None = None  # runs of one group may share a process (see unlearn.pipeline.batch)
    max_threads: int | None = None  # CPU threads cap (relearning steps of 15 samples: threads cost more than they give)
    check_argv: bool = True  # fresh only if its results were made by this very command
    if_needed: bool = False  # a helper job (no results of its own): runs only when a job depending on it runs
    dataset: str | None = None
    identity_argv: list[str] | None = None  # what its results record as arguments, where not its command's

    def fresh(self) -> bool:
        argv = (self.identity_argv or self.cmd[2:]) if self.check_argv else None
        if not self.done:
            return False
        return all(is_fresh(read_ok_results(d), argv=argv, dataset=self.dataset) for d in self.done)


def script(stage: str, dataset: str) -> str:
    """The stage script; non-paper datasets use the CIFAR-20 scripts with ``--dataset``."""
    return SCRIPTS[stage].format(d=PAPER_SCRIPT_DATASET.get(dataset, "cifar20"))


def common_flags(s: Setting, *, classes: bool = True) -> list[str]:
    """Flags every stage command gets; the class split always explicit, so no run falls back to config.py's."""
    split = ["--forget_class", str(s.forget_class)] if classes else []
    split += ["--ood_classes", *map(str, s.ood_classes)]
    return ["--dataset", s.dataset, "-net", s.net, "-classes", str(s.classes), *split, "--data-root", s.data_root,
            "--log-root", s.log_root, "--no-progress"]


def _attack_flags(attack: dict) -> list[str]:
    out = []
    for k, v in attack.items():
        out += [f"--{k}", *map(str, v)] if isinstance(v, (list, tuple)) else [f"--{k}", str(v)]
    return out


def build_jobs(base: Setting, *, methods, seeds, stages, attack: dict, extra_pretrain: list[str] = (),
               method_l1=None, weight_path=None, retrain_refs: int = 0, force: bool = False) -> list[Job]:
    """The graph: pretrain (dense and, if needed, L1-sparse) -> forget -> attack and distribution.

    ``retrain_refs`` > 0 adds the attack's reference population: that many ``retrain`` runs
    with seeds ``config.REFERENCE_SEED_BASE + r``, trained once and shared by every seed, and
    per seed one job that computes their relearning curves before the attacks.
    ``force`` makes the distribution stage recompute runs it would otherwise reuse.
    """
    py = sys.executable
    ds = base.dataset
    jobs: list[Job] = []
    l1s = sorted({method_l1(m[0]) for m in methods} - {0.0}) if method_l1 else []
    pre_names = []
    if "pretrain" in stages and weight_path is None:
        for l1 in [0.0, *l1s]:
            d = base.pretrain_dir(l1)
            cmd = [py, script("pretrain", ds), *common_flags(base, classes=False), *extra_pretrain]
            cmd += ["--l1", str(l1)] if l1 else []
            jobs.append(Job(f"pretrain{'-l1_' + fmt_para(l1) if l1 else ''}", cmd, d, [d / "results.json"], dataset=ds))
            pre_names.append(jobs[-1].name)
    wp = ["-weight_path", str(weight_path)] if weight_path else []
    retrain = next((m for m in methods if m[0] == "retrain"), None)

    def forget_job(s: Setting, method, p1, p2, opts) -> tuple[Job, list[str], dict]:
        opts, replay_flags, extras = entry_settings(method, opts, weight_path=weight_path)
        base_cmd = [*common_flags(s), "-seed", str(s.seed), "-method", method,
                    *[x for k, v in opts.items() for x in ("--opt", f"{k}={json.dumps(v)}")],
                    *(["--para1", str(p1)] if p1 is not None else []),
                    *(["--para2", str(p2)] if p2 is not None else []), *replay_flags]
        fdir = s.stage_dir("unlearning", method, p1, p2, extras)
        job = Job(f"forget:{s.run_name(method, p1, p2, extras)}", [py, script("forget", ds), *base_cmd, *wp], fdir,
                  [fdir / "results.json"], list(pre_names), group=f"forget:seed{s.seed}", dataset=ds)
        return job, base_cmd, extras

    ref_names = []
    if retrain is not None and retrain_refs > 0 and "attack" in stages:
        for r in range(retrain_refs):
            s = replace(base, seed=getattr(config, "REFERENCE_SEED_BASE", 1000) + r)
            job, _, _ = forget_job(s, *retrain)
            job.group = "forget:references"
            if "forget" in stages:
                jobs.append(job)
            ref_names.append(job.name)
    aflags = _attack_flags(attack)
    a_extras = attack_extras(ds, attack)
    for seed in seeds:
        s = replace(base, seed=seed)
        attack_jobs, dist_jobs = [], []
        retrain_name = forget_job(s, *retrain)[0].name if retrain is not None else None
        for method, p1, p2, opts in methods:
            job, base_cmd, extras = forget_job(s, method, p1, p2, opts)
            if "forget" in stages:
                jobs.append(job)
            if "attack" in stages:
                adir = s.stage_dir("mia_mu_attack", method, p1, p2, {**extras, **a_extras})
                deps = [job.name, *ref_names]
                if retrain_name is not None and method != "retrain":
                    deps.append(retrain_name)
                attack_jobs.append(Job(f"attack:{adir.name}", [py, script("attack", ds), *base_cmd, *wp, *aflags],
                                       adir, [adir / "results.json"], deps, group=f"attack:seed{seed}", max_threads=1,
                                       dataset=ds))
            if "distribution" in stages:
                name = s.run_name(method, p1, p2, extras)
                vdir = s.stage_dir("visualization", method, p1, p2, extras)
                points = str(config.DISTRIBUTION_MAX_POINTS.get(ds, 5000))
                cmd = [py, script("distribution", ds), *common_flags(s), "-seed", str(seed),
                       *([] if force else ["--skip-done"]), "--max-points", points, "--run_dirs", name]
                dist_jobs.append(Job(f"distribution:{name}", cmd, vdir, [vdir / "results.json"], [job.name],
                                     group=f"distribution:seed{seed}", dataset=ds,
                                     identity_argv=distribution_identity(name, max_points=points)))
        if attack_jobs and ref_names:  # the references' curves once, before the attacks share them
            cmd = [py, script("attack", ds), *common_flags(s), "-seed", str(seed), "-method", "retrain",
                   "--refs-only", *aflags]
            refs = Job(f"attack-references:seed{seed}", cmd, s.stage_root("mia_mu_attack"),
                       [], list(ref_names), max_threads=1, if_needed=True, dataset=ds)
            jobs.append(refs)
            for j in attack_jobs:
                j.deps.append(refs.name)
        jobs += attack_jobs + dist_jobs
    names = {j.name for j in jobs}
    for j in jobs:  # a dependency outside the requested stages is assumed to exist already
        j.deps = [d for d in j.deps if d in names]
    return jobs


def pending_jobs(jobs: list[Job], force: bool) -> list[Job]:
    """The jobs that must run: forced, not fresh, or depending on one that runs.

    A helper job (``if_needed``) runs only when a job depending on it runs, and
    does not by itself make its dependents rerun.
    """
    run: set[str] = set()
    helpers = {j.name for j in jobs if j.if_needed}
    for j in jobs:  # jobs are in dependency order
        if j.if_needed:
            continue
        if force or not j.fresh() or any(d in run for d in j.deps if d not in helpers):
            run.add(j.name)
    for j in jobs:
        if j.if_needed and any(j.name in k.deps and k.name in run for k in jobs):
            run.add(j.name)
    return [j for j in jobs if j.name in run]


def visible_gpus() -> list[str]:
    """The GPUs jobs may be pinned to, as ``CUDA_VISIBLE_DEVICES`` values.

    A preset ``CUDA_VISIBLE_DEVICES=2,3`` means GPUs 2 and 3: slots map through that
    list (torch numbers them 0 and 1 inside this process).
    """
    preset = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        n = torch.cuda.device_count()
    except Exception:
        n = 0
    if preset is not None and preset.strip() != "":
        ids = [x.strip() for x in preset.split(",") if x.strip()]
        return ids[:n] if n else []
    return [str(i) for i in range(n)]


def default_jobs() -> int:
    return max(len(visible_gpus()), 1)


def job_env(gpu) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


def last_line(*texts: str) -> str:
    for t in texts:
        lines = t.strip().splitlines()
        if lines:
            return lines[-1]
    return ""


def judge(job: Job, rc: int, tail: str) -> tuple[str, int, str]:
    """A run succeeded only if it exited 0 and left fresh results."""
    if rc == 0 and job.done and not job.fresh():
        return job.name, 1, f"exited 0 but left no fresh results.json ({tail})"
    return job.name, rc, tail


def _execute(unit: list[Job], gpu, threads: int) -> list[tuple[str, int, str]]:
    """Run one job as its own process, or several in one :mod:`unlearn.pipeline.batch` process."""
    extra = ["--threads", str(threads)] if gpu is None else []
    t0 = time.perf_counter()
    if len(unit) == 1:
        job = unit[0]
        cmd = [*job.cmd, *extra]
        p = subprocess.run(cmd, cwd=ROOT, env=job_env(gpu), capture_output=True, text=True)
        save_run_log(job.folder, cmd, p.stdout, p.stderr)
        return [judge(job, p.returncode, f"{last_line(p.stderr, p.stdout)} ({time.perf_counter() - t0:.1f}s)")]
    runs = [{"script": j.cmd[1], "argv": [*j.cmd[2:], *extra], "folder": str(j.folder)} for j in unit]
    p = subprocess.run([sys.executable, "-m", "unlearn.pipeline.batch"], input=json.dumps(runs), cwd=ROOT,
                       env=job_env(gpu), capture_output=True, text=True)
    try:
        rcs = json.loads(p.stdout.strip().splitlines()[-1])["rcs"]
    except (IndexError, ValueError, KeyError, TypeError):
        rcs = []
    rcs += [None] * (len(unit) - len(rcs))  # runs a crashed batch never reached
    out = []
    for j, rc in zip(unit, rcs):
        texts = [(j.folder / f).read_text() if (j.folder / f).is_file() else "" for f in ("stderr.txt", "stdout.txt")]
        if rc is None:
            out.append((j.name, 1, last_line(p.stderr) or f"batch process exited {p.returncode} before this run"))
        else:
            out.append(judge(j, rc, last_line(*texts) or f"exit {rc}"))
    return out


def _units(jobs: list[Job], batch: bool, split: int = 1) -> list[list[Job]]:
    """Jobs grouped into what runs as one process; each group split ``split`` ways (one per CPU core)."""
    if not batch:
        return [[j] for j in jobs]
    units, by_group = [], {}
    for j in jobs:
        if j.group is None:
            units.append([j])
        elif j.group in by_group:
            by_group[j.group].append(j)
        else:
            by_group[j.group] = [j]
            units.append(by_group[j.group])
    out = []
    for u in units:
        k = split if split > 1 and len(u) > 1 else 1
        out += [u[i::k] for i in range(k) if u[i::k]]
    return out


def run_jobs(jobs: list[Job], *, n_jobs: int, force: bool = False, dry_run: bool = False,
             progress: bool = True, batch: bool | None = None) -> dict[str, tuple[int, str]]:
    """Run the graph; returns {name: (returncode, last line)} of every job that ran or was skipped.

    ``batch`` (default: when ``n_jobs`` is 1) runs each group's pending jobs in one process.
    On a CPU the cores are shared out as threads: a process gets the free cores divided
    among the processes ready to start (at most cores / ``n_jobs``, and one for the attack,
    whose 15-sample steps run fastest on one thread); in batch mode each group runs as one
    process per core, so two small runs share the cores better than one run on two threads.
    """
    status: dict[str, tuple[int, str]] = {}
    pending = pending_jobs(jobs, force)
    for j in jobs:
        if j not in pending:
            status[j.name] = (0, "already done")
    if dry_run:
        for j in jobs:
            mark = "# done: " if j.name in status else ""
            print(mark + shlex.join(j.cmd))
        return status
    gpus = visible_gpus()
    cores = os.cpu_count() or 1
    threads = max(1, cores // n_jobs)
    batch = n_jobs == 1 if batch is None else batch
    units = _units(pending, batch, split=1 if gpus else cores)
    unfinished = {j.name for j in pending}
    free_gpus = [gpus[i % len(gpus)] for i in range(n_jobs)] if gpus else []
    free_cores = cores
    bar = tqdm(total=len(pending), desc="runs", disable=not progress)
    running = {}

    def cap(unit) -> int:
        return min([j.max_threads for j in unit if j.max_threads] or [threads])

    def ready(unit) -> bool:
        names = {j.name for j in unit}
        return not any(d in unfinished and d not in names for j in unit for d in j.deps)

    with ThreadPoolExecutor(max_workers=max(n_jobs, cores)) as pool:
        while units or running:
            before = len(units)
            for unit in list(units):
                if not ready(unit):
                    continue
                if gpus and not free_gpus:
                    break
                n = 0
                if not gpus:
                    waiting = sum(ready(u) for u in units)
                    n = min(cap(unit), max(1, free_cores // max(waiting, 1)))
                    if n > free_cores:
                        continue
                units.remove(unit)
                go = []
                for j in unit:
                    failed = [] if j.soft_deps else [d for d in j.deps if status.get(d, (0,))[0] != 0]
                    if failed:
                        status[j.name] = (1, f"skipped: {failed[0]} failed")
                        unfinished.discard(j.name)
                        bar.update()
                    else:
                        go.append(j)
                if go:
                    gpu = free_gpus.pop(0) if gpus else None
                    free_cores -= n
                    running[pool.submit(_execute, go, gpu, max(n, 1))] = (go, gpu, n)
            if not running:
                if len(units) == before:
                    raise RuntimeError("no job can start: the job graph has a dependency cycle")
                continue
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for f in finished:
                _, gpu, n = running.pop(f)
                free_cores += n
                if gpu is not None:
                    free_gpus.append(gpu)
                for name, rc, tail in f.result():
                    status[name] = (rc, tail)
                    unfinished.discard(name)
                    bar.update()
                    bar.set_postfix_str(name[:40])
    bar.close()
    return status
