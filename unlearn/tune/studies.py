"""Optuna's side of a tuning: a task's study in its SQLite storage (shared by workers, resumed after a
kill), its trial counts and the config.py setting as its first trial."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

from .tasks import Task

FINISHED = ("COMPLETE", "PRUNED")


def storage(path) -> object:
    """Optuna's SQLite storage at ``path``: several processes may share it; killed trials go stale."""
    import optuna  # lazy: start-up time

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(f"sqlite:///{Path(path).resolve()}",
                                      engine_kwargs={"connect_args": {"timeout": 120}},
                                      heartbeat_interval=20, grace_period=60)


def quiet():
    import optuna  # lazy: start-up time

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Fixed parameter .* is out of range")
    logging.getLogger("alembic").setLevel(logging.WARNING)


def trial_counts(study) -> dict:
    counts = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def finished_trials(study) -> int:
    c = trial_counts(study)
    return sum(c.get(s, 0) for s in FINISHED)


def open_study(task: Task, *, sampler_seed: int | None = None):
    import optuna  # lazy: start-up time

    quiet()
    st = storage(task.storage)
    seed = None if sampler_seed is None else sampler_seed
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=task.startup_trials, multivariate=True,
                                         constant_liar=True)
    return optuna.create_study(study_name=task.study, storage=st, sampler=sampler,
                               pruner=optuna.pruners.NopPruner(), direction="minimize", load_if_exists=True)


def ensure_default(study, task: Task):
    """Enqueue the config.py setting as a trial unless one with it finished or waits."""
    from optuna.trial import TrialState  # lazy: start-up time

    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING)):
        if t.user_attrs.get("default"):
            return
    study.enqueue_trial(task.default_params, user_attrs={"default": True})
