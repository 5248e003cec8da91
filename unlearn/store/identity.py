"""What identifies a run: its settings, its input files and the code, hashed.

A finished run is reused only when everything that determines its result is
unchanged. Each stage records in ``results.json`` an ``identity``:

* ``argv``: the stand-alone command's arguments, normalised (flags that cannot
  change a result, such as ``--threads``, ``--no-progress`` or the output
  folder, are dropped);
* ``config``: a hash of the dataset's sections of ``config.py`` that stages read
  defaults from (pretraining recipe, attack defaults), so editing them invalidates;
* ``inputs``: a fingerprint (size, mtime, sha256) of every file the run read
  (pretrained checkpoint, SalUn mask, unlearned model, retrained references);
* ``code``: :data:`CODE_VERSION`, bumped when a change alters results;
* ``threads``: torch's CPU thread count during the run. It changes the floating-point path
  (reduction order) and so the numbers of a CPU run; run.py pins it (``config.CPU_THREADS``) and
  reuses a CPU run only for the same count (:func:`is_fresh`'s ``threads``);
* the floating-point perturbation (:func:`unlearn.core.runinfo.fp_perturbation`, ``UNLEARN_FP_PERTURB``) when it is on,
  inside ``config``: a perturbed model is another model.

:func:`is_fresh` is what ``run.py`` asks before it skips a run. Folder names stay
readable (the paper's ``{method}-{para1}-{para2}``); :func:`settings_suffix`
adds a short hash only when non-default settings are present, so runs with
other options, replay settings, forget class or attack settings never share a
folder.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import config
from ..core.runinfo import fp_perturbation

CODE_VERSION = 3  # 3: pretraining's tied best epochs go to the later one
# Flags that never change a result: taking (True) or not taking (False) a value.
_VOLATILE = {"--threads": True, "--no-progress": False, "--log-root": True, "--log_root": True,
             "--data-root": True, "--data_root": True, "--skip-done": False, "--skip-missing": False,
             "--device": True, "-gpu": False, "--gpu": False}


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def normalise_argv(argv: list[str]) -> list[str]:
    """Script name (without folder) and arguments, volatile flags dropped."""
    out, it = [], iter(argv)
    for a in it:
        key = a.split("=", 1)[0]
        if key in _VOLATILE:
            if _VOLATILE[key] and "=" not in a:
                next(it, None)
            continue
        out.append(Path(a).name if a.endswith(".py") else a)
    return out


def config_fingerprint(dataset: str) -> str:
    """Hash of the config.py entries of ``dataset`` whose values stages use as defaults (and the
    floating-point perturbation, when on)."""
    parts = {"DATASETS": config.DATASETS.get(dataset), "ATTACK": config.ATTACK.get(dataset),
             "PRETRAIN_DEFAULTS": config.PRETRAIN_DEFAULTS}
    if fp_perturbation():
        parts["fp_perturbation"] = fp_perturbation()
    return _sha(parts)[:16]


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(path) -> dict:
    p = Path(path)
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": file_sha256(p)}


def unchanged(fp: dict) -> bool:
    """Whether a fingerprinted file still has the same contents (size and mtime first, then sha256)."""
    p = Path(fp["path"])
    try:
        st = p.stat()
    except OSError:
        return False
    if st.st_size != fp["size"]:
        return False
    if st.st_mtime_ns == fp["mtime_ns"]:
        return True
    return file_sha256(p) == fp["sha256"]


def run_identity(argv: list[str], *, dataset: str, inputs=()) -> dict:
    """The identity a stage records in its results.json."""
    import torch  # lazy: start-up time

    ident = {"argv": normalise_argv(list(argv)), "config": config_fingerprint(dataset), "code": CODE_VERSION,
             "inputs": [fingerprint(p) for p in inputs if p is not None], "threads": torch.get_num_threads()}
    ident["hash"] = _sha([ident["argv"], ident["config"], ident["code"], [i["sha256"] for i in ident["inputs"]]])[:16]
    return ident


def is_fresh(results: dict | None, *, argv: list[str] | None = None, dataset: str | None = None,
             threads: int | None = None) -> bool:
    """Whether finished ``results`` may be reused for a run of ``argv``.

    Requires status ``ok``, a recorded identity of this code version, the same
    normalised arguments, config.py entries and (for a CPU run) torch thread count
    when given, and unchanged input files.
    """
    if not results or results.get("status") != "ok":
        return False
    ident = results.get("identity")
    if not isinstance(ident, dict) or ident.get("code") != CODE_VERSION:
        return False
    if argv is not None and ident.get("argv") != normalise_argv(list(argv)):
        return False
    if dataset is not None and ident.get("config") != config_fingerprint(dataset):
        return False
    if threads is not None and ident.get("threads") != threads:
        return False
    try:
        return all(unchanged(fp) for fp in ident.get("inputs", []))
    except (KeyError, TypeError):
        return False


def settings_suffix(extras: dict) -> str:
    """``""`` for default settings, else ``-`` and 8 hex digits of the non-default ones."""
    extras = {k: v for k, v in extras.items() if v not in (None, {}, [])}
    return f"-{_sha(extras)[:8]}" if extras else ""


def normal_value(value, like):
    """``value`` in the type of ``like``, the setting's default or declared type (an instance or a type).

    The one normalisation of a setting before it is hashed, shared by the launcher (run.py's literal
    values) and the stages (what their parsers give): an int where a float is declared becomes that float
    (run.py's ``unlearn_data_percent=20`` names the same run as the attack's ``--unlearn_data_percent 20``,
    parsed as 20.0), each element of a list alike, and tuples become lists. Anything else is unchanged.
    """
    kind = like if isinstance(like, type) else type(like)
    if isinstance(value, (list, tuple)):
        inner = like[0] if isinstance(like, (list, tuple)) and like else None
        return [normal_value(v, inner) if inner is not None else v for v in value]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def attack_extras(dataset: str, given: dict) -> dict:
    """Attack settings given explicitly that differ from ``config.ATTACK[dataset]`` (for the folder name),
    normalised (:func:`normal_value`) to the types of those defaults."""
    defaults = config.ATTACK.get(dataset, {})
    given = {k: normal_value(v, defaults[k]) if k in defaults else normal_value(v, v) for k, v in given.items()
             if v is not None}
    diff = {k: v for k, v in given.items() if k not in defaults or v != normal_value(defaults[k], defaults[k])}
    return {"attack": diff} if diff else {}


def distribution_identity(run: str, *, features: str = "logits", max_points="5000", tsne_seed="42") -> list[str]:
    """The arguments a distribution run records in its identity (one run of a possibly longer command)."""
    return ["--run", run, "--features", features, "--max-points", str(max_points), "--tsne-seed", str(tsne_seed)]
