"""The fixed ingredients of a RALIS run: data sets, the D_S / D_T / D_R / D_V split, theta_0, the feature cache.

``prepare`` loads (or generates) the data, builds or loads the split (saved as ``<out>/splits.json``), makes the
initial segmentation weights theta_0 (``--init-checkpoint``, or pretrained here and saved as ``<out>/theta0.pt``
so that a resumed run reuses them) and measures theta_0 on D_R (the reward baseline) and on the test split.

The official code starts policy training from GTA5-only weights and the evaluations from GTA5 + D_T weights;
``--train-init-checkpoint`` gives the former (default: theta_0 for both).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import ALSplits, TrainItem, build_splits, get_preset, load_dataset
from ..models import (
    CheckpointError,
    build_model,
    load_checkpoint,
    load_torchvision_weights,
    read_checkpoint,
    save_checkpoint,
)
from ..training import TrainConfig, evaluate, fit
from .cache import FeatureCache, FeatureCacheError
from .presets import RalisConfig
from .run_state import derive_seed

THETA0_FILE = "theta0.pt"
SPLITS_FILE = "splits.json"


@dataclass
class Experiment:
    config: RalisConfig
    train: object  #: the source split (D_S, D_T, D_V are image indices into it)
    reward: object  #: the split D_R lives in
    reward_indices: list[int]
    test: object  #: the split of the final test
    splits: ALSplits
    model: torch.nn.Module
    theta0: dict  #: initial weights of the evaluations (CPU state dict)
    theta0_metrics: dict  #: d_r_miou, test_miou, test_iou, test_accuracy
    cache: FeatureCache
    device: torch.device
    train_theta0: dict  #: initial weights of the policy-training episodes (theta0 unless given separately)
    train_theta0_miou: float  #: their mIoU on D_R: the first reward of an episode is a gain over it
    test_indices: list[int] | None = None  #: the test images of ``test`` (None: all of it)

    def images(self, name: str) -> list[int]:
        """Image indices of split set ``name`` (d_s, d_t, d_v) in the source split."""
        return self.splits.indices(name, self.train)

    def train_config(self) -> TrainConfig:
        """Settings of the final training at a budget."""
        return train_config(self.config, self.config.lr)

    def step_train_config(self) -> TrainConfig:
        """Settings of the training after each AL step (``--step-lr``; BatchNorm as ``--step-batchnorm`` says)."""
        c = self.config
        return dataclasses.replace(train_config(c, c.step_lr or c.lr), batchnorm=c.step_batchnorm)

    @property
    def feature_dim(self) -> int:
        """Ds: class distribution (C+1) + 3 pooled entropy maps."""
        ph, pw = self.config.entropy_pool
        return self.train.num_classes + 1 + 3 * ph * pw


def train_config(c: RalisConfig, lr: float) -> TrainConfig:
    """Segmentation training settings (SGD + crops containing the region + flips) at learning rate ``lr``."""
    return TrainConfig(
        lr=lr,
        momentum=c.momentum,
        weight_decay=c.weight_decay,
        batch_size=c.batch_size,
        crop=c.crop,
        hflip=True,
        grad_clip=c.grad_clip or None,
    )


def dataset_kwargs(config: RalisConfig, split: str, progress: bool) -> dict:
    kw = {"progress": progress}
    if config.region is not None:
        kw["region"] = tuple(config.region)
    if config.dataset == "streets":
        sizes = dict(zip(("train", "val", "test"), config.streets_images or (None, None, None), strict=True))
        kw.update(seed=config.streets_seed, num_images=sizes.get(split), size=config.image_size)
    else:
        kw["scale"] = config.scale
    return kw


def load_split(config: RalisConfig, root, split: str, progress: bool):
    return load_dataset(config.dataset, root, split, **dataset_kwargs(config, split, progress))


def make_splits(
    config: RalisConfig, train, out: Path, splits_file: Path | None, resume: bool, progress: bool
) -> ALSplits:
    """The run's split: ``splits_file`` if given, else ``<out>/splits.json`` when resuming, else built from the
    data set's recipe with the overrides d_s / d_t / d_r / d_v / d_test (a new run never reuses a split file that
    an interrupted attempt left in ``out``: its sizes or seed may be other than this run's)."""
    saved = out / SPLITS_FILE
    path = splits_file or (saved if resume and saved.is_file() else None)
    if path is not None:
        try:
            splits = ALSplits.load(path)
            for name in ("d_s", "d_t", "d_v"):
                splits.check(name, train)
        except ValueError as exc:
            raise ValueError(f"argument --splits: {exc}" if splits_file else str(exc)) from None
    else:
        recipe = get_preset(config.dataset).al
        if config.d_r is not None and recipe.d_r is None:
            raise ValueError(
                f"argument --d-r: {config.dataset}'s reward set is its whole {recipe.reward_split!r} "
                f"split (use --reward-images to use fewer of its images), got {config.d_r}"
            )
        names = ("d_s", "d_t", "d_r", "d_v", "d_test")
        changes = {k: getattr(config, k) for k in names if getattr(config, k) is not None}
        splits = build_splits(train, dataclasses.replace(recipe, **changes), seed=config.split_seed, progress=progress)
    splits.save(saved)
    return splits


