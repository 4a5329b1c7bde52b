"""Pick the regions of a folder of your own unlabelled images that are worth labelling next.

    python -m fastral.select --images photos/ --checkpoint runs/train-camvid/best.pt --policy entropy \\
        --budget 200 --region 90 80 --out round1/
    python -m fastral.select --help                                 # every flag

Every image under ``--images`` (PNG/JPEG, recursive, any sizes) is read, scored and dropped one at a time, so
memory does not depend on the folder's size: only the best ``--budget`` regions so far are kept. Regions are the
``--region`` grid of each image (:func:`fastral.region_grid`; a remainder that does not fill a region is not a
candidate). Scores, higher = label first:

  * ``uniform``: a pseudo-random number per region from ``--seed`` and the region's file and box (no network);
  * ``entropy``: the region's mean pixel entropy (:func:`fastral.region_stats`);
  * ``bald``: the region's mean MC-dropout BALD over ``--bald-samples`` samples (:class:`fastral.BaldAccumulator`),
    each image's dropout masks seeded from ``--seed`` and its path;
  * ``ralis``: the trained query network's Q-value (``--policy-checkpoint``, a ``policy_seed<s>.pt`` of
    ``fastral.run``). Its state set on a new folder: the query network was trained with a fixed number R of
    state regions (|D_S| x regions per image), so the state is the features of the first R regions of
    ``--state-images`` (default: ``--images``), in sorted file order and region-grid order within an image.
    The KL histograms compare each candidate with the labelled regions of ``--labelled`` (a ``labelled.json``
    with label files; none: zeros, as at the start of an episode) and with the candidates scored together: images
    are scored in consecutive groups of at least K x N regions (the policy's regions per step x pool size), the
    candidate set of one official AL step.

Ties are broken by file order, then region order, so the same inputs give the same selection. Writes to ``--out``:
``selected_regions.json`` (the regions in priority order: image path relative to ``--images``, pixel box, score,
policy, network hash), ``label_studio/tasks.json`` + ``label_studio/config.xml`` (one task per selected image with
its regions as pre-annotated rectangles; a brush + polygon labelling config with the class names) and
``overlays/*.png`` (each selected image with its regions drawn). Unreadable images are listed and skipped.

``--ray [ADDRESS]`` scores the folder on a Ray cluster (``auto`` / ``ray://host:10001``; alone: a local Ray
instance) with Ray Data: the sorted file list is cut into shards of ``--shard-size`` files, ``--ray-workers``
actors each load the network once and run :func:`select_regions` on a shard (its best ``--budget`` regions), and
the driver merges the shards' candidates with the same ordering (score, then file order, then region order): the
same selection as without ``--ray`` given the same ``--threads``. ``--images`` must be readable on every node.
With ``--policy ralis`` the candidates are scored in consecutive groups (above), so a first Ray Data pass decodes
every image for its size (and whether it is readable), the driver forms the groups as the serial scan would, and
each shard holds whole groups (at least ``--shard-size`` files).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import numpy as np
import torch

from ._extras import missing_extra

try:  # the labelling loop needs the [al] extra (Pillow, tqdm, matplotlib): say so instead of an ImportError
    from PIL import Image, ImageDraw
    from tqdm.auto import tqdm

    from . import BaldAccumulator, region_grid, region_stats
    from ._atomic import atomic_write, write_json
    from .al.cache import weights_hash
    from .al.distributed import connect, disconnect, ray_missing
    from .al.features import action_features, ground_truth_distribution, region_features
    from .al.query_network import QueryNetwork
    from .al.run_state import derive_seed
    from .al.timing import Timer
    from .data import IGNORE_INDEX, PRESETS, ImageFileError, normalize
    from .data.folder import (
        LABELLED_FORMAT,
        FolderError,
        PartialLabelFolder,
        box_tuple,
        image_files,
        read_image,
        read_json,
    )
    from .models import CheckpointError, load_checkpoint
except ModuleNotFoundError as exc:
    raise missing_extra("python -m fastral.select", exc) from exc

SELECTION_FORMAT = "fastral-selection/1"
POLICIES = ("uniform", "entropy", "bald", "ralis")
RECTANGLE_LABEL = "selected region"  #: the label of the pre-annotated boxes in Label Studio
FORWARD = "segmentation_forward"  #: the timer section of network passes; everything else is fastral's overhead


@dataclass
class Candidates:
    """The best regions so far: ``keys`` sort them (score descending, then file order, then region order)."""

    budget: int
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    files: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # index into the sorted file list
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))  # (y, x, h, w)

    def add(self, file: int | np.ndarray, scores: np.ndarray, boxes: np.ndarray) -> None:
        """Add regions of one file (``file`` an index) or of several (one index per region)."""
        self.scores = np.concatenate([self.scores, scores.astype(np.float64)])
        self.files = np.concatenate([self.files, np.broadcast_to(np.asarray(file, np.int64), len(scores))])
        self.boxes = np.concatenate([self.boxes, boxes])
        # lexsort sorts by the last key first: -score, then file, then row-major region position.
        keep = np.lexsort((self.boxes[:, 1], self.boxes[:, 0], self.files, -self.scores))[: self.budget]
        self.scores, self.files, self.boxes = self.scores[keep], self.files[keep], self.boxes[keep]


def regions_of(height: int, width: int, region: tuple[int, int]) -> int:
    """Regions of the grid of one image: 0 for an image smaller than a region (which the scan skips)."""
    ny, nx = region_grid(height, width, region)
    return ny * nx


def grid_boxes(height: int, width: int, region: tuple[int, int]) -> np.ndarray:
    """``[R, 4]`` (y, x, h, w) of the region grid of one image, in :func:`fastral.region_grid` order."""
    ny, nx = region_grid(height, width, region)
    iy, ix = np.divmod(np.arange(ny * nx), nx)
    return np.stack([iy * region[0], ix * region[1], np.full_like(iy, region[0]), np.full_like(ix, region[1])], 1)


def overlaps(boxes: np.ndarray, others: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Bool ``[R]``: which (y, x, h, w) ``boxes`` share a pixel with any of ``others``."""
    hit = np.zeros(len(boxes), bool)
    y, x, h, w = boxes.T
    for oy, ox, oh, ow in others:
        hit |= (y < oy + oh) & (oy < y + h) & (x < ox + ow) & (ox < x + w)
    return hit


