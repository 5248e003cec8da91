"""One setting evaluated in memory as a forget run would run it, and the Optuna objective built on it."""
from __future__ import annotations

import torch

from ..core.engine import accuracy, resolve_device, seed_everything
from ..core.errors import Diverged
from ..methods import check_options, check_paras, get_method, pretrain_l1
from ..methods.entries import entry_replay, entry_settings, normalise_entry
from ..methods.run import method_context, run_method
from ..store.setting import Setting
from .folders import start_checkpoint
from .space import apply_values, suggest
from .tasks import Task, objective_value

CAUGHT = (RuntimeError, ValueError, ArithmeticError)  # errors that fail one trial, not the tuning


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
                             options=options, progress=False,
                             start=start_checkpoint(self.setting, method, self.weight_path))
        model, seconds, _ = run_method(spec, our, ctx, p1, p2, replay=replay, on_mid=on_mid)
        if not _finite(model):
            raise Diverged(-1, float("nan"))
        return self.metrics(model), seconds


def _finite(model) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.state_dict().values() if p.is_floating_point())


def make_objective(task: Task, evaluator: Evaluator):
    """The Optuna objective of one study (``task`` from :func:`unlearn.tune.tasks.plan_tasks`)."""
    import optuna  # lazy: start-up time

    space = task.params()
    entry = tuple(task.entry)

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
        value = objective_value(metrics, task.reference, task.dt_weight)
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr("seconds", seconds)
        if metrics["d_t"] < task.collapse_d_t:
            trial.set_user_attr("pruned", f"collapsed (d_t {metrics['d_t']:.1f} < {task.collapse_d_t:.1f})")
            trial.report(value, 0)  # ranks it among pruned trials for the sampler
            raise optuna.TrialPruned("collapsed")
        return value

    return objective
