"""ResNet-18/34/50 backbones (He et al., 2016) in plain PyTorch, returning the four stage outputs for an FPN.

``width`` scales every stage (64 is the standard network; the compact CPU default uses 32). Weights start from
scratch (Kaiming init, the last BatchNorm of each residual branch zeroed so every block starts as identity,
which makes from-scratch training stable); no weights are downloaded.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout))


class _Residual(nn.Module):
    """``relu(branch(x) + shortcut(x))``; the shortcut projects when the stride or width changes."""

    def __init__(self, branch: nn.Sequential, cin: int, cout: int, stride: int):
        super().__init__()
        self.branch = branch
        self.shortcut = _conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.branch(x) + self.shortcut(x))


class BasicBlock(_Residual):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1):
        branch = nn.Sequential(_conv_bn(cin, planes, 3, stride), nn.ReLU(inplace=True), _conv_bn(planes, planes, 3))
        super().__init__(branch, cin, planes, stride)


class Bottleneck(_Residual):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1):
        branch = nn.Sequential(
            _conv_bn(cin, planes, 1),
            nn.ReLU(inplace=True),
            _conv_bn(planes, planes, 3, stride),
            nn.ReLU(inplace=True),
            _conv_bn(planes, planes * 4, 1),
        )
        super().__init__(branch, cin, planes * 4, stride)


LAYOUTS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3))}


class ResNet(nn.Module):
    """``forward(x)`` returns ``[c2, c3, c4, c5]`` at strides 4, 8, 16, 32; their widths are ``self.channels``."""

    def __init__(self, depth: int = 18, width: int = 64):
        super().__init__()
        if depth not in LAYOUTS:
            raise ValueError(f"ResNet: argument 'depth' must be one of {sorted(LAYOUTS)}, got {depth!r}")
        if width < 1:
            raise ValueError(f"ResNet: argument 'width' must be >= 1, got {width!r}")
        block, counts = LAYOUTS[depth]
        self.stem = nn.Sequential(_conv_bn(3, width, 7, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        stages, cin, self.channels = [], width, []
        for i, n in enumerate(counts):
            planes = width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(cin, planes, 2 if (j == 0 and i > 0) else 1))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
            self.channels.append(cin)
        self.stages = nn.ModuleList(stages)
        self._init()

    def _init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, _Residual):
                nn.init.zeros_(m.branch[-1][1].weight)  # the branch's last BatchNorm: the block starts as identity

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs
