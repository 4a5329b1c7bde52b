"""Training utilities (crops that contain the labelled region, loss on labelled pixels only, early stopping,
checkpoints) and the supervised baseline command."""

import json

import numpy as np
import pytest
import torch
from _data_helpers import single_thread  # noqa: F401 (fixture)
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from fastral import train as cli
from fastral.data import IGNORE_INDEX, DataLayoutError, LabeledRegions, Streets, TrainItem
from fastral.data.fixtures import write_camvid
from fastral.models import SemanticFPN, load_checkpoint
from fastral.training import (
    TrainConfig,
    TrainingDivergedError,
    crop_origin,
    evaluate,
    fit,
    make_batch,
    make_optimizer,
    segmentation_loss,
    train_steps,
)

pytestmark = pytest.mark.usefixtures("single_thread")
TINY_FLAGS = ["--width", "8", "--fpn-channels", "16", "--head-channels", "8", "--no-progress", "--epochs", "1"]


def tiny(num_classes=11):
    torch.manual_seed(0)
    return SemanticFPN(num_classes, width=8, fpn_channels=16, head_channels=8)


@pytest.fixture(scope="module")
def ds():
    return Streets("train", seed=0, num_images=4, size=(64, 80), region=(16, 16), progress=False)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_crop_contains_the_box(data):
    size = data.draw(st.tuples(st.integers(1, 60), st.integers(1, 60)))
    crop = tuple(data.draw(st.integers(1, s)) for s in size)
    y, x = (data.draw(st.integers(0, s - 1)) for s in size)
    box = (y, x, data.draw(st.integers(1, size[0] - y)), data.draw(st.integers(1, size[1] - x)))
    oy, ox = crop_origin(size, crop, box, torch.Generator().manual_seed(data.draw(st.integers(0, 99))))
    assert 0 <= oy <= size[0] - crop[0] and 0 <= ox <= size[1] - crop[1]
    for origin, window, start, extent in ((oy, crop[0], box[0], box[2]), (ox, crop[1], box[1], box[3])):
        if window >= extent:
            assert origin <= start and start + extent <= origin + window
        else:
            assert origin <= start + extent // 2 < origin + window


def test_batches_crop_around_the_region_and_flip_consistently(ds):
    store = LabeledRegions(ds)
    store.add([3, 25, 58])  # one region in images 0, 1 and 2
    items = store.training_items([3, 25, 58])
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        images, labels = make_batch(ds, items, (24, 24), True, g)
        assert images.shape == (3, 3, 24, 24) and labels.dtype == torch.int64
        for item, label in zip(items, labels, strict=True):
            y, x, h, w = item.box
            region = ds.label(item.image)[y : y + h, x : x + w]
            assert (label != IGNORE_INDEX).sum() == (region != IGNORE_INDEX).sum()  # the whole region is inside
    full = [TrainItem(i, ds.label(i)) for i in range(2)] + [TrainItem(i) for i in (2, 3)]  # None: full label
    for _ in range(4):
        images, labels = make_batch(ds, full, None, True, g)
        for i in range(4):
            flipped = torch.equal(images[i], ds.image(i).flip(-1))
            assert flipped or torch.equal(images[i], ds.image(i))
            assert torch.equal(labels[i], ds.label(i).flip(-1) if flipped else ds.label(i))
    with pytest.raises(ValueError, match="does not match the image"):
        make_batch(ds, [TrainItem(0, torch.zeros(5, 5))], None, False, g)


def test_loss_counts_labelled_pixels_only():
    logits = torch.randn(2, 4, 5, 6, requires_grad=True)
    labels = torch.randint(4, (2, 5, 6))
    labels[0, :3] = IGNORE_INDEX
    valid = labels != IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(logits.permute(0, 2, 3, 1)[valid], labels[valid])
    assert torch.allclose(segmentation_loss(logits, labels), expected)
    empty = segmentation_loss(logits, torch.full_like(labels, IGNORE_INDEX))
    empty.backward()
    assert empty.item() == 0 and torch.isfinite(logits.grad).all()