def cache_namespace(config: RalisConfig, dataset) -> str:
    """What the cached features depend on besides the weights: data set, split, image and region sizes, pooling
    grid and the images' content (not their file names: images replaced in place get new features)."""
    (rh, rw), (ph, pw) = dataset.region, config.entropy_pool
    return (
        f"{dataset.name}/{dataset.split}/{dataset.height}x{dataset.width}/r{rh}x{rw}/p{ph}x{pw}/"
        f"{dataset.content_hash()}"
    )


def build_network(config: RalisConfig, num_classes: int) -> torch.nn.Module:
    overrides = {k: getattr(config, k) for k in ("width", "fpn_channels", "head_channels") if getattr(config, k)}
    torch.manual_seed(derive_seed(config.pretrain_seed, "theta0-init"))
    return build_model(num_classes, config.model, dropout=config.dropout, **overrides)


def pretrain(c: RalisConfig, model, train, splits, reward, reward_indices, progress: bool) -> dict:
    """Make theta_0 in place (see ``RalisConfig.pretrain``); returns a summary of the pretraining."""
    if c.pretrain == "none":
        return {"source": "none"}
    if c.pretrain == "source":  # generated scenes of another seed: in no split of the run
        kw = {**dataset_kwargs(c, "train", progress), "seed": c.streets_seed + 1, "num_images": c.pretrain_images}
        source = load_dataset("streets", None, "train", **kw)
        images = list(range(len(source)))
    else:
        source, images = train, splits.indices("d_t", train)
    items = [TrainItem(i, source.label(i)) for i in images]
    generator = torch.Generator().manual_seed(derive_seed(c.pretrain_seed, "pretrain"))
    result = fit(
        model,
        source,
        items,
        reward,
        train_config(c, c.pretrain_lr),
        epochs=c.pretrain_epochs,
        patience=c.pretrain_patience,
        val_indices=reward_indices,
        generator=generator,
        progress=progress,
        eval_batch_size=c.eval_batch_size,
        log=None,
    )
    return {
        "source": c.pretrain,
        "images": len(items),
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "d_r_miou": result.best_miou,
    }


