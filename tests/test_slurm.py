"""run.py --executor slurm / submitit-local: sbatch scripts and dependencies (a fake SLURM on PATH),
resubmission after run.py was killed, and the same summary as the in-process run."""
import csv
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest

import config
from conftest import ROOT
from unlearn.core.errors import UsageError
from unlearn.launcher import main as launch
from unlearn.pipeline.runner import build_jobs
from unlearn.store.setting import Setting
from unlearn.pipeline.slurm import ClusterOptions, adopt, plan_arrays, sbatch_text, submit_graph

submitit = pytest.importorskip("submitit")
from submitit.core.utils import DelayedSubmission  # noqa: E402

FAKE = {
    "sbatch": """#!/bin/sh
n=$(cat "$FAKE_SLURM/next"); echo $((n + 1)) > "$FAKE_SLURM/next"
cp "$1" "$FAKE_SLURM/$n.sh"; echo "Submitted batch job $n"
""",
    "sacct": """#!/bin/sh
[ -f "$FAKE_SLURM/no_accounting" ] && { echo "Slurm accounting storage is disabled" >&2; exit 1; }
echo "JobID|State|NodeList"; cat "$FAKE_SLURM/states" 2>/dev/null
""",
    "squeue": """#!/bin/sh
cat "$FAKE_SLURM/queue" 2>/dev/null; exit 0
""",
    "srun": "#!/bin/sh\nexit 1\n",
    "scancel": "#!/bin/sh\nexit 0\n",
}


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sbatch records each script and answers with job ids 1001, 1002...; sacct reads ``states`` (and says
    accounting is disabled while ``no_accounting`` exists); squeue reads ``queue`` (``id|STATE|reason``)."""
    bin_dir, rec = tmp_path / "bin", tmp_path / "sbatch"
    bin_dir.mkdir()
    rec.mkdir()
    for name, text in FAKE.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    (rec / "next").write_text("1001\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(rec))
    return rec


def digits_graph(log_root, stages=("pretrain", "forget", "attack", "distribution")):
    base = Setting(net="SmallCNN", dataset="Digits", classes=10, forget_class=4, ood_classes=[8, 9],
                   data_root="./data", log_root=str(log_root))
    methods = [("baseline", 0, 0, {}), ("retrain", 0.01, 6, {}), ("finetune", 0.1, 3, {})]
    return build_jobs(base, methods=methods, seeds=[0, 1], stages=list(stages), attack=dict(trials=4))


def options(folder, **kw):
    d = dict(cluster="slurm", folder=folder, name="Digits", partition="gpu", gpus_per_job=1, cpus_per_job=4,
             mem_gb=16, timeout_min=90, array_parallelism=3, extra={"account": "abc"})
    return ClusterOptions(**{**d, **kw})


def sbatch_flags(text):
    return dict(line[len("#SBATCH --"):].partition("=")[::2] for line in text.splitlines()
                if line.startswith("#SBATCH --"))


def submitted_specs(folder):
    return {s.job.name: s for s in (DelayedSubmission.load(p).args[0] for p in folder.rglob("*_submitted.pkl"))}


def test_sbatch_scripts_arrays_and_dependencies(tmp_path, fake_slurm):
    jobs = digits_graph(tmp_path / "logs")
    opts = options(tmp_path / "slurm")
    arrays = plan_arrays(jobs, jobs, {})
    assert [(a.label, len(a.jobs), a.after) for a in arrays] == [
        ("pretrain", 1, []), ("forget", 6, [0]), ("attack", 6, [1]), ("distribution", 6, [1])]
    handles = submit_graph(submitit.SlurmExecutor(folder=opts.folder / "%j"), opts, arrays, {})
    scripts = [(fake_slurm / f"{1001 + k}.sh").read_text() for k in range(len(arrays))]
    assert not (fake_slurm / f"{1001 + len(arrays)}.sh").exists()
    flags = [sbatch_flags(s) for s in scripts]
    for f, a in zip(flags, arrays):
        assert (f["partition"], f["gpus-per-node"], f["cpus-per-task"], f["mem"], f["time"], f["account"]) == (
            "gpu", "1", "4", "16GB", "90", "abc")
        assert f["job-name"] == f"Digits-{a.label}"
    assert "array" not in flags[0] and "dependency" not in flags[0]
    assert flags[1]["array"] == "0-5%3" and flags[1]["dependency"] == "afterany:1001"
    assert flags[2]["array"] == "0-5%3" and flags[2]["dependency"] == "afterany:1002"
    assert flags[3]["array"] == "0-5%3" and flags[3]["dependency"] == "afterany:1002"
    assert all(f"export PYTHONPATH={ROOT}" in s for s in scripts)
    # the dry run shows exactly these scripts
    deps = [None, "afterany:1001", "afterany:1002", "afterany:1002"]
    for s, a, dep in zip(scripts, arrays, deps):
        assert sbatch_flags(sbatch_text(opts, a, dep)) == sbatch_flags(s)
    # each job runs its stand-alone command and first checks the runs it needs
    specs = submitted_specs(opts.folder)
    assert set(specs) == {j.name for j in jobs} == set(handles)
    for j in jobs:
        s = specs[j.name]
        assert s.job.cmd == j.cmd and s.extra == []  # a GPU job gets no --threads
        needs = [] if j.soft_deps else j.deps
        assert [n for n, _ in s.needs] == needs
        assert all(p == str(handles[n].paths.result_pickle) for n, p in s.needs)
    attack = next(j for j in jobs if j.name.startswith("attack:") and "finetune" in j.name and "seed1" in j.name)
    assert {n.split(":")[0] for n, _ in specs[attack.name].needs} == {"forget"} and len(specs[attack.name].needs) == 2
    ledger = json.loads((opts.folder / "submitted.json").read_text())
    assert ledger[attack.name]["job_id"].startswith("1003_") and ledger[attack.name]["cmd"] == attack.cmd


def test_rerun_waits_for_runs_in_flight_and_submits_the_rest(tmp_path, fake_slurm):
    """After run.py was killed, runs still queued or running are not submitted twice."""
    jobs = digits_graph(tmp_path / "logs", stages=("forget", "attack"))
    opts = options(tmp_path / "slurm")
    first = submit_graph(submitit.SlurmExecutor(folder=opts.folder / "%j"), opts, plan_arrays(jobs, jobs, {}), {})
    forget = [n for n in first if n.startswith("forget:")]
    attack = [n for n in first if n.startswith("attack:")]
    # the forget array still runs; the attack array was cancelled
    states = [f"{first[n].job_id}|RUNNING|node1" for n in forget[:4]] + [f"{first[forget[4]].job_id}|PENDING|"]
    states += [f"{first[n].job_id}|CANCELLED by 1|" for n in attack] + [f"{first[forget[5]].job_id}|COMPLETED|n"]
    (fake_slurm / "states").write_text("\n".join(states) + "\n")
    queue = [f"{first[n].job_id}|RUNNING|None" for n in forget[:4]] + [f"{first[forget[4]].job_id}|PENDING|Priority"]
    (fake_slurm / "queue").write_text("\n".join(queue) + "\n")
    (fake_slurm / "no_accounting").write_text("")  # squeue alone tells what is in flight
    in_flight = adopt(jobs, opts)
    assert set(in_flight) == set(forget[:5])  # completed without fresh results: submitted again
    todo = [j for j in jobs if j.name not in in_flight]
    arrays = plan_arrays(jobs, todo, {n: h.job_id for n, h in in_flight.items()})
    # attacks whose forget runs are in flight wait for those tasks; the one of the resubmitted run for its array
    assert [(a.label, len(a.jobs)) for a in arrays] == [("forget", 1), ("attack", 5), ("attack", 1)]
    submit_graph(submitit.SlurmExecutor(folder=opts.folder / "%j"), opts, arrays, {})
    deps = [sbatch_flags((fake_slurm / f"{n}.sh").read_text()).get("dependency") for n in (1003, 1004, 1005)]
    assert [first[n].job_id for n in forget] == [f"1001_{k}" for k in range(6)]
    assert deps == [None, "afterany:" + ":".join(f"1001_{k}" for k in range(5)), "afterany:1003:1001_4"]
    assert not (fake_slurm / "1006.sh").exists()


def _wait(tmp_path, fake_slurm, *, wait_min=60.0):
    """Submit a two-run forget array to the fake SLURM; returns its jobs, handles, the status dict and the wait."""
    from unlearn.pipeline import slurm as SL

    jobs = digits_graph(tmp_path / "logs", stages=("forget",))[:2]
    opts = options(tmp_path / "slurm", wait_min=wait_min)
    handles = submit_graph(submitit.SlurmExecutor(folder=opts.folder / "%j"), opts, plan_arrays(jobs, jobs, {}), {})
    status = {}
    bar = type("Bar", (), {"update": lambda *a: None, "set_postfix_str": lambda *a: None})()
    return jobs, handles, status, lambda: SL.wait_slurm(dict(handles), {j.name: j for j in jobs}, opts, SL.Queue(),
                                                        status, bar)


def test_without_accounting_a_job_gone_from_the_queue_without_result_fails(tmp_path, fake_slurm, monkeypatch):
    from unlearn.pipeline import slurm as SL

    (fake_slurm / "no_accounting").write_text("")
    monkeypatch.setattr(SL, "POLL_S", 0.01)
    jobs, handles, status, wait = _wait(tmp_path, fake_slurm)
    first = jobs[0].name
    from submitit.core.utils import cloudpickle_dump

    handles[first].paths.result_pickle.parent.mkdir(parents=True, exist_ok=True)
    cloudpickle_dump(("success", (0, "d_t 99 (1.0s)")), handles[first].paths.result_pickle)
    wait()
    assert status[first] == (0, "d_t 99 (1.0s)")
    rc, line = status[jobs[1].name]
    assert rc == 1 and "left the queue without a result (state unknown: accounting is disabled" in line
    assert str(jobs[1].folder) in line and "_log.err" in line
    assert "squeue only" in SL.Queue().source


def test_with_accounting_the_final_state_is_named(tmp_path, fake_slurm, monkeypatch):
    from unlearn.pipeline import slurm as SL

    monkeypatch.setattr(SL, "POLL_S", 0.01)
    jobs, handles, status, wait = _wait(tmp_path, fake_slurm)
    (fake_slurm / "states").write_text("".join(f"{h.job_id}|CANCELLED by 0|\n" for h in handles.values()))
    wait()
    assert all(v[0] == 1 and "left the queue without a result (state CANCELLED;" in v[1] for v in status.values())


def test_the_wait_shows_pending_reasons_and_stops_at_its_limit(tmp_path, fake_slurm, monkeypatch, capsys):
    from unlearn.core.errors import Stopped
    from unlearn.pipeline import slurm as SL

    monkeypatch.setattr(SL, "POLL_S", 0.01)
    jobs, handles, status, wait = _wait(tmp_path, fake_slurm, wait_min=0.002)
    (fake_slurm / "queue").write_text("".join(f"{h.job_id}|PENDING|ReqNodeNotAvail, UnavailableNodes:vm\n"
                                              for h in handles.values()))
    with pytest.raises(Stopped, match=r"waited 0.002 min .*2 run\(s\) still queued .*2 pending: ReqNodeNotAvail"):
        wait()
    assert "2 pending: ReqNodeNotAvail, UnavailableNodes:vm" in capsys.readouterr().out
    assert not status


def test_a_signalled_stage_command_fails_the_job(tmp_path):
    from unlearn.pipeline.runner import Job
    from unlearn.pipeline.slurm_job import ChildKilled, RunSpec, run_job

    job = Job("forget:x", [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"],
              tmp_path / "run", [])
    with pytest.raises(ChildKilled, match=r"killed by signal 15 \(SIGTERM\).*stderr.txt"):
        run_job(RunSpec(job, [], []))
    assert (tmp_path / "run" / "command.txt").is_file()  # the log is saved all the same


def test_one_submitter_at_a_time(tmp_path):
    from unlearn.pipeline.slurm_queue import SubmitLock

    with SubmitLock(tmp_path) as a:
        assert a.holder()["pid"] == os.getpid()
        with pytest.raises(UsageError, match=r"another run.py \(pid \d+ on .*\) is submitting.*submit.lock"):
            with SubmitLock(tmp_path, wait_s=0.05, poll_s=0.01, say=lambda *a, **k: None):
                pass
    assert not (tmp_path / "submit.lock").exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    (tmp_path / "submit.lock").write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    with SubmitLock(tmp_path, wait_s=0.05, poll_s=0.01):  # a dead holder on this host: taken over
        pass
    (tmp_path / "submit.lock").write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(UsageError, match="delete"):  # another host's lock is never taken over
        with SubmitLock(tmp_path, wait_s=0.05, poll_s=0.01, say=lambda *a, **k: None):
            pass


def test_bad_cluster_flags_are_one_line_errors(tmp_path):
    d = defaults_for([("baseline", 0, 0)])
    for bad in (["--slurm_extra", "=x"], ["--slurm_extra", "dependency=afterok:1"], ["--slurm_extra", "qos="]):
        with pytest.raises(UsageError):
            launch([*argv_for(tmp_path), "--executor", "slurm", "--dry-run", *bad], d)
    if not shutil.which("sbatch"):
        with pytest.raises(UsageError, match="sbatch"):
            launch([*argv_for(tmp_path), "--executor", "slurm"], d)
    p = subprocess.run([sys.executable, "run.py", "--executor", "slurm", "--gpus_per_job", "-1", "--log-root",
                        str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "gpus_per_job" in p.stderr
    assert not list(tmp_path.iterdir())


def test_dry_run_of_the_cifar20_grid_needs_no_data(tmp_path, capsys):
    d = {**defaults_for(None), "dataset": "Cifar20", "stages": ["pretrain", "forget", "attack", "distribution"]}
    assert launch(["--log-root", str(tmp_path / "logs"), "--data-root", str(tmp_path / "none"), "--executor",
                   "slurm", "--dry-run", "--slurm_partition", "gpu"], d) == 0
    out = capsys.readouterr().out
    heads = [line for line in out.splitlines() if line.startswith("array ")]
    assert heads[0].startswith("array 1: 2 pretrain") and heads[0].endswith("after nothing")
    assert heads[1].startswith("array 2: ") and "forget" in heads[1] and heads[1].endswith("after array 1")
    for k, h in enumerate(heads[2:], 3):  # every later array waits for earlier ones only
        after = [int(x.split()[-1]) for x in h.split("after ")[1].split(", ")]
        assert after and max(after) < k
    assert "#SBATCH --partition=gpu" in out and "#SBATCH --gpus-per-node=1" in out
    n = len(config.MU_METHOD_LIST["Cifar20"])
    assert sum("forget_full_class_main_cifar20.py" in x and "-seed 0 -method" in x for x in out.splitlines()) == n
    assert "'afterany:<array 1>'" in out
    assert not (tmp_path / "logs").exists()


def test_job_skips_when_a_run_it_needs_did_not_finish(tmp_path):
    """On SLURM a job starts after its dependencies ended (afterany) and itself checks they succeeded."""
    from submitit.core.utils import cloudpickle_dump

    from unlearn.pipeline.runner import Job
    from unlearn.pipeline.slurm_job import RunSpec, run_job

    good, bad = tmp_path / "good.pkl", tmp_path / "bad.pkl"
    cloudpickle_dump(("success", (0, "done")), good)
    cloudpickle_dump(("success", (2, "error: ...")), bad)
    job = Job("attack:x", [sys.executable, "-c", "import sys; print('ran'); print('warn', file=sys.stderr); sys.exit(len(sys.argv) - 1)"],
              tmp_path / "run", [])
    for needs in ([("forget:a", str(good)), ("forget:b", str(bad))], [("forget:c", str(tmp_path / "none.pkl"))]):
        rc, msg = run_job(RunSpec(job, [], needs))
        assert rc != 0 and msg == f"skipped: {needs[-1][0]} did not finish"
        assert not (tmp_path / "run").exists()
    assert run_job(RunSpec(job, ["--x"], [("forget:a", str(good))]))[0] == 1  # the extra flag reaches the command
    assert run_job(RunSpec(job, [], [("forget:a", str(good))]))[0] == 0
    logs = {f: (tmp_path / "run" / f).read_text() for f in ("command.txt", "stdout.txt", "stderr.txt")}
    assert logs["stdout.txt"] == "ran\n" and logs["stderr.txt"] == "warn\n" and "-c" in logs["command.txt"]


# ---------------------------------------------------------------- end to end through submitit's LocalExecutor

METHODS = [("baseline", 0, 0), ("retrain", 0.01, 6), ("finetune", 0.1, 3), ("negative_grad_our", 0.01, 3)]


def defaults_for(methods):
    return dict(net=None, dataset="Digits", classes=None, forget_class=None, seeds=[0], weight_path=None,
                methods=methods, attack=None, stages=["pretrain", "forget"], python_file=None, jobs=None,
                replicates=1)


def argv_for(root):
    return ["--log-root", str(root), "--pretrain-epochs", "3", "--no-progress"]


def local_argv(root, parallel):
    return [*argv_for(root), "--executor", "submitit-local", "--cpus_per_job", "1", "--array_parallelism",
            str(parallel)]


def ok_runs(root):
    return {p.parent: p.stat().st_mtime_ns for p in root.rglob("results.json")
            if json.loads(p.read_text()).get("status") == "ok"}


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """run.py through submitit-local, one run at a time, killed after the first unlearning run; then rerun."""
    root = tmp_path_factory.mktemp("slurm_local")
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from unlearn.launcher import main; "
            f"sys.exit(main({local_argv(root, 1)!r}, {defaults_for(METHODS)!r}))")
    log = root / "killed_run.log"
    with log.open("w") as f:
        p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                             start_new_session=True, stdout=f, stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while time.time() < deadline and p.poll() is None and not list(root.rglob("unlearning/*/results.json")):
        time.sleep(0.2)
    running = p.poll() is None
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert running, f"run.py ended before it could be killed: {log.read_text()[-3000:]}"
    done = ok_runs(root)
    before = set(root.joinpath("slurm").glob("*_submitted.pkl"))
    t0 = time.perf_counter()
    rc = launch(local_argv(root, 2), defaults_for(METHODS))
    new = {DelayedSubmission.load(f).args[0].job.folder for f in set(root.joinpath("slurm").glob(
        "*_submitted.pkl")) - before}
    return root, rc, done, new, time.perf_counter() - t0


def test_rerun_after_kill_submits_only_unfinished_runs(resumed):
    root, rc, done, new, _ = resumed
    assert rc == 0
    runs = set(ok_runs(root))
    assert any(d.parent.name == "unlearning" for d in done) and any(r.parent.name == "pretrain" for r in done)
    assert new == runs - set(done) and new  # exactly the unfinished runs, each once
    assert all(ok_runs(root)[d] == t for d, t in done.items())  # finished runs untouched
    assert len([r for r in runs if r.parent.name == "unlearning"]) == len(METHODS)


def test_same_summary_as_the_in_process_run(resumed, tmp_path):
    root, _, _, _, _ = resumed
    assert launch([*argv_for(tmp_path), "--jobs", str(os.cpu_count())], defaults_for(METHODS)) == 0
    a, b = (list(csv.DictReader((r / "summary.csv").open())) for r in (root, tmp_path))
    assert [r["method"] for r in a] == [m for m, *_ in METHODS]
    for x, y in zip(a, b):
        assert {k: v for k, v in x.items() if not k.startswith("time")} == \
               {k: v for k, v in y.items() if not k.startswith("time")}
    for cmd in root.rglob("command.txt"):  # the very stand-alone command, as run.py records it
        twin = tmp_path / cmd.relative_to(root)
        assert cmd.read_text().replace(str(root), "ROOT") == twin.read_text().replace(str(tmp_path), "ROOT")
    # a tree made through submitit summarises like any other
    assert launch([*argv_for(root), "--summary-only"], defaults_for(METHODS)) == 0


def test_failed_run_is_reported_with_its_logs_and_its_attack_skipped(resumed, capsys):
    root = resumed[0]
    methods = [("baseline", 0, 0), ("finetune", -1.0, 1)]
    d = {**defaults_for(methods), "stages": ["forget", "attack"]}
    assert launch([*local_argv(root, 2), "--trials", "2", "--retrain_refs", "0"], d) == 1
    out = capsys.readouterr().out
    failed = out[out.index("run(s) failed:"):].splitlines()[1:]
    forget = next(x for x in failed if x.strip().startswith("forget:finetune"))
    assert "error:" in forget and "_log.out" in forget and "_log.err" in forget and "unlearning/finetune" in forget
    attack = next(x for x in failed if x.strip().startswith("attack:finetune"))
    assert "skipped: forget:finetune" in attack
    # the other runs go on: the baseline's attack ran (its own verdict is the attack stage's business)
    assert not [x for x in failed if "baseline" in x.split(":")[1] and "skipped" in x]
    assert list(root.rglob("mia_mu_attack/baseline*/command.txt"))


def test_local_and_slurm_executors_pin_the_same_threads(tmp_path, monkeypatch):
    """The thread count changes a CPU run's numbers: both executors give each run config.CPU_THREADS (the
    attack 1) whatever the machine's cores or --cpus_per_job, and a run made with another count is redone."""
    from unlearn.pipeline import runner
    from unlearn.pipeline.slurm import thread_flags
    from unlearn.store.identity import is_fresh, run_identity

    monkeypatch.setattr(runner, "visible_gpus", lambda: [])
    jobs = digits_graph(tmp_path / "logs")
    want = {j.name: 1 if j.name.startswith("attack") else config.CPU_THREADS["Digits"] for j in jobs}
    for cpus in (1, 2, 8):
        opts = options(tmp_path / "slurm", gpus_per_job=0, cpus_per_job=cpus)
        assert {j.name: int(thread_flags(j, opts)[1]) for j in jobs} == want
    seen = {}

    def fake_execute(unit, gpu, threads):
        seen.update({j.name: threads for j in unit})
        return [(j.name, 0, "ok") for j in unit]

    monkeypatch.setattr(runner, "_execute", fake_execute)
    for cores in (2, 16):
        monkeypatch.setattr(runner.os, "cpu_count", lambda: cores)
        seen.clear()
        runner.run_jobs(jobs, n_jobs=1, progress=False)
        assert seen == want
    import torch

    res = {"status": "ok", "identity": run_identity(["x.py", "--threads", "2"], dataset="Digits")}
    assert res["identity"]["threads"] == torch.get_num_threads()
    assert is_fresh(res, argv=["x.py", "--threads", "2"], dataset="Digits", threads=torch.get_num_threads())
    assert not is_fresh(res, argv=["x.py"], dataset="Digits", threads=torch.get_num_threads() + 1)
