"""RUM (Zhao et al., NeurIPS 2024, "What makes unlearning hard and what to do about it"), as the paper's
2025 code runs it (``rum`` in ``forget_full_class_strategies.py``), with its one bug fixed.

The forget set is sorted by a per-sample memorisation proxy and cut into thirds (low, middle, high;
the remainder goes to the high third, as ``split_forget_dataset_by_mem``). The low third is left
alone; the middle third gets Finetune, which trains on the retain set only (SGD momentum 0.9, weight
decay 5e-4, ``ft_epochs`` = 5 epochs at para1); the high third gets SalUn in the 2025 code's form
(:func:`unlearn.methods.salun.paper2025_step`: forget pass with uniform random labels, then retain
pass, Adam, ``salun_epochs`` = 3 epochs at para2), masked by the saliency mask of the whole forget set
on the model RUM started from (the 2025 code loads the mask ``generate_mask.py`` made from it).
The 2025 code passes the *middle* third to its SalUn step (``forget_train_dl=mid_forget_dataloader``):
a bug, not copied; the high third is unlearned here.

The proxy. The 2025 code reads ``Cifar10_curvature.npz``, which it does not ship. Ours is the same
kind of score computed on our models: the input-loss curvature of Garg et al. ("Memorization through
the lens of curvature of loss function around samples", ICML 2024), a Hutchinson estimate
``mean_v ||grad_x L(x + h v) - grad_x L(x)||^2`` over ``curvature_n`` = 10 Rademacher directions ``v``
with ``h`` = 1e-3, in eval mode, averaged over the pretraining checkpoints we keep: ``best.pth`` and
``last.pth`` (Garg et al. average over every training epoch; we save two). It is cached under the
setting's ``method_cache`` folder, keyed by the checkpoints' contents, the forget samples and the
proxy's settings.

Over-Unlearning (``RUM_our``, ours): no fine-tuning step (it only trains on retain data); the SalUn
step's forget passes alone, on the middle and high thirds, at the over-unlearning settings.
"""
from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import torch
import torch.nn.functional as F

from ..core.engine import record_work
from ..core.errors import UsageError
from ..store.checkpoint import atomic_write_bytes, load_checkpoint, load_into
from ..store.identity import file_sha256
from . import option, param, register_method
from .base import train_ce
from .salun import paper2025_step, saliency_mask

PROXY_SEED = 0  # the Rademacher directions; fixed, so the proxy depends only on the model and the data


def input_curvature(model, x: torch.Tensor, y: torch.Tensor, *, h: float = 1e-3, n: int = 10,
                    batch_size: int = 256) -> np.ndarray:
    """Per-sample input-loss curvature (Garg et al.): mean over ``n`` Rademacher ``v`` of
    ||grad_x CE(x + h v) - grad_x CE(x)||^2, the model in eval mode (float64 out)."""
    g = torch.Generator().manual_seed(PROXY_SEED)
    was = model.training
    model.eval()
    out = []

    def grad_x(xb, yb):
        xb = xb.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xb), yb, reduction="sum")  # sum: each sample's own gradient
        return torch.autograd.grad(loss, xb)[0]

    try:
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            record_work(len(xb) * (n + 1))
            g0 = grad_x(xb, yb)
            total = torch.zeros(len(xb), dtype=torch.float64, device=xb.device)
            for _ in range(n):
                v = (torch.randint(0, 2, xb.shape, generator=g) * 2 - 1).to(xb)
                total += (grad_x(xb + h * v, yb) - g0).flatten(1).double().pow(2).sum(1)
            out.append((total / n).cpu())
    finally:
        model.train(was)
        model.zero_grad(set_to_none=True)
    return torch.cat(out).numpy() if out else np.zeros(0)


