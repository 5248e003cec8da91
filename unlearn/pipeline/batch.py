"""Several runs of one stage script in a single Python process.

Starting a stage script costs about three seconds on a CPU (importing torch,
scikit-learn, torch's compiler stack on the first optimiser), which is more
than a whole Digits unlearning run or attack. ``run.py`` therefore hands the
runs of one stage to one process when it runs one job at a time::

    python -m unlearn.pipeline.batch < runs.json

with ``[{"script": ..., "argv": [...], "folder": ...}, ...]`` on stdin. Each run
executes its script exactly as ``python script argv...`` would (``runpy``, same
``sys.argv``, same exit codes); its stdout and stderr are captured and saved in
its folder with the equivalent stand-alone command, as for separate processes.
A failing run (bad input, exception, non-zero exit) is recorded and the next
one goes on. The last line of stdout is ``{"rcs": [...]}``, each run's exit code,
which is how ``run.py`` judges them. Exit code: 0 when every run exited 0, else 1.
"""
from __future__ import annotations

import gc
import io
import json
import runpy
import shlex
import sys
import time
import traceback
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from ..store.checkpoint import atomic_write_text


def save_run_log(folder, cmd: list[str], stdout: str, stderr: str):
    """A run's ``command.txt``, ``stdout.txt`` and ``stderr.txt``, however it was run."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "command.txt", shlex.join(cmd) + "\n")
    atomic_write_text(folder / "stdout.txt", stdout)
    atomic_write_text(folder / "stderr.txt", stderr)


def run_one(script: str, argv: list[str], folder) -> int:
    """Run ``script`` with ``argv`` in this process; save command, stdout and stderr in ``folder``."""
    out, err = io.StringIO(), io.StringIO()
    saved_argv, rc = sys.argv, 0
    sys.argv = [script, *argv]
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                runpy.run_path(script, run_name="__main__")
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except Exception:
                traceback.print_exc()
                rc = 1
    finally:
        sys.argv = saved_argv
    save_run_log(folder, [sys.executable, script, *argv], out.getvalue(), err.getvalue())
    gc.collect()
    return rc


def main() -> int:
    runs = json.load(sys.stdin)
    rcs = []
    for r in runs:
        t0 = time.perf_counter()
        rc = run_one(r["script"], r["argv"], r["folder"])
        rcs.append(rc)
        print(f"{'ok' if rc == 0 else f'exit {rc}'} ({time.perf_counter() - t0:.1f}s): "
              f"{Path(r['script']).name} {shlex.join(r['argv'])}", flush=True)
    print(json.dumps({"rcs": rcs}), flush=True)
    return 1 if any(rcs) else 0


if __name__ == "__main__":
    sys.exit(main())
