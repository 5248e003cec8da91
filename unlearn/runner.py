"""The pipeline behind ``run.py``: stage commands as a dependency graph, run in parallel, resumable.

Each run is a stage script command. With several jobs at once every run is its
own process; with one job at a time the runs of a stage and seed share one
process (:mod:`unlearn.batch`; ``batch=False`` turns this off), which saves the
seconds each interpreter spends importing. Either way a failing run cannot take
the others down. A run whose ``results.json`` says ``ok`` is skipped unless
``force``; outputs are written atomically, so a killed run leaves no
complete-looking file and is simply redone.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue

import config
from .batch import save_run_log
from .checkpoint import read_ok_results
from .setting import Setting, fmt_para

ROOT = Path(__file__).resolve().parents[1]
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
    group: str | None = None  # runs of one group may share a process (see unlearn.batch)
    max_threads: int | None = None  # CPU threads cap (relearning steps of 15 samples: threads cost more than they give)


def script(stage: str, dataset: str) -> str:
    """The stage script; non-paper datasets use the CIFAR-20 scripts with ``--dataset``."""
    return SCRIPTS[stage].format(d=PAPER_SCRIPT_DATASET.get(dataset, "cifar20"))


def common_flags(s: Setting) -> list[str]:
    return ["--dataset", s.dataset, "-net", s.net, "-classes", str(s.classes), "--data-root", s.data_root,
            "--log-root", s.log_root, "--no-progress"]


def build_jobs(base: Setting, *, methods, seeds, stages, attack: dict, extra_pretrain: list[str] = (),
               method_l1=None, weight_path=None) -> list[Job]:
    """The graph: pretrain (dense and, if needed, L1-sparse) -> forget -> attack and distribution."""
    from dataclasses import replace

    py = sys.executable
    jobs: list[Job] = []
    l1s = sorted({method_l1(m[0]) for m in methods} - {0.0}) if method_l1 else []
    pre_names = []
    if "pretrain" in stages and weight_path is None:
        for l1 in [0.0, *l1s]:
            d = base.pretrain_dir(l1)
            cmd = [py, script("pretrain", base.dataset), *common_flags(base), *extra_pretrain]
            cmd += ["--l1", str(l1)] if l1 else []
            jobs.append(Job(f"pretrain{'-l1_' + fmt_para(l1) if l1 else ''}", cmd, d, [d / "results.json"]))
            pre_names.append(jobs[-1].name)
    for seed in seeds:
        s = replace(base, seed=seed)
        retrain = next((m for m in methods if m[0] == "retrain"), None)
        forget_names, vis_runs, vis_done = [], [], []
        for method, p1, p2, opts in methods:
            paras = [x for k, v in opts.items() for x in ("--opt", f"{k}={json.dumps(v)}")]
            paras += ["--para1", str(p1)] if p1 is not None else []
            paras += ["--para2", str(p2)] if p2 is not None else []
            base_cmd = [*common_flags(s), "-seed", str(seed), "-method", method, *paras]
            key = f"{method}-{fmt_para(p1)}-{fmt_para(p2)}-seed{seed}"
            fdir = s.stage_dir("unlearning", method, p1, p2)
            if "forget" in stages:
                wp = ["-weight_path", str(weight_path)] if weight_path else []
                jobs.append(Job(f"forget:{key}", [py, script("forget", s.dataset), *base_cmd, *wp], fdir,
                                [fdir / "results.json"], list(pre_names), group=f"forget:seed{seed}"))
            fname = f"forget:{key}"
            forget_names.append(fname)
            if "attack" in stages:
                adir = s.stage_dir("mia_mu_attack", method, p1, p2)
                deps = [fname]
                if retrain is not None and method != "retrain":
                    deps.append(f"forget:{retrain[0]}-{fmt_para(retrain[1])}-{fmt_para(retrain[2])}-seed{seed}")
                aflags = []
                for k, v in attack.items():
                    aflags += [f"--{k}", *map(str, v)] if isinstance(v, (list, tuple)) else [f"--{k}", str(v)]
                jobs.append(Job(f"attack:{key}", [py, script("attack", s.dataset), *base_cmd, *aflags], adir,
                                [adir / "results.json"], deps, group=f"attack:seed{seed}", max_threads=1))
            vis_runs.append(f"{method}:{fmt_para(p1)}:{fmt_para(p2)}")
            vis_done.append(s.stage_dir("visualization", method, p1, p2) / "results.json")
        if "distribution" in stages:  # one process per seed over all runs, like the paper's script
            cmd = [py, script("distribution", s.dataset), *common_flags(s), "-seed", str(seed), "--skip-done",
                   "--skip-missing", "--max-points", str(config.DISTRIBUTION_MAX_POINTS.get(s.dataset, 5000)),
                   "--runs", *vis_runs]
            folder = s.stage_dir("visualization", "all", 0, 0).parent
            jobs.append(Job(f"distribution:seed{seed}", cmd, folder, vis_done, forget_names, soft_deps=True))
    names = {j.name for j in jobs}
    for j in jobs:  # a dependency outside the requested stages is assumed to exist already
        j.deps = [d for d in j.deps if d in names]
    return jobs


def _gpu_slots(jobs: int) -> Queue:
    q: Queue = Queue()
    try:
        import torch

        n = torch.cuda.device_count()
    except Exception:
        n = 0
    for i in range(jobs):
        q.put(str(i % n) if n else None)
    return q


def default_jobs() -> int:
    try:
        import torch

        return max(torch.cuda.device_count(), 1)
    except Exception:
        return 1


def _env(gpu) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


def _last_line(*texts: str) -> str:
    for t in texts:
        lines = t.strip().splitlines()
        if lines:
            return lines[-1]
    return ""


def _execute(unit: list[Job], slots: Queue, threads: int) -> list[tuple[str, int, str]]:
    """Run one job as its own process, or several in one :mod:`unlearn.batch` process."""
    gpu = slots.get()
    try:
        cap = min([j.max_threads for j in unit if j.max_threads] or [threads])
        extra = ["--threads", str(min(threads, cap))] if gpu is None else []
        t0 = time.perf_counter()
        if len(unit) == 1:
            job = unit[0]
            cmd = [*job.cmd, *extra]
            p = subprocess.run(cmd, cwd=ROOT, env=_env(gpu), capture_output=True, text=True)
            save_run_log(job.folder, cmd, p.stdout, p.stderr)
            return [(job.name, p.returncode, f"{_last_line(p.stderr, p.stdout)} ({time.perf_counter() - t0:.1f}s)")]
        runs = [{"script": j.cmd[1], "argv": [*j.cmd[2:], *extra], "folder": str(j.folder)} for j in unit]
        p = subprocess.run([sys.executable, "-m", "unlearn.batch"], input=json.dumps(runs), cwd=ROOT, env=_env(gpu),
                           capture_output=True, text=True)
        out = []
        for j in unit:  # each run's own files say how it went; a crashed batch leaves them missing
            ok = all(read_ok_results(d) for d in j.done)
            texts = [(j.folder / f).read_text() if (j.folder / f).is_file() else "" for f in ("stderr.txt", "stdout.txt")]
            tail = _last_line(*texts) or _last_line(p.stderr) or f"batch process exited {p.returncode}"
            out.append((j.name, 0 if ok else 1, tail))
        return out
    finally:
        slots.put(gpu)


def _units(jobs: list[Job], batch: bool) -> list[list[Job]]:
    """Jobs grouped into what runs as one process."""
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
    return units


def run_jobs(jobs: list[Job], *, n_jobs: int, force: bool = False, dry_run: bool = False,
             progress: bool = True, batch: bool | None = None) -> dict[str, tuple[int, str]]:
    """Run the graph; returns {name: (returncode, last line)} of every job that ran or was skipped.

    ``batch`` (default: when ``n_jobs`` is 1) runs each group's pending jobs in one process.
    """
    from tqdm.auto import tqdm

    status: dict[str, tuple[int, str]] = {}
    pending = [j for j in jobs if force or not all(read_ok_results(d) for d in j.done)]
    for j in jobs:
        if j not in pending:
            status[j.name] = (0, "already done")
    if dry_run:
        for j in jobs:
            mark = "# done: " if j.name in status else ""
            print(mark + shlex.join(j.cmd))
        return status
    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    slots = _gpu_slots(n_jobs)
    units = _units(pending, n_jobs == 1 if batch is None else batch)
    unfinished = {j.name for j in pending}
    bar = tqdm(total=len(pending), desc="runs", disable=not progress)
    running = {}
    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        while units or running:
            for unit in list(units):
                names = {j.name for j in unit}
                if any(d in unfinished and d not in names for j in unit for d in j.deps):
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
                    running[pool.submit(_execute, go, slots, threads)] = go
            if not running:
                continue
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for f in finished:
                running.pop(f)
                for name, rc, tail in f.result():
                    status[name] = (rc, tail)
                    unfinished.discard(name)
                    bar.update()
                    bar.set_postfix_str(name[:40])
    bar.close()
    return status
