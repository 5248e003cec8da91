"""The body of one SLURM job of ``run.py --executor slurm`` (:mod:`unlearn.pipeline.slurm`).

submitit pickles :func:`run_job` with its :class:`RunSpec` and runs it on a node. It first checks
that the runs it needs ended well (their submitit results), then runs the stand-alone stage command
as a subprocess in the repository root, streaming its output to submitit's log and saving it in the
run folder. A stage command killed by a signal (``scancel`` of a running job, the time limit) raises
:class:`ChildKilled`, so submitit records a failure rather than a success with a negative code.
"""
from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .batch import save_run_log
from .runner import ROOT, job_env, judge, last_line


@dataclass
class RunSpec:
    """What one SLURM job gets: the run, its extra flags, and the results of the runs it needs."""

    job: object  # unlearn.pipeline.runner.Job
    extra: list[str]
    needs: list[tuple[str, str]]  # (run name, submitit result pickle) of hard dependencies submitted with it


def _ended_ok(result_pickle: str) -> bool:
    from submitit.core.utils import pickle_load  # lazy: start-up time

    try:
        outcome, value = pickle_load(Path(result_pickle))
    except (OSError, EOFError, ValueError):
        return False
    return outcome == "success" and value[0] == 0


def run_job(spec: RunSpec) -> tuple[int, str]:
    """Run one stage command as a subprocess (the SLURM job's body); returns (exit code, last line).

    Its output goes both to submitit's log (live) and, at the end, to the run folder
    (``unlearn.pipeline.batch.save_run_log``), also when a timeout or preemption stops it.
    """
    job = spec.job
    unmet = [name for name, result in spec.needs if not _ended_ok(result)]
    if unmet:
        print(f"skipped: {unmet[0]} did not finish", flush=True)
        return 1, f"skipped: {unmet[0]} did not finish"
    cmd = [*job.cmd, *spec.extra]
    print(f"run {job.name}: {shlex.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=ROOT, env=job_env(None), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         bufsize=1)
    out: list[str] = []
    err: list[str] = []

    def pump(src, sink, keep):
        for line in src:
            keep.append(line)
            sink.write(line)
            sink.flush()

    pumps = [threading.Thread(target=pump, args=a, daemon=True)
             for a in ((p.stdout, sys.stdout, out), (p.stderr, sys.stderr, err))]
    try:
        for t in pumps:
            t.start()
        rc = p.wait()
    except BaseException:  # submitit's timeout/preemption handler: stop the run too
        p.kill()
        p.wait()
        raise
    finally:
        for t in pumps:
            t.join(timeout=10)
        save_run_log(job.folder, cmd, "".join(out), "".join(err))
    if rc < 0:  # scancel or the time limit: SLURM signalled the step; submitit must record a failure
        raise ChildKilled(f"{job.name}: the stage command was killed by signal {-rc} ({signal_name(-rc)}) after "
                          f"{time.perf_counter() - t0:.1f}s; log {job.folder / 'stderr.txt'}")
    return judge(job, rc, f"{last_line(''.join(err), ''.join(out))} ({time.perf_counter() - t0:.1f}s)")[1:]


class ChildKilled(RuntimeError):
    """A job's stage command died of a signal (``scancel``, a time limit, the OOM killer)."""


def signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return "unknown signal"


