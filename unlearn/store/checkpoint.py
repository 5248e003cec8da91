"""Self-describing checkpoints and atomic file writes.

A checkpoint holds the state dict plus what is needed to rebuild and check it:
model name, number of output classes, dataset, class map and the run's config.
Files are written to a temporary name in the same folder and moved into place
with ``os.replace``, so a killed run never leaves a complete-looking file.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from ..core.errors import UsageError


_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic(path: Path, write):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data: bytes):
    _atomic(path, lambda f: f.write(data))


def atomic_write_text(path, text: str):
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(o):
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def architecture_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of the module tree (layer types, shapes, strides, ...).

    Two architectures can share every tensor shape (a SmallCNN with a stride-1 or a
    stride-2 stem), so a state dict alone cannot tell them apart; this can.
    """
    return hashlib.sha1(repr(model).encode()).hexdigest()[:16]


def save_checkpoint(path, model: torch.nn.Module, *, model_name: str, num_classes: int, dataset: str,
                    class_map: dict, config: dict | None = None, extra: dict | None = None):
    """Write ``model`` and its description atomically."""
    obj = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model": model_name, "num_classes": int(num_classes), "dataset": dataset,
        "class_map": {int(k): int(v) for k, v in class_map.items()},
        "config": json.loads(json.dumps(config or {}, default=_jsonable)),
        "architecture": architecture_fingerprint(model),
        **(extra or {}),
    }
    _atomic(path, lambda f: torch.save(obj, f))


def load_checkpoint(path, *, model_name: str | None = None, num_classes: int | None = None,
                    dataset: str | None = None, fix: str = "") -> dict:
    """Load with ``weights_only=True`` and check it matches what the caller expects.

    Raises :class:`UsageError` (one line, with ``fix`` appended) when missing,
    unreadable or mismatched.
    """
    path = Path(path)
    hint = f"; {fix}" if fix else ""
    if not path.is_file():
        raise UsageError(f"checkpoint {path} not found{hint}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupted, truncated or not a torch file
        raise UsageError(f"checkpoint {path} is unreadable ({type(e).__name__}){hint}") from None
    if not isinstance(obj, dict) or "state_dict" not in obj or "model" not in obj:
        raise UsageError(f"checkpoint {path} is not a toolkit checkpoint (no state_dict/model entries){hint}")
    diffs = []
    if model_name is not None and obj["model"].lower() != model_name.lower():
        diffs.append(f"model {obj['model']} != requested {model_name}")
    if num_classes is not None and obj["num_classes"] != num_classes:
        diffs.append(f"{obj['num_classes']} output classes != requested {num_classes}")
    if dataset is not None and obj.get("dataset", "").lower() != dataset.lower():
        diffs.append(f"dataset {obj.get('dataset')} != requested {dataset}")
    if diffs:
        raise UsageError(f"checkpoint {path} does not match: {'; '.join(diffs)}{hint}")
    return obj


def load_into(model: torch.nn.Module, obj: dict, path="checkpoint", fix: str = ""):
    """Load a state dict, turning architecture, shape or key mismatches into a one-line UsageError."""
    hint = f"; {fix}" if fix else ""
    if obj.get("architecture") != architecture_fingerprint(model):
        why = "has no architecture fingerprint" if "architecture" not in obj else "was built for another layout"
        raise UsageError(f"{path} {why} of {obj.get('model')} (an older toolkit version?) and cannot be "
                         f"trusted with this one{hint or '; recreate it'}")
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise UsageError(f"{path} does not fit the model: {first[1].strip() if len(first) > 1 else first[0]}"
                         f"{hint}") from None
    return model


def read_ok_results(path) -> dict | None:
    """A run's results.json if it exists, parses and says ``status: ok``; else None."""
    try:
        r = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return r if isinstance(r, dict) and r.get("status") == "ok" else None


def save_figure(fig, stem, *, formats=("png", "pdf"), dpi: int = 150, **savefig_kwargs) -> list[str]:
    """Write a matplotlib figure as ``<stem>.<format>`` for each of ``formats``, each atomically; returns the
    paths. The one figure save of the package (plots, tables' figures, the tuner's PNGs)."""
    stem = Path(stem)
    out = []
    for ext in formats:
        path = stem.parent / f"{stem.name}.{ext}"
        _atomic(path, lambda f: fig.savefig(f, format=ext, dpi=dpi, **savefig_kwargs))
        out.append(str(path))
    return out
