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
never mistaken for a finished one. A SIGTERM to the launcher (``kill``; Ctrl-C already
reaches the whole process group) stops the stage processes it started before it exits, so
that none goes on running, or writing, after it.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
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
           "attack": "mia_on_mu_main_{d}_fullclass.py", "distribution": "run-distribution-metric.py",
           "forget_sample": "forget_sample_main.py", "attack_sample": "mia_on_mu_main_sample.py"}
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
    threads: int | None = None  # CPU threads, pinned (None: config.CPU_THREADS of its dataset; see cpu_threads)
    check_argv: bool = True  # fresh only if its results were made by this very command
    if_needed: bool = False  # a helper job (no results of its own): runs only when a job depending on it runs
    dataset: str | None = None
    identity_argv: list[str] | None = None  # what its results record as arguments, where not its command's

    def cpu_threads(self) -> int:
        """The torch threads of this run on a CPU, whatever the executor or the machine's cores: the thread
        count changes the floating-point path (reduction order), so a run's numbers depend on it."""
        if self.threads:
            return int(self.threads)
        return int(config.CPU_THREADS.get(self.dataset, config.CPU_THREADS_DEFAULT))

    def fresh(self) -> bool:
        argv = (self.identity_argv or self.cmd[2:]) if self.check_argv else None
        if not self.done:
            return False
        threads = None if visible_gpus() else self.cpu_threads()  # on GPUs the thread count changes nothing
        return all(is_fresh(read_ok_results(d), argv=argv, dataset=self.dataset, threads=threads) for d in self.done)


def script(stage: str, dataset: str) -> str:
    """The stage script; non-paper datasets use the CIFAR-20 scripts with ``--dataset``."""
    return SCRIPTS[stage].format(d=PAPER_SCRIPT_DATASET.get(dataset, "cifar20"))


def common_flags(s: Setting, *, classes: bool = True) -> list[str]:
    """Flags every stage command gets; the class split always explicit, so no run falls back to config.py's.
    ``classes``: what is forgotten, a class or (sample-wise) ``--forget_percent`` and ``--forget_seed``."""
    split = []
    if classes and s.sample_wise:
        split = ["--forget_percent", fmt_para(s.forget_percent), "--forget_seed", str(s.forget_seed)]
    elif classes:
        split = ["--forget_class", str(s.forget_class)]
    split += ["--ood_classes", *map(str, s.ood_classes)]
    split += ["--pretrain_seed", str(s.pretrain_seed)] if s.pretrain_seed else []
    return ["--dataset", s.dataset, "-net", s.net, "-classes", str(s.classes), *split, "--data-root", s.data_root,
            "--log-root", s.log_root, "--no-progress"]


def attack_flags(attack: dict) -> list[str]:
    out = []
    for k, v in attack.items():
        out += [f"--{k}", *map(str, v)] if isinstance(v, (list, tuple)) else [f"--{k}", str(v)]
    return out


def _weight_flags(weight_path) -> list[str]:
    return ["-weight_path", str(weight_path)] if weight_path else []


def build_jobs(base: Setting, *, methods, seeds, stages, attack: dict, extra_pretrain: list[str] = (),
               method_l1=None, weight_path=None, retrain_refs: int = 0, force: bool = False,
               replicates=(0,)) -> list[Job]:
    """The graph: pretrain (dense and, if needed, L1-sparse) -> forget -> attack and distribution.

    ``replicates``: the pretraining seeds (:attr:`Setting.pretrain_seed`); each replicate is its own
    pretrained models and its own runs of every method and seed. The references do not start from a
    pretrained model and are shared by all replicates.

    ``retrain_refs`` > 0 adds the attack's reference population: that many ``retrain`` runs
    with seeds ``config.REFERENCE_SEED_BASE + r``, trained once and shared by every seed, and
    per seed one job that computes their relearning curves before the attacks.
    ``force`` makes the distribution stage recompute runs it would otherwise reuse.
    """
    reps = {p: replace(base, pretrain_seed=p) for p in replicates}
    pre = {p: pretrain_jobs(s, methods, stages=stages, extra_pretrain=extra_pretrain, method_l1=method_l1,
                            weight_path=weight_path) for p, s in reps.items()}
    jobs = [j for js in pre.values() for j in js]
    retrain = next((m for m in methods if m[0] == "retrain"), None)
    refs = []
    if retrain is not None and retrain_refs > 0 and "attack" in stages:
        first = next(iter(reps))
        refs = reference_jobs(replace(base, pretrain_seed=0), retrain, retrain_refs, weight_path=weight_path,
                              deps=[j.name for j in pre[first]])
        if "forget" in stages:
            jobs += refs
    for p, s in reps.items():
        for seed in seeds:
            jobs += seed_jobs(replace(s, seed=seed), methods, stages=stages, attack=attack, weight_path=weight_path,
                              pre=[j.name for j in pre[p]], refs=[j.name for j in refs], retrain=retrain, force=force)
    names = {j.name for j in jobs}
    for j in jobs:  # a dependency outside the requested stages is assumed to exist already
        j.deps = [d for d in j.deps if d in names]
    return jobs


