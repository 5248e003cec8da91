"""Selective Synaptic Dampening (Foster et al., AAAI 2024, "Fast Machine Unlearning without Retraining
through Selective Synaptic Dampening").

No training. Two diagonal Fisher-style importances of every parameter are
computed with the model in eval mode: ``imp_forget`` over the forget set and
``imp_full`` over the full training set (retain + forget). As the authors'
``ParameterPerturber.calc_importance``, an importance is the mean over
mini-batches of the *squared batch-mean gradient* of the cross-entropy (not
per-sample squared gradients): one backward pass per batch, batch size
``--opt batch_size=`` (default the run's batch size, 64). The authors' full-set
loader is an unshuffled ``ConcatDataset(retain, forget)``: its batches are retain
batches followed by pure forget batches. And their retain set is ordered by class
(their split builder concatenates the classes), so its batches too are nearly
single-class. So are ours (``--opt retain_order=class``, the default: the retain
set sorted by label, stably; ``dataset`` keeps the dataset's mixed order, as
versions before this one did). It matters: on four Digits models (pretraining seeds
0, 1, 2 and one perturbed) at (3, 1), d_t is 99.2, 81.8, 100.0, 86.1 in class order
against 45.3, 39.7, 100.0, 85.8 in dataset order (d_f 0, 0, 77.2, 0 and 0, 0, 0, 0).
``imp_full`` is the
batch-count-weighted mean of the retain-batch and forget-batch importances (the
forget batches are not recomputed). This matters: in batches mixing classes the
forget gradients largely cancel, and ``imp_forget / imp_full`` then reaches 5 to
14 for most weights of a model that has not fit the forget class perfectly
(FashionMNIST: even alpha 10 dampens the whole network). With pure forget
batches the ratio is at most about #samples / #forget samples (8 with 8
classes, 15 on CIFAR-20), so alpha must stay below that to select anything.
Conversely, when the forget class is fit perfectly (Digits: forget CE ~4e-5)
its importance is ~1000x below the full set's: selecting needs alpha ~0.003,
and since the factor below is clamped at 1, dampening needs lambda below that
ratio too (Digits: alpha 0.003, lambda 0.001; lambda 0.01 changes nothing).
Then every parameter with ``imp_forget > alpha * imp_full`` is multiplied by
``min(lambda * imp_full / imp_forget, 1)``.

para1 = alpha, the selection weighting (1 as the Over-Unlearning paper's code
recommends; the SSD paper's default is 10); para2 = lambda, the dampening
constant (1).

Over-Unlearning: the paper only changes the two constants, alpha 0.005 and
lambda 0.4 (over_defaults), selecting almost every parameter the forget set
uses and dampening it harder.

Paper's code: ``ssd_tuning`` / ``ssd_tuning_our`` in the 2024 code's
``forget_full_class_strategies.py`` with ``utils/ssd.py`` (importances over the forget
loader and over retain-then-forget batches; ``_our`` replays 5 epochs). No deliberate
deviation in the dampening.
"""
import torch
import torch.nn.functional as F

from . import option, param, register_method
from ..core.engine import record_work


def batch_importances(model, ts, batch_size: int) -> tuple[dict[str, torch.Tensor], int]:
    """(sum over batches of the squared batch-mean CE gradient per named parameter, number of batches)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    imp = {n: torch.zeros_like(p) for n, p in params.items()}
    batches = 0
    for x, y in ts.batches(batch_size):
        record_work(len(x))
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(params.values()))
        for n, g in zip(params, grads):
            imp[n] += g.pow(2)
        batches += 1
    return imp, batches


def dampening_factor(imp_forget: torch.Tensor, imp_full: torch.Tensor, alpha: float, lam: float) -> torch.Tensor:
    """Per-weight multiplier: ``min(lam * imp_full / imp_forget, 1)`` where ``imp_forget > alpha * imp_full``, else 1."""
    where = imp_forget > alpha * imp_full
    factor = (lam * imp_full / imp_forget.clamp_min(torch.finfo(imp_forget.dtype).tiny)).clamp(max=1.0)
    return torch.where(where, factor, torch.ones_like(factor))


@register_method("ssd_tuning", para1="selection weighting alpha", para2="dampening constant lambda", defaults=(1, 1),
                 over_defaults=(0.005, 0.4), replay_epochs=5,
                 options=(option("retain_order", str, "class", "order of the retain batches of the full importance: "
                                 "class (sorted by label, as the authors' split) or dataset", choices=("class",
                                                                                                       "dataset")),),
                 # run.py --tune: around Digits (3, 1) and FashionMNIST (6.3, 1); _our around (0.005, 0.4) of both
                 space=(param("para1", 0.1, 50, log=True), param("para2", 0.1, 5, log=True)),
                 over_space=(param("para1", 1e-3, 1, log=True), param("para2", 0.05, 2, log=True),
                             param("replay_epochs", 1, 8, kind=int)))
def ssd_tuning(ctx, para1, para2):
    """Dampen the parameters far more important to the forget set than to the full training set.

    Over-Unlearning: alpha 0.005, lambda 0.4 (weaker selection, stronger dampening).
    """
    alpha, lam = float(para1), float(para2)
    bs = ctx.opt("batch_size", ctx.batch_size)
    model = ctx.model
    was = model.training
    model.eval()
    sum_forget, b_f = batch_importances(model, ctx.forget, bs)
    retain = ctx.retain
    if ctx.opt("retain_order") == "class":
        retain = retain.subset(torch.argsort(retain.y, stable=True).to(retain.idx.device))
    sum_retain, b_r = batch_importances(model, retain, bs)
    imp_forget = {n: v / max(b_f, 1) for n, v in sum_forget.items()}
    imp_full = {n: (sum_retain[n] + v) / max(b_r + b_f, 1) for n, v in sum_forget.items()}
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in imp_forget:
                p.mul_(dampening_factor(imp_forget[n], imp_full[n], alpha, lam))
    model.train(was)
    return model
