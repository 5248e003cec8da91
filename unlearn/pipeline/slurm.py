"""``run.py --executor slurm``: the job graph of :mod:`unlearn.pipeline.runner` on SLURM through submitit.

One SLURM job per run. Each job executes exactly the stand-alone stage command
that the run's ``command.txt`` records, as a subprocess in the repository root,
and saves that log in the run folder, as ``run.py`` does on one machine. The
pending runs go out as job arrays, one per stage script and depth of the graph
(``--array_parallelism`` caps how many of an array run at once), chained by
SLURM dependencies, so ``run.py`` submits everything at once and then waits.

Dependencies are ``afterany`` on the arrays a run depends on, never ``afterok``:
with ``afterok`` one failed run would hold every run of the next array pending
forever (``DependencyNeverSatisfied``). Instead each job first checks the runs
it needs (its hard dependencies): when one of them did not finish (submitit's
result for it is missing, an error, or a non-zero exit), it is skipped and says
which. Soft dependencies (the distribution stage) only order the jobs.

A run is finished when it exits 0 and leaves fresh results (``Job.fresh``), as
for ``run.py --executor local``; finished runs are not submitted unless
``--force``. submitit keeps each job's script, pickled call, result and
stdout/stderr under ``--slurm_folder`` (default ``{log_root}/slurm``); the
runs submitted there are listed in ``submitted.json`` so that, after ``run.py``
was killed, a rerun waits for those still queued or running instead of
submitting them twice; one launcher at a time submits to a log root
(:class:`unlearn.pipeline.slurm_queue.SubmitLock`), and the ledger's entries are
merged, never overwritten wholesale. Job states come from squeue, and from sacct
where accounting works (:class:`unlearn.pipeline.slurm_queue.Queue`); the wait
shows pending reasons and stops after ``--slurm_wait_min`` (the jobs stay queued;
a rerun waits for them). A job that left the queue without a result, or whose
stage command was killed by a signal (``scancel``, the time limit), is a failure
that names its state or signal and its logs. submitit requeues a preempted job
(the run starts over; outputs are atomic).

``--executor submitit-local`` runs the same jobs through submitit's
``LocalExecutor`` as local processes (tests, laptops). That executor knows no
dependencies, so there a run is submitted once the runs it depends on have
ended, at most ``--array_parallelism`` at a time.
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

import config
from ..core.cli import nonneg_int, positive_float, positive_int
from ..core.errors import Stopped, UsageError
from ..store.checkpoint import atomic_write_json
from .runner import ROOT, pending_jobs
from .slurm_job import RunSpec, run_job
from .slurm_queue import LEFT, Queue, SubmitLock, pending_summary

EXECUTORS = ("local", "slurm", "submitit-local")
# sbatch options set here or by submitit; --slurm_extra may not override them
RESERVED = {"array", "dependency", "output", "error", "job-name", "open-mode", "signal", "wckey"}
MAX_ARRAY = 1000  # SLURM's default MaxArraySize is 1001
LEDGER = "submitted.json"
WAIT_MIN = 24 * 60  # --slurm_wait_min: a day, then run.py stops waiting (the jobs stay queued)
POLL_S = 10  # seconds between two looks at the queue


def add_slurm_args(p):
    """The cluster flags of ``run.py``; defaults per dataset in ``config.SLURM``."""
    g = p.add_argument_group("cluster (--executor slurm or submitit-local; defaults per dataset in config.SLURM)")
    g.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local: this machine (--jobs); slurm: one SLURM job per run through submitit; "
                        "submitit-local: the same submitit path with the jobs as local processes")
    g.add_argument("--slurm_partition", "--slurm-partition", default=None,
                   help="SLURM partition (default: config.SLURM, else the cluster's default)")
    g.add_argument("--gpus_per_job", "--gpus-per-job", type=nonneg_int, default=None)
    g.add_argument("--cpus_per_job", "--cpus-per-job", type=positive_int, default=None,
                   help="CPUs per job (a CPU-only job runs with config.CPU_THREADS torch threads whatever this is)")
    g.add_argument("--mem_gb", "--mem-gb", type=positive_float, default=None)
    g.add_argument("--timeout_min", "--timeout-min", type=positive_int, default=None)
    g.add_argument("--array_parallelism", "--array-parallelism", type=positive_int, default=None,
                   help="runs of one array at once (slurm default: no limit; submitit-local: CPUs / cpus_per_job)")
    g.add_argument("--slurm_extra", "--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. account=abc, qos=high, constraint=a100; repeatable; "
                        "a bare KEY is a flag (requeue)")
    g.add_argument("--slurm_folder", "--slurm-folder", default=None,
                   help="submitit's folder: scripts, logs, results (default: {log_root}/slurm)")
    g.add_argument("--slurm_wait_min", "--slurm-wait-min", type=positive_float, default=WAIT_MIN,
                   help="stop waiting after this many minutes (exit 1; the jobs stay queued, a rerun waits for them)")


@dataclass
class ClusterOptions:
    """Where and with what resources each run is submitted."""

    cluster: str  # "slurm" or "local" (submitit's LocalExecutor)
    folder: Path
    name: str  # job-name prefix
    partition: str | None
    gpus_per_job: int
    cpus_per_job: int
    mem_gb: float
    timeout_min: int
    array_parallelism: int | None = None
    extra: dict = field(default_factory=dict)
    wait_min: float = WAIT_MIN


def cluster_options(args, setting) -> ClusterOptions:
    """The flags of :func:`add_slurm_args` over ``config.SLURM[dataset]``; bad values raise UsageError."""
    d = config.SLURM.get(setting.dataset, {})
    extra = {}
    for item in args.slurm_extra:
        key, eq, value = item.partition("=")
        key = key.strip().lstrip("-").replace("_", "-")
        if not key or (eq and not value) or any(c.isspace() for c in key):
            raise UsageError(f"--slurm_extra {item!r} is not KEY=VALUE (e.g. --slurm_extra account=abc)")
        if key in RESERVED:
            raise UsageError(f"--slurm_extra {key} is set by run.py itself; leave it out")
        extra[key] = value if eq else True
    cluster = "slurm" if args.executor == "slurm" else "local"
    if cluster == "slurm" and not args.dry_run and not (shutil.which("sbatch") and shutil.which("srun")):
        raise UsageError("--executor slurm needs SLURM's sbatch and srun on PATH (run it on the cluster); "
                         "--dry-run shows what would be submitted, --executor submitit-local runs it here")
    def pick(flag, key):
        if flag is None and key not in d:
            flag = "slurm_partition" if key == "partition" else key
            raise UsageError(f"config.SLURM has no {key} for {setting.dataset}; add it there or pass --{flag}")
        return d[key] if flag is None else flag

    return ClusterOptions(
        cluster=cluster, folder=Path(args.slurm_folder or Path(setting.log_root) / "slurm").absolute(),
        name=setting.dataset, partition=pick(args.slurm_partition, "partition"),
        gpus_per_job=pick(args.gpus_per_job, "gpus_per_job"), cpus_per_job=pick(args.cpus_per_job, "cpus_per_job"),
        mem_gb=pick(args.mem_gb, "mem_gb"), timeout_min=pick(args.timeout_min, "timeout_min"),
        array_parallelism=args.array_parallelism, extra=extra, wait_min=float(args.slurm_wait_min))


# ---------------------------------------------------------------- the plan


@dataclass
class Array:
    """Pending runs of one stage script at one depth of the graph: one submission."""

    label: str
    jobs: list  # unlearn.pipeline.runner.Job
    after: list[int]  # arrays (indices in the plan) it waits for
    after_ids: list[str]  # SLURM ids of runs still in flight from an earlier run.py


def plan_arrays(jobs: list, todo: list, in_flight: dict[str, str]) -> list[Array]:
    """Group the runs to submit (``todo``) into arrays, in dependency order.

    ``in_flight``: {run name: SLURM job id} of runs already queued or running.
    """
    names = {j.name for j in todo}
    by_name = {j.name: j for j in jobs}
    depth: dict[str, int] = {}

    def level(name: str) -> int:
        if name not in depth:
            depth[name] = 1 + max([level(d) for d in by_name[name].deps if d in names], default=-1)
        return depth[name]

    groups: dict[tuple, list] = {}
    for j in todo:
        groups.setdefault((level(j.name), j.cmd[1]), []).append(j)
    first: dict[str, int] = {}
    for i, j in enumerate(jobs):
        first.setdefault(j.cmd[1], i)
    arrays, where = [], {}
    for key in sorted(groups, key=lambda k: (k[0], first[k[1]])):
        group = groups[key]
        for i in range(0, len(group), MAX_ARRAY):
            part = group[i:i + MAX_ARRAY]
            after = sorted({where[d] for j in part for d in j.deps if d in where})
            ids = sorted({in_flight[d] for j in part for d in j.deps if d in in_flight})
            arrays.append(Array(part[0].name.split(":")[0], part, after, ids))
            where.update({j.name: len(arrays) - 1 for j in part})
    return arrays


def thread_flags(job, opts: ClusterOptions) -> list[str]:
    """``--threads`` for a CPU-only job: its pinned count (:meth:`unlearn.pipeline.runner.Job.cpu_threads`),
    as ``run.py --executor local`` gives it, so both executors make the same numbers."""
    if opts.gpus_per_job:
        return []
    return ["--threads", str(job.cpu_threads())]


def _setup() -> list[str]:
    """Shell lines before the job: the repository on PYTHONPATH, so the job can import this module."""
    return [f"export PYTHONPATH={shlex.quote(str(ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}"]


def slurm_parameters(opts: ClusterOptions, array: Array, dependency: str | None) -> dict:
    """SlurmExecutor parameters of one array (what ``sbatch`` gets)."""
    from submitit.slurm.slurm import _convert_mem  # lazy: start-up time

    extra = dict(opts.extra)
    if dependency:
        extra["dependency"] = dependency
    p = dict(job_name=f"{opts.name}-{array.label}", time=opts.timeout_min, mem=_convert_mem(opts.mem_gb),
             cpus_per_task=opts.cpus_per_job, array_parallelism=opts.array_parallelism or 256, setup=_setup())
    if opts.gpus_per_job:
        p["gpus_per_node"] = opts.gpus_per_job
    if opts.partition:
        p["partition"] = opts.partition
    if extra:
        p["additional_parameters"] = extra
    return p


def dependency_of(array: Array, array_ids: dict[int, str]) -> str | None:
    ids = [array_ids[k] for k in array.after] + array.after_ids
    return "afterany:" + ":".join(ids) if ids else None


def sbatch_text(opts: ClusterOptions, array: Array, dependency: str | None) -> str:
    """The sbatch script submitit writes for ``array`` (without submitting anything)."""
    from submitit.slurm.slurm import _make_sbatch_string  # lazy: start-up time

    n = len(array.jobs)
    return _make_sbatch_string(command="<python -m submitit.core._submit>", folder=str(opts.folder / "%j"),
                               map_count=n if n > 1 else None, **slurm_parameters(opts, array, dependency))


def print_plan(arrays: list[Array], opts: ClusterOptions, *, done: list[str], in_flight: dict[str, str]):
    """What ``run.py --dry-run --executor slurm`` shows: arrays, dependencies, resources, commands."""
    n = sum(len(a.jobs) for a in arrays)
    print(f"# {opts.cluster} through submitit, dry run (nothing submitted): {n} runs in {len(arrays)} arrays; "
          f"{len(done)} already done, {len(in_flight)} still queued or running")
    print(f"# per run: {opts.gpus_per_job} GPU, {opts.cpus_per_job} CPUs, {opts.mem_gb:g} GB, {opts.timeout_min} min, "
          f"partition {opts.partition or '(cluster default)'}; submitit folder {opts.folder}")
    flags = []
    for a in arrays:  # submitit's LocalExecutor writes no sbatch script
        dep = dependency_of(a, {i: f"<array {i + 1}>" for i in range(len(arrays))})
        text = sbatch_text(opts, a, dep) if opts.cluster == "slurm" else ""
        flags.append([x for x in text.splitlines() if x.startswith("#SBATCH")])
    shared = [x for x in flags[0] if all(x in f for f in flags)] if flags else []
    if shared:
        print("# sbatch options of every array:")
        print("\n".join(f"#   {x}" for x in shared))
    for k, (a, lines) in enumerate(zip(arrays, flags)):
        after = ", ".join([f"array {i + 1}" for i in a.after] + a.after_ids) or "nothing"
        print(f"array {k + 1}: {len(a.jobs)} {a.label} run(s), after {after}")
        print("".join(f"#   {x}\n" for x in lines if x not in shared), end="")
        for j in a.jobs:
            print("  " + shlex.join([*j.cmd, *thread_flags(j, opts)]))
    for name in done:
        print(f"# done: {name}")
    for name, jid in in_flight.items():
        print(f"# in flight: {name} (SLURM job {jid})")


# ---------------------------------------------------------------- submitting and waiting


def make_executor(opts: ClusterOptions):
    import submitit  # lazy: start-up time

    if opts.cluster == "slurm":
        return submitit.SlurmExecutor(folder=opts.folder / "%j")
    ex = submitit.LocalExecutor(folder=opts.folder)  # its controller would make a literal "%j" folder
    ex.update_parameters(timeout_min=opts.timeout_min, gpus_per_node=opts.gpus_per_job, setup=_setup())
    return ex


def _ledger(opts: ClusterOptions) -> dict:
    try:
        return json.loads((opts.folder / LEDGER).read_text())
    except (OSError, ValueError):
        return {}


def _record(opts: ClusterOptions, entries: dict):
    """Merge ``entries`` into the ledger (read again just before writing; callers hold the submit lock)."""
    atomic_write_json(opts.folder / LEDGER, {**_ledger(opts), **entries})


def adopt(todo: list, opts: ClusterOptions, queue: Queue | None = None) -> dict:
    """{run name: SlurmJob} of the runs an earlier ``run.py`` submitted with the same command, still in flight
    (in the queue, as squeue sees it)."""
    from submitit import SlurmJob  # lazy: start-up time

    ledger = _ledger(opts)
    known = {j.name: SlurmJob(folder=opts.folder / "%j", job_id=ledger[j.name]["job_id"]) for j in todo
             if j.name in ledger and ledger[j.name].get("cmd") == j.cmd}
    if not known:
        return {}
    queued = (queue or Queue()).in_queue()
    return {name: h for name, h in known.items() if h.job_id in queued and queued[h.job_id].active}


def submit_array(executor, opts: ClusterOptions, array: Array, *, dependency: str | None, results: dict) -> list:
    """Submit one array; returns its submitit jobs. ``results``: {run name: result pickle} of runs submitted."""
    if opts.cluster == "slurm":
        executor.update_parameters(**slurm_parameters(opts, array, dependency))
    specs = [RunSpec(j, thread_flags(j, opts), [(d, results[d]) for d in j.deps if d in results and not j.soft_deps])
             for j in array.jobs]
    try:
        with executor.batch():
            handles = [executor.submit(run_job, s) for s in specs]
    except Exception as e:  # sbatch refused it (partition, account, limits ...)
        lines = [x for x in str(e).strip().splitlines() if x.strip()]
        raise UsageError(f"submitting the {array.label} array failed: {lines[-1] if lines else e}; arrays "
                         f"submitted before it stay queued (see {opts.folder / LEDGER})") from None
    if opts.cluster == "slurm":
        _record(opts, {j.name: {"job_id": h.job_id, "cmd": j.cmd} for j, h in zip(array.jobs, handles)})
    return handles


def outcome(job, handle, state: str | None = None) -> tuple[int, str]:
    """How a submitted run ended, naming its logs when it failed; ``state``: its SLURM state where known
    (:class:`unlearn.pipeline.slurm_queue.Queue`), else submitit's."""
    where = f"run folder {job.folder}; submitit log {handle.paths.stdout}, {handle.paths.stderr}"
    if not handle.paths.result_pickle.exists() and state is not None:
        known = "state unknown: accounting is disabled" if state == LEFT else f"state {state}"
        return 1, f"left the queue without a result ({known}; cancelled, killed or its node failed) ({where})"
    try:
        rc, tail = handle.result()
    except Exception as e:  # timed out, cancelled, node failure, or the job body raised
        lines = [x for x in str(e).splitlines() if x.strip() and not x.startswith("-")]
        why = next((x for x in reversed(lines) if "ChildKilled" in x or "Error" in x),
                   lines[-1] if lines else type(e).__name__)
        return 1, f"{state or handle.state}: {why.strip()} ({where})"
    return (0, tail) if rc == 0 else (rc, f"{tail or f'exit {rc}'} ({where})")


