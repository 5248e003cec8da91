"""A real single-node SLURM cluster on localhost for tests: :class:`LocalCluster` and the ``slurm_cluster`` fixtures.

Why: ``tests/test_slurm.py`` checks ``run.py --executor slurm`` against submitit's local executor and stand-ins
for the SLURM commands; what only real daemons show (sbatch's parsing, squeue's states and pending reasons,
sacct with and without accounting, a drained node) needs a real cluster. This module starts one on this
machine, as root, from Debian's packages (``slurm-wlm`` and ``munge``; ``slurmdbd`` and ``mariadb-server`` for
accounting; ``.ci/run`` installs them), in a few seconds without accounting and a little more with it.

What: ``LocalCluster(root, accounting=False)`` writes every config, key, state, spool and log file under
``root`` and starts, each in the foreground in a session of its own: a private ``munged`` (its own key and
socket under ``root``, named in slurm.conf by ``AuthInfo``, so a system munged is neither needed nor touched),
``slurmctld -D`` and ``slurmd -D`` on free loopback ports; with accounting, before them, ``mariadbd`` (its own
data folder, a socket under ``root``, no networking), ``slurmdbd -D`` and the cluster registered with
``sacctmgr``. It waits until ``sinfo`` reports the node idle (or raises, with the tail of every daemon's log).
Leaving (``with`` or :meth:`LocalCluster.stop`) cancels the jobs, stops each daemon it started by its process
group (SIGTERM, then SIGKILL) and kills any process still carrying its ``SLURM_CONF`` (job steps), so nothing
it started keeps running. Two clusters can run at once (own ports, folders and cluster names).

Clients reach the cluster through ``cluster.env`` (this environment with ``SLURM_CONF`` set and any inherited
``SLURM_*`` variable removed), e.g. ``subprocess.run(["sbatch", ...], env=cluster.env)`` or
``run_script("run.py", ..., "--executor", "slurm", env=cluster.env)``.

Fixtures (session-scoped; tests using them are marked ``slurm_live``): ``slurm_cluster`` (no accounting: sacct
says "Slurm accounting storage is disabled" and exits 1) and ``slurm_cluster_acct`` (with slurmdbd). Each is
skipped, with a one-line reason, where a binary or system user is missing or the tests do not run as root.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path

import pytest

SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")
BINARIES = ["munged", "mungekey", "munge", "unmunge", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo",
            "scontrol", "scancel", "sacct"]
ACCT_BINARIES = ["slurmdbd", "sacctmgr", "mariadbd", "mariadb-install-db", "mariadb", "mariadb-admin"]
USERS = ["slurm", "munge"]
ACCT_USERS = ["mysql"]
CLUSTER_USER = "slurm"  # SlurmUser: slurmctld and slurmdbd drop to it
MARKER = "slurm_live"
FIXTURES = ("slurm_cluster", "slurm_cluster_acct")


def which(name):
    """The path of a binary on PATH or in the sbin folders (not always on a user's PATH), else None."""
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def missing(accounting=False):
    """Why a cluster cannot be started here (one line), or None when it can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "not root (the daemons switch users)"
    names = [b for b in BINARIES + (ACCT_BINARIES if accounting else []) if which(b) is None]
    if names:
        pkgs = "slurm-wlm munge" + (" slurmdbd mariadb-server" if accounting else "")
        return f"no {', '.join(names)} (apt-get install {pkgs})"
    for user in USERS + (ACCT_USERS if accounting else []):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"no system user {user!r} (made by its Debian package)"
    return None


def free_ports(n):
    """n distinct free TCP ports on 127.0.0.1 (held open together so they differ, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tail(path, lines=25):
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return f"({path}: not written)"
    return "\n".join(text[-lines:]) or "(empty)"


def chown(path, user):
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid)


class ClusterError(RuntimeError):
    pass


class LocalCluster:
    """One SLURM controller and one node (this host, 127.0.0.1) whose files all lie under ``root``.

    ``with LocalCluster(root) as c: subprocess.run(["sbatch", "--wrap", "true"], env=c.env)``. Attributes:
    ``env`` (environment for clients), ``conf`` (slurm.conf), ``hostname`` (the node), ``partition``,
    ``cluster_name``, ``startup_s`` (seconds :meth:`start` took), ``logs`` (daemon name -> log file).
    """

    _count = 0

    def __init__(self, root, accounting=False, start_timeout=120.0):
        LocalCluster._count += 1
        self.root = Path(root)
        self.accounting = accounting
        self.start_timeout = start_timeout
        self.hostname = socket.gethostname().split(".")[0]
        self.partition = "debug"
        self.cluster_name = f"live{os.getpid() % 100000}n{LocalCluster._count}"  # unique among live clusters
        self.conf = self.root / "etc" / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.mysql_socket = self.root / "mysql" / "mysqld.sock"
        self.logs = {}
        self.procs = {}  # name -> Popen, in start order
        self.startup_s = None
        self._hosts_line = None
        base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        base["PATH"] = os.pathsep.join([base.get("PATH", "/usr/bin:/bin"), *SBIN])
        self.env = {**base, "SLURM_CONF": str(self.conf)}

    # ----- life cycle -----------------------------------------------------------------------------
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        why = missing(self.accounting)
        if why:
            raise ClusterError(why)
        t0 = time.monotonic()
        _live.add(self)
        try:
            self._resolve_hostname()
            self._write_files()
            self._start_munge()
            if self.accounting:
                self._start_accounting()
            self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
            self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf)])
            self._wait(lambda: self.node_state() == "idle", self.start_timeout, "the node to be idle in sinfo")
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def stop(self):
        """Cancel the jobs, stop every daemon started here (newest first) and any process left with this
        cluster's SLURM_CONF. Safe to call twice."""
        if self.procs.get("slurmctld") is not None and self.procs["slurmctld"].poll() is None:
            with contextlib.suppress(Exception):
                ids = [j["id"] for j in self.squeue()]
                if ids:
                    self.run("scancel", *ids, check=False)
                    self._wait(lambda: not self.squeue(), 15, "the cancelled jobs to leave", quiet=True)
        for name in reversed(list(self.procs)):
            self._terminate(name, self.procs.pop(name))
        self._kill_leftovers()
        if self._hosts_line is not None:
            with contextlib.suppress(OSError):
                hosts = Path("/etc/hosts").read_text().splitlines(keepends=True)
                Path("/etc/hosts").write_text("".join(h for h in hosts if h != self._hosts_line))
            self._hosts_line = None
        _live.discard(self)

    # ----- clients --------------------------------------------------------------------------------
    def run(self, *cmd, check=True, timeout=30):
        """Run a SLURM client (sbatch, squeue, sacct, ...) against this cluster; a CompletedProcess."""
        p = subprocess.run([str(c) for c in cmd], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise ClusterError(f"{' '.join(map(str, cmd))} exited {p.returncode}: {p.stderr.strip()}")
        return p

    def sbatch(self, *args):
        """Submit with ``sbatch --parsable ARGS``; the job id (int)."""
        return int(self.run("sbatch", "--parsable", *args).stdout.strip().split(";")[0])

    def squeue(self, job=None):
        """The jobs squeue lists (pending, running, completing): dicts id, state, reason, name."""
        args = ["squeue", "-h", "-o", "%i|%T|%r|%j"] + (["-j", str(job)] if job is not None else [])
        p = self.run(*args, check=False)
        if p.returncode != 0:
            if job is not None and "Invalid job id" in p.stderr:
                return []  # purged from the controller: gone
            raise ClusterError(f"squeue exited {p.returncode}: {p.stderr.strip()}")
        rows = [line.split("|", 3) for line in p.stdout.splitlines() if line.strip()]
        return [{"id": r[0], "state": r[1], "reason": r[2], "name": r[3]} for r in rows]

    def wait_gone(self, job, timeout=60):
        """Wait until squeue no longer lists the job; its final ``scontrol show job`` fields."""
        self._wait(lambda: not self.squeue(job), timeout, f"job {job} to leave the queue")
        return self.job_info(job)

    def job_info(self, job):
        """``scontrol show job -o JOB`` as a dict (JobState, Reason, StdOut, ...); {} once purged."""
        p = self.run("scontrol", "show", "job", "-o", str(job), check=False)
        if p.returncode != 0:
            return {}
        return dict(f.split("=", 1) for f in p.stdout.split() if "=" in f)

    def node_state(self):
        p = self.run("sinfo", "-h", "-N", "-n", self.hostname, "-o", "%T", check=False, timeout=10)
        return p.stdout.strip() if p.returncode == 0 else None

    def drain(self, reason="drained by a test"):
        self.run("scontrol", "update", f"nodename={self.hostname}", "state=drain", f"reason={reason}")
        self._wait(lambda: (self.node_state() or "").startswith("drain"), 15, "the node to drain")

    def resume(self):
        self.run("scontrol", "update", f"nodename={self.hostname}", "state=resume")
        self._wait(lambda: self.node_state() in ("idle", "mixed", "allocated"), 15, "the node to resume")

    # ----- internals ------------------------------------------------------------------------------
    def _resolve_hostname(self):
        try:
            socket.gethostbyname(self.hostname)
        except OSError:  # slurmd and slurmctld look their host up: make it 127.0.0.1 while the cluster runs
            self._hosts_line = f"127.0.0.1 {self.hostname}  # tests/slurm_cluster.py\n"
            with open("/etc/hosts", "a") as f:
                f.write(self._hosts_line)

    def _dir(self, rel, user="root", mode=0o755):
        p = self.root / rel
        p.mkdir(parents=True, exist_ok=True)
        chown(p, user)
        p.chmod(mode)
        return p

    def _write_files(self):
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # the daemons' users must reach their folders
        for parent in self.root.parents:
            if not os.stat(parent).st_mode & 0o001:
                raise ClusterError(f"{parent} is not searchable by other users; munged, slurm and mysql "
                                   f"cannot reach {self.root} (chmod o+x it, or use a folder under /tmp)")
        etc, log, run = self._dir("etc"), self._dir("log", CLUSTER_USER), self._dir("run", CLUSTER_USER)
        state, spool = self._dir("state", CLUSTER_USER, 0o700), self._dir("spool", "root", 0o755)
        (etc / "plugstack.conf").write_text("")
        ctld_port, slurmd_port, dbd_port = free_ports(3)
        self.dbd_port = dbd_port
        cpus = os.cpu_count() or 1
        mem = min(16000, int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8))
        acct = (["AccountingStorageType=accounting_storage/slurmdbd", "AccountingStorageHost=127.0.0.1",
                 f"AccountingStoragePort={dbd_port}",
                 # the munge socket of connections to slurmdbd (AuthInfo covers only slurmctld and slurmd)
                 f"AccountingStoragePass=socket={self.munge_socket}"] if self.accounting
                else ["AccountingStorageType=accounting_storage/none"])
        lines = [
            f"ClusterName={self.cluster_name}",
            f"SlurmctldHost={self.hostname}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            f"SlurmUser={CLUSTER_USER}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={state}",
            f"SlurmdSpoolDir={spool}",
            f"SlurmctldPidFile={run / 'slurmctld.pid'}",
            f"SlurmdPidFile={run / 'slurmd.pid'}",
            f"SlurmctldLogFile={log / 'slurmctld.log'}",
            f"SlurmdLogFile={log / 'slurmd.log'}",
            f"PlugStackConfig={etc / 'plugstack.conf'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "MpiDefault=none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "JobAcctGatherType=jobacct_gather/none",
            *acct,
            "ReturnToService=2",
            "SlurmdParameters=config_overrides",  # the node counts as configured, whatever this machine has
            "SchedulerParameters=sched_interval=2",  # pending reasons refreshed within seconds
            "KillWait=2",
            "MailProg=/bin/true",
            f"NodeName={self.hostname} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.hostname} Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        if self.accounting:
            dbd = etc / "slurmdbd.conf"
            dbd.write_text("\n".join([
                "AuthType=auth/munge",
                f"AuthInfo=socket={self.munge_socket}",
                "DbdHost=localhost",
                "DbdAddr=127.0.0.1",
                f"DbdPort={dbd_port}",
                f"SlurmUser={CLUSTER_USER}",
                f"PidFile={run / 'slurmdbd.pid'}",
                f"LogFile={log / 'slurmdbd.log'}",
                "StorageType=accounting_storage/mysql",
                "StorageHost=localhost",  # with MYSQL_UNIX_PORT in slurmdbd's environment: our socket
                "StorageLoc=slurm_acct_db",
                "StorageUser=slurm",
                "StoragePass=slurm",
            ]) + "\n")
            chown(dbd, CLUSTER_USER)
            dbd.chmod(0o600)

    def _spawn(self, name, cmd, user=None, env=None):
        log = self.root / "log" / f"{name}.out"
        kw = {}
        if user is not None:
            pw = pwd.getpwnam(user)
            kw = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        with open(log, "ab") as out:
            p = subprocess.Popen([which(cmd[0]), *cmd[1:]], stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True, env=env or self.env,
                                 cwd=self.root, **kw)
        self.procs[name] = p
        self.logs[name] = log
        return p

    def _start_munge(self):
        d = self._dir("munge", "munge", 0o755)  # the socket's folder must be searchable by all
        key = d / "munge.key"
        if not key.exists():
            subprocess.run([which("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True)
        chown(key, "munge")
        key.chmod(0o400)
        self._spawn("munged", ["munged", "-F", f"--socket={self.munge_socket}", f"--key-file={key}",
                               f"--pid-file={d / 'munged.pid'}", f"--log-file={d / 'munged.log'}",
                               f"--seed-file={d / 'munged.seed'}"], user="munge")

        def ok():
            if not self.munge_socket.exists():
                return False
            cred = subprocess.run([which("munge"), "-n", "-S", str(self.munge_socket)], capture_output=True)
            return cred.returncode == 0 and subprocess.run(
                [which("unmunge"), "-S", str(self.munge_socket)], input=cred.stdout, capture_output=True
            ).returncode == 0
        self._wait(ok, 20, "munged to answer (munge -n | unmunge)")

    def _mysql(self, sql):
        return subprocess.run([which("mariadb"), "--no-defaults", f"--socket={self.mysql_socket}", "-u", "root",
                               "-e", sql], capture_output=True, text=True, timeout=60)

    def _start_accounting(self):
        d = self._dir("mysql", "mysql", 0o755)
        data = d / "data"
        if not (data / "mysql").exists():
            p = subprocess.run([which("mariadb-install-db"), "--no-defaults", f"--datadir={data}", "--user=mysql",
                                "--auth-root-authentication-method=socket", "--skip-test-db"],
                               capture_output=True, text=True, timeout=300)
            out = self.root / "log" / "mariadb-install-db.out"
            out.write_text(p.stdout + p.stderr)
            if p.returncode != 0:
                raise ClusterError(f"mariadb-install-db exited {p.returncode}:\n{tail(out)}")
        self._spawn("mariadbd", [
            "mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={self.mysql_socket}", "--skip-networking",
            "--user=mysql", f"--pid-file={d / 'mysqld.pid'}", f"--log-error={d / 'error.log'}",
            "--innodb-lock-wait-timeout=900", "--innodb-buffer-pool-size=128M", "--innodb-log-file-size=64M",
            "--innodb-flush-log-at-trx-commit=0", "--skip-log-bin"])
        self.logs["mariadbd.log"] = d / "error.log"
        self._wait(lambda: self._mysql("select 1").returncode == 0, 60, "mariadbd to answer on its socket")
        p = self._mysql("CREATE DATABASE IF NOT EXISTS slurm_acct_db; "
                        "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm'; "
                        "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;")
        if p.returncode != 0:
            raise ClusterError(f"creating slurm_acct_db failed: {p.stderr.strip()}")
        self._spawn("slurmdbd", ["slurmdbd", "-D"], env={**self.env, "MYSQL_UNIX_PORT": str(self.mysql_socket)})
        self._wait(lambda: self._port_open(self.dbd_port), 90, "slurmdbd to listen")

        def added():
            p = self.run("sacctmgr", "-i", "add", "cluster", self.cluster_name, check=False)
            return p.returncode == 0 or "already exists" in (p.stdout + p.stderr).lower()
        self._wait(added, 60, f"sacctmgr to add cluster {self.cluster_name}")

    @staticmethod
    def _port_open(port):
        with socket.socket() as s:
            s.settimeout(1)
            return s.connect_ex(("127.0.0.1", port)) == 0

    def _wait(self, cond, timeout, what, quiet=False):
        end = time.monotonic() + timeout
        delay = 0.1
        while True:
            if cond():
                return True
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead or time.monotonic() > end:
                if quiet:
                    return False
                why = f"{', '.join(dead)} exited" if dead else f"timed out after {timeout:.0f} s"
                raise ClusterError(f"waiting for {what}: {why}\n{self.log_tails()}")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def log_tails(self, lines=15):
        return "\n".join(f"--- {name} ({path}):\n{tail(path, lines)}" for name, path in self.logs.items()) + \
            "\n" + "\n".join(f"--- {f.name}:\n{tail(f, lines)}" for f in sorted((self.root / "log").glob("*.log"))
                             if f not in self.logs.values())

    @staticmethod
    def _terminate(name, p, wait=20):
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(wait)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):  # the leader gone, its group may live on
            os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(5)

    def _kill_leftovers(self):
        """SIGKILL any process whose environment names this cluster's slurm.conf (slurmstepd, job steps)."""
        mark = f"SLURM_CONF={self.conf}".encode()
        me = {os.getpid(), os.getppid()}
        for _ in range(3):
            found = []
            for d in Path("/proc").iterdir():
                if not d.name.isdigit() or int(d.name) in me:
                    continue
                try:
                    if mark in (d / "environ").read_bytes().split(b"\0"):
                        found.append(int(d.name))
                except OSError:
                    continue
            if not found:
                return
            for pid in found:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)


_live = weakref.WeakSet()


@atexit.register
def _stop_all():  # an interpreter leaving without the fixture's teardown still stops the daemons
    for c in list(_live):
        c.stop()


# ----- pytest --------------------------------------------------------------------------------------------
def _cluster(accounting):
    why = missing(accounting)
    if why:
        pytest.skip(f"live SLURM{' with accounting' if accounting else ''}: {why}")
    root = Path(tempfile.mkdtemp(prefix="slurm-live-", dir="/tmp"))  # short paths, searchable by the daemons
    with LocalCluster(root, accounting=accounting) as cluster:
        print(f"\nslurm_cluster{'_acct' if accounting else ''}: started in {cluster.startup_s:.1f} s under {root}")
        yield cluster
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A live single-node SLURM cluster without accounting (sacct fails); see :class:`LocalCluster`."""
    yield from _cluster(False)


@pytest.fixture(scope="session")
def slurm_cluster_acct():
    """A live single-node SLURM cluster with slurmdbd accounting (sacct works); see :class:`LocalCluster`."""
    yield from _cluster(True)


def pytest_itemcollected(item):
    """Mark every test that uses a live cluster ``slurm_live`` (``-m "not slurm_live"`` leaves them out)."""
    if any(f in getattr(item, "fixturenames", ()) for f in FIXTURES):
        item.add_marker(MARKER)