def make_theta0(
    config,
    model,
    train,
    splits,
    reward,
    reward_indices,
    out: Path,
    device,
    pretrain_from,
    progress,
    log,
    backbone_weights: Path | None = None,
) -> dict:
    """Pretrain theta_0 into ``model`` (from ``pretrain_from`` weights, or a torchvision ResNet checkpoint
    ``backbone_weights`` for the backbone, if given) and save it as ``<out>/theta0.pt``, or load that file if it
    was made from the same settings (a resumed run). Returns the pretraining summary."""
    path, key = out / THETA0_FILE, theta0_key(config, splits, pretrain_from, backbone_weights)
    if path.is_file() and read_checkpoint(path)["extra"].get("key") == key:
        _, extra = load_checkpoint(path, model)
        log(f"theta_0: reusing {path}")
        return extra["summary"]
    start = pretrain_from or backbone_weights
    if pretrain_from is not None:
        load_checkpoint(pretrain_from, model)
    if backbone_weights is not None:
        try:
            load_torchvision_weights(model, backbone_weights)
        except (CheckpointError, FileNotFoundError) as exc:
            raise ValueError(f"argument --backbone-weights: {exc}") from None
    log(f"theta_0: pretraining ({config.pretrain}{f' from {start}' if start else ''}) ...")
    model.to(device)
    summary = pretrain(config, model, train, splits, reward, reward_indices, progress)
    summary["from"] = None if start is None else str(start)
    model.cpu()
    save_checkpoint(path, model, key=key, summary=summary)
    return summary


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def theta0_key(
    config: RalisConfig, splits: ALSplits, pretrain_from: Path | None = None, backbone_weights: Path | None = None
) -> dict:
    """What a saved theta_0 was made from (checked before reusing it)."""
    fields = (
        "dataset",
        "image_size",
        "region",
        "scale",
        "streets_seed",
        "streets_images",
        "model",
        "width",
        "fpn_channels",
        "head_channels",
        "dropout",
        "pretrain",
        "pretrain_images",
        "pretrain_epochs",
        "pretrain_patience",
        "pretrain_lr",
        "pretrain_seed",
        "momentum",
        "weight_decay",
        "batch_size",
        "crop",
        "grad_clip",
        "reward_images",
        "eval_batch_size",
    )
    full = config.to_dict()
    start = None if pretrain_from is None else file_hash(pretrain_from)
    key = {**{k: full[k] for k in fields}, "splits": splits.to_dict()["sets"], "pretrain_from": start}
    if backbone_weights is not None:  # only then: the theta_0 of a run made before this option keeps its key
        key["backbone_weights"] = file_hash(backbone_weights)
    return key


