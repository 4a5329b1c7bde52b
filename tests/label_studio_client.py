"""An annotator for tests/test_label_studio.py, run with the Python of Label Studio's own environment.

label-studio-sdk pins numpy and other packages differently from fastral, so it lives in a separate virtual
environment (see the README); this script only needs the SDK, numpy and Pillow. Through the SDK it creates a
project with fastral's labelling config, imports fastral's tasks, paints the ground truth of every selected
region as brush strokes (one per class, RLE-encoded by the SDK's own encoder) except on the last task, where each
selected region gets one polygon along its borders labelled with the region's most common class (named in
polygon_task.json), exports the project as JSON and fetches one task image through Label Studio's local-files
serving.

    python label_studio_client.py URL TOKEN OUT_DIR SELECTION_JSON TRUTH_DIR
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from label_studio_sdk import LabelStudio
from label_studio_sdk.converter.brush import mask2rle
from PIL import Image


def main(url: str, token: str, out: Path, selection: Path, truth: Path) -> None:
    sel = json.loads(selection.read_text())
    ls = LabelStudio(base_url=url, api_key=token)
    config = (selection.parent / "label_studio" / "config.xml").read_text()
    project = ls.projects.create(title="fastral round trip", label_config=config)
    ls.import_storage.local.create(project=project.id, path=sel["images_root"], use_blob_urls=False)
    tasks = json.loads((selection.parent / "label_studio" / "tasks.json").read_text())
    ls.projects.import_tasks(id=project.id, request=tasks)
    names = sel["class_names"]
    listed = list(ls.tasks.list(project=project.id))
    for task in listed:
        image = task.data["fastral_image"]
        gt = np.array(Image.open(truth / Path(image).with_suffix(".png")))
        h, w = gt.shape
        boxes = [r["box"] for r in sel["regions"] if r["image"] == image]
        if task is listed[-1]:
            result = [polygon(box, names[most_common_class(gt, box)], w, h) for box in boxes]
            ls.annotations.create(id=task.id, result=result, lead_time=1.0)
            (out / "polygon_task.json").write_text(json.dumps({"image": image}))
            continue
        inside = np.zeros_like(gt, bool)
        for b in boxes:
            inside[b["y"] : b["y"] + b["height"], b["x"] : b["x"] + b["width"]] = True
        result = []
        for c in np.unique(gt[inside]):
            if c == 255:
                continue  # void stays unpainted
            mask = ((gt == c) & inside).astype(np.uint8) * 255
            result.append(
                {
                    "from_name": "brush",
                    "to_name": "image",
                    "type": "brushlabels",
                    "original_width": w,
                    "original_height": h,
                    "image_rotation": 0,
                    "value": {"format": "rle", "rle": mask2rle(mask), "brushlabels": [names[c]]},
                }
            )
        ls.annotations.create(id=task.id, result=result, lead_time=1.0)
    export = ls.projects.exports.create(id=project.id, title="fastral")
    for _ in range(120):
        if export.status == "completed":
            break
        time.sleep(0.5)
        export = ls.projects.exports.get(id=project.id, export_pk=export.id)
    data = b"".join(ls.projects.exports.download(id=project.id, export_pk=export.id, export_type="JSON"))
    (out / "export.json").write_bytes(data)
    first = tasks[0]["data"]
    request = urllib.request.Request(url + first["image"], headers={"Authorization": f"Token {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        (out / "served_image.bin").write_bytes(response.read())
    (out / "served_image.json").write_text(json.dumps({"image": first["fastral_image"]}))


def most_common_class(gt: np.ndarray, b: dict) -> int:
    """The most common non-void class id inside box ``b`` (0 when the box is all void)."""
    ids = gt[b["y"] : b["y"] + b["height"], b["x"] : b["x"] + b["width"]]
    counts = np.bincount(ids[ids != 255], minlength=1)
    return int(counts.argmax())


def polygon(b: dict, label: str, w: int, h: int) -> dict:
    """A polygon result along the borders of box ``b``, its vertices in percent of the image size."""
    x0, y0, x1, y1 = b["x"], b["y"], b["x"] + b["width"], b["y"] + b["height"]
    points = [[100 * x / w, 100 * y / h] for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
    value = {"points": points, "polygonlabels": [label]}
    return {
        "from_name": "polygon",
        "to_name": "image",
        "type": "polygonlabels",
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "value": value,
    }


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]))
