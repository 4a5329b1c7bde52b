"""Turn a labelling tool's answers for a selection into partial label masks that ``fastral.train`` consumes.

    python -m fastral.labels import --selection round1/selected_regions.json --label-studio export.json --out labels/
    python -m fastral.labels import --selection round1/selected_regions.json --masks my_masks/ --out labels/

Inputs: a Label Studio JSON export of the project ``fastral.select`` wrote (brush results, RLE-encoded, and polygon
results; the pre-annotated boxes are ignored), or a folder of PNG masks of class ids named like the images
(``street/c.jpg`` -> ``street/c.png``; 255 = unlabelled) from any other tool. Only the pixels inside the
selection's regions are kept; the rest of each label is 255. Results are painted in their order, a later one over
an earlier one.

Writes to ``--out``: one label PNG per image (the image's path with ``.png``; class ids, 255 = unlabelled), and
``labelled.json``: the images with their label files and the labelled regions, updated in place when ``--out``
already holds an earlier round's labels (an image labelled again keeps its earlier regions' pixels), so
``fastral.select --labelled`` never picks them again and ``fastral.train --images --labels`` trains on them.

Problems are reported per task and never dropped silently: a missing image, a label whose size is not the
image's, an unknown class name or id, an annotation with no pixel inside any selected region (a task with one of
these is skipped, or just the offending result for class names and stray annotations), a selected image without
an answer and a region left without any labelled pixel. They are printed and saved as ``import_report.json``;
the exit status is then 1, after the clean tasks have been written.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from ._extras import missing_extra

try:  # needs the [al] extra (Pillow): say so instead of an ImportError
    from PIL import Image

    from ._atomic import atomic_write, write_json
    from .data import IGNORE_INDEX, ImageFileError
    from .data.base import _open
    from .data.folder import LABELLED_FILE, LABELLED_FORMAT, FolderError, box_tuple, label_path, read_json
    from .select import SELECTION_FORMAT
except ModuleNotFoundError as exc:
    raise missing_extra("python -m fastral.labels", exc) from exc

REPORT_FILE = "import_report.json"


# -- Label Studio brush RLE ---------------------------------------------------------------------------------------
def decode_rle(rle: list[int], num_pixels: int) -> np.ndarray:
    """A Label Studio brush RLE (a list of bytes) as a bool mask of ``num_pixels`` pixels.

    The format is label-studio-sdk's ``converter.brush`` (rle-pack): a bit stream of 32 bits value count, 5 bits
    word size - 1, four 4-bit run-length sizes - 1, then groups: 1 bit "repeat", 2 bits selecting a run-length
    size, the run length - 1, and one word (repeat) or that many words (literal). Values are RGBA bytes; a pixel
    is painted where its alpha (every 4th value) is non-zero.
    """
    bits = np.unpackbits(np.asarray(rle, np.uint8))
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        chunk = bits[pos : pos + n]
        pos += n
        if len(chunk) < n:
            raise ValueError("brush RLE ends early (truncated or not Label Studio's format)")
        return int(chunk.dot(1 << np.arange(n - 1, -1, -1)))

    num, word = read(32), read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    if num != 4 * num_pixels:
        raise ValueError(f"brush RLE holds {num} values, expected {4 * num_pixels} (4 per pixel of the image)")
    out, i = np.zeros(num, np.uint8), 0
    while i < num:
        repeat = read(1)
        j = i + 1 + read(sizes[read(2)])
        if repeat:
            out[i:j] = read(word)
        else:
            out[i:j] = [read(word) for _ in range(j - i)]
        i = j
    return out[3::4] > 0


def polygon_mask(points_percent: list, width: int, height: int) -> np.ndarray:
    """Bool ``[H, W]`` of a Label Studio polygon (vertices in percent of the image width and height): the pixels
    whose centre lies inside it (even-odd rule). Pixel ``(i, j)`` spans ``[j, j+1) x [i, i+1)`` in image
    coordinates, so a polygon along a region's borders covers exactly that region's pixels (PIL's rasteriser
    would add the row and column on its far edges, which may belong to a neighbouring region)."""
    pts = np.asarray(points_percent, dtype=np.float64).reshape(-1, 2) * (width / 100, height / 100)
    (x0, y0), (x1, y1) = pts.T, np.roll(pts, -1, axis=0).T
    mask = np.zeros((height, width), bool)
    first, last = max(int(np.floor(y0.min())), 0), min(int(np.ceil(y0.max())), height)
    for row in range(first, last):
        centre = row + 0.5
        crosses = (y0 <= centre) != (y1 <= centre)  # half-open: a vertex on the scan line counts once
        t = (centre - y0[crosses]) / (y1[crosses] - y0[crosses])
        xs = np.sort(x0[crosses] + t * (x1[crosses] - x0[crosses]))
        for a, b in zip(xs[0::2], xs[1::2], strict=True):  # pixel centres j + 0.5 in [a, b)
            mask[row, max(math.ceil(a - 0.5), 0) : max(min(math.ceil(b - 0.5), width), 0)] = True
    return mask


# -- the selection ------------------------------------------------------------------------------------------------
class SelectionImage:
    """One selected image: its regions, its size, and the label being assembled for it."""

    def __init__(self, image: str, width: int, height: int):
        self.image, self.width, self.height = image, width, height
        self.regions: list[dict] = []  # selection entries
        self.inside = np.zeros((height, width), bool)
        self.label = np.full((height, width), IGNORE_INDEX, np.uint8)

    def add_region(self, entry: dict) -> None:
        y, x, h, w = box_tuple(entry["box"])
        self.regions.append(entry)
        self.inside[y : y + h, x : x + w] = True


def read_selection(path: Path) -> tuple[dict, dict[str, SelectionImage]]:
    sel = read_json(path, "argument --selection: file", SELECTION_FORMAT)
    images: dict[str, SelectionImage] = {}
    for r in sel["regions"]:
        size = r["image_size"]
        images.setdefault(r["image"], SelectionImage(r["image"], size["width"], size["height"])).add_region(r)
    return sel, images


# -- answers -----------------------------------------------------------------------------------------------------
class Report:
    """Problems per task (image); ``skipped`` images contribute no labels."""

    def __init__(self):
        self.problems: dict[str, list[str]] = {}
        self.skipped: set[str] = set()

    def add(self, image: str, problem: str, skip: bool = False) -> None:
        self.problems.setdefault(image, []).append(problem)
        if skip:
            self.skipped.add(image)


def paint(target: SelectionImage, mask: np.ndarray, class_id: int, what: str, report: Report) -> None:
    """Paint ``class_id`` where ``mask`` is inside the image's regions; report a mask with no pixel inside."""
    inside = mask & target.inside
    if not inside.any():
        report.add(
            target.image, f"{what}: its {int(mask.sum())} pixels are all outside every selected region; not used"
        )
        return
    target.label[inside] = class_id


