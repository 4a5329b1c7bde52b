"""ResNet-18/34/50 backbones (He et al., 2016) returning the four stage outputs for an FPN.

The network is torchvision's ResNet (v1.5: a bottleneck's stride on its 3x3 convolution) with torchvision's module
names (``conv1``, ``bn1``, ``layer1`` .. ``layer4``; blocks with ``conv1``, ``bn1``, ... and ``downsample``): at
``width=64`` a torchvision checkpoint such as ``resnet50-0676ba61.pth`` loads as it is
(:func:`fastral.models.load_torchvision_weights`) and gives torchvision's features (checked equal to
torchvision 0.28's to the bit). It is written here rather than imported because torchvision's PyPI wheels for
x86-64 Linux link the CUDA build of torch and fail to import beside the CPU build; no weights are downloaded.

``width`` scales every stage (64 is the standard network; the compact CPU preset uses 32). Weights start from
scratch (Kaiming init, the last BatchNorm of each residual branch zeroed so every block starts as identity,
torchvision's ``zero_init_residual=True``, which makes from-scratch training stable).
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)


class _Block(nn.Module):
    """A residual block: ``relu(branch(x) + downsample(x))``; ``downsample`` projects when the stride or width
    changes and is None otherwise (as in torchvision)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        cout = planes * self.expansion
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(_conv(cin, cout, 1, stride), nn.BatchNorm2d(cout)) if stride != 1 or cin != cout else None
        )

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def last_bn(self) -> nn.BatchNorm2d:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.branch(x) + identity)


class BasicBlock(_Block):
    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__(cin, planes, stride)
        self.conv1, self.bn1 = _conv(cin, planes, 3, stride), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = _conv(planes, planes, 3), nn.BatchNorm2d(planes)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2


class Bottleneck(_Block):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__(cin, planes, stride)
        self.conv1, self.bn1 = _conv(cin, planes, 1), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = _conv(planes, planes, 3, stride), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = _conv(planes, planes * 4, 1), nn.BatchNorm2d(planes * 4)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        return self.bn3(self.conv3(x))

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3


LAYOUTS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3))}


class ResNet(nn.Module):
    """``forward(x)`` returns ``[c2, c3, c4, c5]`` at strides 4, 8, 16, 32; their widths are ``self.channels``."""

    def __init__(self, depth: int = 18, width: int = 64):
        super().__init__()
        if depth not in LAYOUTS:
            raise ValueError(f"ResNet: argument 'depth' must be one of {sorted(LAYOUTS)}, got {depth!r}")
        if width < 1:
            raise ValueError(f"ResNet: argument 'width' must be >= 1, got {width!r}")
        self.depth, self.width = depth, width
        block, counts = LAYOUTS[depth]
        self.conv1, self.bn1 = _conv(3, width, 7, 2), nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, self.channels = width, []
        for i, n in enumerate(counts):
            planes = width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(cin, planes, 2 if (j == 0 and i > 0) else 1))
                cin = planes * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.channels.append(cin)
        self._init()

    def _init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, _Block):
                nn.init.zeros_(m.last_bn().weight)  # the block starts as identity

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            outs.append(x)
        return outs
