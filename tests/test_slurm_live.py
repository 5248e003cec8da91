"""Smoke tests of the live SLURM fixtures (tests/slurm_cluster.py): a real sbatch job on a real
single-node cluster, with and without accounting, and a drained node. Skipped where SLURM is not installed
or the tests do not run as root; ``-m "not slurm_live"`` leaves them out."""
import time

import pytest

pytestmark = pytest.mark.slurm_live


def _echo_job(cluster, tmp_path):
    out = tmp_path / "hi.out"
    job = cluster.sbatch("--job-name=hi", f"--output={out}", "--wrap", "echo hi")
    info = cluster.wait_gone(job, timeout=45)
    assert info.get("JobState") == "COMPLETED", info
    assert out.read_text() == "hi\n"
    return job


def test_sbatch_echo(slurm_cluster, tmp_path):
    _echo_job(slurm_cluster, tmp_path)
    sacct = slurm_cluster.run("sacct", "-j", "1", check=False)
    assert sacct.returncode != 0 and "accounting storage is disabled" in sacct.stderr


def test_sbatch_echo_accounted(slurm_cluster_acct, tmp_path):
    job = _echo_job(slurm_cluster_acct, tmp_path)
    end, states = time.monotonic() + 30, []
    while time.monotonic() < end:  # slurmctld sends the job's end to slurmdbd within seconds
        p = slurm_cluster_acct.run("sacct", "-n", "-X", "-P", "-j", str(job), "-o", "JobID,State")
        states = [line.split("|") for line in p.stdout.split()]
        if states == [[str(job), "COMPLETED"]]:
            break
        time.sleep(0.5)
    assert states == [[str(job), "COMPLETED"]]


def held(reason):
    """A pending reason that names the drained node: first "ReqNodeNotAvail, UnavailableNodes:<node>", after a
    scheduling cycle "Nodes required for job are DOWN, DRAINED or reserved ..." (SLURM 22.05)."""
    return "reqnodenotavail" in reason.lower() or "drained" in reason.lower()


def test_drained_node_holds_jobs(slurm_cluster, tmp_path):
    cluster = slurm_cluster
    cluster.drain("slurm_live test")
    try:
        job = cluster.sbatch(f"--output={tmp_path / 'held.out'}", "--wrap", "echo held")
        end, row = time.monotonic() + 30, None
        while time.monotonic() < end:
            rows = cluster.squeue(job)
            row = rows[0] if rows else None
            if row and held(row["reason"]):
                break
            time.sleep(0.5)
        assert row is not None and row["state"] == "PENDING", row
        reason = cluster.run("squeue", "-h", "-j", str(job), "-o", "%r").stdout.strip()
        assert held(reason), reason
    finally:
        cluster.resume()
    info = cluster.wait_gone(job, timeout=45)  # resumed: the held job runs
    assert info.get("JobState") == "COMPLETED", info
    assert (tmp_path / "held.out").read_text() == "held\n"
