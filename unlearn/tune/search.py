"""Settings that forget the class a user picks: a per-method Optuna search scored against retraining.

``run.py --tune`` (every method of the list) and ``tune_method.py`` (one method) run, per
(dataset, net, forget class, OOD set, seed, method), an Optuna study over the search space the
method declares at registration (:func:`unlearn.methods.search_space`).

**Objective** (minimised): closeness to the retrained model of the same setting and seed,
``|d_f - d_f,retrain| + w * max(0, d_t,retrain - d_t)`` with ``w`` = ``--tune_dt_weight`` (2):
forgetting counts point for point, and each point of retain-test accuracy lost below retraining
counts double, so utility is not traded for forgetting. The retrain metrics come from the newest
finished ``retrain`` run of that setting and seed (trained first, through the job graph, when
there is none); the baseline's d_t from the pretrained model.

**Trials** run in memory in a worker process that loads the data and the pretrained weights once
(a Digits trial costs about a second); they write no run folder, so the grid's tree and its
summary never see them. Each trial starts from the same seed as a forget run of that setting
(:func:`unlearn.stages.forget.unlearn_run`). The ``config.py`` setting is enqueued as the first trial,
so the best setting is never worse than the default. A trial is **pruned** (Optuna's
``TrialPruned``) when it diverges (non-finite loss or weights, after the run or at an ``_our``
run's mid point) or collapses (d_t after the run below half the baseline's). Over-unlearning is
allowed to collapse at the mid point: on Digits (forget class 4), 8 of 12 defaults measured (OUR, _our)
there sit at 14-29% d_t, near chance, and replay brings all 12 to 97.4-99.7%.

**Storage**: ``log_files/tune/{net}-{dataset}-{classes}/forget{c}-ood{a}_{b}/seed{s}/{method}/``
holds ``study.db`` (Optuna's SQLite storage), ``best.json`` (best setting, its metrics, trials,
seconds, study), ``history.png`` and ``importance.png``. The study's name hashes what its trials
depend on (starting checkpoint, space, objective, reference), so a study is resumed only when
its trials still count: a killed tuning resumes where it stood, and ``--jobs N`` workers (or SLURM
jobs) share one study. ``--tune_trials`` is the budget of finished (complete or pruned) trials.

**Use**: ``run.py``'s grid takes, per method, the setting of ``best.json`` for its setting and its
first seed when the checkpoint it was tuned on is unchanged (:func:`unlearn.tune.grid.tuned_entries`), and passes
``--opt tuned_from=<study>``, which the forget stage records in ``results.json``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ..core.engine import accuracy, resolve_device, seed_everything
from ..core.errors import Diverged, UsageError
from ..methods import (Param, check_options, check_paras, check_space, get_method, pretrain_l1,
                       search_space)
from ..methods.entries import entry_for, entry_replay, entry_settings, normalise_entry
from ..methods.run import method_context, run_method
from ..pipeline.runner import ROOT, build_jobs, job_env, run_jobs
from ..pipeline.slurm import Array, make_executor, run_jobs_slurm, sbatch_text, slurm_parameters
from ..store.checkpoint import atomic_write_json, atomic_write_text, save_figure
from ..store.identity import file_sha256, fingerprint
from ..store.runs import finished_retrain_runs
from ..store.setting import Setting, fmt_para

TARGET_DF = 10.0  # the acceptance target: d_f <= 10 ...
TARGET_DT_DROP = 10.0  # ... with d_t within 10 points of the baseline's
OBJECTIVE = "|d_f - d_f,retrain| + w * max(0, d_t,retrain - d_t)"
NOT_TUNED = ("baseline", "retrain")
FINISHED = ("COMPLETE", "PRUNED")
CAUGHT = (RuntimeError, ValueError, ArithmeticError)  # errors that fail one trial, not the tuning


# ---------------------------------------------------------------- where studies live


def settings_folder(setting: Setting, weight_path=None) -> Path:
    """``{log_root}/tune/{tag}/forget{c}-ood{a}_{b}[-w{sha}]/seed{s}``: one folder per setting and seed."""
    split = f"forget{setting.forget_class}-ood{'_'.join(map(str, sorted(setting.ood_classes)))}"
    if weight_path:
        split += f"-w{_file_sha(weight_path)[:8]}"
    return Path(setting.log_root) / "tune" / setting.tag / split / f"seed{setting.seed}"


def study_folder(setting: Setting, method: str, weight_path=None) -> Path:
    return settings_folder(setting, weight_path) / method


def _file_sha(path) -> str:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"checkpoint {p} not found; pass an existing -weight_path")
    return file_sha256(p)


def _relative(path: Path, root) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def start_checkpoint(setting: Setting, method: str, weight_path=None) -> Path:
    """The checkpoint a forget run of ``method`` starts from (as :func:`unlearn.stages.forget.unlearn_run`)."""
    return Path(weight_path) if weight_path else setting.pretrain_dir(pretrain_l1(method, setting.dataset)) / "best.pth"


# ---------------------------------------------------------------- spaces and settings


def parse_space(method: str, texts) -> tuple:
    """The declared space of ``method`` with ``--space NAME=LOW:HIGH[:log][:int]`` / ``NAME=A,B,C`` overrides.

    An override replaces the declared dimension of that name or adds one; the result is
    validated (:func:`unlearn.methods.check_space`), so bad bounds are one line.
    """
    spec, our = get_method(method)
    space = {p.name: p for p in search_space(method)}
    for text in texts or ():
        name, eq, rest = text.partition("=")
        name = name.strip()
        if not eq or not name or not rest:
            raise UsageError(f"--space {text!r} is not NAME=LOW:HIGH[:log][:int] or NAME=A,B,C "
                             "(e.g. --space para1=1e-4:0.1:log)")
        if ":" in rest:
            parts = rest.split(":")
            flags = set(parts[2:])
            if len(parts) < 2 or flags - {"log", "int"}:
                raise UsageError(f"--space {text!r}: after LOW:HIGH only :log and :int may follow")
            try:
                low, high = float(parts[0]), float(parts[1])
            except ValueError:
                raise UsageError(f"--space {text!r}: LOW and HIGH must be numbers") from None
            kind = "int" if "int" in flags else "float"
            if kind == "int" and low.is_integer() and high.is_integer():
                low, high = int(low), int(high)
            space[name] = Param(name, low, high, "log" in flags, kind)
        else:
            choices = tuple(_json_or_text(c) for c in rest.split(","))
            space[name] = Param(name, kind="choice", choices=choices)
    return check_space(spec, tuple(space.values()), our=our)


def _json_or_text(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def _round(v: float) -> float:
    """Three significant digits: readable folder names, and the value a trial ran is the value reported."""
    return float(f"{v:.3g}")


def suggest(trial, space) -> dict:
    """One value per dimension from Optuna; floats rounded to 3 significant digits (the value run)."""
    out = {}
    for p in space:
        if p.kind == "choice":
            out[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.kind == "int":
            out[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
        else:
            v = trial.suggest_float(p.name, float(p.low), float(p.high), log=p.log)
            out[p.name] = v if trial.user_attrs.get("default") else _round(v)
    return out


def default_values(entry, space) -> dict:
    """The values of the space's dimensions in a method-list entry (its para1/para2, options, replay)."""
    method, p1, p2, opts = entry
    spec, our = get_method(method)
    declared = {o.name: o for o in spec.options}
    values = {"para1": p1, "para2": p2, "replay_epochs": opts.get("replay_epochs", spec.replay_epochs)}
    out = {}
    for p in space:
        v = values[p.name] if p.name in values else opts.get(p.name, getattr(declared.get(p.name), "default", None))
        if p.kind == "int" and v is not None:
            v = int(v)
        elif p.kind == "float" and v is not None:
            v = float(v)
        out[p.name] = v
    return out