class Scorer:
    """Scores the regions of groups of images. ``group_regions``: score images in groups of at least this many
    regions (0 = one image at a time)."""

    group_regions = 0

    def __init__(self, timer: Timer):
        self.timer = timer

    def score(
        self, images: list[tuple[str, torch.Tensor]], region: tuple[int, int], featurizer: Executor
    ) -> list[np.ndarray | Future]:
        """One ``[R_i]`` score array per ``(relative path, normalised [3, H, W] image)``, in region-grid order,
        or a future of it: work after the forward passes may go to ``featurizer`` (one thread, tasks run in
        order), which then runs it while this thread runs the next forward pass."""
        raise NotImplementedError


class UniformScorer(Scorer):
    def __init__(self, timer: Timer, seed: int):
        super().__init__(timer)
        self.seed = seed

    def score(self, images, region, featurizer):
        out = []
        for rel, x in images:
            boxes = grid_boxes(*x.shape[-2:], region)
            # One stream per file: a region's score does not depend on which other files the folder holds.
            rng = np.random.default_rng(derive_seed(self.seed, "uniform", rel))
            out.append(rng.random(len(boxes)))
        return out


class NetworkScorer(Scorer):
    """Scorers that run the segmentation network (eval mode, no gradients)."""

    def __init__(self, timer: Timer, model: torch.nn.Module, device: torch.device):
        super().__init__(timer)
        self.model, self.device = model.eval(), device

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = x[None].to(self.device)
        with self.timer.section(FORWARD):
            return self.model(x)


class EntropyScorer(NetworkScorer):
    def score(self, images, region, featurizer):
        return [featurizer.submit(region_entropy, self.logits(x), region) for _, x in images]


def region_entropy(logits: torch.Tensor, region: tuple[int, int]) -> np.ndarray:
    return region_stats(logits, region, (1, 1)).entropy_mean.cpu().numpy()


class BaldScorer(NetworkScorer):
    def __init__(self, timer, model, device, samples: int, seed: int):
        super().__init__(timer, model, device)
        self.samples, self.seed = samples, seed

    @torch.no_grad()
    def score(self, images, region, featurizer):
        out = []
        for rel, x in images:
            generator = torch.Generator(self.device).manual_seed(derive_seed(self.seed, "bald", rel))
            samples = self.model.mc_samples(x[None].to(self.device), self.samples, generator=generator)
            acc, added = BaldAccumulator(), None
            for _ in range(self.samples):
                with self.timer.section(FORWARD):
                    logits = next(samples)
                if added is not None:  # at most one sample waits: memory stays that of two samples
                    added.result()
                added = featurizer.submit(acc.update, logits)  # runs during the next sample's forward pass
            out.append(featurizer.submit(region_bald, acc, added, region))
        return out


