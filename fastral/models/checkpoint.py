"""Segmentation checkpoints: written atomically, loaded with clear errors on a class or shape mismatch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .._atomic import torch_save
from .fpn import SemanticFPN

CHECKPOINT_FORMAT = "fastral-segmentation/1"
CLASSIFIER_PREFIX = "classifier."


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
    weights = state["model"]
    if skip_classifier:
        weights = {k: v for k, v in weights.items() if not k.startswith(CLASSIFIER_PREFIX)}
    elif state["config"]["num_classes"] != model.num_classes:
        raise CheckpointError(
            f"checkpoint '{path}' has {state['config']['num_classes']} classes, the model {model.num_classes}; "
            "pass skip_classifier=True (--init-skip-classifier) to fine-tune it on other classes"
        )
    own = model.state_dict()
    missing = [k for k in own if k not in weights and not (skip_classifier and k.startswith(CLASSIFIER_PREFIX))]
    unexpected = [k for k in weights if k not in own]
    shapes = [f"{k}: checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)}" for k, v in weights.items()
              if k in own and v.shape != own[k].shape]  # fmt: skip
    if missing or unexpected or shapes:
        problems = [f"{len(shapes)} shape mismatches ({'; '.join(shapes[:5])})"] if shapes else []
        problems += [f"missing {missing[:5]}"] if missing else []
        problems += [f"unexpected {unexpected[:5]}"] if unexpected else []
        raise CheckpointError(
            f"checkpoint '{path}' does not fit the model: {', '.join(problems)}. "
            f"Checkpoint config {state['config']}, model config {model.config}"
        )
    model.load_state_dict(weights, strict=not skip_classifier)
    if optimizer is not None and state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    return model, state["extra"]