def submit_graph(executor, opts: ClusterOptions, arrays: list[Array], results: dict) -> dict:
    """Submit every array at once, each ``afterany`` the arrays it depends on; returns {run name: SlurmJob}.

    ``results``: {run name: submitit result pickle} of runs in flight, updated with the new ones.
    """
    handles, array_ids = {}, {}
    for k, a in enumerate(arrays):
        dep = dependency_of(a, array_ids)
        new = submit_array(executor, opts, a, dependency=dep, results=results)
        array_ids[k] = new[0].job_id.split("_")[0]
        handles.update({j.name: h for j, h in zip(a.jobs, new)})
        results.update({j.name: str(h.paths.result_pickle) for j, h in zip(a.jobs, new)})
        print(f"submitted {len(new)} {a.label} run(s): SLURM {'array ' if len(new) > 1 else 'job '}"
              f"{array_ids[k]}{', ' + dep if dep else ''}", flush=True)
    return handles


def run_jobs_slurm(jobs: list, opts: ClusterOptions, *, force: bool = False, dry_run: bool = False,
                   progress: bool = True) -> dict[str, tuple[int, str]]:
    """Submit the pending runs and wait for them; returns {name: (exit code, last line)} like ``run_jobs``.

    On SLURM the runs in flight are looked up, planned and submitted under the log root's
    :class:`SubmitLock`; the wait (:func:`wait_slurm`) is outside it.
    """
    todo = pending_jobs(jobs, force)
    status = {j.name: (0, "already done") for j in jobs if j not in todo}
    slurm = opts.cluster == "slurm"
    queue = Queue() if slurm else None
    by_name = {j.name: j for j in jobs}
    with (SubmitLock(opts.folder) if slurm and not dry_run else contextlib.nullcontext()):
        try:
            running = adopt(todo, opts, queue) if slurm else {}
        except UsageError:
            if not dry_run:
                raise
            running = {}  # a dry run off the cluster: nothing can be in flight that it could see
        in_flight = {name: h.job_id for name, h in running.items()}
        todo = [j for j in todo if j.name not in running]
        arrays = plan_arrays(jobs, todo, in_flight)
        if dry_run:
            print_plan(arrays, opts, done=list(status), in_flight=in_flight)
            return status
        results = {name: str(h.paths.result_pickle) for name, h in running.items()}
        executor = make_executor(opts)
        if in_flight:
            print(f"waiting for {len(in_flight)} run(s) submitted earlier and still queued or running", flush=True)
        if slurm:
            print(queue.source, flush=True)
            running.update(submit_graph(executor, opts, arrays, results))
    bar = tqdm(total=len(todo) + len(in_flight), desc="runs", disable=not progress)
    try:
        if slurm:
            wait_slurm(running, by_name, opts, queue, status, bar)
        else:
            run_local(executor, opts, [j for a in arrays for j in a.jobs], running, results, status, bar)
    except KeyboardInterrupt:
        if not slurm:
            for h in running.values():
                h.cancel(check=False)
            raise Stopped("interrupted: the runs still going were cancelled", code=130) from None
        try:
            left = [st for st in queue.states([h.job_id for h in running.values()]).values() if st.active]
        except UsageError:
            left = None
        what = "their state unknown (squeue failed)" if left is None else (pending_summary(left) or "none left")
        raise Stopped(f"interrupted: {len(running) if left is None else len(left)} run(s) stay queued or running "
                      f"on SLURM ({what}); rerun the same command to wait for them (they are not submitted again), "
                      "or --summary-only once they ended", code=130) from None
    finally:
        bar.close()
    return status


