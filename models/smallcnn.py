"""A small, CPU-fast CNN for tiny grayscale images (Digits 1x8x8, FashionMNIST 1x28x28).

Three conv-BN-ReLU layers (32, 64, 128 channels; max-pool after the first two), adaptive average
pooling, a 128-d ReLU embedding and a linear head. Works for any channel count and size >= 4.
Weights are kept channels-last, which makes CPU max-pooling/BN several times faster; the convs then
produce channels-last activations from ordinary NCHW inputs (shapes and results are unchanged).
"""
import torch
import torch.nn as nn

from . import register_model


def _conv(cin, cout):
    return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """conv32-BN-ReLU-pool, conv64-BN-ReLU-pool, conv128-BN-ReLU, GAP, Linear(128, embed_dim)-ReLU, head."""

    def __init__(self, num_classes, in_channels=1, embed_dim=128, channels_last=True):
        super().__init__()
        self.num_classes = num_classes
        self.features = nn.Sequential(
            *_conv(in_channels, 32), nn.MaxPool2d(2),
            *_conv(32, 64), nn.MaxPool2d(2),
            *_conv(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
            nn.Linear(128, embed_dim), nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(embed_dim, num_classes)
        self.num_features = embed_dim
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def get_classifier(self) -> nn.Linear:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


@register_model("SmallCNN")
def smallcnn(num_classes, *, in_channels=3, image_size=32, **kw):
    """SmallCNN: 128-d features."""
    return SmallCNN(num_classes, in_channels=in_channels, **kw)
