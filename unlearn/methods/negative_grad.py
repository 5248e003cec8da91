"""NegGrad+ (Kurmanji et al., 2023): descend on retain data while ascending on forget data."""
import torch.nn.functional as F

from ..engine import sgd, train_epochs
from . import register_method


@register_method("negative_grad", para1="learning rate", para2="epochs", defaults=(0.01, 2), over_defaults=(0.01, 5))
def negative_grad(ctx, para1, para2):
    """alpha * CE(retain) - (1 - alpha) * CE(forget), alpha = 0.95 (``--opt alpha=``).

    Each step pairs a retain batch with a forget batch (the forget set is cycled).
    Over-Unlearning: pure gradient ascent on the forget set (alpha = 0, no retain term).
    """
    alpha = 0.0 if ctx.over else ctx.opt("alpha", 0.95)
    forget_bs = ctx.opt("forget_batch_size", ctx.batch_size)

    def batches(epoch):
        def cycle():
            while True:
                yield from ctx.forget.batches(forget_bs, shuffle=True, generator=ctx.generator)
        fc = cycle()
        if alpha == 0.0:  # pure ascent: one pass over the forget set per epoch
            yield from ((None, None, *fb) for fb in ctx.forget.batches(forget_bs, shuffle=True, generator=ctx.generator))
            return
        for rb in ctx.retain.batches(ctx.batch_size, shuffle=True, generator=ctx.generator):
            yield (*rb, *next(fc))

    def step(model, batch):
        xr, yr, xf, yf = batch
        loss = -(1 - alpha) * F.cross_entropy(model(xf), yf)
        if alpha > 0:
            loss = loss + alpha * F.cross_entropy(model(xr), yr)
        return loss

    opt = sgd(ctx.model, float(para1))
    train_epochs(ctx.model, batches, step, opt, loop=ctx.loop(para2, "neggrad"), generator=ctx.generator)
    return ctx.model
