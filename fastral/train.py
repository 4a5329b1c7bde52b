"""Supervised baseline: train the segmentation network on a whole split, early-stopping on another.

    python -m fastral.train                                       # built-in streets scenes, no download
    python -m fastral.train --dataset camvid --data-root ../shared/data/camvid --scale 0.5
    python -m fastral.train --help                                # every flag
    python -m fastral.train --images photos/ --labels labels/ --init-checkpoint best.pt   # your own labels

Writes ``<out>/best.pt`` (best validation mIoU, atomically) and ``<out>/metrics.json`` (history, per-class IoU).
With ``--images``/``--labels`` (a labels folder of ``fastral.labels import``) it fine-tunes on exactly the labelled
regions, on crops that contain them, for ``--epochs`` passes over the regions, with no validation split, and
writes ``<out>/last.pt`` and ``<out>/metrics.json``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from ._atomic import write_json
from ._extras import missing_extra
from ._validate import MAX_SEED

try:  # data sets and training need the [al] extra (the featurizers do not): say so instead of an ImportError
    from .data import PRESETS, TrainItem, load_dataset
    from .data.folder import FolderError, PartialLabelFolder
    from .models import (
        MODEL_PRESETS,
        CheckpointError,
        SemanticFPN,
        build_model,
        load_checkpoint,
        load_torchvision_weights,
        read_checkpoint,
        save_checkpoint,
    )
    from .training import TrainConfig, TrainingDivergedError, evaluate, fit, make_optimizer, poly_schedule, train_steps
except ModuleNotFoundError as exc:
    raise missing_extra("python -m fastral.train", exc) from exc

#: Defaults that depend on the data set, for flags whose default is None. ``streets`` (128x160 generated scenes)
#: trains a half-width compact network (ResNet-18 width 16, FPN 32, branches 16) at a higher learning rate on one
#: thread: about 5-6 min on a 2-core CPU to a test mIoU of ~0.6 with every class >= 0.2 IoU. The width defaults
#: apply only with ``--model compact``; other data sets keep 30 epochs, lr 0.01, torch's threads, the preset.
DATASET_DEFAULTS = {
    "streets": {"epochs": 36, "lr": 0.05, "threads": 1, "width": 16, "fpn_channels": 32, "head_channels": 16},
}
GENERIC_DEFAULTS = {"epochs": 30, "lr": 0.01}
_MODEL_SIZE_FLAGS = ("width", "fpn_channels", "head_channels")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` except for None defaults (optional flags, or data-set dependent ones)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def apply_dataset_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the flags left at None with the data set's defaults (:data:`DATASET_DEFAULTS`), then the generic ones."""
    own = DATASET_DEFAULTS.get(args.dataset, {}) if args.labels is None else {}  # --labels: not --dataset's
    for key, value in {**GENERIC_DEFAULTS, **own}.items():
        if getattr(args, key) is None and (key not in _MODEL_SIZE_FLAGS or args.model == "compact"):
            setattr(args, key, value)
    return args