def pretrain_jobs(base: Setting, methods, *, stages, extra_pretrain=(), method_l1=None, weight_path=None) -> list[Job]:
    """Pretraining, dense and L1-sparse as the methods need (``method_l1``); none from a given checkpoint."""
    if "pretrain" not in stages or weight_path is not None:
        return []
    l1s = sorted({method_l1(m[0]) for m in methods} - {0.0}) if method_l1 else []
    jobs = []
    for l1 in [0.0, *l1s]:
        d = base.pretrain_dir(l1)
        cmd = [sys.executable, script("pretrain", base.dataset), *common_flags(base, classes=False), *extra_pretrain]
        cmd += ["--l1", str(l1)] if l1 else []
        name = f"pretrain{'-l1_' + fmt_para(l1) if l1 else ''}{f'-seed{base.pretrain_seed}' if base.pretrain_seed else ''}"
        jobs.append(Job(name, cmd, d, [d / "results.json"],
                        dataset=base.dataset))
    return jobs


def forget_job(s: Setting, entry, *, weight_path=None, deps=()) -> tuple[Job, list[str], dict]:
    """The forget run of a method-list entry at ``s``'s seed: (its job, the stage flags the attack repeats,
    the folder extras)."""
    method, p1, p2, opts = entry
    opts, replay_flags, extras = entry_settings(method, opts, weight_path=weight_path)
    flags = [*common_flags(s), "-seed", str(s.seed), "-method", method,
             *[x for k, v in opts.items() for x in ("--opt", f"{k}={json.dumps(v)}")],
             *(["--para1", str(p1)] if p1 is not None else []),
             *(["--para2", str(p2)] if p2 is not None else []), *replay_flags]
    fdir = s.stage_dir("unlearning", method, p1, p2, extras)
    stage = "forget_sample" if s.sample_wise else "forget"
    job = Job(f"forget:{s.run_name(method, p1, p2, extras)}",
              [sys.executable, script(stage, s.dataset), *flags, *_weight_flags(weight_path)], fdir,
              [fdir / "results.json"], list(deps), group=f"forget:seed{s.seed}{s.replicate_tag}", dataset=s.dataset)
    return job, flags, extras


def reference_jobs(base: Setting, retrain, n: int, *, weight_path=None, deps=()) -> list[Job]:
    """The attack's reference population: ``n`` runs of the ``retrain`` entry with seeds
    ``config.REFERENCE_SEED_BASE + r``, trained once and shared by every seed."""
    jobs = []
    for r in range(n):
        s = replace(base, seed=getattr(config, "REFERENCE_SEED_BASE", 1000) + r)
        job, _, _ = forget_job(s, retrain, weight_path=weight_path, deps=deps)
        job.group = "forget:references"
        jobs.append(job)
    return jobs