def test_train_steps_learn_and_are_reproducible(ds):
    items = [TrainItem(i, ds.label(i)) for i in range(2)]
    config = TrainConfig(lr=0.05, batch_size=2)

    def run():
        model = tiny()
        optimizer = make_optimizer(model, config)
        g = torch.Generator().manual_seed(3)
        losses = [train_steps(model, ds, items, optimizer, config, iterations=3, generator=g).loss for _ in range(4)]
        return model, losses

    model, losses = run()
    assert losses[-1] < 0.7 * losses[0]
    again, _ = run()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True))
    stats = train_steps(model, ds, items * 3, make_optimizer(model, config), config, epochs=2)
    assert stats.iterations == 6 and model.training
    with pytest.raises(ValueError, match="exactly one"):
        train_steps(model, ds, items, make_optimizer(model, config), config)
    with pytest.raises(ValueError, match="nothing is labelled"):
        train_steps(model, ds, [], make_optimizer(model, config), config, iterations=1)


def test_evaluate_matches_an_independent_confusion_matrix(ds):
    model = tiny().eval()
    result = evaluate(model, ds, [0, 2, 3], batch_size=2)
    with torch.no_grad():  # the same batches as evaluate: a float near-tie may argmax differently in another batch
        pred = torch.cat([model(ds.images([0, 2])), model(ds.images([3]))]).argmax(1)
    truth = ds.labels([0, 2, 3])
    valid = truth != IGNORE_INDEX
    expected = sk_confusion_matrix(truth[valid].numpy(), pred[valid].numpy(), labels=list(range(11)))
    assert np.array_equal(result.confusion.numpy(), expected)
    assert result.miou == pytest.approx(np.nanmean(result.iou)) and "mIoU" in result.table()


def test_fit_stops_early_keeps_the_best_and_checkpoints(tmp_path, ds):
    model = tiny()
    items = [TrainItem(i, ds.label(i)) for i in range(3)]
    config = TrainConfig(lr=0.05, batch_size=3, crop=(32, 32))
    result = fit(
        model,
        ds,
        items,
        ds,
        config,
        epochs=8,
        patience=2,
        val_indices=[3],
        checkpoint=tmp_path / "best.pt",
        generator=torch.Generator().manual_seed(0),
        progress=False,
        log=None,
    )
    epochs = len(result.history)
    assert result.best_epoch == max(range(1, epochs + 1), key=lambda e: result.history[e - 1]["miou"])
    assert epochs == 8 or epochs == result.best_epoch + 2
    assert evaluate(model, ds, [3]).miou == pytest.approx(result.best_miou)  # the best weights are back
    loaded, extra = load_checkpoint(tmp_path / "best.pt")
    assert extra["epoch"] == result.best_epoch and evaluate(loaded, ds, [3]).miou == pytest.approx(result.best_miou)


def test_cli_on_streets(tmp_path):
    summary = cli.main(["--max-train-images", "3", "--max-val-images", "2", "--out", str(tmp_path), *TINY_FLAGS])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["epochs_run"] == 1 and saved["best_val_miou"] == pytest.approx(summary["best_val_miou"])
    assert set(saved["val_iou"]) == set(Streets("val", num_images=1, cache=False).class_names)
    model, _ = load_checkpoint(tmp_path / "best.pt")
    assert model.config["width"] == 8


def test_cli_on_a_camvid_layout(tmp_path):
    root = write_camvid(tmp_path / "camvid", {"train": 2, "val": 1})
    summary = cli.main(
        [
            "--dataset",
            "camvid",
            "--data-root",
            str(root),
            "--scale",
            "0.125",
            "--test-split",
            "val",
            "--crop",
            "32",
            "32",
            "--out",
            str(tmp_path / "out"),
            *TINY_FLAGS,
        ]
    )
    assert summary["test_miou"] == pytest.approx(summary["best_val_miou"])  # val == test split here
    with pytest.raises(DataLayoutError, match="SegNet"):
        cli.main(["--dataset", "camvid", "--data-root", str(tmp_path / "nowhere"), *TINY_FLAGS])


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for action in cli.parser()._actions:
        assert action.help, action.option_strings
        assert all(opt in text for opt in action.option_strings)


