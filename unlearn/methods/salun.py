"""SalUn: saliency unlearning (Fan et al., ICLR 2024).

A weight saliency mask selects the parameters that matter most for the forget
set: those whose |gradient of the forget-set cross-entropy| (summed over the
forget batches) is in the top ``--opt mask_ratio=`` fraction (default 0.5), with
one global threshold across all parameters, as the authors' ``generate_mask.py``
(checked against it on Digits: the same 55,220 of 110,440 weights). Random-label
unlearning then updates only the masked parameters: a gradient hook on every
parameter multiplies its gradient by the mask (:func:`masked_gradients`; weight
decay is added inside the hook, so unmasked weights stay exactly as they were;
BatchNorm running statistics still follow the data, as in the original).
para1 = learning rate, para2 = epochs. Two variants (``--opt variant=``):

- ``mixed`` (the default): the SalUn authors' ``unlearn/RL.py`` in its CIFAR-100 /
  TinyImageNet branch: one shuffled loader of the forget samples with random labels and
  the retain samples, SGD (momentum 0.9, weight decay 5e-4). Deviations: the random
  labels are drawn once per run, each a class other than the true one (``RL.py`` draws
  ``randint(0, num_classes)`` afresh each epoch, so about 1 in C keeps its true label).
- ``paper2025``: the paper's 2025 code (``salun`` in ``forget_full_class_strategies.py``,
  which follows ``RL.py``'s CIFAR-10 branch): each epoch one pass over the forget set
  (in order) with labels drawn uniformly over all classes, the true one included, afresh
  for every batch, then one shuffled pass over the retain set; Adam without weight decay.
  Deviation: RL.py (not the 2025 code) also resets masked-out weights after each step,
  which the gradient mask makes a no-op for SGD without decay and for Adam.

``--mask_path`` loads a mask written by ``generate_mask.py`` (a dict
parameter name -> bool/float tensor); otherwise the mask is computed on the fly.

Over-Unlearning: the forget passes only (no retain data), at a higher learning rate
(``over_defaults``), same mask.

The paper's 2025 code has no ``_our`` (its defence is ``OUR``); the Over-Unlearning
described here is ours.
"""
from __future__ import annotations

import io
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

import config
from ..core.engine import ce_step, record_work, resolve_device, seed_everything, sgd, train_epochs
from ..core.errors import UsageError
from ..store.checkpoint import atomic_write_bytes
from ..store.setting import fmt_para
from . import option, param, random_other_labels, register_method, relabel_union


def check_ratio(ratio: float) -> float:
    ratio = float(ratio)
    if not 0.0 < ratio <= 1.0:
        raise UsageError(f"mask ratio {ratio} is out of range; pass --mask_ratio (or --opt mask_ratio=) in (0, 1]")
    return ratio


def compute_mask(model, forget, ratio: float, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Saliency mask: True where |sum over forget batches of grad CE| is in the global top ``ratio`` fraction."""
    ratio = check_ratio(ratio)
    if len(forget) == 0:
        raise UsageError("the forget set is empty, so no saliency mask can be computed; check --forget_class")
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    grads = {n: torch.zeros_like(p) for n, p in params.items()}
    was = model.training
    model.eval()  # deterministic (no BatchNorm statistic updates) saliency
    for x, y in forget.batches(batch_size):
        record_work(len(x))
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        for n, p in params.items():
            if p.grad is not None:
                grads[n] += p.grad.detach()
    model.zero_grad(set_to_none=True)
    model.train(was)
    scores = torch.cat([g.abs().flatten() for g in grads.values()])
    flat = torch.zeros(len(scores), dtype=torch.bool, device=scores.device)
    flat[torch.topk(scores, max(1, int(len(scores) * ratio)), sorted=False).indices] = True  # exactly k, ties cut
    out, start = {}, 0
    for n, g in grads.items():
        out[n] = flat[start : start + g.numel()].view_as(g).cpu()
        start += g.numel()
    return out


def load_mask(path, model) -> dict[str, torch.Tensor]:
    """A saved mask, checked against ``model``'s parameters; any mismatch is a one-line UsageError."""
    fix = "; regenerate it with: python generate_mask.py (same --dataset, -net and --forget_class)"
    try:
        mask = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UsageError(f"mask {path} is unreadable ({type(e).__name__}){fix}") from None
    if not isinstance(mask, dict) or not all(isinstance(v, torch.Tensor) for v in mask.values()):
        raise UsageError(f"mask {path} is not a dict of parameter name -> tensor{fix}")
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(mask))
    extra = sorted(set(mask) - set(params))
    if missing or extra:
        what = f"missing {missing[0]}" if missing else f"unknown parameter {extra[0]}"
        raise UsageError(f"mask {path} does not fit the model ({what}, {len(missing) + len(extra)} names differ){fix}")
    for n, p in params.items():
        if tuple(mask[n].shape) != tuple(p.shape):
            raise UsageError(f"mask {path} does not fit the model ({n}: {tuple(mask[n].shape)} != {tuple(p.shape)}){fix}")
    return {n: mask[n] != 0 for n in params}


