"""Semantic FPN (Lin et al., 2017; the semantic branch of Kirillov et al., 2019), the paper's segmentation net,
with MC dropout before the classifier for the BALD baseline.

``model(x)`` gives logits ``[B, C, H, W]`` at the input resolution. For MC dropout the expensive part runs once:
``feats = model.features(x)`` (backbone + FPN, ``[B, 4 * head_channels, H/4, W/4]``) and then
``model.head(feats, size, mc=True)`` T times (dropout + classifier + upsampling); :meth:`SemanticFPN.mc_samples`
does both with BatchNorm in eval mode. :func:`mc_dropout` is the module-mode alternative: inside it the model is in
eval mode except its dropout layers, so ``model(x)`` is one stochastic sample. The head calls its ``nn.Dropout``
module, so tools that swap dropout modules (baal's ``patch_module`` / ``MCDropoutModule``) work as well.

The backbone is torchvision's ResNet with its parameter names: :func:`~fastral.models.load_torchvision_weights`
loads a local torchvision checkpoint into it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .resnet import ResNet

BACKBONES = {"resnet18": 18, "resnet34": 34, "resnet50": 50}

#: Model sizes: "compact" trains on a CPU in minutes; "paper" is the ResNet-50 FPN of the paper (256 FPN
#: channels, four 128-channel branches concatenated to 512 before the classifier, as the official code).
MODEL_PRESETS = {
    "compact": {"backbone": "resnet18", "width": 32, "fpn_channels": 64, "head_channels": 32},
    "paper": {"backbone": "resnet50", "width": 64, "fpn_channels": 256, "head_channels": 128},
}


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    return (
        x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    )


class SemanticFPN(nn.Module):
    """Semantic FPN on a ResNet backbone.

    Args:
        num_classes: output classes.
        backbone: "resnet18", "resnet34" or "resnet50".
        width: backbone base width (64 = standard ResNet).
        fpn_channels: channels of the FPN pyramid levels.
        head_channels: channels of each level's semantic branch; the four are concatenated.
        dropout: probability of the dropout before the classifier (MC dropout for BALD).
        train_dropout: apply that dropout while training too (default). The official code never trains with it
            (its FPN50_bayesian only samples at test time); training with it makes MC samples come from the
            distribution the network was trained under. False reproduces the official behaviour.

    ``self.config`` holds these arguments (saved in checkpoints).
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet18",
        width: int = 32,
        fpn_channels: int = 64,
        head_channels: int = 32,
        dropout: float = 0.5,
        train_dropout: bool = True,
    ):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"SemanticFPN: argument 'backbone' must be one of {sorted(BACKBONES)}, got {backbone!r}")
        if num_classes < 1:
            raise ValueError(f"SemanticFPN: argument 'num_classes' must be >= 1, got {num_classes!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"SemanticFPN: argument 'dropout' must be in [0, 1), got {dropout!r}")
        self.config = {
            "num_classes": int(num_classes),
            "backbone": backbone,
            "width": int(width),
            "fpn_channels": int(fpn_channels),
            "head_channels": int(head_channels),
            "dropout": float(dropout),
            "train_dropout": bool(train_dropout),
        }
        self.num_classes = int(num_classes)
        self.train_dropout = bool(train_dropout)
        self.backbone = ResNet(BACKBONES[backbone], width)
        self.lateral = nn.ModuleList(nn.Conv2d(c, fpn_channels, 1) for c in self.backbone.channels)
        self.smooth = nn.ModuleList(nn.Conv2d(fpn_channels, fpn_channels, 3, padding=1) for _ in range(4))
        # Level k (stride 4 * 2^k) goes through max(k, 1) conv stages, upsampled by 2 after each until stride 4.
        self.branches = nn.ModuleList(
            nn.ModuleList(
                _conv_bn_relu(fpn_channels if j == 0 else head_channels, head_channels) for j in range(max(k, 1))
            )
            for k in range(4)
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(4 * head_channels, num_classes, 3, padding=1)
        for m in [*self.lateral, *self.smooth, self.classifier]:
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)

    @property
    def feature_channels(self) -> int:
        return self.classifier.in_channels

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone + FPN + semantic branches: ``[B, 4 * head_channels, ceil(H/4), ceil(W/4)]`` (stride 4)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"SemanticFPN: input must be [B, 3, H, W] images, got shape {tuple(x.shape)}")
        c = self.backbone(x)
        sizes = [t.shape[-2:] for t in c]
        p = [None] * 4
        p[3] = self.lateral[3](c[3])
        for k in (2, 1, 0):  # top-down: upsample the coarser level to this one's exact size and add
            p[k] = self.lateral[k](c[k]) + _resize(p[k + 1], sizes[k])
        outs = []
        for k in range(4):
            f = self.smooth[k](p[k])
            for j, stage in enumerate(self.branches[k]):
                f = stage(f)
                if k > 0:
                    f = _resize(f, sizes[k - 1 - j])
            outs.append(f)
        return torch.cat(outs, 1)

    def head(
        self,
        features: torch.Tensor,
        size: tuple[int, int] | None = None,
        mc: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Dropout + classifier on :meth:`features`, upsampled to ``size`` (None: logits at stride 4).

        Dropout is applied while training (if ``train_dropout``), inside :func:`mc_dropout`, or always with
        ``mc=True``; ``generator`` makes the dropout masks of ``mc=True`` reproducible.
        """
        if mc:
            features = _dropout(features, self.dropout.p, generator)
        elif self.train_dropout or not self.training:
            # The module itself is called (not F.dropout), so whatever it is decides: identity in eval mode,
            # a sample inside mc_dropout(), and an always-on layer where an MC-dropout tool swapped it in
            # (baal's patch_module / MCDropoutModule).
            features = self.dropout(features)
        logits = self.classifier(features)
        return logits if size is None else _resize(logits, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x), x.shape[-2:])

    @torch.no_grad()
    def mc_samples(
        self, x: torch.Tensor, samples: int, generator: torch.Generator | None = None, full_size: bool = True
    ) -> Iterator[torch.Tensor]:
        """``samples`` MC-dropout logits ``[B, C, H, W]``, one at a time (e.g. for ``fastral.BaldAccumulator``).

        The features are computed once, in eval mode (BatchNorm uses its running statistics); each sample only
        reruns dropout + classifier (+ upsampling to the input size unless ``full_size=False``).
        """
        was_training = self.training
        self.eval()
        try:
            features = self.features(x)
        finally:
            self.train(was_training)
        size = x.shape[-2:] if full_size else None
        for _ in range(samples):
            yield self.head(features, size, mc=True, generator=generator)


def _dropout(x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    if p == 0:
        return x
    if generator is None:
        return F.dropout(x, p, training=True)
    keep = torch.empty_like(x).bernoulli_(1 - p, generator=generator)
    return x * keep / (1 - p)


@contextlib.contextmanager
def mc_dropout(model: nn.Module):
    """Inside, ``model`` is in eval mode except its dropout layers (BatchNorm uses running statistics); every
    module's mode is restored on exit."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.train()
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.training = mode


def build_model(num_classes: int, preset: str = "compact", **overrides) -> SemanticFPN:
    """A :class:`SemanticFPN` of a named size ("compact" or "paper") with any argument overridden."""
    if preset not in MODEL_PRESETS:
        raise ValueError(f"build_model: argument 'preset' must be one of {sorted(MODEL_PRESETS)}, got {preset!r}")
    return SemanticFPN(num_classes, **{**MODEL_PRESETS[preset], **overrides})
