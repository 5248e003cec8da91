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
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import attack_stats as S
from .checkpoint import atomic_write_json, atomic_write_text
from .engine import resolve_device, seed_everything
from .errors import UsageError
from .forget import finished_retrain_runs
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
    curve_batch: int = 0  # curves relearned together (relearn_curves); 0: 32 on a GPU, 1 on a CPU


def _step_plan(cand_x, cand_y, retain, *, steps: int, retain_per_step: int, seed: int):
    """The training batches of one curve: inputs (steps, 1 + retain_per_step, ...) and their labels.

    Each step holds one candidate (the candidates in shuffled rounds) and random retain samples.
    """
    g = torch.Generator().manual_seed(seed)
    n = len(cand_x)
    order = torch.cat([torch.randperm(n, generator=g) for _ in range((steps + n - 1) // n)])[:steps]
    ridx = retain.idx[torch.randint(len(retain), (steps, retain_per_step), generator=g).to(retain.idx.device)]
    order = order.to(cand_x.device)
    xs = torch.cat([cand_x[order].unsqueeze(1), retain.x_all[ridx]], 1)
    ys = torch.cat([cand_y[order].unsqueeze(1), retain.y_all[ridx]], 1)
    return xs, ys


def relearn_curve(model: torch.nn.Module, state: dict, cand_x: torch.Tensor, cand_y: torch.Tensor, retain,
                  *, lr: float, steps: int, retain_per_step: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One relearning curve: (accuracy, loss) on the candidate set after each step.

    ``model`` is overwritten with ``state`` (the unlearned weights) first and gets
    a fresh optimiser, so curves never share momentum or weights.
    """
    model.load_state_dict(state)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    xs, ys = _step_plan(cand_x, cand_y, retain, steps=steps, retain_per_step=retain_per_step, seed=seed)
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
    return next((f / "model.pth" for f, _ in finished_retrain_runs(setting) if (f / "model.pth").is_file()), None)


def relearn_curves(model: torch.nn.Module, curves: list[tuple], retain, *, lr: float, steps: int,
                   retain_per_step: int) -> tuple[np.ndarray, np.ndarray]:
    """Several relearning curves trained together: arrays (len(curves), steps) of accuracy and loss.

    ``curves`` holds ``(state, cand_x, cand_y, seed)`` with candidate sets of one size. Each
    curve is exactly :func:`relearn_curve` (same batches, SGD with momentum 0.9 written out:
    ``buf = 0.9 buf + g; w -= lr buf``), but the model copies are stacked and run as one
    batched call (``torch.func.vmap`` over ``functional_call``; BatchNorm running statistics
    are per copy). On a GPU this replaces hundreds of tiny kernel launches per step by one
    batch of them; on a CPU it is no faster, so the attack uses it on GPUs only.
    """
    from torch.func import functional_call, vmap

    k = len(curves)
    pnames = [n for n, _ in model.named_parameters()]
    bnames = [n for n, _ in model.named_buffers()]
    params = {n: torch.stack([c[0][n] for c in curves]).requires_grad_(True) for n in pnames}
    buffers = {n: torch.stack([c[0][n] for c in curves]).clone() for n in bnames}
    plans = [_step_plan(x, y, retain, steps=steps, retain_per_step=retain_per_step, seed=sd) for _, x, y, sd in curves]
    xs, ys = torch.stack([p[0] for p in plans], 1), torch.stack([p[1] for p in plans], 1)  # (steps, k, b, ...)
    cand_x, cand_y = torch.stack([c[1] for c in curves]), torch.stack([c[2] for c in curves])
    fwd = vmap(lambda p, b, x: functional_call(model, (p, b), (x,)), randomness="different")
    momentum = {n: torch.zeros_like(v) for n, v in params.items()}
    acc = torch.empty(steps, k, device=cand_x.device)
    loss = torch.empty(steps, k, device=cand_x.device)

    def per_curve_ce(logits, y):
        return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(k, -1).mean(1)

    was = model.training
    try:
        for s in range(steps):
            model.train()
            total = per_curve_ce(fwd(params, buffers, xs[s]), ys[s]).sum()  # curves are independent
            grads = torch.autograd.grad(total, list(params.values()))
            with torch.no_grad():
                for (n, w), g in zip(params.items(), grads):
                    momentum[n].mul_(0.9).add_(g)
                    w.sub_(lr * momentum[n])
                model.eval()
                logits = fwd(params, buffers, cand_x)
                acc[s] = (logits.argmax(-1) == cand_y).float().mean(1)
                loss[s] = per_curve_ce(logits, cand_y)
    finally:
        model.train(was)
    return acc.T.double().cpu().numpy(), loss.T.double().cpu().numpy()


def _curves(model, groups: list[tuple], retain, cfg: AttackConfig, lr: float, *, batch: int, progress: bool,
            desc: str) -> dict:
    """Curves of every group ``(name, state, sets, seed)``: {name: (acc (T, steps), loss (T, steps))}.

    Curve ``t`` of a group uses seed ``seed + t``. With ``batch`` > 1 they run ``batch`` at a
    time through :func:`relearn_curves` (falling back to one at a time if the model does not
    vectorise); results are the same either way up to floating-point rounding.
    """
    flat = [(name, (state, x, y, seed + t)) for name, state, sets, seed in groups for t, (x, y) in enumerate(sets)]
    kw = dict(lr=lr, steps=cfg.steps, retain_per_step=cfg.retain_per_step)
    accs, losses = [], []
    with tqdm(total=len(flat), desc=desc, leave=False, disable=not progress) as bar:
        i = 0
        while i < len(flat):
            chunk = [c for _, c in flat[i : i + max(batch, 1)]]
            if batch > 1:
                try:
                    a, l = relearn_curves(model, chunk, retain, **kw)
                except (RuntimeError, NotImplementedError) as e:
                    warnings.warn(f"batched relearning failed ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                                  "relearning one curve at a time")
                    batch = 1
                    continue
            else:
                a, l = (np.stack(v) for v in zip(*[relearn_curve(model, st, x, y, retain, seed=sd, **kw)
                                                   for st, x, y, sd in chunk]))
            accs += list(a)
            losses += list(l)
            i += len(chunk)
            bar.update(len(chunk))
    out = {}
    for (name, _), a, l in zip(flat, accs, losses):
        out.setdefault(name, ([], []))
        out[name][0].append(a)
        out[name][1].append(l)
    return {k: (np.stack(a), np.stack(l)) for k, (a, l) in out.items()}


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

    batch = cfg.curve_batch if cfg.curve_batch > 0 else (32 if device.type == "cuda" else 1)
    per_lr, t0, n_curves = {}, time.perf_counter(), 0
    for lr in cfg.relearning_lr:
        tag = f"lr{fmt_para(lr)}"
        base = 1000 * setting.seed
        sets = [("member", state, member_sets, base),
                *[(f"ood{c}", state, ood_sets[c], base + 100 * (j + 1)) for j, c in enumerate(ood)]]
        if retrain_state is not None:
            sets.append(("retrain_ref", retrain_state, ref_sets, base + 50))
        logs = _curves(model, sets, data.retain_train, cfg, lr, batch=batch, progress=progress, desc=f"{tag} curves")
        acc_m = logs["member"][0]
        groups = {"forget (members)": acc_m, **{f"OOD class {c} (non-members)": logs[f"ood{c}"][0] for c in ood}}
        member_scores = [S.membership_score(x, threshold=cfg.threshold) for x in acc_m]
        nonmember_scores = [S.membership_score(x, threshold=cfg.threshold) for c in ood for x in logs[f"ood{c}"][0]]
        games = {"ood": S.roc_summary(member_scores, nonmember_scores)}
        if retrain_state is not None:
            a = logs["retrain_ref"][0]
            groups["forget, retrained model (non-members)"] = a
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
               "per_lr": per_lr, "seconds": seconds, "curves": n_curves, "curves_per_batch": batch,
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
    p.add_argument("--curve_batch", type=int, default=None,
                   help="curves relearned together as one vectorised model (default: 32 on a GPU, 1 on a CPU)")
    return p


def main(argv=None, dataset_default: str = "Cifar20"):
    import config
    from .methods import resolve_paras

    args = parser(dataset_default).parse_args(argv)
    setting = Setting.from_args(args)
    para1, para2 = resolve_paras(args.method, args.para1, args.para2)
    defaults = config.ATTACK[setting.dataset]
    given = {k: getattr(args, k) for k in AttackConfig.__dataclass_fields__ if getattr(args, k, None) is not None}
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
