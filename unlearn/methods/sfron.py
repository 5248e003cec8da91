"""SFRon (Huang et al., NeurIPS 2024, "Unified Gradient-Based Machine Unlearning with Remain Geometry
Enhancement"), as the paper's 2025 code runs it (``sfron`` in ``forget_full_class_strategies.py``).

Each epoch takes one descent step per retain batch (a shuffled pass over the retain set) and, before
every ``forget_freq``-th of them (5; steps 0, 5, 10, ...), one gradient-ascent step on the next forget
batch (the forget set in order, restarted each epoch and whenever used up). Every gradient is masked by the SalUn saliency mask (ratio
0.5, :func:`unlearn.methods.salun.compute_mask`, or ``--opt mask_path=``). Optimiser: plain SGD (no
momentum, no weight decay), AdamW (weight decay 1e-4) for ViT, as that code (``--opt optimizer=``).
para1 = learning rate, para2 = epochs.

Declared deviations from the SFRon paper (not from the 2025 code): the paper's remain-geometry
enhancement (a Hessian-based preconditioning of the forget update by the retain loss's curvature)
and its fast-slow weight scheme are absent from the 2025 code, and are not added here: this module
is the method the paper's Reminiscence Attack was evaluated on.

Over-Unlearning (``SFRon_our``, ours): an ascent step before every retain step (forget_freq 1) over
only 10% of the retain data (``retain_fraction``), at the over-unlearning settings. (Pure masked ascent
on the forget set alone, tried first, collapses the model, d_t 15-33 on Digits, or stays at d_f 100:
no setting between.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.engine import train_epochs
from ..core.errors import UsageError
from . import option, param, register_method
from .salun import masked_gradients, saliency_mask


def sfron_batches(ctx, retain, *, forget_freq: int):
    """``batches(epoch)``: ("forget", x, y) before every ``forget_freq``-th ("retain", x, y) of a shuffled
    pass over ``retain``; the forget batches go through the forget set in order, from its start each
    epoch and again from its start when used up (the 2025 code's ``iter(forget_train_dl)``)."""

    def batches(epoch):
        forget = iter(())
        for s, (x, y) in enumerate(retain.batches(ctx.batch_size, shuffle=True, generator=ctx.generator)):
            if s % forget_freq == 0:
                fb = next(forget, None)
                if fb is None:
                    forget = iter(ctx.forget.batches(ctx.batch_size))
                    fb = next(forget)
                yield ("forget", *fb)
            yield ("retain", x, y)

    return batches


def signed_ce(model, batch):
    """Cross-entropy on a retain batch, its negative (ascent) on a forget batch."""
    kind, x, y = batch
    loss = F.cross_entropy(model(x), y)
    return -loss if kind == "forget" else loss


def make_optimizer(model, lr: float, choice: str):
    """The 2025 code's choice: AdamW (weight decay 1e-4) for ViT, plain SGD otherwise."""
    if choice == "auto":
        choice = "adamw" if type(model).__name__ == "ViT" else "sgd"
    if choice == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    return torch.optim.SGD(model.parameters(), lr=lr)


@register_method("SFRon", para1="learning rate", para2="epochs", defaults=(0.001, 8), over_defaults=(0.01, 3),
                 options=(option("mask_ratio", float, 0.5, "fraction of weights in the saliency mask"),
                          option("mask_path", str, None, "saved SalUn mask (generate_mask.py; as --mask_path)"),
                          option("forget_freq", int, 5, "one forget ascent step before every forget_freq-th retain "
                                 "step", phase="plain"),
                          option("retain_fraction", float, 0.1, "fraction of the retain data used", phase="over"),
                          option("optimizer", str, "auto", "auto (AdamW for ViT, SGD otherwise, as the 2025 code), "
                                 "sgd or adamw", choices=("auto", "sgd", "adamw"))),
                 space=(param("para1", 1e-3, 0.1, log=True), param("para2", 1, 10, kind=int),
                        param("forget_freq", 1, 10, kind=int)),
                 over_space=(param("para1", 1e-4, 0.2, log=True), param("para2", 1, 10, kind=int),
                             param("replay_epochs", 1, 6, kind=int)))
def sfron(ctx, para1, para2):
    """Masked descent on retain batches with a masked ascent step on a forget batch every 5th step.

    Over-Unlearning: an ascent step before every retain step, on 10% of the retain data.
    """
    model = ctx.model
    mask = saliency_mask(ctx)  # a one-line UsageError for an empty forget set
    if ctx.over:
        batches = sfron_batches(ctx, ctx.subsample(ctx.retain, ctx.opt("retain_fraction")), forget_freq=1)
    else:
        freq = ctx.opt("forget_freq")
        if freq < 1:
            raise UsageError(f"--opt forget_freq={freq} of SFRon must be at least 1")
        batches = sfron_batches(ctx, ctx.retain, forget_freq=freq)
    with masked_gradients(model, mask):
        opt = make_optimizer(model, float(para1), ctx.opt("optimizer"))
        train_epochs(model, batches, signed_ce, opt, loop=ctx.loop(para2, "SFRon"), generator=ctx.generator)
    return model