def region_bald(acc: BaldAccumulator, last_update: Future, region: tuple[int, int]) -> np.ndarray:
    last_update.result()  # done (the featurizer runs its tasks in order); raises the update's error, if any
    return acc.compute(region=region).region_bald.cpu().numpy()


def read_policy(path: Path) -> dict:
    """A ``fastral.run`` query-network file (``policy_seed<s>.pt``): weights and the run's configuration."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != "fastral-ralis-policy/1":
        raise FolderError(f"'{path}' is not a fastral.run query-network file (policy_seed<s>.pt)")
    return state


def group_regions(config: dict) -> int:
    """Regions per scoring group of the ralis policy: K x N, the candidates of one official AL step."""
    return int(config["regions_per_step"]) * int(config["pool_size"])


class RalisScorer(NetworkScorer):
    """The query network's Q-value of every region (see the module docstring for its state and KL inputs)."""

    def __init__(self, timer, model, device, policy_path: Path, labelled_dist: torch.Tensor):
        super().__init__(timer, model, device)
        state = read_policy(policy_path)
        weights, config = state["state_dict"], state["config"]
        self.entropy_pool, self.kl_bins = tuple(config["entropy_pool"]), int(config["kl_bins"])
        self.group_regions = group_regions(config)
        self.net = QueryNetwork(
            state_dim=weights["state_regions_path.0.weight"].shape[0],
            state_regions=weights["state_summary.0.weight"].shape[0],
            action_dim=weights["action_path.0.weight"].shape[0] + 2 * self.kl_bins,
            gate_dim=2 * self.kl_bins,
        )
        self.net.load_state_dict(weights)
        self.net.eval()
        self.labelled_dist, self.state = labelled_dist, None

    def features(self, x: torch.Tensor, region: tuple[int, int]):
        return region_features(self.logits(x), region, self.entropy_pool)

    def set_state(self, images: Iterator[torch.Tensor], region: tuple[int, int], source: str) -> None:
        """The state: features of the first R regions of ``images`` (R = the query network's state regions)."""
        need, parts = self.net.state_regions, []
        for x in images:
            parts.append(self.features(x, region).base)
            if sum(len(p) for p in parts) >= need:
                break
        state = torch.cat(parts)[:need] if parts else torch.zeros(0)
        if len(state) < need:
            raise FolderError(
                f"argument --state-images: the ralis policy needs a state set of {need} regions of {region[0]}x"
                f"{region[1]}, the readable images of '{source}' have only {len(state)}"
            )
        if state.shape[1] != self.net.state_dim:
            raise FolderError(
                f"argument --policy-checkpoint: the query network takes {self.net.state_dim} features per region, "
                f"the segmentation network gives {state.shape[1]} (another number of classes?)"
            )
        self.state = state

    @torch.no_grad()
    def score(self, images, region, featurizer):
        feats = [self.features(x, region) for _, x in images]
        base = torch.cat([f.base for f in feats]).to(self.device)
        counts = torch.cat([f.class_counts for f in feats]).to(self.device)
        actions = action_features(base, counts, self.labelled_dist.to(self.device), self.kl_bins)
        q = self.net(actions[None].cpu(), self.state[None].cpu())[0].numpy()
        return np.split(q, np.cumsum([len(f.base) for f in feats])[:-1])


@dataclass
class Selection:
    """What :func:`select_regions` found; ``to_json()`` is ``selected_regions.json``."""

    root: Path
    files: list[str]
    candidates: Candidates
    sizes: dict[int, tuple[int, int]]  # file index -> (height, width) of every file with a selected region
    skipped: list[dict]
    regions_scored: int
    images_scored: int
    timer: Timer
    meta: dict

    def regions(self) -> list[dict]:
        c, out = self.candidates, []
        for order, (score, file, (y, x, h, w)) in enumerate(zip(c.scores, c.files, c.boxes.tolist(), strict=True)):
            height, width = self.sizes[int(file)]
            out.append(
                {
                    "order": order,
                    "image": self.files[file],
                    "box": {"x": x, "y": y, "width": w, "height": h},
                    "image_size": {"width": width, "height": height},
                    "score": float(score),
                    "policy": self.meta["policy"],
                    "network_hash": self.meta["network_hash"],
                }
            )
        return out

    def to_json(self) -> dict:
        return {
            "format": SELECTION_FORMAT,
            **self.meta,
            "images_root": str(self.root.resolve()),
            "images_found": len(self.files),
            "images_scored": self.images_scored,
            "regions_scored": self.regions_scored,
            "skipped_images": self.skipped,
            "regions": self.regions(),
        }


def _load(path: Path) -> torch.Tensor | ImageFileError:
    try:
        return normalize(read_image(path))
    except ImageFileError as exc:
        return exc