def import_label_studio(
    export: Path, images: dict[str, SelectionImage], class_ids: dict[str, int], report: Report
) -> set[str]:
    """Paint each task's latest answer; returns the images that had one."""
    tasks = read_json(export, "argument --label-studio: export")
    if not isinstance(tasks, list):
        raise FolderError(f"argument --label-studio: '{export}' is not a Label Studio JSON export (a list of tasks)")
    answered = set()
    for n, task in enumerate(tasks):
        image = (task.get("data") or {}).get("fastral_image")
        name = image or f"task {task.get('id', n)}"
        if image not in images:
            report.add(
                name,
                "this task is not in the selection (no 'fastral_image' in its data, or another "
                "selection's image); not used",
                skip=True,
            )
            continue
        answers = [a for a in task.get("annotations", []) if not a.get("was_cancelled")]
        if not answers:
            continue  # reported with the other images without an answer
        if len(answers) > 1:
            report.add(image, f"{len(answers)} annotations; used the latest (id {answers[-1].get('id')})")
        answered.add(image)
        target = images[image]
        for k, result in enumerate(answers[-1].get("result", [])):
            kind = result.get("type")
            if kind == "rectanglelabels":
                continue  # the pre-annotated selected regions
            value = result.get("value", {})
            names = value.get(kind, [])
            what = f"result {k} ({kind} {names[0] if names else '?'!r})"
            size = (result.get("original_width"), result.get("original_height"))
            if size != (target.width, target.height):
                report.add(
                    image,
                    f"{what}: annotated on a {size[0]}x{size[1]} image, the selected image is "
                    f"{target.width}x{target.height}; task not used",
                    skip=True,
                )
                break
            if kind not in ("brushlabels", "polygonlabels") or len(names) != 1:
                report.add(image, f"{what}: expected a brush or polygon result with one label; not used")
                continue
            if names[0] not in class_ids:
                report.add(image, f"{what}: unknown class name {names[0]!r} (known: {sorted(class_ids)}); not used")
                continue
            try:
                if kind == "brushlabels":
                    mask = decode_rle(value["rle"], target.width * target.height).reshape(target.height, target.width)
                else:
                    mask = polygon_mask(value["points"], target.width, target.height)
            except (KeyError, ValueError, TypeError) as exc:
                report.add(image, f"{what}: cannot decode it ({exc}); not used")
                continue
            paint(target, mask, class_ids[names[0]], what, report)
    return answered


