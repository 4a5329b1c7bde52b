"""The RALIS splits D_S / D_T / D_R / D_V (+ the final test split), built once and shared as a JSON file.

D_S (the state set) is chosen so that its class distribution is close to the train set's: among the labelled
part of a random permutation, a random search over subsets followed by swap descent minimises
``KL(p_train || p_DS)``, which is reported. All sets drawn from one split are disjoint by construction, and a
loaded file is checked for it (the official Cityscapes split puts the 10 D_S images into D_V as well).

Indices in a split file are data-set image indices into the named split, in sorted file order; the relative
file path of each is stored too and checked against the data set on use, so a file built on another copy of the
data cannot silently point at other images.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .._atomic import write_json
from .._validate import MAX_SEED
from .presets import ALSplitRecipe

SPLITS_FORMAT = "fastral-al-splits/1"
SET_NAMES = ("d_s", "d_t", "d_r", "d_v", "test")


@dataclass
class SplitSet:
    """Images of one RALIS set: data-set image indices into ``split`` (None = the whole split)."""

    split: str
    indices: list[int] | None = None
    files: list[str] | None = None  #: relative path of each index, checked against the data set


@dataclass
class ALSplits:
    dataset: str
    seed: int
    sets: dict[str, SplitSet]
    d_s_kl: float | None = None  #: KL(p_train || p_DS) of the chosen state set (natural log)
    class_distribution: dict[str, list[float]] = field(default_factory=dict)  #: "train" and "d_s"

    def __post_init__(self):
        missing = [n for n in SET_NAMES if n not in self.sets]
        if missing:
            raise ValueError(f"splits: sets {missing} missing; expected all of {SET_NAMES}")
        self.check_disjoint()

    def check_disjoint(self) -> None:
        """Raise if two sets share an image (e.g. D_S inside D_V, a leak of the official Cityscapes split)."""
        for i, a in enumerate(SET_NAMES):
            for b in SET_NAMES[i + 1 :]:
                sa, sb = self.sets[a], self.sets[b]
                if sa.split != sb.split:
                    continue
                if sa.indices is None or sb.indices is None:
                    raise ValueError(f"splits: {a} and {b} both use split {sa.split!r} and one is the whole split")
                shared = sorted(set(sa.indices) & set(sb.indices))
                if shared:
                    raise ValueError(f"splits: {a} and {b} share images {shared[:10]} of split {sa.split!r}")

    def split_of(self, name: str) -> str:
        return self._set(name).split

    def indices(self, name: str, dataset=None) -> list[int]:
        """Data-set image indices of set ``name`` into its split; ``dataset`` (that split) is checked against
        the stored file names and resolves a whole-split set."""
        s = self._set(name)
        if dataset is not None:
            self.check(name, dataset)
        if s.indices is not None:
            return list(s.indices)
        if dataset is None:
            raise ValueError(f"splits: {name} is the whole split {s.split!r}; pass that data set to list it")
        return list(range(len(dataset)))

    def check(self, name: str, dataset) -> None:
        """Raise unless ``dataset`` is the split set ``name`` refers to and holds the same files at its indices."""
        s = self._set(name)
        if dataset.split != s.split or dataset.name != self.dataset:
            raise ValueError(f"splits: {name} is in {self.dataset}/{s.split}, got {dataset.name}/{dataset.split}")
        if s.indices is None:
            return
        if max(s.indices, default=-1) >= len(dataset):
            raise ValueError(f"splits: {name} needs image {max(s.indices)} but {dataset!r} has {len(dataset)} images")
        for i, f in zip(s.indices, s.files or [], strict=False):
            if dataset.relpath(i) != f:
                raise ValueError(
                    f"splits: {name} image {i} of {s.split!r} is '{f}' in the split file but '{dataset.relpath(i)}' "
                    "in this data set: the file was built on a different copy of the data"
                )

    def _set(self, name: str) -> SplitSet:
        if name not in self.sets:
            raise KeyError(f"splits: unknown set {name!r}; expected one of {SET_NAMES}")
        return self.sets[name]

    def to_dict(self) -> dict:
        return {
            "format": SPLITS_FORMAT,
            "dataset": self.dataset,
            "seed": self.seed,
            "d_s_kl": self.d_s_kl,
            "class_distribution": self.class_distribution,
            "sets": {n: vars(s) for n, s in self.sets.items()},
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the splits as JSON, atomically."""
        return write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d) -> ALSplits:
        """Splits from their JSON form, every field checked (a ValueError names the field, the expected and the
        received value)."""
        if not isinstance(d, dict):
            raise ValueError(f"not a fastral split file: expected a JSON object, got {type(d).__name__}")
        if d.get("format") != SPLITS_FORMAT:
            raise ValueError(f"not a fastral split file: format {d.get('format')!r}, expected {SPLITS_FORMAT!r}")
        if not isinstance(d.get("dataset"), str) or not _is_int(d.get("seed")):
            raise ValueError(
                f"'dataset' must be a name and 'seed' an integer, got {d.get('dataset')!r} and {d.get('seed')!r}"
            )
        if not isinstance(d.get("sets"), dict):
            raise ValueError(f"'sets' must be an object of the sets {SET_NAMES}, got {d.get('sets')!r}")
        sets = {name: _set_from_dict(name, s) for name, s in d["sets"].items()}
        kl, distribution = d.get("d_s_kl"), d.get("class_distribution", {})
        if not (kl is None or isinstance(kl, (int, float))) or not isinstance(distribution, dict):
            raise ValueError(
                f"'d_s_kl' must be a number and 'class_distribution' an object, got {kl!r} and {distribution!r}"
            )
        return cls(d["dataset"], d["seed"], sets, d.get("d_s_kl"), d.get("class_distribution", {}))

    @classmethod
    def load(cls, path: str | os.PathLike) -> ALSplits:
        try:
            with open(path) as f:
                return cls.from_dict(json.load(f))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read split file '{path}': {exc!r}") from exc
        except ValueError as exc:
            raise ValueError(f"split file '{path}': {exc}") from None


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _set_from_dict(name: str, s) -> SplitSet:
    """One set of a split file, checked: a split name, and distinct image indices >= 0 with one file each."""
    where = f"sets.{name}"
    if name not in SET_NAMES:
        raise ValueError(f"{where}: unknown set; expected the sets {SET_NAMES}")
    if not isinstance(s, dict) or not isinstance(s.get("split"), str) or set(s) - {"split", "indices", "files"}:
        raise ValueError(f"{where}: expected {{'split': name, 'indices': [...], 'files': [...]}}, got {s!r}")
    indices, files = s.get("indices"), s.get("files")
    if indices is None:
        return SplitSet(s["split"])
    if not isinstance(indices, list) or not all(_is_int(i) for i in indices):
        raise ValueError(f"{where}.indices: expected a list of integer image indices, got {indices!r}")
    if not indices:
        raise ValueError(f"{where}.indices: expected at least one image, got an empty list")
    if min(indices) < 0:
        raise ValueError(f"{where}.indices: expected image indices >= 0, got {min(indices)}")
    repeated = sorted({i for i in indices if indices.count(i) > 1})
    if repeated:
        raise ValueError(f"{where}.indices: expected distinct image indices, got {repeated[:10]} more than once")
    if files is not None and (
        not isinstance(files, list) or len(files) != len(indices) or not all(isinstance(f, str) for f in files)
    ):
        raise ValueError(f"{where}.files: expected one file name per index ({len(indices)}), got {files!r}")
    return SplitSet(s["split"], indices, files)


