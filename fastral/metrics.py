"""Segmentation metrics: a confusion matrix by one ``bincount``, per-class IoU and mIoU.

Rows of the confusion matrix are ground-truth classes and columns predictions (scikit-learn's convention);
pixels labelled ``ignore_index`` are left out. IoU_c = TP / (TP + FP + FN) is NaN for a class that appears
neither in the ground truth nor in the predictions, and mIoU is the mean over the other classes.
"""

from __future__ import annotations

import numpy as np
import torch

from .data.base import IGNORE_INDEX


def confusion_matrix(
    target: torch.Tensor, pred: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """int64 ``[num_classes, num_classes]``: entry ``[t, p]`` counts pixels of class t predicted as p.

    ``target`` and ``pred`` are integer tensors of one shape. Raises if a target is neither a class nor
    ``ignore_index``, or a prediction is not a class.
    """
    if target.shape != pred.shape:
        raise ValueError(f"confusion_matrix: 'target' {tuple(target.shape)} and 'pred' {tuple(pred.shape)} differ")
    if target.is_floating_point() or pred.is_floating_point():
        raise TypeError(f"confusion_matrix: 'target' and 'pred' must be integer, got {target.dtype} and {pred.dtype}")
    target, pred = target.reshape(-1).long(), pred.reshape(-1).long()
    valid = target != ignore_index
    target, pred = target[valid], pred[valid]
    for name, t in (("target", target), ("pred", pred)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
            raise ValueError(
                f"confusion_matrix: '{name}' values must be in [0, {num_classes})"
                + (f" or {ignore_index}" if name == "target" else "")
                + f", got range [{int(t.min())}, {int(t.max())}]"
            )
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def iou_per_class(confusion: torch.Tensor | np.ndarray) -> np.ndarray:
    """IoU of each class from a confusion matrix, float64; NaN where a class is absent from both sides."""
    cm = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(confusion: torch.Tensor | np.ndarray) -> float:
    """Mean IoU over the classes present in the ground truth or the predictions (NaN if none)."""
    iou = iou_per_class(confusion)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def pixel_accuracy(confusion: torch.Tensor | np.ndarray) -> float:
    cm = np.asarray(confusion, dtype=np.float64)
    return float(np.trace(cm) / cm.sum()) if cm.sum() > 0 else float("nan")


class ConfusionMatrix:
    """Accumulates a confusion matrix over batches: ``update(target, pred)``, then ``iou()`` / ``miou()``."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, target: torch.Tensor, pred: torch.Tensor) -> None:
        self.matrix += confusion_matrix(target, pred, self.num_classes, self.ignore_index).cpu()

    def iou(self) -> np.ndarray:
        return iou_per_class(self.matrix)

    def miou(self) -> float:
        return mean_iou(self.matrix)

    def accuracy(self) -> float:
        return pixel_accuracy(self.matrix)
