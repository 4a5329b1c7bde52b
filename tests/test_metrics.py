"""Confusion matrix / IoU / mIoU against independent implementations (scikit-learn, plain loops)."""

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from fastral.metrics import ConfusionMatrix, confusion_matrix, iou_per_class, mean_iou, pixel_accuracy


def random_maps(seed, shape=(3, 17, 23), classes=6):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(classes, shape, generator=g)
    target[torch.rand(shape, generator=g) < 0.2] = 255
    pred = torch.randint(classes, shape, generator=g)
    return target, pred


@pytest.mark.parametrize("seed", range(4))
def test_confusion_matrix_matches_sklearn(seed):
    target, pred = random_maps(seed)
    valid = target != 255
    expected = sk_confusion_matrix(target[valid].numpy(), pred[valid].numpy(), labels=list(range(6)))
    cm = confusion_matrix(target, pred, 6)
    assert cm.dtype == torch.int64 and np.array_equal(cm.numpy(), expected)


def test_iou_and_miou_by_hand():
    target, pred = random_maps(7, classes=5)
    target[target == 4] = 255  # class 4 only ever predicted: IoU 0
    pred[pred == 3] = 0  # class 3 never predicted
    cm = confusion_matrix(target, pred, 5)
    valid = target != 255
    t, p = target[valid], pred[valid]
    for c, iou in enumerate(iou_per_class(cm)):
        inter = ((t == c) & (p == c)).sum().item()
        union = ((t == c) | (p == c)).sum().item()
        assert iou == pytest.approx(inter / union)
    assert mean_iou(cm) == pytest.approx(np.mean(iou_per_class(cm)))
    assert pixel_accuracy(cm) == pytest.approx((t == p).float().mean().item())


def test_absent_class_is_nan_and_left_out_of_the_mean():
    cm = confusion_matrix(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]), 3)
    iou = iou_per_class(cm)
    assert iou[0] == pytest.approx(0.5) and iou[1] == pytest.approx(0.5) and np.isnan(iou[2])
    assert mean_iou(cm) == pytest.approx(0.5)
    assert np.isnan(mean_iou(torch.zeros(3, 3, dtype=torch.int64)))


def test_accumulator_equals_one_shot():
    target, pred = random_maps(3)
    acc = ConfusionMatrix(6)
    for b in range(3):
        acc.update(target[b], pred[b])
    assert torch.equal(acc.matrix, confusion_matrix(target, pred, 6))
    assert acc.miou() == mean_iou(acc.matrix)


def test_bad_input():
    with pytest.raises(ValueError, match=r"'target' values must be in \[0, 3\) or 255, got range \[0, 7\]"):
        confusion_matrix(torch.tensor([0, 7]), torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="'pred' values"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 3]), 3)
    with pytest.raises(ValueError, match="differ"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0]), 3)
    with pytest.raises(TypeError, match="integer"):
        confusion_matrix(torch.tensor([0.0]), torch.tensor([0]), 3)