def apply_values(entry, values: dict) -> tuple:
    """``entry`` with the searched values put in: para1/para2, then options (replay_epochs among them)."""
    method, p1, p2, opts = entry
    opts = dict(opts)
    for k, v in values.items():
        if k == "para1":
            p1 = v
        elif k == "para2":
            p2 = v
        else:
            opts[k] = v
    return (method, p1, p2, opts)


def entry_text(entry) -> str:
    """``0.01, 5, T=0.5, replay_epochs=4``: a setting as the table shows it."""
    _, p1, p2, opts = entry
    extra = [f"{k}={fmt_para(v) if isinstance(v, float) else v}" for k, v in opts.items() if k != "tuned_from"]
    return ", ".join([fmt_para(p1), fmt_para(p2), *extra])


# ---------------------------------------------------------------- evaluating one setting in memory


class Evaluator:
    """Data and starting weights loaded once; runs a setting in memory as a forget run would, without files."""

    def __init__(self, setting: Setting, *, weight_path=None, device="auto"):
        self.setting = setting
        self.weight_path = weight_path
        self.device = resolve_device(device)
        self.data = setting.load_data(self.device)
        self._states = {}

    def state(self, method: str) -> dict:
        """The state dict ``method`` starts from, checked against the setting (as the forget stage loads it)."""
        path = start_checkpoint(self.setting, method, self.weight_path)
        if str(path) not in self._states:
            fix = f"run: {self.setting.pretrain_command(pretrain_l1(method, self.setting.dataset))}"
            _, obj = self.setting.load_model(path, "cpu", fix=fix)
            self._states[str(path)] = obj["state_dict"]
        return self._states[str(path)]

    def metrics(self, model) -> dict:
        """d_t, d_f and forget-test accuracy in percent (the forget stage's numbers, without the entropy MIA)."""
        retain_test, forget_test, _ = self.data.sets(False)
        return {"d_t": 100 * accuracy(model, retain_test), "d_f": 100 * accuracy(model, self.data.forget_train),
                "forget_test": 100 * accuracy(model, forget_test)}

    def baseline(self) -> dict:
        model = self.setting.new_model()
        model.load_state_dict(self.state("baseline"))
        return self.metrics(model.to(self.device))

    def run(self, entry, *, on_mid=None) -> tuple[dict, float]:
        """(metrics, seconds) of one method-list entry; raises Diverged like the forget stage."""
        method, p1, p2, opts = normalise_entry(entry)
        spec, our = get_method(method)
        options, _, _ = entry_settings(method, opts)
        replay = entry_replay(method, opts)
        check_paras(method, p1, p2)
        check_options(method, options)
        state = self.state(method)
        gen = seed_everything(self.setting.seed)  # as unlearn_run: seed, build the model, load the weights
        model = self.setting.new_model()
        model.load_state_dict(state)
        model.to(self.device)
        ctx = method_context(self.setting, model=model, data=self.data, device=self.device, generator=gen,
                             options=options, progress=False)
        model, seconds, _ = run_method(spec, our, ctx, p1, p2, replay=replay, on_mid=on_mid)
        if not _finite(model):
            raise Diverged(-1, float("nan"))
        return self.metrics(model), seconds