def wait_slurm(running: dict, by_name: dict, opts: ClusterOptions, queue: Queue, status: dict, bar) -> None:
    """Wait for the SLURM jobs in ``running`` ({run name: SlurmJob}), filling ``status``.

    A job is over when its result file exists, or when it has left the queue at two looks in a row
    without one (the second look lets a result written at the very end arrive). Pending reasons are
    shown whenever they change; after ``opts.wait_min`` minutes :class:`Stopped` is raised with what
    is still queued (the jobs stay queued: a rerun waits for them).
    """
    t0, shown, gone = time.monotonic(), None, set()
    while running:
        states = queue.states([h.job_id for h in running.values()])
        for name, h in list(running.items()):
            st = states.get(h.job_id)
            over = st is None or not st.active
            if h.paths.result_pickle.exists() and over:
                final = st.state if st is not None and st.state != LEFT else "FAILED"
                status[name] = outcome(by_name[name], running.pop(name), final)
            elif over and name in gone:
                status[name] = outcome(by_name[name], running.pop(name), st.state if st else LEFT)
            else:
                if over:
                    gone.add(name)
                continue
            bar.update()
            bar.set_postfix_str(name[:40])
        note = pending_summary(st for name, h in running.items() if (st := states.get(h.job_id)) and st.active)
        if note and note != shown:
            tqdm.write(note)
        shown = note
        if running and time.monotonic() - t0 > opts.wait_min * 60:
            raise Stopped(f"waited {opts.wait_min:g} min (--slurm_wait_min); {len(running)} run(s) still queued or "
                          f"running ({note or 'state unknown'}) stay on SLURM; rerun the same command to wait for "
                          f"them (they are not submitted again)")
        if running:
            time.sleep(POLL_S)


