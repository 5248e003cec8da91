"""OUR, the paper's 2025 defence: orthogonal Over-Unlearning, then stepped Replay.

Follows ``orthogonality`` in the 2025 code's ``forget_full_class_strategies.py``
(repository ``orthogonalunlearning-replay/OUR``). One method, not a wrapper:

1. Over-Unlearning: the forget data alone, each sample relabelled to a random
   other class, Adam (lr para1, default 1.5e-3 as that function's default),
   para2 epochs (3), batch 128 (``-b`` overrides). The loss adds
   ``--opt ortho_weight=2.0`` times an orthogonality loss on the activations of
   ``--opt layers`` (forward hooks): per hooked layer, each sample's activation is
   flattened and L2-normalised, and the squared off-diagonal entries of the
   batch's Gram matrix are averaged. Pushing the forget samples' deep
   representations apart (pairwise orthogonal) erases the shared structure that
   makes the class relearnable.
2. Replay: retain data with the L1 penalty (5e-5, ``--replay_l1``), SGD momentum
   0.9, weight decay 5e-4, batch 64, lr ``--replay_lr`` (0.01, the 2025 code's
   para2) for 3 epochs, 0.5x for 2, 0.2x for 1 (``--replay_epochs 6`` in all,
   ``replay_schedule=stepped``; see :func:`unlearn.methods.our2024.stepped_epochs`).

Hooked layers (``--opt layers=name,name``, module names of ``model.named_modules()``)
default per architecture to the paper's choice: ResNet, the outputs of the last
three of its four stages (``conv3_x``..``conv5_x`` there); ViT, the first block's
MLP input layer, the fourth block's qkv projection and the final norm (as its ViT
hooks); SmallCNN (not in the paper), the second and third conv blocks and the
embedding; WRN, the last block of each stage.

Deliberate deviations from that code:

- Its hooks register three layers but the loss reads the second one twice and the
  third never (``features3 = activation.get('features2')``): a bug. Here every hooked
  layer enters the loss once.
- Its loss also sums the Gram diagonal and divides by N(N-1) + 1e-8; the diagonal
  is 1 up to the 1e-8 in the norm, so it adds no gradient, except for an all-zero
  activation (a dead ReLU row), where it adds a constant, and for a batch of one,
  where it divides by 1e-8. Here only off-diagonal terms count and a batch of one
  adds none.
- Its mid-point evaluation and saving are inside the timed region; here they are not.
- para2 there is the replay lr and the over-unlearning epochs are fixed at 3; here
  para1 / para2 are the over-unlearning lr / epochs, as for every ``_our`` variant,
  and the replay lr is ``--replay_lr``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.engine import train_epochs
from ..core.errors import UsageError
from . import option, param, random_other_labels, register_method, relabel_union


def default_layers(model) -> list[str]:
    """The hooked layers of the paper's choice, mapped onto this toolkit's architectures."""
    kind = type(model).__name__
    if kind == "ResNet":
        return ["stages.1", "stages.2", "stages.3"]
    if kind == "ViT" and len(model.blocks) >= 4:
        return ["blocks.0.mlp.0", "blocks.3.attn.qkv", "norm"]
    if kind == "SmallCNN":
        return ["features.6", "features.10", "features.14"]
    if kind == "WideResNet":
        per = len(model.blocks) // 3
        return [f"blocks.{per * (i + 1) - 1}" for i in range(3)]
    raise UsageError(f"OUR has no default layers for {kind}; pass --opt layers=NAME,NAME (module names)")


def orthogonality_loss(features: torch.Tensor) -> torch.Tensor:
    """Mean squared off-diagonal entry of the Gram matrix of the L2-normalised rows of ``features`` (N, D)."""
    n = features.shape[0]
    if n < 2:
        return features.new_zeros(())
    f = features / (features.norm(dim=1, keepdim=True) + 1e-8)
    gram = f @ f.T
    off = gram - torch.diag_embed(torch.diagonal(gram))
    return off.pow(2).sum() / (n * (n - 1))


def hook_layers(model, names: list[str], store: dict):
    """Forward hooks storing each named module's output, flattened per sample, in ``store``; returns handles."""
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise UsageError(f"--opt layers: {missing[0]} is not a module of {type(model).__name__}; "
                         f"choose among e.g. {', '.join(list(modules)[1:8])}")

    def hook(name):
        def fn(_module, _inputs, output):
            store[name] = output.reshape(output.shape[0], -1)
        return fn

    return [modules[n].register_forward_hook(hook(n)) for n in names]


@register_method("OUR", para1="over-unlearning learning rate (Adam)", para2="over-unlearning epochs",
                 defaults=(1.5e-3, 3), replay_epochs=6, is_our=True,
                 options=(option("ortho_weight", float, 2.0, "weight of the orthogonality loss"),
                          option("layers", str, None, "comma-separated module names whose activations are "
                                 "orthogonalised (default: the paper's choice for the architecture)"),
                          option("replay_schedule", str, "stepped", "Replay schedule (see _our); OUR's is the "
                                 "2025 stepped one", choices=("paper2024", "constant", "stepped"))),
                 # run.py --tune: around Digits (0.01, 5) and FashionMNIST (1.5e-3, 3), replay 6 epochs
                 space=(param("para1", 1e-4, 0.05, log=True), param("para2", 1, 10, kind=int),
                        param("ortho_weight", 0.1, 10, log=True), param("replay_epochs", 2, 10, kind=int)))
def our2025(ctx, para1, para2):
    """Random labels on the forget data plus an orthogonality loss on deep activations (Adam); then stepped Replay."""
    model = ctx.model
    given = ctx.opt("layers")
    names = [n.strip() for n in given.split(",") if n.strip()] if given else default_layers(model)
    weight = ctx.opt("ortho_weight")
    labels = random_other_labels(ctx.forget.y, ctx.num_classes, ctx.generator)
    data = relabel_union(ctx.retain.subset(ctx.retain.idx[:0]), ctx.forget, labels)
    bs = ctx.method_batch_size(128)
    acts: dict[str, torch.Tensor] = {}

    def step(m, batch):
        x, y = batch
        acts.clear()
        loss = F.cross_entropy(m(x), y)
        if weight:
            loss = loss + weight * sum(orthogonality_loss(acts[n]) for n in names)
        return loss

    handles = hook_layers(model, names, acts)
    try:
        opt = torch.optim.Adam(model.parameters(), lr=float(para1))
        train_epochs(model, ctx.shuffled(data, bs), step, opt, loop=ctx.loop(para2, "OUR over-unlearning",
                                                                             batch_size=bs),
                     generator=ctx.generator)
    finally:
        for h in handles:
            h.remove()
    acts.clear()
    return model