def _finite(model) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.state_dict().values() if p.is_floating_point())


def objective_value(metrics: dict, reference: dict, dt_weight: float) -> float:
    """Closeness to retraining: |d_f - d_f,retrain| + w * max(0, d_t,retrain - d_t)."""
    return abs(metrics["d_f"] - reference["d_f"]) + dt_weight * max(0.0, reference["d_t"] - metrics["d_t"])


def make_objective(task: dict, evaluator: Evaluator):
    """The Optuna objective of one study (``task`` from :func:`plan_tasks`)."""
    import optuna  # lazy: start-up time

    space = [Param(**{**p, "choices": tuple(p["choices"])}) for p in task["space"]]
    entry = tuple(task["entry"])

    def objective(trial):
        values = suggest(trial, space)
        run = apply_values(entry, values)
        trial.set_user_attr("entry", list(run))

        def on_mid(model, seconds):
            if not _finite(model):
                raise Diverged(-1, float("nan"))

        try:
            metrics, seconds = evaluator.run(run, on_mid=on_mid)
        except Diverged as d:
            trial.set_user_attr("pruned", f"diverged ({d})")
            raise optuna.TrialPruned("diverged") from None
        except CAUGHT as e:  # the trial fails (Optuna's FAIL state), the study goes on
            trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:300])
            raise
        value = objective_value(metrics, task["reference"], task["dt_weight"])
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr("seconds", seconds)
        if metrics["d_t"] < task["collapse_d_t"]:
            trial.set_user_attr("pruned", f"collapsed (d_t {metrics['d_t']:.1f} < {task['collapse_d_t']:.1f})")
            trial.report(value, 0)  # ranks it among pruned trials for the sampler
            raise optuna.TrialPruned("collapsed")
        return value

    return objective


# ---------------------------------------------------------------- studies