def readable_images(root: Path, files: list[str], skipped: list[dict], bar: tqdm | None = None):
    """``(file index, normalised [3, H, W] image)`` of every readable file; an unreadable one is appended to
    ``skipped``. A reader thread decodes the next file while the caller works on this one (decoding and the
    network both release the GIL), so reading does not add to the time of the forward passes."""
    with ThreadPoolExecutor(1) as reader:
        ahead = reader.submit(_load, root / files[0]) if files else None
        for k, rel in enumerate(files):
            image = ahead.result()
            ahead = reader.submit(_load, root / files[k + 1]) if k + 1 < len(files) else None
            if bar is not None:
                bar.update(1)
            if isinstance(image, ImageFileError):
                skipped.append({"image": rel, "reason": str(image)})
                continue
            yield k, image


def select_regions(
    root: Path,
    files: list[str],
    scorer: Scorer,
    budget: int,
    region: tuple[int, int],
    prior: dict[str, list],
    meta: dict,
    progress: bool = True,
) -> Selection:
    """Score every region of ``files`` (paths relative to ``root``) and keep the ``budget`` best; regions that
    share a pixel with a box of ``prior`` (relative path -> (y, x, h, w) boxes) are never candidates."""
    candidates, skipped, sizes, timer = Candidates(budget), [], {}, scorer.timer
    scored = images_scored = 0
    group: list[tuple[int, torch.Tensor]] = []
    group_size = 0  # regions in group
    shape_of: dict[int, tuple[int, int]] = {}
    # Scored images whose scores may still be computed by the featurizer thread, in file order: they join the
    # candidates in that order (so the selection does not depend on the threads' timing), one group later.
    pending: list[tuple[int, tuple[int, int], np.ndarray | Future]] = []

    def add_pending(keep: int) -> None:
        nonlocal scored
        while len(pending) > keep:
            k, (h, w), s = pending.pop(0)
            boxes = grid_boxes(h, w, region)
            free = ~overlaps(boxes, prior.get(files[k], []))
            candidates.add(k, (s.result() if isinstance(s, Future) else s)[free], boxes[free])
            scored += int(free.sum())

    def flush():
        nonlocal group_size
        scores = scorer.score([(files[k], x) for k, x in group], region, featurizer)
        pending.extend((k, tuple(x.shape[-2:]), s) for (k, x), s in zip(group, scores, strict=True))
        add_pending(keep=len(group))  # the older groups: their featurizer work ran during this group's forward
        group.clear()
        group_size = 0

    with (
        tqdm(total=len(files), desc=f"scoring ({meta['policy']})", unit="image", disable=not progress) as bar,
        ThreadPoolExecutor(1, thread_name_prefix="fastral-featurizer") as featurizer,
    ):
        for k, image in readable_images(root, files, skipped, bar):
            h, w = image.shape[-2:]
            if h < region[0] or w < region[1]:
                skipped.append(
                    {
                        "image": files[k],
                        "reason": f"{w}x{h} (width x height) is smaller than the {region[1]}x{region[0]} region",
                    }
                )
                continue
            images_scored += 1
            shape_of[k] = (h, w)
            group.append((k, image))
            group_size += regions_of(h, w, region)
            if group_size >= scorer.group_regions:
                flush()
            # Only the sizes of files that can still be selected are kept (memory bounded by the budget).
            live = set(candidates.files.tolist()) | {g for g, _ in group} | {g for g, _, _ in pending}
            shape_of = {f: s for f, s in shape_of.items() if f in live}
        if group:
            flush()
        add_pending(keep=0)
    sizes = {int(f): shape_of[int(f)] for f in candidates.files}
    return Selection(root, files, candidates, sizes, skipped, scored, images_scored, timer, meta)


# -- scoring on a Ray cluster -------------------------------------------------------------------------------------
class ShardScorer:
    """A Ray Data actor: loads the network and scorer once, then selects the best regions of shards of files."""

    def __init__(self, args: argparse.Namespace, files: list[str], prior: dict[str, list]):
        if args.threads:
            torch.set_num_threads(args.threads)
        model, _ = load_checkpoint(args.checkpoint)
        model.to(torch.device(args.device))
        self.args, self.files = args, files
        self.scorer = make_scorer(args, model, torch.device(args.device), Timer(), model.num_classes)
        self.prior = prior

    def __call__(self, batch: dict) -> dict:
        index = np.arange(int(batch["start"][0]), int(batch["end"][0]))  # one shard: files start .. end - 1
        a = self.args
        sel = select_regions(
            a.images,
            [self.files[k] for k in index],
            self.scorer,
            a.budget,
            tuple(a.region),
            self.prior,
            {"policy": a.policy},
            progress=False,
        )
        c = sel.candidates
        shard = {
            "first": int(index[0]),
            "files": len(index),
            "scores": c.scores,
            "file": index[c.files],
            "boxes": c.boxes,
            "sizes": {int(index[f]): hw for f, hw in sel.sizes.items()},
            "skipped": sel.skipped,
            "regions_scored": sel.regions_scored,
            "images_scored": sel.images_scored,
        }
        return {"shard": np.array([shard], dtype=object)}


