"""NegGrad+ (Kurmanji et al., 2023): descend on retain data while ascending on forget data.

Follows ``negative_grad`` / ``negative_grad_our`` of the paper's 2024 code
(``forget_full_class_strategies.py``, with ``train_negrad`` / ``train_negrad_1``):
plain SGD (no momentum, no weight decay; ``--opt momentum=``, ``--opt weight_decay=``
to change), lr para1, para2 epochs.

- Plain: ``alpha * CE(retain) - (1 - alpha) * CE(forget)``, alpha 0.95 (``--opt alpha=``);
  each step pairs a retain batch with a forget batch, the forget set cycled.
- Over-Unlearning (``_our``): pure gradient ascent on the forget set (no retain term),
  one pass over it per epoch; lr 0.01, 5 epochs (over_defaults), as that code.

Deliberate deviation: forget batches are shuffled (the 2024 forget loader is not).
"""
import torch.nn.functional as F

from ..core.engine import sgd, train_epochs
from . import option, param, register_method


@register_method("negative_grad", para1="learning rate", para2="epochs", defaults=(0.01, 2), over_defaults=(0.01, 5),
                 options=(option("alpha", float, 0.95, "weight of the retain loss (1 - alpha on the forget ascent)",
                                 phase="plain"),
                          option("forget_batch_size", int, None, "forget batch size (default: the run's)"),
                          option("momentum", float, 0.0, "SGD momentum (the paper's code: none)"),
                          option("weight_decay", float, 0.0, "SGD weight decay (the paper's code: none)")),
                 # run.py --tune: around Digits (0.02, 5; _our 0.02, 5) and FashionMNIST (2e-3, 1; _our 3e-4, 1)
                 space=(param("para1", 1e-4, 0.1, log=True), param("para2", 1, 10, kind=int),
                        param("alpha", 0.5, 0.99)),
                 over_space=(param("para1", 1e-4, 0.1, log=True), param("para2", 1, 10, kind=int),
                             param("replay_epochs", 1, 6, kind=int)))
def negative_grad(ctx, para1, para2):
    """alpha * CE(retain) - (1 - alpha) * CE(forget), alpha = 0.95, plain SGD.

    Over-Unlearning: pure gradient ascent on the forget set (alpha = 0, no retain term).
    """
    alpha = 0.0 if ctx.over else ctx.opt("alpha")
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

    opt = sgd(ctx.model, float(para1), momentum=ctx.opt("momentum"), weight_decay=ctx.opt("weight_decay"))
    train_epochs(ctx.model, batches, step, opt, loop=ctx.loop(para2, "neggrad"), generator=ctx.generator)
    return ctx.model
