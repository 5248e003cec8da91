"""What every model's relearning curves share, and the reference population's curves.

The Reminiscence Attack (:mod:`unlearn.stages.attack`) relearns every model on the same
``trials`` candidate sets of the forget class (members) and of the OOD classes relabelled
as the forget class, with the same step plans (common random numbers across models), at
two levels (:data:`LEVELS`). :class:`Relearner` holds what the models share (a model
skeleton, the retain pool, the candidate sets drawn from the setting's seed, the attack
configuration :class:`AttackConfig`) and computes one model's curves, cached on disk for
model files (:func:`unlearn.evaluation.rea.reference.cached_curves`); :func:`population`
gives the curves of the references and the anchor for every lr and level.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from datasets.splits import concat
from ...core.errors import UsageError
from ...store.identity import file_sha256
from ...store.setting import Setting, fmt_para
from . import reference as ref
from .relearn import reset_forget_row, run_curves

LEVELS = ("output", "feature")


@dataclass
class AttackConfig:
    """Settings of the Reminiscence Attack (defaults per dataset in ``config.ATTACK``)."""

    unlearn_data_percent: float = 3.0
    num_ood_dataset: int = 5
    retain_per_step: int = 14
    relearning_lr: list = field(default_factory=lambda: [0.004])
    trials: int = 20
    steps: int = 75
    threshold: float = 0.9
    curve_batch: int = 0  # curves relearned together (relearn_curves); 0: 32 on a GPU, cpu_curve_batch on a CPU
    cpu_curve_batch: int = 1  # on a CPU batching pays only for tiny inputs (config.ATTACK: Digits)
    retrain_refs: int = 3  # reference models: retrain runs with seeds REFERENCE_SEED_BASE + 0..R-1

    def validate(self, setting: Setting):
        if not 0 < self.unlearn_data_percent <= 100:
            raise UsageError(f"--unlearn_data_percent {self.unlearn_data_percent} must be in (0, 100]")
        if self.num_ood_dataset < 1 or self.num_ood_dataset > len(setting.ood_classes):
            raise UsageError(f"--num_ood_dataset {self.num_ood_dataset} must be in 1..{len(setting.ood_classes)} "
                             f"(OOD classes of {setting.dataset}: {setting.ood_classes})")
        if self.trials < 2 or self.steps < 1 or self.retrain_refs < 0:
            raise UsageError("--trials must be at least 2, --steps at least 1 and --retrain_refs at least 0")


def candidate_sets(pool, n: int, trials: int, label: int, g: torch.Generator):
    """``trials`` random subsets of ``pool`` of size ``n``, all labelled ``label``."""
    out = []
    for _ in range(trials):
        sub = pool.sample(n, g)
        out.append((sub.x, torch.full((len(sub),), label, dtype=torch.long, device=sub.x.device)))
    return out


class Relearner:
    """What every model's curves share: a model skeleton, the retain pool, the candidate
    sets and step plans (drawn from the setting's seed), the attack configuration."""

    def __init__(self, setting: Setting, cfg: AttackConfig, device, *, progress: bool):
        self.setting, self.cfg, self.device, self.progress = setting, cfg, device, progress
        self.model = setting.new_model(device)
        data = setting.load_data(device)
        self.retain = data.retain_train
        label = setting.split.forget_index
        pool = data.forget_train
        self.n = max(1, int(round(cfg.unlearn_data_percent / 100 * len(pool))))
        g = torch.Generator().manual_seed(setting.seed)
        self.sets = {"member": candidate_sets(pool, self.n, cfg.trials, label, g)}
        ood = concat(*[data.ood_class_set(c) for c in setting.ood_classes[: cfg.num_ood_dataset]])
        self.sets["ood"] = candidate_sets(ood, self.n, cfg.trials, label, g)
        self.plan_seed = {"member": 10_000 * setting.seed, "ood": 10_000 * setting.seed + 5_000}
        self.batch = cfg.curve_batch if cfg.curve_batch > 0 else (32 if device.type == "cuda" else cfg.cpu_curve_batch)
        self.digest = self._digest()

    def _digest(self) -> str:
        """A hash of the data the curves see: candidate images, retain indices, a sample of retain images."""
        h = hashlib.sha256()
        for g in ref.GROUPS:
            for x, y in self.sets[g]:
                h.update(x.detach().cpu().contiguous().numpy().tobytes())
                h.update(y.cpu().numpy().tobytes())
        h.update(self.retain.idx.cpu().numpy().tobytes())
        step = max(1, len(self.retain) // 2000)
        h.update(self.retain.x_all[self.retain.idx[::step]].detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def curves(self, state: dict, *, lr: float, level: str, desc: str = "curves") -> dict:
        """{"member": (acc, loss), "ood": (acc, loss)}, arrays (trials, steps), of the model ``state``."""
        if level == "feature":
            state = reset_forget_row(self.model, state, self.setting.split.forget_index, self.setting.num_outputs)
        groups = [(g, state, self.sets[g], self.plan_seed[g]) for g in ref.GROUPS]
        return run_curves(self.model, groups, self.retain, lr=lr, steps=self.cfg.steps,
                          retain_per_step=self.cfg.retain_per_step, batch=self.batch, progress=self.progress,
                          desc=desc)

    def material(self, sha256: str, *, lr: float, level: str) -> dict:
        """Everything besides code that determines a model's curves: the cache key's contents."""
        c = self.cfg
        return {"model_sha256": sha256, "net": self.setting.net, "dataset": self.setting.dataset,
                "num_outputs": self.setting.num_outputs, "forget_index": self.setting.split.forget_index,
                "lr": float(lr), "level": level, "steps": c.steps, "retain_per_step": c.retain_per_step,
                "trials": c.trials, "candidates": self.n, "num_ood_dataset": c.num_ood_dataset,
                "plan_seeds": self.plan_seed, "data": self.digest}

    def cached(self, path: Path, *, lr: float, level: str, desc: str) -> tuple[dict, bool]:
        """The curves of the model file ``path`` (a reference or the anchor), from the cache when valid."""
        material = self.material(file_sha256(path), lr=lr, level=level)

        def compute():
            model, _ = self.setting.load_model(path, self.device, fix="retrain or re-pretrain it")
            return self.curves(model.state_dict(), lr=lr, level=level, desc=desc)

        return ref.cached_curves(self.setting, material, compute, shape=(self.cfg.trials, self.cfg.steps))


def population(rl: Relearner, refs: list[tuple[int, Path]], anchor: Path) -> tuple[dict, dict]:
    """Curves of the references and the anchor for every lr and level: {lr: {level: {...}}} and cache counts."""
    out, counts = {}, {"cached": 0, "computed": 0}
    for lr in rl.cfg.relearning_lr:
        for level in LEVELS:
            curves = []
            for name, path in [*[(f"seed{s}", p) for s, p in refs], ("anchor", anchor)]:
                c, hit = rl.cached(path, lr=lr, level=level, desc=f"{name} lr {fmt_para(lr)} {level}")
                counts["cached" if hit else "computed"] += 1
                curves.append(c)
            out.setdefault(lr, {})[level] = {"refs": curves[:-1], "anchor": curves[-1]}
    return out, counts