def test_streets_has_its_own_defaults():
    def args(*argv):
        return cli.apply_dataset_defaults(cli.parser().parse_args(list(argv)))

    streets = args()
    assert (streets.epochs, streets.lr, streets.threads) == (36, 0.05, 1)
    assert (streets.width, streets.fpn_channels, streets.head_channels) == (16, 32, 16)
    camvid = args("--dataset", "camvid")
    assert (camvid.epochs, camvid.lr, camvid.threads, camvid.width) == (30, 0.01, None, None)
    explicit = args("--epochs", "3", "--lr", "0.2", "--width", "8", "--threads", "2")
    assert (explicit.epochs, explicit.lr, explicit.width, explicit.fpn_channels, explicit.threads) == (3, 0.2, 8, 32, 2)
    assert args("--model", "paper").width is None  # the width defaults are for the compact preset only


def test_frozen_batchnorm_keeps_running_statistics_and_still_learns():
    """TrainConfig(batchnorm="frozen"), the per-step training option of fastral.run (--step-batchnorm): BatchNorm
    normalises with its running statistics and leaves them alone; every weight, BatchNorm's affine ones too, trains."""
    torch.manual_seed(0)
    data = Streets("train", seed=0, num_images=2, size=(32, 40), region=(16, 20), progress=False)
    model = SemanticFPN(data.num_classes, width=4, fpn_channels=8, head_channels=4)
    items = [TrainItem(i, None) for i in range(len(data))]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(lr=0.1, batch_size=2, batchnorm="frozen")
    train_steps(model, data, items, make_optimizer(model, config), config, iterations=2)
    after = model.state_dict()
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and not any(m.training for m in bn) and model.training
    stats = [k for k in before if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    affine = [f"{name}.{p}" for name, m in model.named_modules() if m in bn for p in ("weight", "bias")]
    assert affine and all(not torch.equal(before[k], after[k]) for k in affine)
    with pytest.raises(ValueError, match=r"TrainConfig\.batchnorm: expected one of"):
        train_steps(model, data, items, make_optimizer(model, config), TrainConfig(batchnorm="off"), iterations=1)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "argument --epochs: expected an integer >= 1, got 0"),
        (["--lr", "nan"], "argument --lr: expected a finite number, got nan"),
        (["--lr", "0"], "argument --lr: expected a learning rate > 0, got 0.0"),
        (["--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got 0"),
        (["--grad-clip", "-1"], "argument --grad-clip: expected a gradient-norm bound >= 0 (0 = off), got -1.0"),
        (["--momentum", "inf"], "argument --momentum: expected a finite number, got inf"),
        (["--crop", "0", "8"], "argument --crop: expected sizes >= 1, got [0, 8]"),
        (["--seed", "-1"], "argument --seed: expected a seed in [0, 4294967295], got -1"),
    ],
)
def test_bad_train_flags_are_named_before_any_work(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--out", str(tmp_path / "out")])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_non_finite_loss_stops_training_before_the_step(ds):
    """A diverged training raises instead of stepping: NaN weights are never saved or reported as a result."""
    torch.manual_seed(0)
    model = SemanticFPN(ds.num_classes, width=4, fpn_channels=8, head_channels=4)
    with torch.no_grad():
        model.classifier.bias[0] = float("inf")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(lr=0.1, batch_size=2)
    with pytest.raises(TrainingDivergedError, match=r"the loss is nan at iteration 1 of 3 \(learning rate 0\.1\)"):
        train_steps(model, ds, [TrainItem(0, None)], make_optimizer(model, config), config, iterations=3)
    assert all(
        torch.equal(v, before[k])
        or k.endswith("running_mean")
        or k.endswith("running_var")
        or k.endswith("num_batches_tracked")
        for k, v in model.state_dict().items()
    )
