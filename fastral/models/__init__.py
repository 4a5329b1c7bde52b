"""The segmentation network: a semantic FPN on a torchvision-compatible ResNet-18/34/50 backbone with MC dropout,
and checkpoints."""

from .checkpoint import CheckpointError, load_checkpoint, load_torchvision_weights, read_checkpoint, save_checkpoint
from .fpn import BACKBONES, MODEL_PRESETS, SemanticFPN, build_model, mc_dropout
from .resnet import ResNet

__all__ = [
    "BACKBONES",
    "MODEL_PRESETS",
    "CheckpointError",
    "ResNet",
    "SemanticFPN",
    "build_model",
    "load_checkpoint",
    "load_torchvision_weights",
    "mc_dropout",
    "read_checkpoint",
    "save_checkpoint",
]
