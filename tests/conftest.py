"""Shared fixtures: a Digits setting in a temporary log folder and its pretrained models."""
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(1)  # tiny models: one thread is fastest and avoids oversubscription

from unlearn.store.setting import Setting  # noqa: E402

import config  # noqa: E402
from slurm_cluster import pytest_itemcollected, slurm_cluster, slurm_cluster_acct  # noqa: E402,F401

PRETRAIN_EPOCHS = config.DATASETS["Digits"]["epochs"]  # the default model, on which config's settings are tuned
# The shipped Digits attack with 5 references instead of 20: each test worker retrains its own population.
DIGITS_ATTACK = {**config.ATTACK["Digits"], "retrain_refs": 5}


@pytest.fixture(scope="session")
def log_root(tmp_path_factory):
    return tmp_path_factory.mktemp("log_files")


@pytest.fixture(scope="session")
def digits(log_root):
    """The Digits setting (SmallCNN, forget class 4, OOD 8 and 9) writing under a temporary log root."""
    return Setting(net="SmallCNN", dataset="Digits", classes=10, forget_class=4, ood_classes=[8, 9],
                   data_root=str(log_root / "data"), log_root=str(log_root), seed=0)


@pytest.fixture(scope="session")
def pretrained(digits):
    """Pretrain once per session; returns the results dict."""
    from unlearn.stages.pretrain import pretrain

    cfg = config.dataset_config("Digits")
    return pretrain(digits, lr=cfg["lr"], epochs=PRETRAIN_EPOCHS, batch_size=cfg["batch_size"], l1=0.0, device="cpu",
                    progress=False)


@pytest.fixture(scope="session")
def pretrained_sparse(digits):
    """The L1-sparse pretrained model some ``_our`` variants start from."""
    from unlearn.methods import list_methods, pretrain_l1
    from unlearn.stages.pretrain import pretrain

    l1s = {pretrain_l1(m, "Digits") for m in list_methods()} - {0.0}
    cfg = config.dataset_config("Digits")
    return {l1: pretrain(digits, lr=cfg["lr"], epochs=PRETRAIN_EPOCHS, batch_size=cfg["batch_size"], l1=l1,
                         device="cpu", progress=False) for l1 in l1s}


def run_inprocess(script, *args):
    """Run a stage script's own code in this process, as ``python script args`` would (``__main__``, argv,
    the repository as working folder), for bad-input checks: they stop before any work, and a fresh
    interpreter would cost seconds of imports each. Returns a CompletedProcess (returncode, stdout, stderr)."""
    import contextlib
    import io
    import runpy
    import subprocess

    out, err, argv, cwd = io.StringIO(), io.StringIO(), sys.argv, os.getcwd()
    code = 0
    try:
        os.chdir(ROOT)
        sys.argv = [str(script), *map(str, args)]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(str(ROOT / script), run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
        os.chdir(cwd)
    return subprocess.CompletedProcess([str(script), *map(str, args)], code, out.getvalue(), err.getvalue())


def run_script(*args, cwd=ROOT, env=None):
    """Run a stage script as a user would; returns the CompletedProcess."""
    import subprocess

    e = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=e, capture_output=True, text=True,
                          timeout=600)


# Files whose fixtures run whole pipelines, longest first (measured: tens of seconds to minutes each).
# With one worker per core (pytest-xdist, --dist loadfile) they start first and the short files fill
# the gaps, instead of one long file running alone at the end.
HEAVY_FIRST = ["test_study.py", "test_slurm_live_run.py", "test_run.py", "test_slurm.py", "test_methods.py", "test_integrity.py",
               "test_tune.py", "test_summary.py", "test_attack.py", "test_our.py"]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within a file kept
