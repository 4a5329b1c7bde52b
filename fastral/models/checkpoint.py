"""Segmentation checkpoints: written atomically, loaded with clear errors on a class or shape mismatch."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from .._atomic import torch_save
from .fpn import SemanticFPN

CHECKPOINT_FORMAT = "fastral-segmentation/1"
CLASSIFIER_PREFIX = "classifier."
TORCHVISION_HEAD = "fc."  #: parameter-name prefix of torchvision's classification head

# fastral 0.1 named its ResNet's modules stem/stages/branch/shortcut; they now carry torchvision's names (see
# fastral.models.resnet), with the same architecture, so old checkpoints load after a rename.
_OLD_STEM = re.compile(r"^backbone\.stem\.0\.([01])\.")  # (conv, bn) of the stem
_OLD_BLOCK = re.compile(r"^backbone\.stages\.(\d)\.(\d+)\.(?:branch\.([024])\.([01])|shortcut)\.")


def _new_block_name(m: re.Match) -> str:
    stage, block, pair, layer = m.groups()
    prefix = f"backbone.layer{int(stage) + 1}.{block}."  # stages were 0-based, torchvision's layers are 1-based
    if pair is None:
        return prefix + "downsample."
    return f"{prefix}{('conv', 'bn')[int(layer)]}{int(pair) // 2 + 1}."  # branch.0/2/4 held (conv, bn) 1/2/3


def _upgrade_backbone_names(weights: dict) -> dict:
    """A fastral 0.1 checkpoint's parameter names renamed to today's (torchvision's) backbone names."""
    return {
        _OLD_BLOCK.sub(_new_block_name, _OLD_STEM.sub(lambda m: f"backbone.{('conv1', 'bn1')[int(m[1])]}.", k)): v
        for k, v in weights.items()
    }


class CheckpointError(ValueError):
    """A checkpoint that is not fastral's or does not fit the model; the message says what differs."""


def save_checkpoint(
    path: str | os.PathLike, model: SemanticFPN, optimizer: torch.optim.Optimizer | None = None, **extra: Any
) -> Path:
    """Save the model's config and weights (+ optimizer state and plain-data ``extra``) atomically."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "config": dict(model.config),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "extra": extra,
    }
    return torch_save(state, path)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The raw checkpoint dict (tensors on the CPU); only plain data and tensors are unpickled."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types (UnpicklingError, RuntimeError, struct.error, ...)
        raise CheckpointError(f"cannot read checkpoint '{path}': {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"'{path}' is not a fastral segmentation checkpoint (format {found!r})")
    return state


def load_checkpoint(
    path: str | os.PathLike,
    model: SemanticFPN | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    skip_classifier: bool = False,
) -> tuple[SemanticFPN, dict]:
    """Load weights into ``model`` (or a new model built from the checkpoint's config). Returns (model, extra).

    Raises :class:`CheckpointError` naming the differing classes or parameters (name, checkpoint shape, model
    shape). ``skip_classifier=True`` keeps the model's own classifier, to fine-tune a network pretrained on
    other classes (e.g. GTA5's 19 for CamVid's 11).
    """
    state = read_checkpoint(path)
    if model is None:
        model = SemanticFPN(**state["config"])
    weights = _upgrade_backbone_names(state["model"])
    if skip_classifier:
        weights = {k: v for k, v in weights.items() if not k.startswith(CLASSIFIER_PREFIX)}
    elif state["config"]["num_classes"] != model.num_classes:
        raise CheckpointError(
            f"checkpoint '{path}' has {state['config']['num_classes']} classes, the model {model.num_classes}; "
            "pass skip_classifier=True (--init-skip-classifier) to fine-tune it on other classes"
        )
    own = model.state_dict()
    if skip_classifier:
        own = {k: v for k, v in own.items() if not k.startswith(CLASSIFIER_PREFIX)}
    problems = _fit_problems(own, weights, "checkpoint")
    if problems:
        raise CheckpointError(
            f"checkpoint '{path}' does not fit the model: {problems}. "
            f"Checkpoint config {state['config']}, model config {model.config}"
        )
    model.load_state_dict(weights, strict=not skip_classifier)
    if optimizer is not None and state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    return model, state["extra"]


def _fit_problems(own: dict, weights: dict, source: str) -> str:
    """What keeps ``weights`` (read from a ``source``) from loading into a module whose state is ``own``: shape
    mismatches, missing and unexpected names, the first few of each; "" when they fit."""
    shapes = [
        f"{k}: {source} {tuple(v.shape)}, model {tuple(own[k].shape)}"
        for k, v in weights.items()
        if k in own and v.shape != own[k].shape
    ]
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    problems = [f"{len(shapes)} shape mismatches ({'; '.join(shapes[:5])})"] if shapes else []
    problems += [f"missing {missing[:5]}"] if missing else []
    problems += [f"unexpected {unexpected[:5]}"] if unexpected else []
    return ", ".join(problems)


def load_torchvision_weights(model: SemanticFPN, path: str | os.PathLike) -> SemanticFPN:
    """Load a local torchvision ResNet checkpoint (a state dict, e.g. ``resnet50-0676ba61.pth`` from a torch hub
    cache) into ``model``'s backbone and return the model; the checkpoint's classification head ``fc.*`` is
    dropped, the FPN and classifier keep their weights. Nothing is downloaded.

    The backbone must have width 64 and the checkpoint's depth (``build_model(C, "paper")`` for a ResNet-50).
    Raises :class:`CheckpointError` naming the file and what differs, FileNotFoundError for a missing file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights '{path}' do not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types (UnpicklingError, RuntimeError, struct.error, ...)
        raise CheckpointError(f"cannot read backbone weights '{path}': {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        keys = f" with keys {list(state)[:5]}" if isinstance(state, dict) else ""
        raise CheckpointError(
            f"backbone weights '{path}' must be a torchvision ResNet state dict (parameter name -> tensor), got "
            f"a {type(state).__name__}{keys}"
        )
    weights = {k: v for k, v in state.items() if not k.startswith(TORCHVISION_HEAD)}
    backbone = model.backbone
    problems = _fit_problems(backbone.state_dict(), weights, "file")
    if problems:
        raise CheckpointError(
            f"backbone weights '{path}' do not fit a ResNet-{backbone.depth} of width {backbone.width}: "
            f"{problems}. torchvision checkpoints fit width 64 (the 'paper' model, or --width 64) and their own "
            "depth (the 'paper' model is a ResNet-50, 'compact' a ResNet-18; fastral.train also has --backbone)"
        )
    backbone.load_state_dict(weights)
    return model
