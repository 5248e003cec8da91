"""Wide Residual Networks (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016).

Pre-activation blocks (BN-ReLU-conv); WRN-d-k has (d - 4) / 6 blocks per stage and widths 16k, 32k, 64k.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import register_model


class PreActBlock(nn.Module):
    def __init__(self, cin, cout, stride, drop_rate=0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.drop_rate = drop_rate
        self.shortcut = None if (stride == 1 and cin == cout) else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(o)
        o = F.relu(self.bn2(self.conv1(o)))
        if self.drop_rate > 0:
            o = F.dropout(o, p=self.drop_rate, training=self.training)
        return self.conv2(o) + skip


class WideResNet(nn.Module):
    """WRN-depth-widen with a final BN-ReLU and global average pooling."""

    def __init__(self, depth, widen, num_classes, in_channels=3, drop_rate=0.0):
        super().__init__()
        assert (depth - 4) % 6 == 0, "WRN depth must be 6n + 4"
        n = (depth - 4) // 6
        self.num_classes = num_classes
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths[1:]):
            for j in range(n):
                blocks.append(PreActBlock(cin, w, stride=2 if (i > 0 and j == 0) else 1, drop_rate=drop_rate))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        self.num_features = cin

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.blocks(self.stem(x))))
        return self.pool(x).flatten(1)

    def get_classifier(self) -> nn.Linear:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


@register_model("WRN28_2")
def wrn28_2(num_classes, *, in_channels=3, image_size=32, **kw):
    """WRN-28-2: 4 blocks per stage, widths 32-64-128, 128-d features."""
    return WideResNet(28, 2, num_classes, in_channels=in_channels, **kw)