def split_by_proxy(proxy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions of the low, middle and high thirds by ascending proxy (stable; the remainder to the high)."""
    order = np.argsort(np.asarray(proxy), kind="stable")
    third = len(order) // 3
    return order[:third], order[third : 2 * third], order[2 * third :]


def memorisation_proxy(ctx) -> np.ndarray:
    """The curvature proxy of every forget sample, averaged over ``ctx.checkpoints`` (cached)."""
    if not ctx.checkpoints:
        raise UsageError("RUM needs the pretrained checkpoint it starts from to compute its memorisation proxy; "
                         "run it through the forget stage or run.py")
    h, n = ctx.opt("curvature_h"), ctx.opt("curvature_n")
    if not (h > 0 and n >= 1):
        raise UsageError(f"RUM's curvature proxy needs curvature_h > 0 and curvature_n >= 1 (got {h}, {n})")
    forget = ctx.forget
    material = {"checkpoints": [file_sha256(p) for p in ctx.checkpoints], "h": h, "n": n, "seed": PROXY_SEED,
                "forget": hashlib.sha256(forget.x.detach().cpu().contiguous().numpy().tobytes()
                                         + forget.y.cpu().numpy().tobytes()).hexdigest()}
    key = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:20]
    path = ctx.cache_dir / "rum_proxy" / f"{key}.npy" if ctx.cache_dir is not None else None
    if path is not None and path.is_file():
        cached = np.load(path, allow_pickle=False)
        if cached.shape == (len(forget),):
            return cached
    model = ctx.new_model(ctx.device)
    scores = []
    for p in ctx.checkpoints:
        load_into(model, load_checkpoint(p), p)
        scores.append(input_curvature(model, forget.x, forget.y, h=h, n=n))
    proxy = np.mean(scores, axis=0)
    if path is not None:
        buf = io.BytesIO()
        np.save(buf, proxy, allow_pickle=False)
        atomic_write_bytes(path, buf.getvalue())
    return proxy


@register_method("RUM", para1="learning rate of the fine-tuning step (middle third)",
                 para2="learning rate of the SalUn step (high third)", defaults=(0.01, 3e-4),
                 over_defaults=(0.01, 1e-3),
                 options=(option("ft_epochs", int, 5, "epochs of the fine-tuning step (the 2025 code: 5)"),
                          option("salun_epochs", int, 3, "epochs of the SalUn step (the 2025 code: 3)"),
                          option("mask_ratio", float, 0.5, "fraction of weights in the saliency mask"),
                          option("mask_path", str, None, "saved SalUn mask (generate_mask.py; as --mask_path)"),
                          option("curvature_h", float, 1e-3, "step of the curvature proxy's finite difference"),
                          option("curvature_n", int, 10, "Rademacher directions of the curvature proxy")),
                 space=(param("para1", 1e-3, 0.1, log=True), param("para2", 1e-5, 0.1, log=True),
                        param("salun_epochs", 1, 10, kind=int)),
                 over_space=(param("para2", 1e-5, 0.1, log=True), param("salun_epochs", 1, 10, kind=int),
                             param("replay_epochs", 1, 6, kind=int)))
def rum(ctx, para1, para2):
    """Thirds by memorisation: nothing for the low, Finetune for the middle, SalUn for the high.

    Over-Unlearning: SalUn's forget passes alone on the middle and high thirds.
    """
    proxy = memorisation_proxy(ctx)
    _, mid, high = split_by_proxy(proxy)
    mask = saliency_mask(ctx)  # on the starting model, before the fine-tuning step (the 2025 code's saved mask)
    positions = torch.as_tensor(np.concatenate([mid, high]) if ctx.over else high, dtype=torch.long)
    forget = ctx.forget.subset(positions, "forget-unlearned")
    if ctx.over:
        retain = ctx.retain.subset(ctx.retain.idx[:0])
    else:
        train_ce(ctx, ctx.retain, lr=float(para1), epochs=ctx.opt("ft_epochs"), desc="RUM finetune")
        retain = ctx.retain
    return paper2025_step(ctx, forget=forget, retain=retain, lr=para2, epochs=ctx.opt("salun_epochs"), mask=mask,
                          desc="RUM SalUn")