def select_regions_ray(
    args: argparse.Namespace, files: list[str], prior: dict[str, list], meta: dict, timer: Timer
) -> Selection:
    """:func:`select_regions` over shards on the Ray cluster ``connect`` joined; the shards' best regions merged."""
    import ray

    gpu = args.device.startswith("cuda")
    workers = args.ray_workers or max(1, int(ray.cluster_resources().get("GPU" if gpu else "CPU", 1)))
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = context.print_on_execution_start = False  # the bar below is the progress
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # not its INFO lines, nor "progress bars disabled"
    ranges = shard_ranges(args, files, workers) if args.policy == "ralis" else fixed_ranges(len(files), args.shard_size)
    shards = ray.data.from_items([{"start": a, "end": b} for a, b in ranges]).map_batches(
        ShardScorer,
        fn_constructor_args=(args, files, prior),
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=args.threads or 1,
        num_gpus=int(gpu),
    )
    candidates, sizes, parts = Candidates(args.budget), {}, []
    with tqdm(total=len(files), desc=f"scoring ({args.policy}, Ray)", unit="image", disable=args.no_progress) as bar:
        for row in shards.iter_rows():
            shard = row["shard"]
            candidates.add(shard["file"], shard["scores"], shard["boxes"])
            live = set(candidates.files.tolist())  # sizes of selectable files only: memory bounded by the budget
            sizes = {f: hw for f, hw in {**sizes, **shard["sizes"]}.items() if f in live}
            parts.append(shard)
            bar.update(shard["files"])
    parts.sort(key=lambda shard: shard["first"])  # skipped files in file order, as the serial scan lists them
    skipped = [s for shard in parts for s in shard["skipped"]]
    scored, images = (sum(shard[k] for shard in parts) for k in ("regions_scored", "images_scored"))
    return Selection(args.images, files, candidates, sizes, skipped, scored, images, timer, meta)


def fixed_ranges(n: int, size: int) -> list[tuple[int, int]]:
    """``(start, end)`` file ranges of ``size`` files (the last one shorter)."""
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def image_sizes(batch: dict, root: Path, files: list[str]) -> dict:
    """Ray Data task: ``(height, width)`` of the files of ``batch``, ``(-1, -1)`` where unreadable (decoded, so a
    file that only fails when decoded counts as unreadable, as in the serial scan)."""
    index = batch["index"]
    hw = np.full((len(index), 2), -1, np.int64)
    for i, k in enumerate(index):
        with contextlib.suppress(ImageFileError):
            hw[i] = read_image(root / files[int(k)]).shape[:2]
    return {"index": index, "height": hw[:, 0], "width": hw[:, 1]}


def shard_ranges(args: argparse.Namespace, files: list[str], workers: int) -> list[tuple[int, int]]:
    """File ranges holding whole scoring groups of ``--policy ralis`` (at least ``--shard-size`` files each):
    images join a group in file order until it has ``group_regions`` regions, as :func:`select_regions` forms
    them; unreadable images and images smaller than a region join no group (they stay in the range they fall
    in). Needs every image's size: a first Ray Data pass decodes them."""
    import ray

    sizes = ray.data.from_items([{"index": k} for k in range(len(files))]).map_batches(
        image_sizes,
        fn_kwargs={"root": args.images, "files": files},
        batch_size=args.shard_size,
        batch_format="numpy",
        concurrency=workers,
        num_cpus=args.threads or 1,
    )
    hw = np.full((len(files), 2), -1, np.int64)
    for row in sizes.iter_rows():
        hw[row["index"]] = row["height"], row["width"]
    need, region = group_regions(read_policy(args.policy_checkpoint)["config"]), tuple(args.region)
    ranges, start, in_group = [], 0, 0
    for k, (h, w) in enumerate(hw):
        if h >= 0:  # readable
            in_group += regions_of(int(h), int(w), region)
        if in_group >= need:  # the group closes with image k
            in_group = 0
            if k + 1 - start >= args.shard_size:
                ranges.append((start, k + 1))
                start = k + 1
    if start < len(files):
        ranges.append((start, len(files)))
    return ranges