def class_histograms(dataset, indices=None, progress: bool = True) -> np.ndarray:
    """Ground-truth pixels per class of each image, int64 ``[n, num_classes]`` (void excluded)."""
    indices = range(len(dataset)) if indices is None else indices
    rows = [dataset.class_counts(i) for i in tqdm(indices, desc="class histograms", disable=not progress)]
    return np.stack(rows) if rows else np.zeros((0, dataset.num_classes), np.int64)


def kl_to(reference: np.ndarray, counts: np.ndarray, eps: float = 1e-10) -> np.ndarray:
    """``KL(reference || normalised counts)`` for each row of ``counts`` (natural log), counts floored at eps
    and renormalised as ``scipy.stats.entropy`` does; ``reference`` is a distribution."""
    q = counts / np.maximum(counts.sum(-1, keepdims=True), eps)
    q = np.maximum(q, eps)
    q = q / q.sum(-1, keepdims=True)
    p = reference
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p / q), 0.0)
    return terms.sum(-1)


def choose_state_set(
    hist: np.ndarray, candidates: np.ndarray, size: int, rng: np.random.Generator, trials: int = 4096
) -> tuple[np.ndarray, float]:
    """``size`` rows of ``candidates`` whose summed class counts are closest (KL) to all of ``hist``.

    The best of ``trials`` random subsets, then swaps of one member for one non-member while KL decreases.
    Returns (sorted chosen indices, KL).
    """
    reference = hist.sum(0) / max(hist.sum(), 1)
    pool = hist[candidates].astype(np.float64)
    n = len(candidates)
    best, best_kl = None, np.inf
    for start in range(0, trials, 1024):  # in chunks, to bound memory for large candidate sets
        m = min(1024, trials - start)
        subsets = np.argsort(rng.random((m, n)), 1)[:, :size]
        kl = kl_to(reference, pool[subsets].sum(1))
        k = int(np.argmin(kl))
        if kl[k] < best_kl:
            best, best_kl = subsets[k].copy(), float(kl[k])
    improved = True
    while improved:  # swap descent: each accepted swap strictly lowers KL, so this terminates
        improved = False
        total = pool[best].sum(0)
        outside = np.setdiff1d(np.arange(n), best)
        for pos in range(size):
            trial = total - pool[best[pos]] + pool[outside]
            kl = kl_to(reference, trial)
            k = int(np.argmin(kl))
            if kl[k] < best_kl - 1e-12:
                best[pos], outside[k] = outside[k], best[pos]
                best_kl, total, improved = float(kl[k]), trial[k], True
    return np.sort(candidates[best]), best_kl