def mask_path_for(setting, ratio: float) -> Path:
    """Where ``generate_mask.py`` writes: ``forget_full_class_main/{tag}/salun_masks/mask_{ratio}.pt``.

    A forget class other than config.py's default adds ``-forget{c}`` (masks are per forget class).
    """
    suffix = "" if setting.forget_class == config.DATASETS[setting.dataset]["forget_class"] else \
        f"-forget{setting.forget_class}"
    return setting.stage_root("salun_masks") / f"mask_{fmt_para(float(ratio))}{suffix}.pt"


def write_mask(setting, *, ratio: float, weight_path=None, device="auto", batch_size: int = 256) -> Path:
    """Load the pretrained model, compute its saliency mask for the forget class and save it atomically."""
    ratio = check_ratio(ratio)
    device = resolve_device(device)
    seed_everything(setting.seed)
    weight_path = Path(weight_path) if weight_path else setting.pretrain_dir() / "best.pth"
    model, _ = setting.load_model(weight_path, device, fix=f"run: {setting.pretrain_command()}")
    data = setting.load_data(device)
    mask = compute_mask(model, data.forget_train, ratio, batch_size)
    out = mask_path_for(setting, ratio)
    buf = io.BytesIO()
    torch.save(mask, buf)
    atomic_write_bytes(out, buf.getvalue())
    kept = sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())
    print(f"mask ratio {ratio}: {100 * kept:.1f}% of {sum(m.numel() for m in mask.values())} parameters salient -> {out}")
    return out


@contextmanager
def masked_gradients(model, mask: dict, *, weight_decay: float = 0.0):
    """Within the block, every gradient of ``model`` is (g + weight_decay * w) * mask: only salient weights move.

    Pair it with an optimiser without its own weight decay (the decay is applied here, masked).
    """
    hooks = []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        m = mask[n].to(device=p.device, dtype=p.dtype)
        hook = (lambda g, p=p, m=m: (g + weight_decay * p.detach()) * m) if weight_decay else (lambda g, m=m: g * m)
        hooks.append(p.register_hook(hook))
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


def saliency_mask(ctx, forget=None) -> dict[str, torch.Tensor]:
    """The mask of ``--opt mask_path=`` if given, else computed on ``forget`` (default: the forget set)."""
    if ctx.options.get("mask_path"):
        return load_mask(ctx.options["mask_path"], ctx.model)
    return compute_mask(ctx.model, ctx.forget if forget is None else forget, ctx.opt("mask_ratio"))


def paper2025_step(ctx, *, forget, retain, lr: float, epochs: int, mask: dict, desc: str = "SalUn"):
    """The 2025 code's SalUn: per epoch a forget pass (labels uniform over all classes, drawn per batch),
    then a shuffled retain pass (none when ``retain`` is empty); Adam, no weight decay; masked gradients."""
    model = ctx.model

    def batches(epoch):
        for x, y in forget.batches(ctx.batch_size):
            yield x, torch.randint(0, ctx.num_classes, y.shape, generator=ctx.generator).to(y.device)
        if len(retain):
            yield from retain.batches(ctx.batch_size, shuffle=True, generator=ctx.generator)

    with masked_gradients(model, mask):
        opt = torch.optim.Adam(model.parameters(), lr=float(lr))
        train_epochs(model, batches, ce_step, opt, loop=ctx.loop(epochs, desc), generator=ctx.generator)
    return model


@register_method("SalUn", para1="learning rate", para2="epochs", defaults=(0.013, 10), over_defaults=(0.02, 10),
                 options=(option("mask_ratio", float, 0.5, "fraction of weights in the saliency mask"),
                          option("mask_path", str, None, "saved mask (generate_mask.py; as --mask_path)"),
                          option("weight_decay", float, 5e-4, "weight decay of the masked weights (variant mixed)"),
                          option("variant", str, "mixed", "mixed: the SalUn authors' RL.py (one shuffled loader, "
                                 "SGD); paper2025: the paper's 2025 code (forget pass then retain pass, Adam)",
                                 choices=("mixed", "paper2025"))),
                 # run.py --tune: around Digits (0.013, 10; _our 0.02, 10) and FashionMNIST (0.013, 3; _our 0.02, 3)
                 space=(param("para1", 1e-3, 0.05, log=True), param("para2", 1, 15, kind=int),
                        param("mask_ratio", 0.1, 0.9)),
                 over_space=(param("para1", 1e-3, 0.1, log=True), param("para2", 1, 15, kind=int),
                             param("replay_epochs", 1, 6, kind=int)))
def salun(ctx, para1, para2):
    """Random-label unlearning restricted to the salient parameters (mask from --mask_path or computed).

    Over-Unlearning: random labels on the forget data only, no retain data.
    """
    model = ctx.model
    mask = saliency_mask(ctx)
    retain = ctx.retain.subset(ctx.retain.idx[:0]) if ctx.over else ctx.retain
    if ctx.opt("variant") == "paper2025":
        return paper2025_step(ctx, forget=ctx.forget, retain=retain, lr=para1, epochs=para2, mask=mask)
    labels = random_other_labels(ctx.forget.y, ctx.num_classes, ctx.generator)
    data = relabel_union(retain, ctx.forget, labels)
    with masked_gradients(model, mask, weight_decay=ctx.opt("weight_decay")):
        opt = sgd(model, float(para1), weight_decay=0.0)  # weight decay applied, masked, in the hook
        train_epochs(model, ctx.shuffled(data), ce_step, opt, loop=ctx.loop(para2, "SalUn"), generator=ctx.generator)
    return model