def check_args(args: argparse.Namespace, p: argparse.ArgumentParser) -> None:
    """A parser error naming the flag, the expected and the received value, before any work is done."""

    def need(ok: bool, flag: str, expected: str) -> None:
        if not ok:
            p.error(f"argument --{flag}: expected {expected}, got {getattr(args, flag.replace('-', '_'))!r}")

    for flag in ("lr", "momentum", "weight-decay", "grad-clip", "dropout", "scale"):
        need(math.isfinite(getattr(args, flag.replace("-", "_"))), flag, "a finite number")
    need(args.lr > 0, "lr", "a learning rate > 0")
    need(0 <= args.momentum < 1, "momentum", "a momentum in [0, 1)")
    need(args.weight_decay >= 0, "weight-decay", "a weight decay >= 0")
    need(args.grad_clip >= 0, "grad-clip", "a gradient-norm bound >= 0 (0 = off)")
    need(0 <= args.dropout < 1, "dropout", "a probability in [0, 1)")
    need(args.scale > 0, "scale", "a factor > 0")
    for flag in ("epochs", "patience", "batch-size", "eval-batch-size"):
        need(getattr(args, flag.replace("-", "_")) >= 1, flag, "an integer >= 1")
    for flag in ("max-train-images", "max-val-images", "threads"):
        value = getattr(args, flag.replace("-", "_"))
        need(value is None or value >= 1, flag, "an integer >= 1")
    need(args.crop is None or min(args.crop) >= 1, "crop", "sizes >= 1")
    for flag in ("seed", "streets-seed"):
        need(0 <= getattr(args, flag.replace("-", "_")) <= MAX_SEED, flag, f"a seed in [0, {MAX_SEED}]")
    need(
        args.backbone_weights is None or args.init_checkpoint is None,
        "backbone-weights",
        "no --backbone-weights with --init-checkpoint (that checkpoint holds the backbone)",
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fastral.train",
        description="Train the semantic FPN from scratch (or from --init-checkpoint) on every label of a split, "
        "with early stopping on a validation split; report per-class IoU and mIoU.",
        formatter_class=_HelpFormatter,
    )
    d = p.add_argument_group("data")
    d.add_argument("--dataset", default="streets", choices=sorted(PRESETS), help="data set (streets is built in)")
    d.add_argument("--data-root", type=Path, help="data folder of camvid / cityscapes / gta5 (not for streets)")
    d.add_argument("--train-split", default="train", help="split to train on")
    d.add_argument("--val-split", default="val", help="split for early stopping and the reported mIoU")
    d.add_argument("--test-split", help="optional split evaluated once at the end with the best weights")
    d.add_argument(
        "--scale", type=float, default=1.0, help="resize factor for every image (e.g. 0.5 for CamVid on a CPU)"
    )
    d.add_argument("--max-train-images", type=int, help="train on only the first N images of the split")
    d.add_argument("--max-val-images", type=int, help="validate on only the first N images of the split")
    d.add_argument("--streets-seed", type=int, default=0, help="seed of the generated streets data set")
    d.add_argument("--gta5-classes", default="cityscapes", choices=["cityscapes", "camvid"], help="class map for gta5")
    d.add_argument("--images", type=Path, help="your own images folder (with --labels; instead of --dataset)")
    d.add_argument("--labels", type=Path, help="labels folder of fastral.labels import: fine-tune on its regions")
    m = p.add_argument_group("model")
    m.add_argument("--model", default="compact", choices=sorted(MODEL_PRESETS), help="model size preset")
    m.add_argument("--backbone", choices=["resnet18", "resnet34", "resnet50"], help="override the preset's backbone")
    m.add_argument(
        "--width",
        type=int,
        help="override the backbone base width (64 = standard ResNet; default: the preset's, "
        "16 for streets with --model compact)",
    )
    m.add_argument("--fpn-channels", type=int, help="override the FPN channels (default: the preset's, 32 for streets)")
    m.add_argument(
        "--head-channels",
        type=int,
        help="override the channels of each semantic branch (default: the preset's, 16 for streets)",
    )
    m.add_argument("--dropout", type=float, default=0.5, help="dropout before the classifier (MC dropout)")
    m.add_argument(
        "--no-train-dropout", action="store_true", help="do not apply that dropout while training (official code)"
    )
    m.add_argument("--init-checkpoint", type=Path, help="start from these weights instead of from scratch")
    m.add_argument(
        "--backbone-weights",
        type=Path,
        help="a local torchvision ResNet checkpoint for the backbone of a new network, e.g. resnet50-0676ba61.pth "
        "from a torch hub cache (with --model paper, or --width 64; never downloaded)",
    )
    m.add_argument(
        "--init-skip-classifier", action="store_true", help="keep a fresh classifier (checkpoint with other classes)"
    )
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=int, help="maximum number of epochs (default: 30; 36 for streets)")
    o.add_argument("--patience", type=int, default=10, help="stop after this many epochs without a better val mIoU")
    o.add_argument("--batch-size", type=int, default=8, help="training batch size")
    o.add_argument("--eval-batch-size", type=int, default=8, help="evaluation batch size")
    o.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), help="random crop size (default: whole images)")
    o.add_argument("--no-hflip", action="store_true", help="disable random horizontal flips")
    o.add_argument("--lr", type=float, help="SGD learning rate (default: 0.01; 0.05 for streets)")
    o.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (official code: 0.95)")
    o.add_argument("--weight-decay", type=float, default=1e-4, help="SGD weight decay")
    o.add_argument("--grad-clip", type=float, default=4.0, help="gradient-norm clipping (0 = off)")
    o.add_argument("--lr-schedule", default="poly", choices=["poly", "constant"], help="learning-rate schedule")
    r = p.add_argument_group("run")
    r.add_argument("--seed", type=int, default=0, help="seed of weight init, dropout, shuffling, crops and flips")
    r.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: 1 for streets, whose small network gains little from more; torch's "
        "choice otherwise; 1 is often faster on a busy machine)",
    )
    r.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    r.add_argument("--out", type=Path, help="output folder (default: runs/train-<dataset>)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _dataset(args, split: str, num_images: int | None = None):
    kw = {"scale": args.scale, "progress": not args.no_progress}
    if args.dataset == "streets":
        kw.update(seed=args.streets_seed, num_images=num_images)
    elif args.dataset == "gta5":
        kw["classes"] = args.gta5_classes
    return load_dataset(args.dataset, args.data_root, split, **kw)


def _plain(x):
    """``x`` with NaN floats as None (strict JSON) and numpy scalars as Python numbers."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "item"):
        x = x.item()
    return None if isinstance(x, float) and math.isnan(x) else x


def _new_model(args, p: argparse.ArgumentParser, num_classes: int) -> SemanticFPN:
    """A new network of --model and the size flags, its backbone loaded from --backbone-weights if given."""
    overrides = {k: v for k in ("backbone", *_MODEL_SIZE_FLAGS) if (v := getattr(args, k))}
    model = build_model(
        num_classes, args.model, dropout=args.dropout, train_dropout=not args.no_train_dropout, **overrides
    )
    if args.backbone_weights is not None:
        try:
            load_torchvision_weights(model, args.backbone_weights)
        except (CheckpointError, FileNotFoundError) as exc:
            p.error(f"argument --backbone-weights: {exc}")
    return model


def _folder_model(args, p: argparse.ArgumentParser, num_classes: int) -> SemanticFPN:
    """The network to fine-tune: --init-checkpoint's architecture and weights (its classifier kept unless
    --init-skip-classifier), else a new one of --model."""
    if args.init_checkpoint is None:
        return _new_model(args, p, num_classes)
    try:
        config = read_checkpoint(args.init_checkpoint)["config"]
        model = SemanticFPN(**{**config, "num_classes": num_classes})
        load_checkpoint(args.init_checkpoint, model, skip_classifier=args.init_skip_classifier)
    except (CheckpointError, FileNotFoundError) as exc:
        p.error(f"argument --init-checkpoint: {exc}")
    return model


def train_on_folder(args, p: argparse.ArgumentParser) -> dict:
    """--images/--labels: fine-tune on exactly the labelled regions of a labels folder (no validation split)."""
    if args.images is None or args.labels is None:
        missing = "--labels" if args.labels is None else "--images"
        p.error(f"argument {missing}: expected a folder (--images and --labels go together), got None")
    try:
        data = PartialLabelFolder(args.images, args.labels)
    except FolderError as exc:
        p.error(f"argument --labels: {exc}")
    model = _folder_model(args, p, data.num_classes).to(args.device)
    items = data.training_items()
    # Crops default to the largest labelled region, so images of any sizes batch together.
    crop = tuple(args.crop) if args.crop else tuple(max(it.box[k] for it in items) for k in (2, 3))
    config = TrainConfig(
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        crop=crop,
        hflip=not args.no_hflip,
        grad_clip=args.grad_clip or None,
    )
    optimizer = make_optimizer(model, config)
    total = args.epochs * math.ceil(len(items) / args.batch_size)
    scheduler = poly_schedule(optimizer, total) if args.lr_schedule == "poly" else None
    print(f"train: {data!r}\nmodel: {model.config}, {torch.get_num_threads()} threads")
    generator = torch.Generator().manual_seed(args.seed)
    try:
        stats = train_steps(
            model,
            data,
            items,
            optimizer,
            config,
            epochs=args.epochs,
            scheduler=scheduler,
            generator=generator,
            progress=not args.no_progress,
        )
    except TrainingDivergedError as exc:
        sys.exit(f"fastral.train: error: {exc}")
    out = args.out or Path("runs") / "train-folder"
    save_checkpoint(out / "last.pt", model, optimizer, iterations=stats.iterations, loss=stats.loss)
    summary = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "images": len(data),
        "regions": len(items),
        "crop": list(crop),
        "iterations": stats.iterations,
        "mean_loss": stats.loss,
        "seconds_total": stats.seconds,
    }
    write_json(out / "metrics.json", _plain(summary))
    print(
        f"{stats.iterations} iterations on {len(items)} regions of {len(data)} images, mean loss "
        f"{stats.loss:.4f}; wrote {out / 'last.pt'} and {out / 'metrics.json'}"
    )
    return summary


def main(argv: list[str] | None = None) -> dict:
    p = parser()
    args = apply_dataset_defaults(p.parse_args(argv))
    check_args(args, p)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.images is not None or args.labels is not None:
        return train_on_folder(args, p)
    out = args.out or Path("runs") / f"train-{args.dataset}"
    # streets generates only the images it needs; real data sets are read and then cut to the first N.
    train = _dataset(args, args.train_split, args.max_train_images)
    val = _dataset(args, args.val_split, args.max_val_images)
    train_images = range(min(len(train), args.max_train_images or len(train)))
    val_images = range(min(len(val), args.max_val_images or len(val)))
    model = _new_model(args, p, train.num_classes)
    if args.init_checkpoint:
        load_checkpoint(args.init_checkpoint, model, skip_classifier=args.init_skip_classifier)
    model.to(args.device)
    config = TrainConfig(
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        crop=tuple(args.crop) if args.crop else None,
        hflip=not args.no_hflip,
        grad_clip=args.grad_clip or None,
    )
    print(f"train: {train!r} ({len(train_images)} images)\nval:   {val!r} ({len(val_images)} images)")
    print(
        f"model: {model.config} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters), "
        f"{torch.get_num_threads()} threads"
    )
    items = [TrainItem(i) for i in train_images]  # full labels, read per batch
    start = time.perf_counter()
    try:
        result = fit(
            model,
            train,
            items,
            val,
            config,
            epochs=args.epochs,
            patience=args.patience,
            val_indices=val_images,
            lr_schedule=args.lr_schedule,
            checkpoint=out / "best.pt",
            generator=torch.Generator().manual_seed(args.seed),
            progress=not args.no_progress,
            eval_batch_size=args.eval_batch_size,
        )
    except TrainingDivergedError as exc:
        sys.exit(f"fastral.train: error: {exc}")
    total = time.perf_counter() - start
    epochs_run = len(result.history)
    summary = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "best_epoch": result.best_epoch,
        "best_val_miou": result.best_miou,
        "val_iou": dict(zip(train.class_names, map(float, result.best.iou), strict=True)) if result.best else {},
        "epochs_run": epochs_run,
        "seconds_total": total,
        "seconds_per_epoch_train": sum(h["train_s"] for h in result.history) / max(epochs_run, 1),
        "seconds_per_epoch_total": total / max(epochs_run, 1),
        "history": result.history,
    }
    print(
        f"\nbest val mIoU {100 * result.best_miou:.2f} at epoch {result.best_epoch} of {epochs_run} "
        f"({summary['seconds_per_epoch_train']:.1f} s/epoch training, {total:.0f} s in all)"
    )
    if result.best is not None:
        print(result.best.table())
    if args.test_split:
        test = _dataset(args, args.test_split)
        ev = evaluate(model, test, batch_size=args.eval_batch_size, progress=not args.no_progress)
        summary["test_miou"] = ev.miou
        summary["test_iou"] = dict(zip(test.class_names, map(float, ev.iou), strict=True))
        print(f"\n{args.test_split} mIoU {100 * ev.miou:.2f}\n{ev.table()}")
    write_json(out / "metrics.json", _plain(summary))
    print(f"\nwrote {out / 'best.pt'} and {out / 'metrics.json'}")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
