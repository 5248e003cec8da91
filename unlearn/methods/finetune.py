"""Fine-tuning on the retain data (catastrophic forgetting of the forget class)."""
from . import finetune as _finetune, register_method


@register_method("finetune", para1="learning rate", para2="epochs", defaults=(0.025, 10), over_defaults=(0.1, 2))
def finetune(ctx, para1, para2):
    """Fine-tune on retain data with SGD (cosine schedule).

    Over-Unlearning: a higher learning rate on only 10% of the retain data,
    shaking the network harder with less of what it should keep.
    """
    data = ctx.subsample(ctx.retain, ctx.opt("retain_fraction", 0.1)) if ctx.over else ctx.retain
    return _finetune(ctx, data, lr=float(para1), epochs=int(para2), cosine=True)