def storage(path) -> object:
    """Optuna's SQLite storage at ``path``: several processes may share it; killed trials go stale."""
    import optuna  # lazy: start-up time

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(f"sqlite:///{Path(path).resolve()}",
                                      engine_kwargs={"connect_args": {"timeout": 120}},
                                      heartbeat_interval=20, grace_period=60)


def _quiet():
    import optuna  # lazy: start-up time

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Fixed parameter .* is out of range")
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _counts(study) -> dict:
    counts = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def finished_trials(study) -> int:
    c = _counts(study)
    return sum(c.get(s, 0) for s in FINISHED)


def open_study(task: dict, *, sampler_seed: int | None = None):
    import optuna  # lazy: start-up time

    _quiet()
    st = storage(task["storage"])
    seed = None if sampler_seed is None else sampler_seed
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=task["startup_trials"], multivariate=True,
                                         constant_liar=True)
    return optuna.create_study(study_name=task["study"], storage=st, sampler=sampler,
                               pruner=optuna.pruners.NopPruner(), direction="minimize", load_if_exists=True)


def ensure_default(study, task: dict):
    """Enqueue the config.py setting as a trial unless one with it finished or waits."""
    from optuna.trial import TrialState  # lazy: start-up time

    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING)):
        if t.user_attrs.get("default"):
            return
    study.enqueue_trial(task["default_params"], user_attrs={"default": True})


def run_worker(spec: dict, evaluator: Evaluator | None = None) -> dict:
    """A worker: runs trials of each task's study until its budget of finished trials is reached.

    ``spec``: the setting, starting checkpoint, device, threads, worker index and the tasks
    (:func:`plan_tasks`). Loads the data and weights once (or uses ``evaluator``). Returns
    {study: trials finished here}.
    """
    from optuna.study import MaxTrialsCallback  # lazy: start-up time
    from optuna.trial import TrialState  # lazy: start-up time

    _quiet()
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    setting = Setting(**spec["setting"])
    evaluator = evaluator or Evaluator(setting, weight_path=spec.get("weight_path"), device=spec.get("device", "auto"))
    ran = {}
    for task in spec["tasks"]:
        probe = open_study(task)
        done = finished_trials(probe)
        if done >= task["budget"]:
            ran[task["study"]] = 0
            continue
        # a fresh stream per study, worker and resumption: a resumed study does not redraw its first trials
        key = f"{task['sampler_seed']}/{task['study']}/{spec.get('worker', 0)}/{done}"
        seed = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
        study = open_study(task, sampler_seed=seed)
        mine, failed = [], []

        def count(st, trial):  # a method that fails every time must not keep a worker busy forever
            (failed if trial.state == TrialState.FAIL else mine).append(trial.number)
            if len(failed) >= max(3, task["budget"]):
                st.stop()

        study.optimize(make_objective(task, evaluator),
                       callbacks=[MaxTrialsCallback(task["budget"], states=(TrialState.COMPLETE, TrialState.PRUNED)),
                                  count], catch=CAUGHT, gc_after_trial=False)
        ran[task["study"]] = len(mine)
        complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        best = min(complete, key=lambda t: t.value) if complete else None
        print(f"{task['method']}: {finished_trials(study)}/{task['budget']} trials ({len(mine)} by this worker"
              + (f", {len(failed)} failed" if failed else "") + ")"
              + (f", best objective {best.value:.2f} (d_f {best.user_attrs['metrics']['d_f']:.1f}, d_t "
                 f"{best.user_attrs['metrics']['d_t']:.1f})" if best else ", no complete trial"), flush=True)
    return ran


def _worker_main():
    """``python -m unlearn.tune.search`` with a worker spec on stdin (what ``--jobs N`` starts N times)."""
    spec = json.load(sys.stdin)
    ran = run_worker(spec)
    print(json.dumps({"ran": ran}), flush=True)
    return 0


# ---------------------------------------------------------------- planning


def reference_metrics(setting: Setting) -> dict | None:
    """d_f and d_t of the newest finished retrain run of the setting and seed, and its folder."""
    runs = finished_retrain_runs(setting)
    if not runs:
        return None
    folder, res = runs[0]
    return {"d_f": float(res["metrics"]["d_f"]), "d_t": float(res["metrics"]["d_t"]),
            "run": _relative(folder, setting.log_root)}