def seed_jobs(s: Setting, methods, *, stages, attack: dict, weight_path=None, pre=(), refs=(), retrain=None,
              force: bool = False) -> list[Job]:
    """One seed's jobs: its forget runs, the references' curves (when an attack shares them), its attacks (after
    the retrain run of the seed and the references) and its distribution runs."""
    forget, attacks, dists = [], [], []
    retrain_name = forget_job(s, retrain, weight_path=weight_path)[0].name if retrain is not None else None
    for entry in methods:
        job, flags, extras = forget_job(s, entry, weight_path=weight_path, deps=pre)
        forget.append(job)
        if "attack" in stages:
            deps = [job.name, *refs, *([retrain_name] if retrain_name is not None and entry[0] != "retrain" else [])]
            attacks.append(attack_job(s, entry, flags, extras, attack=attack, weight_path=weight_path, deps=deps))
        if "distribution" in stages:
            dists.append(distribution_job(s, entry, extras, deps=[job.name], force=force))
    jobs = forget if "forget" in stages else []
    if attacks and refs:  # the references' curves once, before the attacks share them
        curves = reference_curves_job(s, attack, deps=refs)
        jobs.append(curves)
        for j in attacks:
            j.deps.append(curves.name)
    return jobs + attacks + dists


def attack_job(s: Setting, entry, forget_flags: list[str], extras: dict, *, attack: dict, weight_path=None,
               deps=()) -> Job:
    """The attack on an entry's forget run: the forget run's flags, then the attack's (``attack``)."""
    method, p1, p2, _ = entry
    adir = s.stage_dir("mia_mu_attack", method, p1, p2, {**extras, **attack_extras(s.dataset, attack)})
    cmd = [sys.executable, script("attack", s.dataset), *forget_flags, *_weight_flags(weight_path),
           *attack_flags(attack)]
    return Job(f"attack:{adir.name}", cmd, adir, [adir / "results.json"], list(deps), group=f"attack:seed{s.seed}{s.replicate_tag}",
               threads=1, dataset=s.dataset)


def distribution_job(s: Setting, entry, extras: dict, *, deps=(), force: bool = False) -> Job:
    """The distribution stage on an entry's forget run (reusing fresh results unless ``force``)."""
    method, p1, p2, _ = entry
    name = s.run_name(method, p1, p2, extras)
    vdir = s.stage_dir("visualization", method, p1, p2, extras)
    points = str(config.DISTRIBUTION_MAX_POINTS.get(s.dataset, 5000))
    cmd = [sys.executable, script("distribution", s.dataset), *common_flags(s), "-seed", str(s.seed),
           *([] if force else ["--skip-done"]), "--max-points", points, "--run_dirs", name]
    return Job(f"distribution:{name}", cmd, vdir, [vdir / "results.json"], list(deps),
               group=f"distribution:seed{s.seed}{s.replicate_tag}", dataset=s.dataset,
               identity_argv=distribution_identity(name, max_points=points))


def reference_curves_job(s: Setting, attack: dict, *, deps=()) -> Job:
    """The references' relearning curves for ``s``'s seed: a helper job, run only when an attack needing it runs."""
    cmd = [sys.executable, script("attack", s.dataset), *common_flags(s), "-seed", str(s.seed), "-method", "retrain",
           "--refs-only", *attack_flags(attack)]
    return Job(f"attack-references:seed{s.seed}{s.replicate_tag}", cmd, s.stage_root("mia_mu_attack"), [], list(deps), threads=1,
               if_needed=True, dataset=s.dataset)


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


class _Children:
    """The stage processes running now, so that a SIGTERM to the launcher can stop them too."""

    def __init__(self):
        self.procs: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.stopping = False

    def stop(self, signum, frame):
        """The SIGTERM handler of :func:`run_jobs`: terminate every child, then exit as the signal would."""
        with self.lock:
            self.stopping = True
            procs = list(self.procs)
        for p in procs:
            p.terminate()
        raise SystemExit(128 + signum)


_CHILDREN = _Children()