def run_local(executor, opts: ClusterOptions, queue: list, running: dict, results: dict, status: dict, bar) -> None:
    """submitit's LocalExecutor knows no dependencies: release each run once the runs it needs have ended,
    at most ``--array_parallelism`` (default CPUs / cpus_per_job) at a time."""
    limit = opts.array_parallelism or max(1, (os.cpu_count() or 1) // opts.cpus_per_job)
    by_name = {j.name: j for j in queue}
    while queue or running:
        for j in list(queue):
            if len(running) >= limit:
                break
            if any(d not in status for d in j.deps):
                continue
            queue.remove(j)
            failed = [] if j.soft_deps else [d for d in j.deps if status[d][0] != 0]
            if failed:
                status[j.name] = (1, f"skipped: {failed[0]} did not finish")
                bar.update()
                continue
            running[j.name] = submit_array(executor, opts, Array(j.name, [j], [], []), dependency=None,
                                           results=results)[0]
            results[j.name] = str(running[j.name].paths.result_pickle)
        for name, h in list(running.items()):
            if h.done():
                status[name] = outcome(by_name[name], running.pop(name))
                bar.update()
                bar.set_postfix_str(name[:40])
        if queue and not running and not any(all(d in status for d in j.deps) for j in queue):
            raise RuntimeError("no job can start: the job graph has a dependency cycle")
        if queue or running:
            time.sleep(0.5)