def build_splits(
    train, recipe: ALSplitRecipe | None = None, seed: int = 0, trials: int = 4096, progress: bool = True
) -> ALSplits:
    """Build D_S / D_T / D_R / D_V from ``train`` (the recipe's source split) and name the reward and test splits.

    A seeded permutation of the images gives the labelled part (D_S + D_T + D_R, uniformly sampled), the
    held-back test images (the next ``d_test``, if the recipe has them) and D_V (the next ``d_v`` images, or all
    the rest); D_S is chosen within the labelled part to match the class
    distribution of the whole of ``train`` (see :func:`choose_state_set`), D_T and D_R are the rest of it.
    """
    recipe = recipe or train.preset.al
    if recipe is None:
        raise ValueError(f"splits: data set {train.name!r} has no RALIS split recipe; pass recipe=...")
    if train.split != recipe.source:
        raise ValueError(f"splits: the recipe draws from split {recipe.source!r}, got the {train.split!r} split")
    n = len(train)
    n_labelled = recipe.d_s + recipe.d_t + (recipe.d_r or 0)
    n_test = recipe.d_test or 0
    n_v = n - n_labelled - n_test if recipe.d_v is None else recipe.d_v
    if n_labelled + n_test + n_v > n or n_v < 1:
        raise ValueError(
            f"splits: {train.name}/{train.split} has {n} images; the recipe needs {n_labelled} labelled "
            f"(d_s {recipe.d_s} + d_t {recipe.d_t} + d_r {recipe.d_r or 0})"
            + (f" plus d_test {n_test}" if n_test else "")
            + f" plus d_v {recipe.d_v or 'the rest (>= 1)'}"
        )
    hist = class_histograms(train, progress=progress)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    labelled, test = perm[:n_labelled], perm[n_labelled : n_labelled + n_test]
    d_v = perm[n_labelled + n_test : n_labelled + n_test + n_v]
    d_s, kl = choose_state_set(hist, labelled, recipe.d_s, rng, trials)
    rest = labelled[~np.isin(labelled, d_s)]
    d_t, d_r = rest[: recipe.d_t], rest[recipe.d_t :]

    def source_set(indices) -> SplitSet:
        indices = sorted(int(i) for i in indices)
        return SplitSet(train.split, indices, [train.relpath(i) for i in indices])

    sets = {"d_s": source_set(d_s), "d_t": source_set(d_t), "d_v": source_set(d_v)}
    sets["d_r"] = source_set(d_r) if recipe.d_r is not None else SplitSet(recipe.reward_split)
    sets["test"] = source_set(test) if n_test else SplitSet(recipe.test_split)
    total = hist.sum(0)
    distribution = {
        "train": (total / max(total.sum(), 1)).tolist(),
        "d_s": (hist[d_s].sum(0) / max(hist[d_s].sum(), 1)).tolist(),
    }
    return ALSplits(train.name, int(seed), {k: sets[k] for k in SET_NAMES}, kl, distribution)


def main(argv: list[str] | None = None) -> ALSplits:
    """``python -m fastral.data.splits``: build a data set's RALIS splits and write them as JSON."""
    import argparse

    from . import load_dataset
    from .presets import PRESETS

    p = argparse.ArgumentParser(
        prog="python -m fastral.data.splits",
        description="Build the RALIS splits D_S / D_T / D_R / D_V (+ test split) of a data set and save them as JSON.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", default="streets", choices=[n for n, pr in PRESETS.items() if pr.al], help="data set")
    p.add_argument("--data-root", type=Path, help="data folder of camvid / cityscapes (not for streets)")
    p.add_argument("--seed", type=int, default=0, help="seed of the permutation and of the D_S search")
    p.add_argument("--streets-seed", type=int, default=0, help="seed of the generated streets data set")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write (atomically)")
    args = p.parse_args(argv)
    for flag in ("seed", "streets_seed"):
        if not 0 <= getattr(args, flag) <= MAX_SEED:
            p.error(
                f"argument --{flag.replace('_', '-')}: expected a seed in [0, {MAX_SEED}], got {getattr(args, flag)}"
            )
    if args.dataset == "streets" and args.data_root is not None:
        p.error(f"argument --data-root: streets is generated and takes no data root, got '{args.data_root}'")
    recipe = PRESETS[args.dataset].al
    kw = {"seed": args.streets_seed} if args.dataset == "streets" else {"cache": False}
    train = load_dataset(args.dataset, args.data_root, recipe.source, **kw)
    splits = build_splits(train, recipe, seed=args.seed)
    splits.save(args.out)
    sizes = ", ".join(
        f"{n} {len(s.indices) if s.indices is not None else 'all of ' + s.split}" for n, s in splits.sets.items()
    )
    print(f"{args.dataset}: {sizes}; KL(train || D_S) = {splits.d_s_kl:.5f}\nwrote {args.out}")
    return splits


if __name__ == "__main__":
    main()
