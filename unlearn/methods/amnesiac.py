"""Random labels / Amnesiac unlearning (Graves et al., 2021).

Follows ``amnesiac`` / ``amnesiac_our`` of the paper's 2024 code
(``forget_full_class_strategies.py``, trained by ``fit_one_unlearning_cycle`` in
``unlearn.py``): every forget sample relabelled to a random other class, Adam at lr
para1 for para2 epochs, batch 128 (``-b`` overrides).

- Plain: the relabelled forget data together with all retain data.
- Over-Unlearning (``_our``): the relabelled forget data alone; lr 0.0025, 3 epochs
  (over_defaults; the 2024 code fixes 3 epochs).
"""
import torch

from ..core.engine import ce_step, train_epochs
from . import param, register_method
from .base import random_other_labels, relabel_union


# run.py --tune: around the Digits (0.01, 3; _our 0.01, 3) and FashionMNIST (1e-4, 2; _our 0.0025, 1) settings.
@register_method("amnesiac", para1="learning rate", para2="epochs", defaults=(1e-4, 3), over_defaults=(0.0025, 3),
                 space=(param("para1", 1e-5, 0.03, log=True), param("para2", 1, 10, kind=int)),
                 over_space=(param("para1", 1e-4, 0.03, log=True), param("para2", 1, 10, kind=int),
                             param("replay_epochs", 1, 6, kind=int)))
def amnesiac(ctx, para1, para2):
    """Relabel every forget sample to a random other class and train on it with the retain data (Adam, batch 128).

    Over-Unlearning: the relabelled forget data alone, no retain data.
    """
    labels = random_other_labels(ctx.forget.y, ctx.num_classes, ctx.generator)
    retain = ctx.retain.subset(ctx.retain.idx[:0]) if ctx.over else ctx.retain
    mixed = relabel_union(retain, ctx.forget, labels)
    bs = ctx.method_batch_size(128)
    opt = torch.optim.Adam(ctx.model.parameters(), lr=float(para1))
    train_epochs(ctx.model, ctx.shuffled(mixed, bs), ce_step, opt, loop=ctx.loop(para2, "amnesiac", batch_size=bs),
                 generator=ctx.generator)
    return ctx.model