# -- outputs -----------------------------------------------------------------------------------------------------
def _palette(n: int) -> list[str]:
    """n distinct hex colours (matplotlib's tab20, repeated past 20 classes)."""
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return ["#{:02x}{:02x}{:02x}".format(*(int(255 * v) for v in cmap(i % 20)[:3])) for i in range(n)]


def label_config(class_names: list[str]) -> str:
    """A Label Studio labelling config: the image, the selected regions as red boxes, brush and polygon tools."""
    labels = "\n".join(
        f"    <Label value={quoteattr(n)} background={quoteattr(c)}/>"
        for n, c in zip(class_names, _palette(len(class_names)), strict=True)
    )
    return f"""<View>
  <Header value="Label every pixel inside the red boxes (the selected regions); pixels outside them are not used"/>
  <Image name="image" value="$image" zoom="true" zoomControl="true"/>
  <RectangleLabels name="region" toName="image">
    <Label value={quoteattr(RECTANGLE_LABEL)} background="#ff0000"/>
  </RectangleLabels>
  <BrushLabels name="brush" toName="image">
{labels}
  </BrushLabels>
  <PolygonLabels name="polygon" toName="image" strokeWidth="2">
{labels}
  </PolygonLabels>
</View>
"""


def label_studio_tasks(regions: list[dict], url_prefix: str) -> list[dict]:
    """One task per selected image (in the order of its best region), its regions as predicted rectangles."""
    by_image: dict[str, list[dict]] = {}
    for r in regions:
        by_image.setdefault(r["image"], []).append(r)
    tasks = []
    for image, rs in by_image.items():
        width, height = rs[0]["image_size"]["width"], rs[0]["image_size"]["height"]
        result = [
            {
                "id": f"fastral-{r['order']}",
                "from_name": "region",
                "to_name": "image",
                "type": "rectanglelabels",
                "original_width": width,
                "original_height": height,
                "image_rotation": 0,
                "value": {
                    "x": 100 * r["box"]["x"] / width,
                    "y": 100 * r["box"]["y"] / height,
                    "width": 100 * r["box"]["width"] / width,
                    "height": 100 * r["box"]["height"] / height,
                    "rotation": 0,
                    "rectanglelabels": [RECTANGLE_LABEL],
                },
            }
            for r in rs
        ]
        model_version = f"fastral-{rs[0]['policy']}-{rs[0]['network_hash']}"
        tasks.append(
            {
                "data": {"image": url_prefix + quote(image), "fastral_image": image},
                "predictions": [{"model_version": model_version, "score": rs[0]["score"], "result": result}],
            }
        )
    return tasks


def overlay_name(image: str) -> str:
    """A flat file name for an image's overlay ('a/b.jpg' -> 'a__b.jpg.png')."""
    return image.replace("/", "__") + ".png"


def write_overlays(root: Path, regions: list[dict], out: Path) -> None:
    """Each selected image with its regions drawn in red and numbered by priority."""
    by_image: dict[str, list[dict]] = {}
    for r in regions:
        by_image.setdefault(r["image"], []).append(r)
    for image, rs in by_image.items():
        im = Image.fromarray(read_image(root / image))
        draw = ImageDraw.Draw(im)
        for r in rs:
            b = r["box"]
            draw.rectangle([b["x"], b["y"], b["x"] + b["width"] - 1, b["y"] + b["height"] - 1], outline="red", width=2)
            draw.text((b["x"] + 3, b["y"] + 2), str(r["order"]), fill="red")
        atomic_write(out / overlay_name(image), lambda f, im=im: im.save(f, format="PNG"))


def write_outputs(selection: Selection, out: Path, url_prefix: str) -> None:
    regions = selection.regions()
    write_json(out / "selected_regions.json", selection.to_json())
    config = label_config(selection.meta["class_names"]).encode()
    atomic_write(out / "label_studio" / "config.xml", lambda f: f.write(config))
    write_json(out / "label_studio" / "tasks.json", label_studio_tasks(regions, url_prefix))
    write_overlays(selection.root, regions, out / "overlays")


