"""The Reminiscence Attack's reference population and its curves, cached on disk.

References are R models retrained from independent seeds: ordinary ``retrain``
forget-stage runs of the same setting with seeds ``config.REFERENCE_SEED_BASE + r``
(r = 0..R-1). The anchor is the never-unlearned model a method started from.
Their relearning curves do not depend on the method under attack, so they are
computed once per (model file contents, attack configuration, relearning lr,
level, candidate sets, step plans) and stored under
``forget_full_class_main/{tag}/attack_reference/<key>/curves.npz``, where ``key``
hashes all of these plus :data:`CODE_VERSION`. Retraining a reference changes its
file's bytes, hence the key, so a stale cache is never found; a cache that does
not parse, has the wrong shape, non-finite values or another key is recomputed.
Files are written atomically, so two processes computing the same cache at once
only do the work twice.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

import config
from ...methods import pretrain_l1
from ...store.checkpoint import atomic_write_bytes, atomic_write_json, read_ok_results
from ...store.runs import newest_retrain_model
from ...store.setting import Setting

CODE_VERSION = "rea-curves-2"  # bump whenever the curves a configuration gives change
GROUPS = ("member", "ood")


def reference_seeds(n: int) -> list[int]:
    return [config.REFERENCE_SEED_BASE + r for r in range(n)]


def find_references(setting: Setting, n: int) -> list[tuple[int, Path]]:
    """(seed, model.pth) of the newest finished ``retrain`` run for each reference seed that has one."""
    found = ((seed, newest_retrain_model(replace(setting, seed=seed, pretrain_seed=0))) for seed in reference_seeds(n))
    return [(seed, path) for seed, path in found if path is not None]


def retrain_command(setting: Setting, seeds) -> str:
    """How to train missing references (the ``retrain`` parameters of config.MU_METHOD_LIST)."""
    entry = next((m for m in config.MU_METHOD_LIST.get(setting.dataset, []) if m[0] == "retrain"), None)
    paras = "".join(f" --{k} {v}" for k, v in zip(("para1", "para2"), entry[1:3] if entry else ()) if v is not None)
    return setting.forget_command(f"-method retrain{paras}", seed="S") + f" for S in {' '.join(map(str, seeds))}"


def anchor_path(setting: Setting, *, method: str | None = None, model_path: Path | None = None) -> Path:
    """The never-unlearned model a method started from.

    The ``weight_path`` its forget run recorded when that file still exists, else the
    pretrained model the method would start from (the L1-sparse one for methods that
    need it, :func:`unlearn.methods.pretrain_l1`), else the dense ``best.pth``.
    """
    if model_path is not None:
        r = read_ok_results(Path(model_path).parent / "results.json")
        wp = (r or {}).get("config", {}).get("weight_path")
        if wp and Path(wp).is_file():
            return Path(wp)
    l1 = pretrain_l1(method, setting.dataset) if method else 0.0
    return setting.pretrain_dir(l1) / "best.pth"


def cache_root(setting: Setting) -> Path:
    return setting.stage_root("attack_reference")


def cache_key(material: dict) -> str:
    return hashlib.sha256(json.dumps({"version": CODE_VERSION, **material}, sort_keys=True).encode()).hexdigest()[:24]


def _load(path: Path, key: str, shape: tuple[int, int]) -> dict | None:
    """The cached curves if the file parses, carries ``key`` and holds finite arrays of ``shape``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            out = {}
            for g in GROUPS:
                acc, loss = np.asarray(z[f"{g}_acc"], dtype=float), np.asarray(z[f"{g}_loss"], dtype=float)
                if acc.shape != shape or loss.shape != shape or not (np.isfinite(acc).all() and np.isfinite(loss).all()):
                    return None
                if acc.min() < 0 or acc.max() > 1 or loss.min() < 0:
                    return None
                out[g] = (acc, loss)
            return out
    except Exception:  # missing, truncated, not an npz, missing arrays: recompute
        return None


def _save(folder: Path, key: str, curves: dict, material: dict):
    buf = io.BytesIO()
    arrays = {f"{g}_{k}": np.asarray(v, dtype=np.float64) for g in GROUPS for k, v in zip(("acc", "loss"), curves[g])}
    np.savez(buf, key=np.array(key), **arrays)
    atomic_write_json(folder / "meta.json", {"key": key, "version": CODE_VERSION, **material})
    atomic_write_bytes(folder / "curves.npz", buf.getvalue())


def cached_curves(setting: Setting, material: dict, compute: Callable[[], dict], *,
                  shape: tuple[int, int]) -> tuple[dict, bool]:
    """Curves ``{"member": (acc, loss), "ood": (acc, loss)}`` of one model under ``material``.

    ``material`` must name everything that determines the curves (the model file's
    sha256 included). Returns (curves, True) from a valid cache, else computes them
    with ``compute()``, stores them and returns (curves, False).
    """
    key = cache_key(material)
    folder = cache_root(setting) / key
    got = _load(folder / "curves.npz", key, shape)
    if got is not None:
        return got, True
    curves = compute()
    _save(folder, key, curves, material)
    return curves, False