def import_masks(folder: Path, images: dict[str, SelectionImage], num_classes: int, report: Report) -> set[str]:
    """Copy each image's mask file inside its regions; returns the images that had one."""
    if not folder.is_dir():
        raise FolderError(f"argument --masks: '{folder}' does not exist or is not a folder")
    answered = set()
    for image, target in images.items():
        path = folder / label_path(image)
        if not path.is_file():
            continue  # reported with the other images without an answer
        try:
            with _open(path, "mask") as im:
                if im.mode not in ("L", "P"):
                    raise ImageFileError(f"mask file '{path}' has PIL mode {im.mode!r}, expected 8-bit class ids")
                ids = np.array(im)
        except ImageFileError as exc:
            report.add(image, f"{exc}; not used", skip=True)
            continue
        answered.add(image)
        if ids.shape != (target.height, target.width):
            report.add(
                image,
                f"mask '{path}' is {ids.shape[1]}x{ids.shape[0]}, the selected image is "
                f"{target.width}x{target.height}; not used",
                skip=True,
            )
            continue
        bad = np.unique(ids[target.inside & (ids >= num_classes) & (ids != IGNORE_INDEX)])
        if bad.size:
            report.add(
                image,
                f"mask '{path}' holds unknown class ids {bad.tolist()[:10]} inside the selected "
                f"regions (classes are 0..{num_classes - 1}, 255 = unlabelled); not used",
                skip=True,
            )
            continue
        target.label[target.inside] = ids[target.inside]
    return answered


# -- output ------------------------------------------------------------------------------------------------------
def check_images(root: Path, images: dict[str, SelectionImage], report: Report) -> None:
    """Every selected image must still exist under ``root`` with its selected size."""
    for image, target in images.items():
        try:
            with _open(root / image, "image") as im:
                size = (im.width, im.height)
        except ImageFileError as exc:
            report.add(image, f"{exc}; not used", skip=True)
            continue
        if size != (target.width, target.height):
            report.add(
                image,
                f"image is {size[0]}x{size[1]} now, {target.width}x{target.height} when it was selected; not used",
                skip=True,
            )


