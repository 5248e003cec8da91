"""Exact unlearning: train from scratch on the retain data only (the gold standard)."""
import torch

from ..engine import ce_step, sgd, train_epochs
from . import register_method


@register_method("retrain", para1="learning rate", para2="epochs", defaults=(0.01, 40), approximate=False)
def retrain(ctx, para1, para2):
    """Retraining from scratch: every layer re-initialised, same output size, SGD + cosine schedule on retain data.

    Other code bases re-initialise only the classifier head, which leaves the
    forget class's features in the backbone; here the whole network is new.
    """
    model = ctx.new_model().to(ctx.device)
    raw = ctx.data.raw
    opt = sgd(model, float(para1))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(int(para2), 1))
    loop = ctx.loop(para2, "retrain", augment=dict(padding=raw.crop_padding, hflip=raw.hflip))
    train_epochs(model, ctx.shuffled(ctx.retain), ce_step, opt, loop=loop, scheduler=sched, generator=ctx.generator)
    return model