# -- command line ------------------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fastral.select",
        description="Score every region of a folder of unlabelled images and write the best --budget regions for "
        "labelling (selected_regions.json, a Label Studio project, overlays).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--images", type=Path, required=True, help="folder of PNG/JPEG images (searched recursively)")
    p.add_argument("--checkpoint", type=Path, required=True, help="segmentation network (fastral.train / run)")
    p.add_argument("--policy", choices=POLICIES, default="entropy", help="how regions are scored")
    p.add_argument("--policy-checkpoint", type=Path, help="ralis: the query network (fastral.run's policy_seed<s>.pt)")
    p.add_argument(
        "--state-images", type=Path, help="ralis: folder whose first regions are the state set (default: --images)"
    )
    p.add_argument("--budget", type=int, required=True, help="number of regions to select")
    p.add_argument("--region", type=int, nargs=2, metavar=("H", "W"), required=True, help="region size in pixels")
    p.add_argument(
        "--labelled",
        type=Path,
        help="JSON of regions already labelled (labelled.json or a previous "
        "selected_regions.json): a region that shares a pixel with one is never picked",
    )
    p.add_argument(
        "--classes",
        help="class names, comma-separated, or a data set name (camvid, cityscapes, ...); "
        "default: the data set whose class count matches the checkpoint",
    )
    p.add_argument("--bald-samples", type=int, default=20, help="bald: MC-dropout samples per image")
    p.add_argument("--seed", type=int, default=0, help="seed of uniform scores and of BALD's dropout masks")
    p.add_argument(
        "--image-url-prefix",
        help="prefix of each task's image URL in tasks.json (+ the path relative "
        "to --images); default '/data/local-files/?d=<name of --images>/', Label Studio's local-files "
        "serving with LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT = the folder above --images and a local "
        "storage at --images (README)",
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    ray = p.add_argument_group("Ray (needs the [ray] extra; --images must be readable on every node)")
    ray.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="score shards of the folder with Ray Data: alone, on a new local Ray instance; with auto, "
        "host:port or ray://host:10001, on that cluster (the same selection)",
    )
    ray.add_argument(
        "--ray-workers",
        type=int,
        help="scoring actors, each with the network loaded once (default: "
        "one per CPU of the cluster, one per GPU with --device cuda)",
    )
    ray.add_argument("--shard-size", type=int, default=32, help="files per shard (one actor call)")
    return p


def class_names_for(spec: str | None, num_classes: int, p: argparse.ArgumentParser) -> list[str]:
    """The network's class names from ``--classes`` (a list or a data set name) or the data set presets."""
    if spec is None:
        matches = {tuple(pr.class_names) for pr in PRESETS.values() if len(pr.class_names) == num_classes}
        if len(matches) != 1:
            p.error(
                f"argument --classes: the checkpoint has {num_classes} classes and no known data set gives "
                "unambiguous names for them; pass --classes name1,name2,..."
            )
        return list(matches.pop())
    names = list(PRESETS[spec].class_names) if spec in PRESETS else [n.strip() for n in spec.split(",")]
    if len(names) != num_classes or len(set(names)) != len(names) or "" in names or RECTANGLE_LABEL in names:
        p.error(
            f"argument --classes: expected {num_classes} distinct non-empty class names (the checkpoint's "
            f"classes, none called {RECTANGLE_LABEL!r}), got {spec!r}"
        )
    return names


def read_prior(path: Path) -> dict[str, list[tuple[int, int, int, int]]]:
    """Relative image path -> (y, x, h, w) boxes of a labelled.json or selected_regions.json."""
    obj = read_json(path, "argument --labelled: file")
    if not isinstance(obj, dict) or not isinstance(obj.get("regions"), list):
        raise FolderError(
            f"argument --labelled: '{path}' has no 'regions' list (expected labelled.json or selected_regions.json)"
        )
    prior: dict[str, list] = {}
    for r in obj["regions"]:
        prior.setdefault(r["image"], []).append(box_tuple(r["box"]))
    return prior


def labelled_distribution(path: Path | None, images: Path, num_classes: int) -> torch.Tensor:
    """``[L, C+1]`` ground-truth class distributions of the regions of a labelled.json (ralis's KL input)."""
    if path is None or read_json(path, "argument --labelled: file").get("format") != LABELLED_FORMAT:
        return torch.zeros(0, num_classes + 1)
    folder = PartialLabelFolder(images, path.parent)
    counts = []
    for i, (y, x, h, w) in folder.regions:
        ids = folder.label(i)[y : y + h, x : x + w].reshape(-1).numpy()
        per = np.bincount(np.minimum(ids, num_classes), minlength=num_classes + 1)  # void (255) in the last slot
        counts.append(per)
    return ground_truth_distribution(torch.from_numpy(np.stack(counts)))


