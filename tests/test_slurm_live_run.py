"""``run.py --executor slurm`` on a live single-node cluster (tests/slurm_cluster.py), the scenarios that
a fake sbatch cannot show: the table equal to the local executor's (with accounting), and without
accounting a job cancelled while running, a drained node and the wait limit, Ctrl-C, and two launchers
at once. Skipped where SLURM is not installed; ``-m "not slurm_live"`` leaves them out."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_script

pytestmark = pytest.mark.slurm_live

METHODS = ["baseline", "retrain", "finetune", "finetune_our"]


def argv(root, *extra, methods=METHODS, stages=("pretrain", "forget")):
    return ["run.py", "--dataset", "Digits", "--log-root", root, "--replicates", "1", "--pretrain-epochs", "3",
            "--no-progress", "--methods", *methods, "--stages", *stages, *extra]


def slurm(cluster, *extra):
    return ["--executor", "slurm", "--slurm_partition", cluster.partition, "--mem_gb", "1", "--timeout_min", "10",
            *extra]


def table(root):
    return [{k: v for k, v in r.items() if not k.startswith("time") and not k.startswith("work")}
            for r in csv.DictReader((root / "summary.csv").open())]


def launcher(cluster, args, log):
    """run.py in the background, its own session (so a signal reaches it alone), output to ``log``."""
    f = open(log, "w")
    return subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, env={**cluster.env, "PYTHONPATH": str(ROOT)},
                            stdout=f, stderr=subprocess.STDOUT, start_new_session=True, text=True)


def wait_for(cond, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def submitted(root):
    return len(list((root / "slurm").rglob("*_submitted.pkl")))


def test_slurm_table_equals_the_local_one(slurm_cluster_acct, tmp_path):
    c = slurm_cluster_acct
    args = ("--retrain_refs", "2", "--trials", "2")
    stages = ("pretrain", "forget", "attack")
    t0 = time.monotonic()
    p = run_script(*argv(tmp_path / "slurm_run", *slurm(c), *args, stages=stages), env=c.env)
    took = time.monotonic() - t0
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "job states from squeue, and sacct" in p.stdout
    q = run_script(*argv(tmp_path / "local_run", *args, stages=stages))
    assert q.returncode == 0, q.stderr[-3000:]
    assert table(tmp_path / "slurm_run") == table(tmp_path / "local_run")
    print(f"slurm grid with accounting: {took:.0f}s")


def test_cancelled_running_job_fails_fast_and_a_rerun_redoes_it(slurm_cluster, tmp_path):
    """Without accounting: scancel of a running pretraining ends run.py within a poll or two, naming the
    signal; its dependants are skipped; the rerun submits exactly those runs and succeeds."""
    c, root = slurm_cluster, tmp_path / "logs"
    slow = argv(root, *slurm(c), methods=["baseline", "finetune"])
    slow[slow.index("--pretrain-epochs") + 1] = "400"
    p = launcher(c, slow, tmp_path / "first.log")
    try:
        wait_for(lambda: any(j["state"] == "RUNNING" and "pretrain" in j["name"] for j in c.squeue()), 120,
                 "the pretraining job to run")
        job = next(j["id"] for j in c.squeue() if "pretrain" in j["name"])
        time.sleep(2)
        t0 = time.monotonic()
        c.run("scancel", job)
        rc = p.wait(timeout=120)
        took = time.monotonic() - t0
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    out = (tmp_path / "first.log").read_text()
    assert rc == 1, out[-3000:]
    assert "squeue only" in out
    line = next(x for x in out.splitlines() if x.strip().startswith("pretrain"))
    assert "signal 15 (SIGTERM)" in line or "left the queue without a result" in line, line
    assert "stderr.txt" in line or "_log.err" in line
    assert sum("skipped: pretrain" in x for x in out.splitlines()) == 2  # the two forget runs
    before = submitted(root)
    r = run_script(*argv(root, *slurm(c), methods=["baseline", "finetune"]), env=c.env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert submitted(root) - before == 3  # the pretraining and its two forget runs, nothing else
    print(f"scancel of a running job to run.py's exit: {took:.0f}s")


def test_drained_node_shows_its_reason_and_the_wait_stops(slurm_cluster, tmp_path):
    c, root = slurm_cluster, tmp_path / "logs"
    c.drain("maintenance")
    try:
        t0 = time.monotonic()
        p = run_script(*argv(root, *slurm(c, "--slurm_wait_min", "0.4"), methods=["baseline"]), env=c.env)
        took = time.monotonic() - t0
    finally:
        c.resume()
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-2000:]
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("stopped: waited 0.4 min") and "stay on SLURM" in err[0], p.stderr
    assert "pending:" in p.stdout and ("ReqNodeNotAvail" in p.stdout or "DRAINED" in p.stdout), p.stdout
    assert "Traceback" not in p.stdout + p.stderr
    before = submitted(root)
    r = run_script(*argv(root, *slurm(c), methods=["baseline"]), env=c.env)  # resumed: waits, submits nothing
    assert r.returncode == 0 and "run(s) submitted earlier and still queued" in r.stdout, r.stdout[-2000:]
    assert submitted(root) == before == 2
    print(f"drained node, --slurm_wait_min 0.4: {took:.0f}s")


def test_ctrl_c_is_one_line_and_two_launchers_submit_once(slurm_cluster, tmp_path):
    c, root = slurm_cluster, tmp_path / "logs"
    c.drain("held for the test")
    try:
        a = launcher(c, argv(root, *slurm(c), methods=["baseline", "finetune"]), tmp_path / "a.log")
        b = launcher(c, argv(root, *slurm(c), methods=["baseline", "finetune"]), tmp_path / "b.log")
        wait_for(lambda: all("pending:" in (tmp_path / f).read_text() for f in ("a.log", "b.log")), 120,
                 "both launchers to wait")
        ledger = json.loads((root / "slurm" / "submitted.json").read_text())
        assert submitted(root) == 3 and len(ledger) == 3  # the pretraining and 2 forget runs: once, not twice
        logs = [(tmp_path / f).read_text() for f in ("a.log", "b.log")]
        assert sum("waiting for 3 run(s) submitted earlier" in x for x in logs) == 1, logs
        for p in (a, b):
            os.killpg(p.pid, signal.SIGINT)
        # on Ctrl-C a launcher asks squeue once more what stays queued (a call allowed 60 s), so under a
        # loaded CI the exit can take about that long: 60 s here failed once with both cores saturated
        rcs = [p.wait(timeout=150) for p in (a, b)]
    finally:
        c.resume()
        for p in (a, b):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    assert rcs == [130, 130]
    for f in ("a.log", "b.log"):
        text = (tmp_path / f).read_text()
        assert "Traceback" not in text and text.count("stopped: interrupted: ") == 1, text[-2000:]
        assert "stay queued or running on SLURM (" in text and "rerun the same command" in text
    r = run_script(*argv(root, *slurm(c), methods=["baseline", "finetune"]), env=c.env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert submitted(root) == 3
