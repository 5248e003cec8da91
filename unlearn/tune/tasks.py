"""What a tuning runs: its target and objective, the retrain reference, one task (a study) per method."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

from ..core.errors import UsageError
from ..methods import Param, check_space, get_method, pretrain_l1, search_space
from ..methods.entries import normalise_entry
from ..store.identity import fingerprint
from ..store.runs import finished_retrain_runs
from ..store.setting import Setting
from .folders import relative, start_checkpoint, study_folder
from .space import default_values

TARGET_DF = 10.0  # the acceptance target: d_f <= 10 ...
TARGET_DT_DROP = 10.0  # ... with d_t within 10 points of the baseline's
OBJECTIVE = "|d_f - d_f,retrain| + w * max(0, d_t,retrain - d_t)"
NOT_TUNED = ("baseline", "retrain")


@dataclass(frozen=True)
class Task:
    """One study to run, for one method of one setting and seed: what its workers, its objective and its
    ``best.json`` need. Travels to the workers (as JSON through ``asdict``, or pickled by submitit)."""

    method: str
    entry: list  # the entry tuned, [method, para1, para2, options]: the default setting, its first trial
    space: list  # the dimensions searched, as dicts (``asdict`` of a Param)
    study: str  # the study's name: the method and a hash of what its trials depend on
    storage: str  # its study.db (absolute)
    folder: str  # its folder (absolute): best.json, the plots
    ref: str  # ``{study.db under the log root}#{study}``: what a tuned entry's ``tuned_from`` names
    budget: int  # finished (complete or pruned) trials
    sampler_seed: int
    dt_weight: float
    startup_trials: int  # random trials before TPE
    reference: dict  # the retrain run's d_f, d_t and folder
    baseline_d_t: float
    collapse_d_t: float  # a trial below this d_t is pruned
    default_params: dict  # the entry's values of the dimensions
    inputs: list  # fingerprint of the starting checkpoint
    setting: dict  # dataset, net, forget class, OOD classes, seed (for best.json)
    replicates: list = field(default_factory=lambda: [0])  # pretraining seeds every trial runs on

    def params(self) -> tuple[Param, ...]:
        return tuple(Param(**{**p, "choices": tuple(p["choices"])}) for p in self.space)


def objective_value(metrics: dict, reference: dict, dt_weight: float) -> float:
    """Closeness to retraining: |d_f - d_f,retrain| + w * max(0, d_t,retrain - d_t)."""
    return abs(metrics["d_f"] - reference["d_f"]) + dt_weight * max(0.0, reference["d_t"] - metrics["d_t"])


def reference_metrics(setting: Setting) -> dict | None:
    """d_f and d_t of the newest finished retrain run of the setting and seed, and its folder."""
    runs = finished_retrain_runs(setting)
    if not runs:
        return None
    folder, res = runs[0]
    return {"d_f": float(res["metrics"]["d_f"]), "d_t": float(res["metrics"]["d_t"]),
            "run": relative(folder, setting.log_root)}


def plan_tasks(setting: Setting, entries, *, budget: int, sampler_seed: int, dt_weight: float, baseline: dict,
               reference: dict, weight_path=None, spaces: dict | None = None, replicates=(0,)) -> list[Task]:
    """One task (a study to run) per tunable entry, its trials run on every replicate (pretraining seed)."""
    tasks = []
    for entry in entries:
        entry = normalise_entry(entry)
        method = entry[0]
        space = (spaces or {}).get(method) or search_space(method)
        if method in NOT_TUNED or not space:
            continue
        spec, our = get_method(method)
        check_space(spec, space, our=our)
        inputs = []
        for p in replicates:
            rep = replace(setting, pretrain_seed=p)
            ckpt = start_checkpoint(rep, method, weight_path)
            if not ckpt.is_file():
                l1 = pretrain_l1(method, setting.dataset)
                raise UsageError(f"checkpoint {ckpt} not found; run: {rep.pretrain_command(l1)}")
            inputs.append(fingerprint(ckpt))
        folder = study_folder(setting, method, weight_path)
        key = {"entry": [method, entry[1], entry[2], entry[3]], "space": [asdict(p) for p in space],
               "checkpoint": inputs[0]["sha256"], "objective": [OBJECTIVE, dt_weight],
               **({"replicates": [[p, i["sha256"]] for p, i in zip(replicates, inputs)]} if len(inputs) > 1 else {}),
               "reference": [round(reference["d_f"], 2), round(reference["d_t"], 2)], "seed": setting.seed}
        name = f"{method}-{hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:8]}"
        tasks.append(Task(
            method=method, entry=list(entry), space=[asdict(p) for p in space], study=name,
            storage=str((folder / "study.db").resolve()), folder=str(folder.resolve()),
            ref=f"{relative(folder / 'study.db', setting.log_root)}#{name}",
            budget=int(budget), sampler_seed=int(sampler_seed), dt_weight=float(dt_weight),
            startup_trials=max(3, min(10, budget // 3)), reference=reference,
            baseline_d_t=baseline["d_t"], collapse_d_t=baseline["d_t"] / 2,
            default_params=default_values(entry, space), inputs=inputs,
            setting={"dataset": setting.dataset, "net": setting.net, "forget_class": setting.forget_class,
                     "ood_classes": sorted(setting.ood_classes), "seed": setting.seed},
            replicates=list(replicates),
        ))
    return tasks
