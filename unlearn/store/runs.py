"""Lookups among the run folders a setting's stages wrote."""
from __future__ import annotations

from pathlib import Path

from .checkpoint import read_ok_results
from .setting import Setting


def finished_retrain_runs(setting: Setting) -> list[tuple[Path, dict]]:
    """(run folder, results) of every ``retrain`` run of this class split, seed and replicate that finished ok, newest first."""
    runs = []
    for res in setting.stage_root("unlearning").glob("retrain-*/results.json"):
        r = read_ok_results(res)
        c = (r or {}).get("config", {})
        if r and c.get("seed") == setting.seed and c.get("pretrain_seed", 0) == setting.pretrain_seed \
                and c.get("forget_class") == setting.forget_class \
                and sorted(c.get("ood_classes", [])) == sorted(setting.ood_classes):
            runs.append((res.stat().st_mtime, res.parent, r))
    return [(folder, r) for _, folder, r in sorted(runs, key=lambda t: t[0], reverse=True)]


def newest_retrain_model(setting: Setting) -> Path | None:
    """The ``model.pth`` of the newest finished ``retrain`` run of this class split and seed that has one."""
    return next((f / "model.pth" for f, _ in finished_retrain_runs(setting) if (f / "model.pth").is_file()), None)


def retrain_seconds(setting: Setting) -> float | None:
    """Seconds of the newest finished ``retrain`` run of the same setting and seed, if any."""
    runs = finished_retrain_runs(setting)
    return runs[0][1]["time"] if runs else None


def missing_unlearned_model(setting: Setting, path, what: str) -> str:
    """One line for an unlearned model that is not there: where it was looked for and the forget command
    that makes it (``what``: its ``-method M --para1 A --para2 B``, as :meth:`Setting.forget_command`)."""
    return f"no unlearned model at {path}; run: {setting.forget_command(what)}"
