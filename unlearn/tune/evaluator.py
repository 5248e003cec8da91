"""One setting evaluated in memory as a forget run would run it, on every replicate (pretrained model) of
the tuning, and the Optuna objective built on it.

A setting is scored by its **worst replicate**: the objective is the largest of the per-replicate
objectives, its d_f the largest and its d_t the lowest over the replicates, and it meets the target
only when every replicate forgets (d_f <= 10) within 10 points of that replicate's own baseline d_t
(``d_t_drop``, the largest drop). Worst case rather than mean plus spread: a default must hold on
the pretrained model a user's machine makes, and with three replicates a spread says little.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from ..core.engine import accuracy, resolve_device, seed_everything
from ..core.errors import Diverged, UsageError
from ..methods import check_options, check_paras, get_method, pretrain_l1
from ..methods.entries import entry_replay, entry_settings, normalise_entry
from ..methods.run import method_context, run_method
from ..store.setting import Setting
from .folders import start_checkpoint
from .space import apply_values, suggest
from .tasks import Task, objective_value

CAUGHT = (RuntimeError, ValueError, ArithmeticError)  # errors that fail one trial, not the tuning


class Evaluator:
    """Data and starting weights loaded once; runs a setting in memory as a forget run would, without files,
    on each replicate: ``replicates`` are pretraining seeds (default: the setting's own)."""

    def __init__(self, setting: Setting, *, weight_path=None, device="auto", replicates=None):
        self.setting = setting
        self.weight_path = weight_path
        self.replicates = tuple(replicates) if replicates else (setting.pretrain_seed,)
        if weight_path and len(self.replicates) > 1:
            raise UsageError("a given checkpoint (-weight_path) is one replicate; drop it or tune one replicate")
        self.device = resolve_device(device)
        self.data = setting.load_data(self.device)
        self._states = {}
        self._baselines = {}

    def replicate(self, p: int) -> Setting:
        return replace(self.setting, pretrain_seed=p)

    def checkpoint(self, method: str, p: int):
        return start_checkpoint(self.replicate(p), method, self.weight_path)

    def state(self, method: str, p: int | None = None) -> dict:
        """The state dict ``method`` starts from on replicate ``p`` (default the first), checked against the
        setting (as the forget stage loads it)."""
        p = self.replicates[0] if p is None else p
        s, path = self.replicate(p), self.checkpoint(method, p)
        if str(path) not in self._states:
            fix = f"run: {s.pretrain_command(pretrain_l1(method, s.dataset))}"
            _, obj = s.load_model(path, "cpu", fix=fix)
            self._states[str(path)] = obj["state_dict"]
        return self._states[str(path)]

    def metrics(self, model) -> dict:
        """d_t, d_f and forget-test accuracy in percent (the forget stage's numbers, without the entropy MIA)."""
        retain_test, forget_test, _ = self.data.sets(False)
        return {"d_t": 100 * accuracy(model, retain_test), "d_f": 100 * accuracy(model, self.data.forget_train),
                "forget_test": 100 * accuracy(model, forget_test)}

    def replicate_baseline(self, p: int) -> dict:
        if p not in self._baselines:
            model = self.setting.new_model()
            model.load_state_dict(self.state("baseline", p))
            self._baselines[p] = self.metrics(model.to(self.device))
        return self._baselines[p]

    def baseline(self) -> dict:
        """The pretrained models' metrics, worst replicate first: the lowest d_t (per replicate too)."""
        per = {p: self.replicate_baseline(p) for p in self.replicates}
        return {**min(per.values(), key=lambda m: m["d_t"]), "replicates": {str(p): m for p, m in per.items()}}

    def run(self, entry, *, on_mid=None) -> tuple[dict, float]:
        """(metrics over the replicates, seconds summed) of one method-list entry: :func:`worst` of each
        replicate's d_f, d_t and forget-test accuracy; raises Diverged like the forget stage."""
        per, total = {}, 0.0
        for p in self.replicates:
            per[p], seconds = self.run_one(entry, p, on_mid=on_mid)
            total += seconds
        return worst(per, {p: self.replicate_baseline(p)["d_t"] for p in per}), total

    def run_one(self, entry, p: int, *, on_mid=None) -> tuple[dict, float]:
        """(metrics, seconds) of one entry on replicate ``p``, exactly as its forget run would start."""
        method, p1, p2, opts = normalise_entry(entry)
        spec, our = get_method(method)
        options, _, _ = entry_settings(method, opts)
        replay = entry_replay(method, opts)
        check_paras(method, p1, p2)
        check_options(method, options)
        s = self.replicate(p)
        state = self.state(method, p)
        gen = seed_everything(s.train_seed)  # as unlearn_run: seed, build the model, load the weights
        model = s.new_model()
        model.load_state_dict(state)
        model.to(self.device)
        ctx = method_context(s, model=model, data=self.data, device=self.device, generator=gen,
                             options=options, progress=False, start=self.checkpoint(method, p))
        model, seconds, _ = run_method(spec, our, ctx, p1, p2, replay=replay, on_mid=on_mid)
        if not _finite(model):
            raise Diverged(-1, float("nan"))
        return self.metrics(model), seconds


def worst(per: dict, baselines: dict) -> dict:
    """The worst replicate's numbers: the largest d_f and forget-test accuracy, the lowest d_t, the largest
    drop of d_t below that replicate's own baseline (``d_t_drop``), and every replicate's metrics."""
    return {"d_f": max(m["d_f"] for m in per.values()), "d_t": min(m["d_t"] for m in per.values()),
            "forget_test": max(m["forget_test"] for m in per.values()),
            "d_t_drop": max(baselines[p] - m["d_t"] for p, m in per.items()),
            "replicates": {str(p): m for p, m in per.items()}}


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
        value = max(objective_value(m, task.reference, task.dt_weight) for m in metrics["replicates"].values())
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr("seconds", seconds)
        if metrics["d_t"] < task.collapse_d_t:
            trial.set_user_attr("pruned", f"collapsed (d_t {metrics['d_t']:.1f} < {task.collapse_d_t:.1f})")
            trial.report(value, 0)  # ranks it among pruned trials for the sampler
            raise optuna.TrialPruned("collapsed")
        return value

    return objective
