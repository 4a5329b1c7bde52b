"""Training and evaluation of the segmentation network, as the RALIS loop and the supervised baseline call them.

* :func:`train_steps`: SGD on a list of :class:`~fastral.data.TrainItem` (data-set image index + label whose
  unlabelled pixels are 255), for a number of iterations or epochs, with random crops that contain the item's
  labelled region and random horizontal flips. Cross-entropy counts labelled pixels only.
* :func:`evaluate`: confusion matrix / per-class IoU / mIoU on (part of) a split, batched, without gradients.
* :func:`fit`: epochs of :func:`train_steps` with early stopping on a validation split (D_R), the best weights
  kept and checkpointed atomically.

Randomness (shuffling, crops, flips) comes from the ``generator`` argument; weight init and dropout masks use
torch's global generator (``torch.manual_seed``).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data.base import IGNORE_INDEX
from .data.regions import TrainItem
from .metrics import ConfusionMatrix, pixel_accuracy
from .models.checkpoint import save_checkpoint

BATCHNORM_MODES = ("train", "frozen")


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or infinite (the weights are left as they were before that step)."""


@dataclass
class TrainConfig:
    """Optimisation settings. The official code uses momentum 0.95, weight decay 1e-4 and gradient-norm
    clipping at 4 (CamVid crops 224x224, batch 32); the defaults here suit training from scratch on a CPU."""

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 8
    crop: tuple[int, int] | None = None  #: (h, w) random crop; None = whole images
    hflip: bool = True
    grad_clip: float | None = 4.0
    #: "train": BatchNorm normalises with batch statistics and updates its running ones (the usual); "frozen": it
    #: keeps eval-mode running statistics (its affine weights still learn). Short trainings on a few crops, as the
    #: per-step training of an AL step, otherwise move the running statistics more than the weights.
    batchnorm: str = "train"


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def poly_schedule(optimizer: torch.optim.Optimizer, total_iterations: int, power: float = 0.9):
    """LR x (1 - it / total)^power, stepped once per iteration (the usual schedule for segmentation)."""
    total = max(int(total_iterations), 1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: max(1 - it / total, 0.0) ** power)


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform integer in [low, high] (inclusive)."""
    return low + int(torch.randint(high - low + 1, (1,), generator=generator))


def crop_origin(
    size: tuple[int, int], crop: tuple[int, int], contain: tuple[int, int, int, int], generator: torch.Generator
) -> tuple[int, int]:
    """Top-left corner of a random ``crop`` window inside an image of ``size`` that contains the box ``contain``
    ``(y, x, h, w)`` (or, where the crop is smaller than the box, the box's centre). Sizes are (h, w)."""
    origin = []
    for dim in range(2):
        length, window, start, extent = size[dim], crop[dim], contain[dim], contain[dim + 2]
        if window >= extent:
            low, high = start + extent - window, start
        else:  # the box does not fit: contain its centre
            centre = start + extent // 2
            low, high = centre - window + 1, centre
        low, high = max(low, 0), min(high, length - window)
        origin.append(_randint(low, high, generator) if low <= high else max(min(high, length - window), 0))
    return origin[0], origin[1]


def _labelled_pixel(label: torch.Tensor, generator: torch.Generator) -> tuple[int, int, int, int] | None:
    """A random labelled pixel of ``label`` as a 1x1 box, or None if nothing is labelled."""
    flat = torch.nonzero(label.reshape(-1) != IGNORE_INDEX).squeeze(1)
    if flat.numel() == 0:
        return None
    k = int(flat[int(torch.randint(flat.numel(), (1,), generator=generator))])
    return k // label.shape[1], k % label.shape[1], 1, 1


def make_batch(
    dataset, items: Sequence[TrainItem], crop: tuple[int, int] | None, hflip: bool, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``[B, 3, h, w]`` and int64 labels ``[B, h, w]`` of ``items``, randomly cropped and flipped."""
    images, labels = [], []
    for item in items:
        image = dataset.image(item.image)
        label = dataset.label(item.image) if item.label is None else item.label.long()
        if tuple(label.shape) != tuple(image.shape[-2:]):
            raise ValueError(
                f"train item for image {item.image}: label shape {tuple(label.shape)} does not match the image "
                f"{tuple(image.shape[-2:])}"
            )
        if crop is not None:
            h, w = min(crop[0], image.shape[1]), min(crop[1], image.shape[2])
            box = item.box or _labelled_pixel(label, generator) or (0, 0, *label.shape)
            y, x = crop_origin(tuple(label.shape), (h, w), box, generator)
            image, label = image[:, y : y + h, x : x + w], label[y : y + h, x : x + w]
        if hflip and bool(torch.rand((), generator=generator) < 0.5):
            image, label = image.flip(-1), label.flip(-1)
        images.append(image)
        labels.append(label)
    return torch.stack(images), torch.stack(labels)


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over labelled pixels (0 for a batch with none, instead of NaN)."""
    total = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (labels != IGNORE_INDEX).sum().clamp_min(1)


@dataclass
class TrainStats:
    loss: float  #: mean loss over the iterations
    iterations: int
    seconds: float


def train_steps(
    model: torch.nn.Module,
    dataset,
    items: Sequence[TrainItem],
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    *,
    iterations: int | None = None,
    epochs: int | None = None,
    generator: torch.Generator | None = None,
    scheduler=None,
    progress: bool = False,
) -> TrainStats:
    """Train ``model`` on ``items`` (images of ``dataset``) for ``iterations`` batches or ``epochs`` passes.

    Each pass visits the items in a new random order in batches of ``config.batch_size`` (the last one may be
    smaller). ``scheduler`` (optional) is stepped after every iteration. Leaves the model in train mode (its
    BatchNorm layers in eval mode under ``config.batchnorm == "frozen"``).
    """
    if config.batchnorm not in BATCHNORM_MODES:
        raise ValueError(f"TrainConfig.batchnorm: expected one of {BATCHNORM_MODES}, got {config.batchnorm!r}")
    if (iterations is None) == (epochs is None):
        raise ValueError("train_steps: pass exactly one of 'iterations' and 'epochs'")
    if not items:
        raise ValueError("train_steps: argument 'items' is empty: nothing is labelled")
    generator = generator or torch.Generator().manual_seed(0)
    per_epoch = math.ceil(len(items) / config.batch_size)
    total = iterations if iterations is not None else epochs * per_epoch
    device = next(model.parameters()).device
    model.train()
    if config.batchnorm == "frozen":
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()
    losses, start = [], time.perf_counter()
    bar = tqdm(total=total, desc="train", disable=not progress, leave=False)
    order: list[int] = []
    while len(losses) < total:
        if not order:
            order = torch.randperm(len(items), generator=generator).tolist()
        batch, order = order[: config.batch_size], order[config.batch_size :]
        images, labels = make_batch(dataset, [items[i] for i in batch], config.crop, config.hflip, generator)
        loss = segmentation_loss(model(images.to(device)), labels.to(device))
        value = float(loss.detach())
        if not math.isfinite(value):  # stop before the step: NaN weights would be saved and reported as a result
            raise TrainingDivergedError(
                f"training diverged: the loss is {value} at iteration {len(losses) + 1} of {total} "
                f"(learning rate {optimizer.param_groups[0]['lr']:g}); try a lower learning rate"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(value)
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    return TrainStats(float(np.mean(losses)), len(losses), time.perf_counter() - start)


@dataclass
class EvalResult:
    confusion: torch.Tensor  #: int64 [C, C], rows = ground truth, columns = prediction
    iou: np.ndarray  #: per-class IoU (NaN for classes absent from both)
    miou: float
    accuracy: float  #: pixel accuracy
    class_names: tuple[str, ...] = ()

    def table(self) -> str:
        """Per-class IoU as text lines."""
        names = self.class_names or tuple(str(c) for c in range(len(self.iou)))
        rows = [
            f"  {n:<16s} {100 * v:6.2f}" if np.isfinite(v) else f"  {n:<16s}    n/a"
            for n, v in zip(names, self.iou, strict=True)
        ]
        return "\n".join(
            [*rows, f"  {'mIoU':<16s} {100 * self.miou:6.2f}", f"  {'pixel acc':<16s} {100 * self.accuracy:6.2f}"]
        )


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Argmax classes ``[B, H, W]`` of images ``[B, 3, H, W]`` in eval mode (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        return model(images).argmax(1)
    finally:
        model.train(was_training)


def evaluate(
    model: torch.nn.Module, dataset, indices: Sequence[int] | None = None, batch_size: int = 8, progress: bool = False
) -> EvalResult:
    """Confusion matrix, per-class IoU and mIoU of ``model`` on data-set images ``indices`` (default: all)."""
    indices = list(range(len(dataset))) if indices is None else list(indices)
    device = next(model.parameters()).device
    cm = ConfusionMatrix(dataset.num_classes)
    for start in tqdm(range(0, len(indices), batch_size), desc="eval", disable=not progress, leave=False):
        batch = indices[start : start + batch_size]
        cm.update(dataset.labels(batch).to(device), predict(model, dataset.images(batch).to(device)))
    return EvalResult(cm.matrix, cm.iou(), cm.miou(), pixel_accuracy(cm.matrix), tuple(dataset.class_names))


@dataclass
class FitResult:
    best_miou: float
    best_epoch: int  #: 1-based; 0 if no epoch ran
    history: list[dict] = field(default_factory=list)  #: per epoch: epoch, loss, miou, lr, train_s, eval_s
    best: EvalResult | None = None


def fit(
    model: torch.nn.Module,
    train_set,
    items: Sequence[TrainItem],
    val_set,
    config: TrainConfig,
    *,
    epochs: int,
    patience: int | None = None,
    val_indices: Sequence[int] | None = None,
    lr_schedule: str = "poly",
    checkpoint: str | Path | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    eval_batch_size: int = 8,
    log: Callable[[str], None] | None = print,
) -> FitResult:
    """Up to ``epochs`` epochs on ``items``, evaluating on ``val_set`` after each; stops once the val mIoU has
    not improved for ``patience`` epochs. The best weights are loaded back into ``model`` at the end and, if
    ``checkpoint`` is given, saved there (atomically) whenever they improve."""
    if lr_schedule not in ("poly", "constant"):
        raise ValueError(f"fit: argument 'lr_schedule' must be 'poly' or 'constant', got {lr_schedule!r}")
    optimizer = make_optimizer(model, config)
    per_epoch = math.ceil(len(items) / config.batch_size)
    scheduler = poly_schedule(optimizer, epochs * per_epoch) if lr_schedule == "poly" else None
    result, best_state, since_best = FitResult(-math.inf, 0), None, 0
    for epoch in tqdm(range(1, epochs + 1), desc="epochs", disable=not progress):
        lr = optimizer.param_groups[0]["lr"]
        stats = train_steps(
            model,
            train_set,
            items,
            optimizer,
            config,
            epochs=1,
            generator=generator,
            scheduler=scheduler,
            progress=progress,
        )
        start = time.perf_counter()
        ev = evaluate(model, val_set, val_indices, eval_batch_size, progress=progress)
        row = {
            "epoch": epoch,
            "loss": stats.loss,
            "miou": ev.miou,
            "lr": lr,
            "train_s": stats.seconds,
            "eval_s": time.perf_counter() - start,
        }
        result.history.append(row)
        improved = ev.miou > result.best_miou
        if improved:
            result.best_miou, result.best_epoch, result.best, since_best = ev.miou, epoch, ev, 0
            best_state = copy.deepcopy(model.state_dict())
            if checkpoint is not None:
                save_checkpoint(checkpoint, model, optimizer, epoch=epoch, miou=ev.miou)
        else:
            since_best += 1
        if log:
            log(
                f"epoch {epoch:3d}  loss {stats.loss:.4f}  val mIoU {100 * ev.miou:5.2f}{' *' if improved else '  '}"
                f"  lr {lr:.2e}  train {stats.seconds:.1f} s  eval {row['eval_s']:.1f} s"
            )
        if patience is not None and since_best >= patience:
            if log:
                log(f"early stop: no improvement for {patience} epochs")
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return result