def write_labels(out: Path, sel: dict, images: dict[str, SelectionImage], source: str, report: Report) -> dict:
    """Write the label PNGs of the clean images and the updated labelled.json; returns labelled.json."""
    previous = out / LABELLED_FILE
    state = (
        read_json(previous, "labels file", LABELLED_FORMAT)
        if previous.exists()
        else {"format": LABELLED_FORMAT, "class_names": sel["class_names"], "images": [], "regions": []}
    )
    if state["class_names"] != sel["class_names"]:
        raise FolderError(f"'{previous}' has classes {state['class_names']}, the selection {sel['class_names']}")
    entries = {e["image"]: e for e in state["images"]}
    known = {(r["image"], tuple(box_tuple(r["box"]))) for r in state["regions"]}
    added = []
    for image, target in images.items():
        if image in report.skipped:
            continue
        regions = []
        for r in target.regions:
            y, x, h, w = box_tuple(r["box"])
            if (target.label[y : y + h, x : x + w] == IGNORE_INDEX).all():
                report.add(image, f"region {r['order']} (x={x}, y={y}, {w}x{h}) received no label; not added")
            elif (image, (y, x, h, w)) not in known:
                regions.append(
                    {
                        "image": image,
                        "box": r["box"],
                        "selection_order": r["order"],
                        "source": source,
                        "network_hash": r["network_hash"],
                        "policy": r["policy"],
                    }
                )
        if not regions:
            continue
        label = target.label
        if image in entries:  # labelled in an earlier round: keep those pixels outside this round's regions
            with _open(out / entries[image]["label"], "label") as im:
                earlier = np.array(im)
            label = np.where(target.inside, label, earlier).astype(np.uint8)
        png = Image.fromarray(label)
        atomic_write(out / label_path(image), lambda f, png=png: png.save(f, format="PNG"))
        entries[image] = {"image": image, "label": label_path(image), "width": target.width, "height": target.height}
        added += regions
    state["regions"] += sorted(added, key=lambda r: r["selection_order"])  # this round's in priority order
    state.update(images=sorted(entries.values(), key=lambda e: e["image"]), images_root=sel["images_root"])
    write_json(previous, state)
    return state


def run_import(args: argparse.Namespace) -> tuple[dict, Report]:
    sel, images = read_selection(args.selection)
    root = args.images or Path(sel["images_root"])
    report = Report()
    check_images(root, images, report)
    class_names = sel["class_names"]
    if args.label_studio is not None:
        answered = import_label_studio(args.label_studio, images, {n: i for i, n in enumerate(class_names)}, report)
    else:
        answered = import_masks(args.masks, images, len(class_names), report)
    for image in images:
        if image not in answered and image not in report.skipped:
            what = "no annotated task in the export" if args.label_studio is not None else "no mask file"
            report.add(image, f"{what}; its regions stay unlabelled", skip=True)
    state = write_labels(args.out, sel, images, "label-studio" if args.label_studio else "masks", report)
    write_json(args.out / REPORT_FILE, {"problems": report.problems, "skipped_images": sorted(report.skipped)})
    return state, report


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fastral.labels", description="Labels of selected regions.")
    sub = p.add_subparsers(dest="command", required=True)
    imp = sub.add_parser(
        "import",
        help="turn a labelling tool's answers into partial label PNGs + labelled.json",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    imp.add_argument("--selection", type=Path, required=True, help="selected_regions.json of fastral.select")
    src = imp.add_mutually_exclusive_group(required=True)
    src.add_argument("--label-studio", type=Path, metavar="EXPORT.json", help="a Label Studio JSON export")
    src.add_argument("--masks", type=Path, metavar="DIR", help="a folder of class-id PNG masks named like the images")
    imp.add_argument("--images", type=Path, help="the images folder (default: the selection's images_root)")
    imp.add_argument("--out", type=Path, required=True, help="labels folder (created or updated)")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    try:
        state, report = run_import(args)
    except FolderError as exc:
        sys.exit(f"fastral.labels: error: {exc}")
    for image, problems in sorted(report.problems.items()):
        for problem in problems:
            print(f"{image}: {problem}", file=sys.stderr)
    print(f"{args.out / LABELLED_FILE}: {len(state['regions'])} labelled regions in {len(state['images'])} images")
    if report.problems:
        sys.exit(
            f"fastral.labels: {sum(map(len, report.problems.values()))} problems in "
            f"{len(report.problems)} tasks (see above and {args.out / REPORT_FILE}); the clean tasks were "
            "written"
        )
    return state


if __name__ == "__main__":
    main(sys.argv[1:])