def prepare(
    config: RalisConfig,
    data_root,
    out: Path,
    device: torch.device,
    *,
    init_checkpoint: Path | None = None,
    pretrain_from: Path | None = None,
    backbone_weights: Path | None = None,
    train_init_checkpoint: Path | None = None,
    splits_file: Path | None = None,
    cache_file: Path | None = None,
    test_split: str | None = None,
    resume: bool = False,
    progress: bool = True,
    log=print,
) -> Experiment:
    out.mkdir(parents=True, exist_ok=True)
    train = load_split(config, data_root, get_preset(config.dataset).al.source, progress)
    try:  # before any work: a --cache path that is not a cache is refused at once
        cache = FeatureCache(
            cache_file or out / "features.h5", cache_namespace(config, train), len(train), train.regions.per_image
        )
    except FeatureCacheError as exc:
        raise ValueError(f"argument --cache: {exc}") from None
    splits = make_splits(config, train, out, splits_file, resume, progress)
    check_pool_sizes(config, train, splits)
    check_region_sizes(config, train)
    d_r = splits.sets["d_r"]
    reward = train if d_r.split == train.split else load_split(config, data_root, d_r.split, progress)
    reward_indices = splits.indices("d_r", reward)[: config.reward_images]
    held_back = splits.sets["test"].indices is not None  # test images of the source split (--d-test)
    if held_back and test_split is not None:
        raise ValueError(
            f"argument --test-split: the split holds back test images of {train.split!r} (--d-test), "
            f"got --test-split {test_split!r} as well"
        )
    test_name = test_split or splits.split_of("test")
    if test_name == d_r.split and not held_back:
        warnings.warn(f"the test split {test_name!r} also holds D_R: test numbers are not held out", stacklevel=2)
    if held_back:
        test, test_indices = train, splits.indices("test", train)
    else:
        test = reward if test_name == reward.split else load_split(config, data_root, test_name, progress)
        test_indices = None
    model = build_network(config, train.num_classes)
    if init_checkpoint is not None:
        load_checkpoint(init_checkpoint, model)
        log(f"theta_0: loaded {init_checkpoint}")
        summary = {"source": f"checkpoint {init_checkpoint}"}
    else:
        summary = make_theta0(
            config,
            model,
            train,
            splits,
            reward,
            reward_indices,
            out,
            device,
            pretrain_from,
            progress,
            log,
            backbone_weights,
        )
    model.to(device).eval()
    theta0 = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    d_r_miou = evaluate(model, reward, reward_indices, config.eval_batch_size).miou
    ev = evaluate(model, test, test_indices, config.eval_batch_size)
    metrics = {
        "pretraining": summary,
        "d_r_miou": d_r_miou,
        "test_miou": ev.miou,
        "test_iou": ev.iou.tolist(),
        "test_accuracy": ev.accuracy,
    }
    train_theta0, train_miou = theta0, d_r_miou
    if train_init_checkpoint is not None:  # e.g. GTA5-only weights, as the official policy training uses
        load_checkpoint(train_init_checkpoint, model)
        train_theta0 = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        train_miou = evaluate(model, reward, reward_indices, config.eval_batch_size).miou
        metrics["policy_training_theta0"] = {"source": f"checkpoint {train_init_checkpoint}", "d_r_miou": train_miou}
        model.load_state_dict(theta0)
    exp = Experiment(
        config,
        train,
        reward,
        reward_indices,
        test,
        splits,
        model,
        theta0,
        metrics,
        cache,
        device,
        train_theta0,
        train_miou,
        test_indices,
    )
    return exp


def check_region_sizes(c: RalisConfig, train) -> None:
    """Raise ValueError (naming the flag) for an entropy grid finer than a region, a training crop that cannot
    contain a region, or a batch whose deepest BatchNorm would see one value per channel."""
    region, image = tuple(train.region), (train.height, train.width)
    if any(p > r for p, r in zip(c.entropy_pool, region, strict=True)):
        raise ValueError(
            f"argument --entropy-pool: expected a grid no finer than the {region[0]}x{region[1]} "
            f"region (at most one cell per pixel), got {tuple(c.entropy_pool)}"
        )
    crop = tuple(c.crop) if c.crop is not None else image
    if c.crop is not None and not all(r <= k <= n for r, k, n in zip(region, crop, image, strict=True)):
        raise ValueError(
            f"argument --crop: expected a crop that contains a {region[0]}x{region[1]} region and fits "
            f"the {image[0]}x{image[1]} images, got {crop}"
        )
    deepest = math.ceil(crop[0] / 32) * math.ceil(crop[1] / 32)  # the backbone's stride-32 map
    if c.batch_size * deepest < 2:
        raise ValueError(
            f"argument --batch-size: with {crop[0]}x{crop[1]} crops a batch of {c.batch_size} gives "
            "BatchNorm a single value per channel at the network's deepest layer; use >= 2"
        )


def check_pool_sizes(c: RalisConfig, train, splits: ALSplits) -> None:
    """Raise ValueError if a pool is too small for the budgets (naming the options to change)."""
    per_image = train.regions.per_image
    d_t, d_v = (len(splits.indices(name, train)) * per_image for name in ("d_t", "d_v"))
    if c.train_budget + c.regions_per_step * c.train_pool_size > d_t:
        raise ValueError(
            f"D_T has {d_t} regions, fewer than --train-budget ({c.train_budget}) + --regions-per-step x "
            f"--train-pool-size ({c.regions_per_step} x {c.train_pool_size}) that policy training needs"
        )
    if c.budgets[-1] > d_v:
        raise ValueError(f"argument --budgets: D_V has {d_v} regions, got a budget of {c.budgets[-1]}")
