"""The Reminiscence Attack (Xiao et al.), turned into calibrated membership scores.

Residual knowledge left by approximate unlearning makes a forgotten class come
back much faster when the model is briefly retrained on a few of its samples
than a class the model never saw. Each *relearning curve* starts from the
unlearned weights with a fresh SGD optimiser (momentum 0.9); every step trains on
1 candidate sample + ``retain_per_step`` retain samples, then records accuracy
and loss on the whole candidate set, up to ``steps`` steps.

Two games, each scored by ROC over ``trials`` curves per set type:

* ``ood`` (the paper's): members = candidate subsets of the forget class;
  non-members = same-size subsets of OOD classes relabelled as the forget class,
  relearned by the same unlearned model.
* ``retrain``: non-members = the *retrained* model relearning forget-class
  candidates. A retrained model never saw the class, so retrain against retrain
  scores AUC about 0.5, and any residual knowledge shows as AUC above it.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import attack_stats as S
from .checkpoint import atomic_write_json, atomic_write_text, read_ok_results
from .engine import resolve_device, seed_everything
from .errors import UsageError
from .runinfo import environment
from .setting import Setting, fmt_para


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


def relearn_curve(model: torch.nn.Module, state: dict, cand_x: torch.Tensor, cand_y: torch.Tensor, retain,
                  *, lr: float, steps: int, retain_per_step: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One relearning curve: (accuracy, loss) on the candidate set after each step.

    ``model`` is overwritten with ``state`` (the unlearned weights) first and gets
    a fresh optimiser, so curves never share momentum or weights.
    """
    model.load_state_dict(state)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    n = len(cand_x)
    order = torch.cat([torch.randperm(n, generator=g) for _ in range((steps + n - 1) // n)])[:steps]
    ridx = retain.idx[torch.randint(len(retain), (steps, retain_per_step), generator=g).to(retain.idx.device)]
    order = order.to(cand_x.device)
    xs = torch.cat([cand_x[order].unsqueeze(1), retain.x_all[ridx]], 1)  # (steps, 1 + retain_per_step, ...)
    ys = torch.cat([cand_y[order].unsqueeze(1), retain.y_all[ridx]], 1)
    acc = torch.empty(steps, device=cand_x.device)
    loss = torch.empty(steps, device=cand_x.device)
    for s in range(steps):  # metrics stay on the device: no host sync per step
        model.train()
        step_loss = F.cross_entropy(model(xs[s]), ys[s])
        opt.zero_grad(set_to_none=True)
        step_loss.backward()
        opt.step()
        model.eval()
        with torch.no_grad():  # the whole candidate set in one batched forward pass
            logits = model(cand_x)
            acc[s] = (logits.argmax(1) == cand_y).float().mean()
            loss[s] = F.cross_entropy(logits, cand_y)
    return acc.double().cpu().numpy(), loss.double().cpu().numpy()


def unlearned_model_path(setting: Setting, method: str, para1, para2) -> Path:
    return setting.stage_dir("unlearning", method, para1, para2) / "model.pth"


def find_retrain_run(setting: Setting) -> Path | None:
    """The newest finished ``retrain`` model of the same setting and seed, if any."""
    found = []
    for res in setting.stage_dir("unlearning", "retrain", 0, 0).parent.glob("retrain-*/results.json"):
        r = read_ok_results(res)
        if r and r.get("config", {}).get("seed") == setting.seed and (res.parent / "model.pth").is_file():
            found.append((res.stat().st_mtime, res.parent / "model.pth"))
    return max(found)[1] if found else None


def _curves(model, state, sets, data, cfg: AttackConfig, lr: float, *, seed: int, progress: bool, desc: str):
    """Curves for a list of (x, y) candidate sets; returns arrays (T, steps) of accuracy and loss."""
    accs, losses = [], []
    for t, (x, y) in enumerate(tqdm(sets, desc=desc, leave=False, disable=not progress)):
        a, l = relearn_curve(model, state, x, y, data.retain_train, lr=lr, steps=cfg.steps,
                             retain_per_step=cfg.retain_per_step, seed=seed + t)
        accs.append(a)
        losses.append(l)
    return np.stack(accs), np.stack(losses)


def _candidate_sets(pool, n: int, trials: int, label: int, g: torch.Generator):
    """``trials`` random subsets of ``pool`` of size ``n``, all labelled ``label``."""
    out = []
    for _ in range(trials):
        sub = pool.sample(n, g)
        out.append((sub.x, torch.full((len(sub),), label, dtype=torch.long, device=sub.x.device)))
    return out


def _write_curve_logs(folder: Path, name: str, accs, losses):
    for t, (a, l) in enumerate(zip(accs, losses)):
        rows = "".join(f"{s + 1}\t{l[s]:.6f}\t{100 * a[s]:.4f}\n" for s in range(len(a)))
        atomic_write_text(folder / f"{name}_{t:03d}.tsv", "epoch\tloss(Train)\tacc(Train)\n" + rows)


def reminiscence_attack(setting: Setting, *, method: str, para1, para2, cfg: AttackConfig, device="auto",
                        progress: bool = True) -> dict:
    """Run both games for every relearning lr; write logs, plots and results.json."""
    path = unlearned_model_path(setting, method, para1, para2)
    if not path.is_file():
        raise UsageError(f"no unlearned model at {path}; run: python forget_full_class_main_cifar20.py --dataset "
                         f"{setting.dataset} -net {setting.net} -method {method} --para1 {fmt_para(para1)} "
                         f"--para2 {fmt_para(para2)}" + (f" -seed {setting.seed}" if setting.seed else ""))
    if not 0 < cfg.unlearn_data_percent <= 100:
        raise UsageError(f"--unlearn_data_percent {cfg.unlearn_data_percent} must be in (0, 100]")
    ood = setting.ood_classes[: cfg.num_ood_dataset]
    if cfg.num_ood_dataset < 1 or cfg.num_ood_dataset > len(setting.ood_classes):
        raise UsageError(f"--num_ood_dataset {cfg.num_ood_dataset} must be in 1..{len(setting.ood_classes)} "
                         f"(OOD classes of {setting.dataset}: {setting.ood_classes})")
    device = resolve_device(device)
    model, _ = setting.load_model(path, device, fix="rerun the forget stage")
    retrain_path = find_retrain_run(setting)
    retrain_state = None
    if retrain_path is not None:
        rmodel, _ = setting.load_model(retrain_path, device)
        retrain_state = {k: v.clone() for k, v in rmodel.state_dict().items()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    gen = seed_everything(setting.seed)
    data = setting.load_data(device)
    forget_pool, label = data.forget_train, setting.split.forget_index
    n = max(1, int(round(cfg.unlearn_data_percent / 100 * len(forget_pool))))
    out = setting.stage_dir("mia_mu_attack", method, para1, para2)

    member_sets = _candidate_sets(forget_pool, n, cfg.trials, label, gen)
    ood_sets = {c: _candidate_sets(data.ood_class_set(c), n, cfg.trials, label, gen) for c in ood}
    ref_sets = _candidate_sets(forget_pool, n, cfg.trials, label, gen) if retrain_state is not None else None

    per_lr, t0, n_curves = {}, time.perf_counter(), 0
    for lr in cfg.relearning_lr:
        tag = f"lr{fmt_para(lr)}"
        base = 1000 * setting.seed
        acc_m, loss_m = _curves(model, state, member_sets, data, cfg, lr, seed=base, progress=progress,
                                desc=f"{tag} members")
        groups, logs = {"forget (members)": acc_m}, {"member": (acc_m, loss_m)}
        nonmember_scores = []
        for j, c in enumerate(ood):
            a, l = _curves(model, state, ood_sets[c], data, cfg, lr, seed=base + 100 * (j + 1), progress=progress,
                           desc=f"{tag} ood{c}")
            groups[f"OOD class {c} (non-members)"] = a
            logs[f"ood{c}"] = (a, l)
            nonmember_scores += [S.membership_score(x, threshold=cfg.threshold) for x in a]
        member_scores = [S.membership_score(x, threshold=cfg.threshold) for x in acc_m]
        games = {"ood": S.roc_summary(member_scores, nonmember_scores)}
        if retrain_state is not None:
            a, l = _curves(model, retrain_state, ref_sets, data, cfg, lr, seed=base + 50, progress=progress,
                           desc=f"{tag} retrained")
            groups["forget, retrained model (non-members)"] = a
            logs["retrain_ref"] = (a, l)
            games["retrain"] = S.roc_summary(member_scores, [S.membership_score(x, threshold=cfg.threshold)
                                                             for x in a])
        n_curves += sum(len(v[0]) for v in logs.values())
        for name, (a, l) in logs.items():
            _write_curve_logs(out / "curves" / tag, name, a, l)
        title = f"{method} ({setting.tag}), relearning lr {fmt_para(lr)}"
        S.plot_relearning_curves(out / f"relearning_{tag}", groups, title=title, threshold=cfg.threshold)
        S.plot_roc(out / f"roc_{tag}", {f"{k} game": v for k, v in games.items()}, title=title)
        per_lr[str(lr)] = {"games": games, "curves": {k: S.summarise_curves(v, threshold=cfg.threshold)
                                                      for k, v in groups.items()}}
    seconds = time.perf_counter() - t0
    results = {"status": "ok", "method": method, "para1": para1, "para2": para2, "model": str(path),
               "retrain_model": str(retrain_path) if retrain_path else None,
               "retrain_game": "ok" if retrain_path else "skipped: no finished retrain run of this setting",
               "candidates_per_set": n, "config": {**setting.as_dict(), **asdict(cfg), "device": str(device)},
               "per_lr": per_lr, "seconds": seconds, "curves": n_curves,
               "seconds_per_curve": seconds / max(n_curves, 1), "environment": environment()}
    atomic_write_json(out / "results.json", results)
    return results


def parser(dataset_default: str):
    from .forget import parser as forget_parser

    p = forget_parser(dataset_default)
    p.description = "Reminiscence Attack on the model the forget script wrote for the same -method --para1 --para2."
    p.add_argument("--num_ood_dataset", type=int, default=None, help="OOD classes used as non-members")
    p.add_argument("--unlearn_data_percent", type=float, default=None,
                   help="candidate set size, percent of the forget class's training data")
    p.add_argument("--relearning_lr", type=float, nargs="+", default=None, help="one or several learning rates")
    p.add_argument("--trials", type=int, default=None, help="curves per set type")
    p.add_argument("--steps", type=int, default=None, help="step cap of each curve")
    p.add_argument("--retain_per_step", type=int, default=None, help="retain samples per step")
    return p


def main(argv=None, dataset_default: str = "Cifar20"):
    import config
    from .methods import resolve_paras

    args = parser(dataset_default).parse_args(argv)
    setting = Setting.from_args(args)
    para1, para2 = resolve_paras(args.method, args.para1, args.para2)
    defaults = config.ATTACK[setting.dataset]
    given = {k: getattr(args, k) for k in defaults if getattr(args, k, None) is not None}
    cfg = AttackConfig(**{**defaults, **given})
    if cfg.trials < 2 or cfg.steps < 1:
        raise UsageError("--trials must be at least 2 and --steps at least 1")
    from .cli import device_arg

    res = reminiscence_attack(setting, method=args.method, para1=para1, para2=para2, cfg=cfg,
                              device=device_arg(args), progress=args.progress)
    for lr, r in res["per_lr"].items():
        line = "  ".join(f"{g}: AUC {v['auc']:.3f} bal.acc {v['balanced_accuracy_at_fpr_5']:.3f} "
                         f"TPR@5%FPR {v['tpr_at_fpr_5']:.3f}" for g, v in r["games"].items())
        print(f"{args.method} lr {lr}: {line}")
    print(f"{res['curves']} curves, {res['seconds_per_curve']:.3f}s per curve -> "
          f"{setting.stage_dir('mia_mu_attack', args.method, para1, para2)}")
    return 0
