"""Relearning curves of the Reminiscence Attack (Xiao et al.): the model briefly retrained on candidates.

A curve starts from given weights with a fresh SGD optimiser (momentum 0.9); every
step trains on 1 candidate sample + ``retain_per_step`` retain samples, then
records accuracy and loss on the whole candidate set. As the paper's attack
(2025 code, ``rea.py``), each candidate is used at most once per curve when there
are at least as many candidates as steps; with fewer candidates (small classes,
e.g. Digits) they are used in shuffled rounds.

The *feature-level* variant (:func:`reset_forget_row`) first overwrites the forget
class's row of the classifier (weight and bias) with one fixed random
initialisation, identical for every model, so a curve measures what the features
still know rather than how far the output row was pushed down.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

RESET_SEED = 20240  # the one fixed initialisation of the forget row shared by every model


def step_plan(cand_x, cand_y, retain, *, steps: int, retain_per_step: int, seed: int):
    """The training batches of one curve: inputs (steps, 1 + retain_per_step, ...) and their labels.

    Each step holds one candidate (a random permutation of the candidates, repeated
    in fresh rounds only when there are fewer candidates than steps) and random
    retain samples.
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

    ``model`` is overwritten with ``state`` first and gets a fresh optimiser, so
    curves never share momentum or weights (the 2025 code shares one optimiser: a bug).
    """
    model.load_state_dict(state)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    xs, ys = step_plan(cand_x, cand_y, retain, steps=steps, retain_per_step=retain_per_step, seed=seed)
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
    k = len(curves)
    pnames = [n for n, _ in model.named_parameters()]
    bnames = [n for n, _ in model.named_buffers()]
    params = {n: torch.stack([c[0][n] for c in curves]).requires_grad_(True) for n in pnames}
    buffers = {n: torch.stack([c[0][n] for c in curves]).clone() for n in bnames}
    plans = [step_plan(x, y, retain, steps=steps, retain_per_step=retain_per_step, seed=sd) for _, x, y, sd in curves]
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


def run_curves(model, groups: list[tuple], retain, *, lr: float, steps: int, retain_per_step: int, batch: int = 1,
               progress: bool = False, desc: str = "curves") -> dict:
    """Curves of every group ``(name, state, sets, seed)``: {name: (acc (T, steps), loss (T, steps))}.

    Curve ``t`` of a group relearns ``sets[t] = (cand_x, cand_y)`` with plan seed ``seed + t``.
    With ``batch`` > 1 they run ``batch`` at a time through :func:`relearn_curves` (falling
    back to one at a time if the model does not vectorise); results agree up to rounding.
    """
    flat = [(name, (state, x, y, seed + t)) for name, state, sets, seed in groups for t, (x, y) in enumerate(sets)]
    kw = dict(lr=lr, steps=steps, retain_per_step=retain_per_step)
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


def classifier_keys(model: torch.nn.Module, num_outputs: int) -> tuple[str, str | None]:
    """State-dict keys (weight, bias) of the final classifier.

    Every registered model exposes ``get_classifier()`` (timm's convention: ResNet18,
    WRN, ViT, SmallCNN); any other model falls back to its last ``nn.Linear`` with
    ``num_outputs`` outputs.
    """
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if head is None:
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == num_outputs]
        if not linears:
            raise ValueError(f"{type(model).__name__} has no get_classifier() and no nn.Linear with {num_outputs} "
                             "outputs: the feature-level attack cannot find the forget row")
        head = linears[-1]
    name = next(n for n, m in model.named_modules() if m is head)
    prefix = f"{name}." if name else ""
    return f"{prefix}weight", (f"{prefix}bias" if getattr(head, "bias", None) is not None else None)


def reset_forget_row(model: torch.nn.Module, state: dict, forget_index: int, num_outputs: int) -> dict:
    """``state`` with the classifier's forget row (weight and bias) set to one fixed random init.

    The values are nn.Linear's default initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    drawn from a generator seeded with :data:`RESET_SEED`, so every model (method,
    references and anchor alike) gets exactly the same row.
    """
    wk, bk = classifier_keys(model, num_outputs)
    w = state[wk]
    fan_in = w.shape[1]
    g = torch.Generator().manual_seed(RESET_SEED)
    bound = 1.0 / fan_in ** 0.5
    row = (torch.rand(fan_in, generator=g, dtype=torch.float64) * 2 - 1) * bound
    bias = (torch.rand(1, generator=g, dtype=torch.float64) * 2 - 1) * bound
    out = {k: v.clone() for k, v in state.items()}
    out[wk][forget_index] = row.to(w.dtype).to(w.device)
    if bk is not None:
        out[bk][forget_index] = bias[0].to(out[bk].dtype)
    return out