def run_child(cmd: list[str], *, env: dict, input: str | None = None) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True)`` in the repository root, with the child
    registered while it runs (see :class:`_Children`); its stdin is ``input`` or, without one, empty
    (a stage never reads the launcher's terminal)."""
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        with _CHILDREN.lock:
            _CHILDREN.procs.add(p)
            if _CHILDREN.stopping:
                p.terminate()
        try:
            out, err = p.communicate(input)
        except BaseException:
            p.kill()
            raise
        finally:
            with _CHILDREN.lock:
                _CHILDREN.procs.discard(p)
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def _execute(unit: list[Job], gpu, threads: int) -> list[tuple[str, int, str]]:
    """Run one job as its own process, or several in one :mod:`unlearn.pipeline.batch` process."""
    extra = ["--threads", str(threads)] if gpu is None else []
    t0 = time.perf_counter()
    if len(unit) == 1:
        job = unit[0]
        cmd = [*job.cmd, *extra]
        p = run_child(cmd, env=job_env(gpu))
        save_run_log(job.folder, cmd, p.stdout, p.stderr)
        return [judge(job, p.returncode, f"{last_line(p.stderr, p.stdout)} ({time.perf_counter() - t0:.1f}s)")]
    runs = [{"script": j.cmd[1], "argv": [*j.cmd[2:], *extra], "folder": str(j.folder)} for j in unit]
    p = run_child([sys.executable, "-m", "unlearn.pipeline.batch"], env=job_env(gpu), input=json.dumps(runs))
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
    On a CPU every process runs with its jobs' pinned thread count (:meth:`Job.cpu_threads`: the
    same on any machine and under SLURM, since it changes the numbers) and starts once that many
    cores are free (at once when nothing else runs); in batch mode each group runs as one process
    per core.
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
    batch = n_jobs == 1 if batch is None else batch
    sched = _Schedule(status=status, units=_units(pending, batch, split=1 if gpus else cores),
                      unfinished={j.name for j in pending}, gpus=gpus,
                      free_gpus=[gpus[i % len(gpus)] for i in range(n_jobs)] if gpus else [], free_cores=cores,
                      bar=tqdm(total=len(pending), desc="runs", disable=not progress))
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _CHILDREN.stop) if main else None
    try:
        _run_schedule(sched, workers=max(n_jobs, cores))
    finally:
        if main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    sched.bar.close()
    return status


def _run_schedule(sched: "_Schedule", *, workers: int):
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while sched.units or sched.running:
            before = len(sched.units)
            sched.start_ready(pool)
            if not sched.running:
                if len(sched.units) == before:
                    raise RuntimeError("no job can start: the job graph has a dependency cycle")
                continue
            finished, _ = wait(list(sched.running), return_when=FIRST_COMPLETED)
            sched.collect(finished)


@dataclass
class _Schedule:
    """:func:`run_jobs`'s state: the units (processes) still to start, those running, the free GPUs and cores."""

    status: dict
    units: list
    unfinished: set
    gpus: list
    free_gpus: list
    free_cores: int
    bar: object
    running: dict = field(default_factory=dict)  # future -> (jobs, gpu, cores)

    def cap(self, unit) -> int:
        return min(j.cpu_threads() for j in unit)

    def ready(self, unit) -> bool:
        names = {j.name for j in unit}
        return not any(d in self.unfinished and d not in names for j in unit for d in j.deps)

    def start_ready(self, pool):
        """Start every unit whose dependencies have finished, while GPUs (or cores) are free."""
        for unit in list(self.units):
            if not self.ready(unit):
                continue
            if self.gpus and not self.free_gpus:
                break
            n = 0
            if not self.gpus:
                n = self.cap(unit)
                if n > self.free_cores and self.running:
                    continue
            self.units.remove(unit)
            go = self.without_failed_deps(unit)
            if go:
                gpu = self.free_gpus.pop(0) if self.gpus else None
                self.free_cores -= n
                self.running[pool.submit(_execute, go, gpu, max(n, 1))] = (go, gpu, n)

    def without_failed_deps(self, unit) -> list[Job]:
        """The unit's jobs whose dependencies did not fail (unless soft); the others are marked skipped."""
        go = []
        for j in unit:
            failed = [] if j.soft_deps else [d for d in j.deps if self.status.get(d, (0,))[0] != 0]
            if failed:
                self.status[j.name] = (1, f"skipped: {failed[0]} failed")
                self.unfinished.discard(j.name)
                self.bar.update()
            else:
                go.append(j)
        return go

    def collect(self, finished):
        """Record finished units' results and free their GPU and cores."""
        for f in finished:
            _, gpu, n = self.running.pop(f)
            self.free_cores += n
            if gpu is not None:
                self.free_gpus.append(gpu)
            for name, rc, tail in f.result():
                self.status[name] = (rc, tail)
                self.unfinished.discard(name)
                self.bar.update()
                self.bar.set_postfix_str(name[:40])
