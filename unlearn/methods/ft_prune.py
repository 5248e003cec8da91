"""l1-sparse unlearning (Jia et al., NeurIPS 2023, "Model sparsity can simplify machine unlearning").

Fine-tuning on the retain data with an L1 penalty on all weights, whose weight
decays linearly to zero over the epochs (``gamma_t = gamma * (1 - t / T)``, as
the authors' ``FT_l1``): early epochs push the network towards a sparse one,
which forgets the class the retain data no longer supports; late epochs fine-tune
freely to recover accuracy. para1 = learning rate, para2 = epochs; the initial L1
weight is ``--opt l1=`` (default 5e-5).

Over-Unlearning: a twentyfold L1 weight (``--opt over_l1=``, default 1e-3, same
linear decay) with a fivefold learning rate on only 10% of the retain data
(``--opt retain_fraction=``), so sparsification dominates and prunes away what
is left of the forget class, at a cost in utility that Replay pays back.
On small CPU datasets (Digits) both L1 weights must be far larger (see config.py).

Paper's code: ``FT_prune`` in the 2024 code's ``forget_full_class_strategies.py`` (SGD
lr 0.01, 10 epochs, L1 5e-5 decaying linearly, the no-L1 epochs set to 0). The 2024 code
has no ``FT_prune_our``; the Over-Unlearning described here is ours.
"""
from . import option, param, register_method
from .base import train_ce


def linear_decay(weight: float, epochs: int):
    """``epoch -> weight * (1 - epoch / epochs)``: the L1 schedule of l1-sparse unlearning."""
    epochs = max(int(epochs), 1)
    return lambda epoch: weight * (1.0 - epoch / epochs)


@register_method("FT_prune", para1="learning rate", para2="epochs", defaults=(0.01, 10), over_defaults=(0.05, 5),
                 replay_epochs=3,
                 options=(option("l1", float, 5e-5, "initial L1 weight (decays linearly to 0)", phase="plain"),
                          option("over_l1", float, 1e-3, "initial L1 weight (decays linearly to 0)", phase="over"),
                          option("retain_fraction", float, 0.1, "fraction of the retain data used", phase="over")),
                 # run.py --tune: around Digits (0.01, 10, l1 0.01; _our 0.05, 5, over_l1 0.05) and FashionMNIST
                 # (0.01, 3; _our 0.05, 2)
                 space=(param("para1", 1e-3, 0.1, log=True), param("para2", 1, 15, kind=int),
                        param("l1", 1e-5, 0.05, log=True)),
                 over_space=(param("para1", 5e-3, 0.2, log=True), param("para2", 1, 10, kind=int),
                             param("over_l1", 1e-4, 0.1, log=True), param("replay_epochs", 1, 6, kind=int)))
def ft_prune(ctx, para1, para2):
    """Fine-tune on retain data with an L1 penalty decaying linearly from ``--opt l1=5e-5`` to 0.

    Over-Unlearning: L1 weight ``--opt over_l1=1e-3`` on 10% of the retain data.
    """
    if ctx.over:
        weight = ctx.opt("over_l1")
        data = ctx.subsample(ctx.retain, ctx.opt("retain_fraction"))
    else:
        weight = ctx.opt("l1")
        data = ctx.retain
    return train_ce(ctx, data, lr=float(para1), epochs=int(para2), l1=linear_decay(float(weight), int(para2)),
                    desc="FT_prune")
