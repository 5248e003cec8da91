"""Random labels / Amnesiac unlearning (Graves et al., 2021)."""
from . import register_method
from .base import random_other_labels, relabel_union, train_ce


@register_method("amnesiac", para1="learning rate", para2="epochs", defaults=(1e-4, 3), over_defaults=(0.0025, 3))
def amnesiac(ctx, para1, para2):
    """Relabel every forget sample to a random other class and train on it together with the retain data.

    Over-Unlearning: the relabelled forget data alone, no retain data.
    """
    labels = random_other_labels(ctx.forget.y, ctx.num_classes, ctx.generator)
    retain = ctx.retain.subset(ctx.retain.idx[:0]) if ctx.over else ctx.retain
    mixed = relabel_union(retain, ctx.forget, labels)
    return train_ce(ctx, mixed, lr=float(para1), epochs=int(para2), desc="amnesiac")