def check_args(args: argparse.Namespace, p: argparse.ArgumentParser) -> None:
    def need(ok: bool, flag: str, expected: str) -> None:
        if not ok:
            value = getattr(args, flag.replace("-", "_"))
            p.error(f"argument --{flag}: expected {expected}, got {str(value) if isinstance(value, Path) else value!r}")

    need(args.budget >= 1, "budget", "an integer >= 1")
    need(min(args.region) >= 1, "region", "two sizes >= 1")
    need(args.bald_samples >= 1, "bald-samples", "an integer >= 1")
    need(args.threads is None or args.threads >= 1, "threads", "an integer >= 1")
    need(args.images.is_dir(), "images", "an existing folder")
    need(args.checkpoint.is_file(), "checkpoint", "an existing checkpoint file")
    need(args.labelled is None or args.labelled.is_file(), "labelled", "an existing JSON file")
    need(
        args.policy != "ralis" or args.policy_checkpoint is not None,
        "policy-checkpoint",
        "a query-network file with --policy ralis",
    )
    need(args.policy_checkpoint is None or args.policy_checkpoint.is_file(), "policy-checkpoint", "an existing file")
    need(args.state_images is None or args.state_images.is_dir(), "state-images", "an existing folder")
    need(args.ray_workers is None or args.ray_workers >= 1, "ray-workers", "an integer >= 1")
    need(args.shard_size >= 1, "shard-size", "an integer >= 1")
    if args.ray is not None and (missing := ray_missing()):
        p.error(f"argument --ray: {missing}")


def make_scorer(args, model, device, timer: Timer, num_classes: int) -> Scorer:
    if args.policy == "uniform":
        return UniformScorer(timer, args.seed)
    if args.policy == "entropy":
        return EntropyScorer(timer, model, device)
    if args.policy == "bald":
        return BaldScorer(timer, model, device, args.bald_samples, args.seed)
    scorer = RalisScorer(
        timer, model, device, args.policy_checkpoint, labelled_distribution(args.labelled, args.images, num_classes)
    )
    source = args.state_images or args.images
    state_files = image_files(source)
    scorer.set_state((x for _, x in readable_images(source, state_files, [])), tuple(args.region), str(source))
    return scorer


def main(argv: list[str] | None = None) -> dict:
    p = parser()
    args = p.parse_args(argv)
    check_args(args, p)
    if args.threads:
        torch.set_num_threads(args.threads)
    files = image_files(args.images)
    if not files:
        p.error(f"argument --images: expected a folder with PNG/JPEG images, found none under '{args.images}'")
    try:
        model, _ = load_checkpoint(args.checkpoint)
        device = torch.device(args.device)
        model.to(device)
        classes = class_names_for(args.classes, model.num_classes, p)
        prior = read_prior(args.labelled) if args.labelled else {}
        timer = Timer()
        if args.ray is None:
            scorer = make_scorer(args, model, device, timer, model.num_classes)
        else:  # the actors make their own
            try:
                connect(args.ray)
            except ConnectionError as exc:
                p.error(f"argument --ray: {exc}")
        meta = {
            "policy": args.policy,
            "checkpoint": str(args.checkpoint),
            "network_hash": weights_hash(model),
            "region": list(args.region),
            "budget": args.budget,
            "seed": args.seed,
            "class_names": classes,
            "ignore_index": IGNORE_INDEX,
        }
        if args.policy == "bald":
            meta["bald_samples"] = args.bald_samples
        if args.policy == "ralis":
            meta["policy_checkpoint"] = str(args.policy_checkpoint)
        with timer.section("total"):
            if args.ray is None:
                selection = select_regions(
                    args.images,
                    files,
                    scorer,
                    args.budget,
                    tuple(args.region),
                    prior,
                    meta,
                    progress=not args.no_progress,
                )
            else:
                selection = select_regions_ray(args, files, prior, meta, timer)
        if not len(selection.candidates.scores):
            sys.exit(
                f"fastral.select: error: no region to select under '{args.images}': "
                f"{len(selection.skipped)} images skipped, every other region already labelled"
            )
        url_prefix = args.image_url_prefix or f"/data/local-files/?d={quote(args.images.resolve().name)}/"
        write_outputs(selection, args.out, url_prefix)
    except (FolderError, CheckpointError, FileNotFoundError, ImageFileError) as exc:
        sys.exit(f"fastral.select: error: {exc}")
    finally:
        disconnect()
    for s in selection.skipped:
        print(f"skipped {s['image']}: {s['reason']}", file=sys.stderr)
    n_images = len(set(selection.candidates.files.tolist()))
    print(
        f"selected {len(selection.candidates.scores)} regions in {n_images} images out of "
        f"{selection.regions_scored} regions of {selection.images_scored} images ({len(selection.skipped)} "
        f"skipped); wrote {args.out}/selected_regions.json, label_studio/, overlays/"
    )
    return selection.to_json()


if __name__ == "__main__":
    main(sys.argv[1:])
