"""What ``run.py --executor slurm`` knows of the cluster: job states, pending reasons, and who submits.

submitit reads job states through ``sacct`` only. A small cluster often runs without accounting,
where ``sacct`` says "Slurm accounting storage is disabled" and every state reads UNKNOWN: a rerun
then cannot tell a queued run from a lost one, and a job cancelled while running is waited for
forever. :class:`Queue` asks ``squeue`` (which works with or without accounting) for the jobs still
in the queue, with their state and pending reason, and ``sacct`` for the jobs that left it when
accounting works (detected once per launcher, :attr:`Queue.source` says which). A job that left
the queue without a result has failed: with accounting its final state says how, without it the
state is unknown and the failure line says so.

:class:`SubmitLock` makes the submission step of one log root single-entry: a second launcher waits
until the first has submitted and recorded its jobs (then it finds them in the ledger and waits for
them instead of submitting them again), or gives up with one line naming the holder.
"""
from __future__ import annotations

import getpass
import json
import os
import socket
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import UsageError

ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING", "PREEMPTED",
          "REQUEUE_HOLD", "REQUEUE_FED", "STOPPED", "SIGNALING", "STAGE_OUT"}
LEFT = "LEFT_QUEUE"  # gone from squeue, final state unknown (no accounting)


@dataclass(frozen=True)
class JobState:
    """One job's state: a SLURM state name (first word: ``CANCELLED by 0`` -> ``CANCELLED``) or
    :data:`LEFT`, the pending reason where squeue gives one, and whether it is still queued or running."""

    state: str
    reason: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return subprocess.CompletedProcess(cmd, 1, "", str(e))


class Queue:
    """Job states from squeue (in the queue) and sacct (out of it, when accounting works)."""

    def __init__(self):
        self._accounting: bool | None = None

    @property
    def accounting(self) -> bool:
        """Whether sacct answers (checked once): accounting storage enabled and slurmdbd reachable."""
        if self._accounting is None:
            p = _run(["sacct", "-n", "-X", "-P", "-j", "1", "-o", "JobID"])
            self._accounting = p.returncode == 0 and "disabled" not in (p.stdout + p.stderr).lower()
        return self._accounting

    @property
    def source(self) -> str:
        return ("job states from squeue, and sacct once a job left the queue" if self.accounting else
                "job states from squeue only (sacct: accounting storage is disabled); a job that leaves the "
                "queue without a result counts as failed, its final state unknown")

    def in_queue(self) -> dict[str, JobState]:
        """{job id: state} of this user's jobs in the queue, array tasks one by one (``1001_3``)."""
        p = _run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%r"])
        if p.returncode != 0:
            raise UsageError(f"squeue failed ({(p.stderr or p.stdout).strip().splitlines()[-1:] or ['no output']}"
                             f"[0]); is slurmctld reachable? (sinfo should answer)")
        out = {}
        for line in p.stdout.splitlines():
            jid, _, rest = line.strip().partition("|")
            state, _, reason = rest.partition("|")
            if jid:
                out[jid] = JobState(state.split()[0].upper() if state.strip() else "UNKNOWN",
                                    "" if reason in ("None", "(null)") else reason)
        return out

    def final(self, ids: list[str]) -> dict[str, JobState]:
        """Final states from sacct of jobs that left the queue; :data:`LEFT` without accounting."""
        if not ids:
            return {}
        if not self.accounting:
            return {i: JobState(LEFT) for i in ids}
        p = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(sorted({i.split("_")[0]
                                                                                          for i in ids}))])
        seen = {}
        for line in p.stdout.splitlines():
            jid, _, state = line.strip().partition("|")
            if jid and jid != "JobID" and state:
                seen[jid] = JobState(state.split("|")[0].split()[0].upper())
        return {i: seen.get(i, JobState(LEFT)) for i in ids}

    def states(self, ids: list[str]) -> dict[str, JobState]:
        queued = self.in_queue()
        out = {i: queued[i] for i in ids if i in queued}
        out.update(self.final([i for i in ids if i not in queued]))
        return out


def pending_summary(states) -> str:
    """``2 pending: ReqNodeNotAvail, UnavailableNodes:vm; 1 running`` (empty when nothing is queued)."""
    states = list(states)
    reasons = Counter(s.reason or "no reason given" for s in states if s.state == "PENDING")
    running = sum(s.state == "RUNNING" for s in states)
    parts = [f"{n} pending: {r}" for r, n in reasons.most_common()]
    if running:
        parts.append(f"{running} running")
    return "; ".join(parts)


class SubmitLock:
    """``{folder}/submit.lock`` holding ``{"pid", "host", "since"}`` while one launcher submits.

    A second launcher waits up to ``wait_s`` for it, then raises :class:`UsageError` naming the
    holder. A lock left by a dead process on this host is taken over; one from another host is
    never (its process cannot be checked from here): the message says to delete the file.
    """

    def __init__(self, folder: Path, *, wait_s: float = 600.0, poll_s: float = 1.0, say=print):
        self.path = Path(folder) / "submit.lock"
        self.wait_s, self.poll_s, self.say = wait_s, poll_s, say
        self.me = {"pid": os.getpid(), "host": socket.gethostname()}

    def holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def _stale(self, h: dict) -> bool:
        if h.get("host") != self.me["host"]:
            return False
        try:
            os.kill(int(h["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, TypeError, ValueError):
            return False
        return False

    def _try(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump({**self.me, "since": time.strftime("%Y-%m-%d %H:%M:%S")}, f)
        return True

    def __enter__(self):
        t0, told = time.monotonic(), False
        while not self._try():
            h = self.holder()
            if h is not None and self._stale(h):
                self.path.unlink(missing_ok=True)
                continue
            who = f"pid {h.get('pid')} on {h.get('host')} since {h.get('since')}" if h else "another launcher"
            if time.monotonic() - t0 >= self.wait_s:
                raise UsageError(f"another run.py ({who}) is submitting to this log root; wait for it, or delete "
                                 f"{self.path} if that process is gone")
            if not told:
                self.say(f"waiting for another run.py ({who}) to finish submitting ({self.path})", flush=True)
                told = True
            time.sleep(self.poll_s)
        return self

    def __exit__(self, *exc):
        if (self.holder() or {}).get("pid") == self.me["pid"]:
            self.path.unlink(missing_ok=True)
        return False