def plan_tasks(setting: Setting, entries, *, budget: int, sampler_seed: int, dt_weight: float, baseline: dict,
               reference: dict, weight_path=None, spaces: dict | None = None) -> list[dict]:
    """One task (a study to run) per tunable entry, JSON-able for workers."""
    tasks = []
    for entry in entries:
        entry = normalise_entry(entry)
        method = entry[0]
        space = (spaces or {}).get(method) or search_space(method)
        if method in NOT_TUNED or not space:
            continue
        spec, our = get_method(method)
        check_space(spec, space, our=our)
        ckpt = start_checkpoint(setting, method, weight_path)
        inputs = [fingerprint(ckpt)] if ckpt.is_file() else []
        if not inputs:
            l1 = pretrain_l1(method, setting.dataset)
            raise UsageError(f"checkpoint {ckpt} not found; run: {setting.pretrain_command(l1)}")
        folder = study_folder(setting, method, weight_path)
        key = {"entry": [method, entry[1], entry[2], entry[3]], "space": [asdict(p) for p in space],
               "checkpoint": inputs[0]["sha256"], "objective": [OBJECTIVE, dt_weight],
               "reference": [round(reference["d_f"], 2), round(reference["d_t"], 2)], "seed": setting.seed}
        name = f"{method}-{hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:8]}"
        tasks.append({
            "method": method, "entry": list(entry), "space": [asdict(p) for p in space], "study": name,
            "storage": str((folder / "study.db").resolve()), "folder": str(folder.resolve()),
            "ref": f"{_relative(folder / 'study.db', setting.log_root)}#{name}",
            "budget": int(budget), "sampler_seed": int(sampler_seed), "dt_weight": float(dt_weight),
            "startup_trials": max(3, min(10, budget // 3)), "reference": reference,
            "baseline_d_t": baseline["d_t"], "collapse_d_t": baseline["d_t"] / 2,
            "default_params": default_values(entry, space), "inputs": inputs,
            "setting": {"dataset": setting.dataset, "net": setting.net, "forget_class": setting.forget_class,
                        "ood_classes": sorted(setting.ood_classes), "seed": setting.seed},
        })
    return tasks


# ---------------------------------------------------------------- results


def _trial_rows(study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name not in FINISHED:
            continue
        m = t.user_attrs.get("metrics")
        secs = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else 0.0
        rows.append({"number": t.number, "state": t.state.name, "value": t.value, "metrics": m,
                     "entry": t.user_attrs.get("entry"), "default": bool(t.user_attrs.get("default")),
                     "pruned": t.user_attrs.get("pruned"), "seconds": secs})
    return rows


def why_missed(rows: list[dict], *, d_t_min: float) -> str:
    """Why no trial meets the target, from the trials themselves."""
    measured = [r for r in rows if r["metrics"]]
    if not measured:
        return f"every one of {len(rows)} trials diverged"
    forgot = [r["metrics"]["d_t"] for r in measured if r["metrics"]["d_f"] <= TARGET_DF]
    kept = [r["metrics"]["d_f"] for r in measured if r["metrics"]["d_t"] >= d_t_min]
    parts = []
    if forgot:
        parts.append(f"the {len(forgot)} trials that forget (d_f <= {TARGET_DF:g}) keep d_t {max(forgot):.1f} at best")
    else:
        parts.append(f"no trial forgets (lowest d_f {min(r['metrics']['d_f'] for r in measured):.1f})")
    if kept:
        parts.append(f"the {len(kept)} that keep d_t >= {d_t_min:.1f} reach d_f {min(kept):.1f} at best")
    else:
        parts.append(f"none keeps d_t >= {d_t_min:.1f} (highest {max(r['metrics']['d_t'] for r in measured):.1f})")
    pruned = [r["pruned"].split(" ")[0] for r in rows if r["pruned"]]
    if pruned:
        parts.append(", ".join(f"{pruned.count(k)} {k}" for k in sorted(set(pruned))))
    return f"of {len(rows)} trials, " + "; ".join(parts)


def finish(task: dict, *, wall_seconds: float | None = None, plots: bool = True) -> dict:
    """Write ``best.json`` (atomically) and the history/importance PNGs of a task's study; returns best.json."""
    study = open_study(task)
    rows = _trial_rows(study)
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    d_t_min = task["baseline_d_t"] - TARGET_DT_DROP
    best = min(complete, key=lambda r: r["value"]) if complete else None
    default = next((r for r in rows if r["default"]), None)
    counts = _counts(study)
    out = {
        "method": task["method"], **task["setting"], "study": task["study"], "storage": task["ref"].split("#")[0],
        "study_ref": task["ref"], "objective": OBJECTIVE, "dt_weight": task["dt_weight"],
        "reference": task["reference"], "baseline_d_t": task["baseline_d_t"],
        "target": {"d_f_max": TARGET_DF, "d_t_min": d_t_min},
        "space": [Param(**{**p, "choices": tuple(p["choices"])}).describe() for p in task["space"]],
        "default_entry": task["entry"], "default": None, "entry": None, "params": None, "metrics": None,
        "value": None, "meets_target": False, "reason": None,
        "trials": {"finished": len(rows), "complete": len(complete), "pruned": counts.get("PRUNED", 0),
                   "failed": counts.get("FAIL", 0), "budget": task["budget"]},
        "seconds": round(sum(r["seconds"] for r in rows), 2),
        "wall_seconds": None if wall_seconds is None else round(wall_seconds, 2), "inputs": task["inputs"],
    }
    if default:
        out["default"] = {"metrics": default["metrics"], "value": default["value"], "pruned": default["pruned"]}
    if best:
        m = best["metrics"]
        out.update(entry=best["entry"], params=study.trials[best["number"]].params, metrics=m, value=best["value"],
                   best_is_default=best["default"], trial=best["number"],
                   meets_target=m["d_f"] <= TARGET_DF and m["d_t"] >= d_t_min)
    if not out["meets_target"]:
        out["reason"] = why_missed(rows, d_t_min=d_t_min)
        errors = [t.user_attrs["error"] for t in study.get_trials(deepcopy=False) if "error" in t.user_attrs]
        if errors:
            out["reason"] += f"; {len(errors)} trials failed (first: {errors[0]})"
    folder = Path(task["folder"])
    if plots:
        out["plots"] = save_plots(study, folder)
    atomic_write_json(folder / "best.json", out)
    return out


def save_plots(study, folder: Path) -> list[str]:
    """Optuna's optimisation history and parameter importances (matplotlib), as PNGs beside the study."""
    import matplotlib  # lazy: start-up time

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: start-up time
    import optuna.visualization.matplotlib as vis  # lazy: start-up time

    written = []
    for name, plot in (("history", vis.plot_optimization_history), ("importance", vis.plot_param_importances)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "too few trials": the plot then says all are equal
                ax = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError):  # e.g. importances need a complete trial
            continue
        fig = getattr(ax, "figure", None) or ax.flat[0].figure
        fig.set_size_inches(7, 4)
        fig.tight_layout()
        save_figure(fig, folder / name, formats=("png",), dpi=110)
        plt.close(fig)
        written.append(f"{name}.png")
    return written


def table(rows: list[dict]) -> str:
    """The per-method table of a tuning: best setting, its metrics, trials, seconds, target."""
    head = ["method", "best setting", "d_f", "d_t", "objective", "default d_f / d_t", "trials", "seconds", "target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for b in rows:
        m, d = b["metrics"], (b.get("default") or {}).get("metrics")
        t = b["trials"]
        trials = f"{t['finished']}" + (f" ({t['pruned']} pruned)" if t["pruned"] else "")
        lines.append("| " + " | ".join([
            b["method"], (entry_text(b["entry"]) + (" (default)" if b.get("best_is_default") else "")) if b["entry"]
            else "-", f"{m['d_f']:.1f}" if m else "-", f"{m['d_t']:.1f}" if m else "-",
            f"{b['value']:.2f}" if b["value"] is not None else "-", f"{d['d_f']:.1f} / {d['d_t']:.1f}" if d else "-",
            trials, f"{b['seconds']:.0f}", "yes" if b["meets_target"] else "**no**"]) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- the whole tuning


def prerequisite_jobs(base: Setting, entries, *, seeds, weight_path=None, extra_pretrain=()) -> list:
    """Pretraining (dense and L1-sparse, as the methods need) and the retrain run of each seed: the
    grid's own commands (``unlearn.pipeline.runner.build_jobs``), so the grid reuses them."""
    tuned = [normalise_entry(e) for e in entries if e[0] not in NOT_TUNED]
    jobs = build_jobs(base, methods=[entry_for("retrain", entries), *tuned], seeds=list(seeds),
                      stages=["pretrain", "forget"], attack={}, extra_pretrain=list(extra_pretrain),
                      weight_path=weight_path, method_l1=lambda m: pretrain_l1(m, base.dataset), retrain_refs=0)
    return [j for j in jobs if j.name.startswith("pretrain") or j.name.startswith("forget:retrain-")]


def tune(base: Setting, entries, *, seeds, trials: int, sampler_seed: int = 0, dt_weight: float = 2.0,
         jobs: int = 1, threads: int | None = None, weight_path=None, device="auto", spaces=None,
         extra_pretrain=(), dry_run: bool = False, progress: bool = True, cluster=None,
         write_table: bool = True) -> int:
    """Tune every tunable entry for each seed; print and write the table. Returns the exit code.

    ``cluster``: :class:`unlearn.pipeline.slurm.ClusterOptions` to run the prerequisites and the workers
    through submitit (SLURM or its local executor); else they run here (``jobs`` workers).
    ``write_table``: also write the table to ``summary.md`` in the setting's folder (run.py).
    """
    entries = [normalise_entry(e) for e in entries]
    tunable = [e for e in entries if e[0] not in NOT_TUNED and ((spaces or {}).get(e[0]) or search_space(e[0]))]
    skipped = [e[0] for e in entries if e[0] not in NOT_TUNED and e not in tunable]
    if not tunable:
        raise UsageError("no method to tune: baseline and retrain are not tuned, and the methods given declare no "
                         "search space")
    for e in tunable:  # spaces are checked before anything runs
        spec, our = get_method(e[0])
        check_space(spec, (spaces or {}).get(e[0]) or search_space(e[0]), our=our)
    pre = prerequisite_jobs(base, entries, seeds=seeds, weight_path=weight_path, extra_pretrain=extra_pretrain)
    if dry_run:
        print(f"# tuning {len(tunable)} method(s) x {len(seeds)} seed(s), {trials} trials each, {jobs} worker(s)"
              + (f" through submitit ({cluster.cluster})" if cluster else ""))
        if skipped:
            print(f"# no search space (not tuned): {', '.join(skipped)}")
        _run_prerequisites(pre, cluster, dry_run=True, progress=progress)
        if cluster is not None and cluster.cluster == "slurm":
            text = sbatch_text(cluster, Array("tune", [None] * jobs, [], []), None)
            print(f"# tuning workers: one array of {jobs} job(s), after the runs above; sbatch options:")
            print("".join(f"#   {x}\n" for x in text.splitlines() if x.startswith("#SBATCH")), end="")
        for seed in seeds:
            s = replace(base, seed=seed)
            for e in tunable:
                folder = study_folder(s, e[0], weight_path)
                print(f"# tune {e[0]} seed {seed}: {_relative(folder, s.log_root)} ({_done_text(folder)})")
        return 0
    status = _run_prerequisites(pre, cluster, progress=progress)
    failed = {k: v for k, v in status.items() if v[0] != 0}
    if failed:
        print(f"tuning needs the pretrained model(s) and a retrain run of each seed; {len(failed)} failed:",
              file=sys.stderr)
        for k, (_, tail) in failed.items():
            print(f"  {k}: {tail}", file=sys.stderr)
        return 1
    for seed in seeds:
        s = replace(base, seed=seed)
        t0 = time.perf_counter()
        evaluator = Evaluator(s, weight_path=weight_path, device=device)
        reference = reference_metrics(s)
        if reference is None:
            raise UsageError(f"no finished retrain run of seed {seed} for this class split under {s.log_root}; "
                             "rerun without --dry-run")
        baseline = evaluator.baseline()
        tasks = plan_tasks(s, tunable, budget=trials, sampler_seed=sampler_seed, dt_weight=dt_weight,
                           baseline=baseline, reference=reference, weight_path=weight_path, spaces=spaces)
        for task in tasks:
            ensure_default(open_study(task), task)
        n_threads = threads or max(1, (os.cpu_count() or 1) // max(jobs, 1))
        where = {"log_root": str(Path(s.log_root).resolve()), "data_root": str(Path(s.data_root).resolve())}
        spec = {"setting": {**s.as_dict(), **where}, "device": device, "threads": n_threads, "tasks": tasks,
                "weight_path": str(Path(weight_path).resolve()) if weight_path else None, "progress": progress}
        if cluster is not None:
            _run_workers_submitit(spec, jobs, cluster)
        elif jobs > 1:
            _run_workers_local(spec, jobs, settings_folder(s, weight_path))
        else:
            run_worker({**spec, "worker": 0}, evaluator)
        results = [finish(task, plots=True) for task in tasks]
        wall = time.perf_counter() - t0
        folder = settings_folder(s, weight_path)
        text = _report(s, results, baseline=baseline, reference=reference, wall=wall, trials=trials, jobs=jobs,
                       skipped=skipped)
        print(text)
        if write_table:
            atomic_write_text(folder / "summary.md", text + "\n")
            print(f"tuning table: {folder / 'summary.md'}")
    return 0


def _done_text(folder: Path) -> str:
    best = folder / "best.json"
    if best.is_file():
        try:
            b = json.loads(best.read_text())
            return f"tuned before: {b['trials']['finished']} trials, best {entry_text(b['entry'])}" if b.get(
                "entry") else "tuned before"
        except (ValueError, KeyError, TypeError):
            pass
    return "resumes its study" if (folder / "study.db").is_file() else "new study"


def _report(s: Setting, results, *, baseline, reference, wall, trials, jobs, skipped) -> str:
    head = (f"Tuning {s.dataset} ({s.net}), forget class {s.forget_class}, OOD {sorted(s.ood_classes)}, seed {s.seed}: "
            f"{len(results)} methods, budget {trials} trials each, {jobs} worker(s), {wall:.0f} s wall time.\n"
            f"Objective {OBJECTIVE}, w = {results[0]['dt_weight'] if results else '-'}; retrain d_f "
            f"{reference['d_f']:.1f}, d_t {reference['d_t']:.1f} ({reference['run']}); baseline d_t "
            f"{baseline['d_t']:.1f}; target d_f <= {TARGET_DF:g} and d_t >= {baseline['d_t'] - TARGET_DT_DROP:.1f}.\n")
    missed = [r for r in results if not r["meets_target"]]
    text = head + "\n" + table(results) + "\n"
    text += f"\n{len(results) - len(missed)} of {len(results)} meet the target."
    for r in missed:
        text += f"\n- {r['method']} misses: {r['reason']}"
    if skipped:
        text += f"\nNot tuned (no search space): {', '.join(skipped)}."
    return text


def _run_prerequisites(jobs, cluster, *, dry_run=False, progress=True):
    """Run (or, dry, print) the prerequisite jobs here or through submitit; {name: (exit code, last line)}."""
    if cluster is not None:
        return run_jobs_slurm(jobs, cluster, dry_run=dry_run, progress=progress)

    return run_jobs(jobs, n_jobs=1, dry_run=dry_run, progress=progress, batch=True)


def _run_workers_local(spec: dict, n: int, folder: Path):
    """``n`` worker processes (``python -m unlearn.tune.search``) on the same studies; logs in ``worker{i}.log``."""
    folder.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(n):
        log = open(folder / f"worker{i}.log", "w")
        p = subprocess.Popen([sys.executable, "-m", "unlearn.tune.search"], stdin=subprocess.PIPE, stdout=log,
                             stderr=subprocess.STDOUT, cwd=ROOT, env=job_env(None), text=True)
        p.stdin.write(json.dumps({**spec, "worker": i, "progress": False}))
        p.stdin.close()
        procs.append((p, log))
    bad = []
    for i, (p, log) in enumerate(procs):
        if p.wait() != 0:
            bad.append(i)
        log.close()
    if bad:
        raise RuntimeError(f"tuning worker(s) {bad} failed; see {folder}/worker{bad[0]}.log")


def _run_workers_submitit(spec: dict, n: int, cluster):
    """``n`` workers as submitit jobs (one array on SLURM), each running :func:`run_worker`."""
    ex = make_executor(cluster)
    threads = cluster.cpus_per_job if not cluster.gpus_per_job else None
    if cluster.cluster == "slurm":
        ex.update_parameters(**slurm_parameters(cluster, Array("tune", [None] * n, [], []), None))
    with ex.batch():
        handles = [ex.submit(run_worker, {**spec, "worker": i, "threads": threads or spec["threads"],
                                          "progress": False}) for i in range(n)]
    print(f"submitted {n} tuning worker(s): {', '.join(h.job_id for h in handles)}", flush=True)
    for h in handles:
        h.result()  # raises with the job's error when it failed


if __name__ == "__main__":
    sys.exit(_worker_main())
