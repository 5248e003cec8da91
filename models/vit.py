"""A small Vision Transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021),
sized to train from scratch on 32x32 images: patch 4, dim 192, depth 6, 3 heads, MLP ratio 2,
class token, learnable position embedding, pre-norm blocks.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import register_model


def default_patch_size(image_size: int) -> int:
    """Largest patch in (8, 4, 2, 1) dividing image_size that leaves a grid of >= 7 (>= 4 below 28 px).

    32 -> 4, 28 -> 4, 64 -> 8, 16 -> 4, 8 -> 2.
    """
    min_grid = 7 if image_size >= 28 else 4
    for p in (8, 4, 2):
        if image_size % p == 0 and image_size // p >= min_grid:
            return p
    return 1


class Attention(nn.Module):
    def __init__(self, dim, heads, drop=0.0):
        super().__init__()
        self.heads, self.drop = heads, drop
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.drop if self.training else 0.0)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, drop=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, drop)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(drop), nn.Linear(hidden, dim), nn.Dropout(drop))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Vision Transformer; forward_features returns the normalised class token."""

    def __init__(self, num_classes, in_channels=3, image_size=32, patch_size=None, dim=192, depth=6,
                 heads=3, mlp_ratio=2.0, drop=0.0):
        super().__init__()
        patch_size = patch_size or default_patch_size(image_size)
        if image_size % patch_size:
            raise ValueError(f"patch size {patch_size} does not divide image size {image_size}")
        self.num_classes, self.num_features = num_classes, dim
        self.image_size, self.patch_size = image_size, patch_size
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, patch_size)
        n = (image_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio, drop) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"ViT built for {self.image_size}x{self.image_size} images, got {tuple(x.shape[-2:])}")
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.norm(self.blocks(x))[:, 0]

    def get_classifier(self) -> nn.Linear:
        return self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


@register_model("ViT")
def vit(num_classes, *, in_channels=3, image_size=32, **kw):
    """ViT-tiny-ish for small images: 192-d features."""
    return ViT(num_classes, in_channels=in_channels, image_size=image_size, **kw)
