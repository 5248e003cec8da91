"""Model registry: every model maps (B, C, H, W) images to (B, num_classes) logits.

All models expose a timm-style interface the toolkit relies on:
``forward_features(x) -> (B, D)`` penultimate embedding, ``get_classifier() -> nn.Linear``
final layer, ``forward(x) == get_classifier()(forward_features(x))``, and ``num_classes``.
"""
from typing import Callable

import torch.nn as nn

from unlearn.core.errors import UsageError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    """Decorator registering ``fn(num_classes, *, in_channels=3, image_size=32, **kw) -> nn.Module``."""
    def deco(fn):
        key = name.lower()
        if key in _REGISTRY and _REGISTRY[key] is not fn:
            raise ValueError(f"model {name!r} registered twice")
        fn.model_name = name
        _REGISTRY[key] = fn
        return fn
    return deco


def list_models() -> list[str]:
    """Registered model names in their canonical spelling, sorted."""
    return sorted(fn.model_name for fn in _REGISTRY.values())


def _lookup(name: str):
    fn = _REGISTRY.get(str(name).lower())
    if fn is None:
        raise UsageError(f"unknown model {name!r}; choose one of {', '.join(list_models())}")
    return fn


def canonical_model_name(name: str) -> str:
    """The registered spelling of ``name`` (lookup is case-insensitive)."""
    return _lookup(name).model_name


def get_model(name: str, num_classes: int, *, in_channels: int = 3, image_size: int = 32, **kw) -> nn.Module:
    """Build model ``name`` (case-insensitive) for ``num_classes`` classes."""
    return _lookup(name)(num_classes, in_channels=in_channels, image_size=image_size, **kw)


# Importing the model modules registers them.
from . import resnet, smallcnn, vit, wrn  # noqa: E402,F401
