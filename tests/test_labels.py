"""python -m fastral.labels import (masks and Label Studio exports) and fastral.train --images --labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _data_helpers import single_thread  # noqa: F401 (fixture)
from _labelling_helpers import camvid_folder, expected_label, fine_tune, run_select, tiny_checkpoint
from PIL import Image

from fastral import labels, train
from fastral.data.folder import PartialLabelFolder, label_path
from fastral.data.presets import CAMVID_CLASSES

REGION = ("45", "40")
CAMVID = list(CAMVID_CLASSES)  # the names fastral.select writes into the Label Studio config


@pytest.fixture
def selected(tmp_path, single_thread):  # noqa: F811
    images, truth = camvid_folder(tmp_path)
    ckpt = tiny_checkpoint(tmp_path / "net.pt")
    sel = run_select(images, ckpt, tmp_path / "sel", "--budget", "10", "--region", *REGION)
    return images, truth, ckpt, sel, tmp_path / "sel" / "selected_regions.json"


def write_masks(folder, truth, images):
    for rel in images:
        (folder / label_path(rel)).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(truth[rel]).save(folder / label_path(rel))


def test_decode_rle_matches_label_studio_sdk():
    # label_studio_sdk.converter.brush.mask2rle of a 4 x 5 mask with rows 1-2, columns 1-3 painted.
    rle = [0, 0, 0, 80, 57, 27, 254, 23, 0, 183, 255, 56, 5, 191, 252, 46, 0]
    expected = np.zeros((4, 5), bool)
    expected[1:3, 1:4] = True
    np.testing.assert_array_equal(labels.decode_rle(rle, 20).reshape(4, 5), expected)
    with pytest.raises(ValueError, match="holds 80 values, expected 96"):
        labels.decode_rle(rle, 24)


def test_masks_import_keeps_region_pixels_and_training_uses_exactly_them(selected, tmp_path):
    images, truth, ckpt, sel, sel_path = selected
    masks, out = tmp_path / "masks", tmp_path / "labels"
    chosen = {r["image"] for r in sel["regions"]}
    write_masks(masks, truth, chosen)
    state = labels.main(["import", "--selection", str(sel_path), "--masks", str(masks), "--out", str(out)])
    assert state == json.loads((out / "labelled.json").read_text())
    assert [(r["image"], r["box"]) for r in state["regions"]] == [(r["image"], r["box"]) for r in sel["regions"]]
    for rel in chosen:
        label = np.array(Image.open(out / label_path(rel)))
        np.testing.assert_array_equal(
            label, expected_label(truth[rel], [r["box"] for r in sel["regions"] if r["image"] == rel])
        )
    data = PartialLabelFolder(images, out)
    assert len(data.training_items()) == 10 and data.class_names == tuple(CAMVID)

    summary = fine_tune(images, out, ckpt, tmp_path / "ft", batch_size=10)
    assert summary["iterations"] == 1 and summary["regions"] == 10 and summary["crop"] == [45, 40]
    assert np.isfinite(summary["mean_loss"]) and (tmp_path / "ft" / "last.pt").is_file()

    # A second round: regions already labelled are never picked again, and labelled.json accumulates.
    sel2 = run_select(
        images, ckpt, tmp_path / "sel2", "--budget", "5", "--region", *REGION, "--labelled", str(out / "labelled.json")
    )
    write_masks(masks, truth, {r["image"] for r in sel2["regions"]})
    state2 = labels.main(
        [
            "import",
            "--selection",
            str(tmp_path / "sel2" / "selected_regions.json"),
            "--masks",
            str(masks),
            "--out",
            str(out),
        ]
    )
    assert len(state2["regions"]) == 15
    for rel in {r["image"] for r in state2["regions"]}:
        boxes = [r["box"] for r in state2["regions"] if r["image"] == rel]
        np.testing.assert_array_equal(np.array(Image.open(out / label_path(rel))), expected_label(truth[rel], boxes))


def test_mask_problems_are_reported_per_task(selected, tmp_path, capsys):
    _, truth, _, sel, sel_path = selected
    masks, out = tmp_path / "masks", tmp_path / "labels"
    chosen = sorted({r["image"] for r in sel["regions"]})
    assert len(chosen) >= 3, chosen
    write_masks(masks, truth, chosen)
    missing, small, unknown = chosen[:3]
    (masks / label_path(missing)).unlink()
    Image.fromarray(truth[small][:90]).save(masks / label_path(small))
    bad = truth[unknown].copy()
    box = next(r["box"] for r in sel["regions"] if r["image"] == unknown)
    bad[box["y"], box["x"]] = 40
    Image.fromarray(bad).save(masks / label_path(unknown))
    with pytest.raises(SystemExit, match="problems in 3 tasks"):
        labels.main(["import", "--selection", str(sel_path), "--masks", str(masks), "--out", str(out)])
    err = capsys.readouterr().err
    assert f"{missing}: no mask file; its regions stay unlabelled" in err
    assert f"{small}: mask '{masks / label_path(small)}' is 240x90, the selected image is 240x180; not used" in err
    assert f"{unknown}: mask '{masks / label_path(unknown)}' holds unknown class ids [40]" in err
    report = json.loads((out / "import_report.json").read_text())
    assert sorted(report["skipped_images"]) == sorted([missing, small, unknown])
    written = json.loads((out / "labelled.json").read_text())
    assert {e["image"] for e in written["images"]} == set(chosen) - {missing, small, unknown}


def test_a_polygon_covers_the_pixels_whose_centre_is_inside():
    """Vertices on pixel borders cover exactly the enclosed pixels (not the row and column beyond, which may be
    a neighbouring region's); a concave polygon and one reaching outside the image are filled by the same rule."""
    w, h = 30, 20

    def percent(points):
        return [[100 * x / w, 100 * y / h] for x, y in points]

    box = labels.polygon_mask(percent([(10, 5), (20, 5), (20, 15), (10, 15)]), w, h)
    expected = np.zeros((h, w), bool)
    expected[5:15, 10:20] = True
    np.testing.assert_array_equal(box, expected)
    notch = labels.polygon_mask(
        percent([(0, 0), (30, 0), (30, 20), (20, 20), (20, 10), (10, 10), (10, 20), (0, 20)]), w, h
    )
    expected = np.ones((h, w), bool)
    expected[10:, 10:20] = False
    np.testing.assert_array_equal(notch, expected)
    beyond = labels.polygon_mask(percent([(-5, -5), (35, -5), (35, 25), (-5, 25)]), w, h)
    assert beyond.all()
    triangle = labels.polygon_mask(percent([(0, 0), (30, 0), (0, 20)]), w, h)
    ii, jj = np.mgrid[0:h, 0:w]
    np.testing.assert_array_equal(triangle, (jj + 0.5) / 30 + (ii + 0.5) / 20 < 1)


def test_label_studio_polygons_and_every_kind_of_problem(selected, tmp_path, capsys):
    _, _, _, sel, sel_path = selected
    by_image = {}
    for r in sel["regions"]:
        by_image.setdefault(r["image"], []).append(r["box"])
    first, *others = sorted(by_image)
    b = by_image[first][0]

    def polygon(label, x0, y0, x1, y1, size=(240, 180)):
        w, h = size
        pts = [
            [100 * x0 / w, 100 * y0 / h],
            [100 * x1 / w, 100 * y0 / h],
            [100 * x1 / w, 100 * y1 / h],
            [100 * x0 / w, 100 * y1 / h],
        ]
        return {
            "type": "polygonlabels",
            "from_name": "polygon",
            "to_name": "image",
            "original_width": w,
            "original_height": h,
            "value": {"points": pts, "polygonlabels": [label]},
        }

    # A rectangle polygon over the first region and 10 px beyond it, as road; a stray one far outside.
    results = [
        polygon("road", b["x"], b["y"], b["x"] + b["width"] + 10, b["y"] + b["height"] + 10),
        polygon("unicorn", b["x"], b["y"], b["x"] + 5, b["y"] + 5),
    ]
    stray = [
        (y, x)
        for y in range(0, 180 - 20, 20)
        for x in range(0, 240 - 20, 20)
        if not any(
            bb["y"] - 20 < y < bb["y"] + bb["height"] and bb["x"] - 20 < x < bb["x"] + bb["width"]
            for bb in by_image[first]
        )
    ]
    y, x = stray[0]
    results.append(polygon("sky", x, y, x + 10, y + 10))
    tasks = [
        {"id": 1, "data": {"fastral_image": first}, "annotations": [{"id": 7, "result": results}]},
        {
            "id": 2,
            "data": {"fastral_image": others[0]},
            "annotations": [{"id": 8, "result": [polygon("sky", 0, 0, 5, 5, size=(480, 360))]}],
        },
        {"id": 3, "data": {"image": "/data/upload/x.png"}, "annotations": []},
    ]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    out = tmp_path / "labels"
    with pytest.raises(SystemExit, match="problems in"):
        labels.main(["import", "--selection", str(sel_path), "--label-studio", str(export), "--out", str(out)])
    err = capsys.readouterr().err
    assert f"{first}: result 1 (polygonlabels 'unicorn'): unknown class name 'unicorn'" in err
    assert f"{first}: result 2 (polygonlabels 'sky'): its 100 pixels are all outside every selected region" in err
    assert (
        f"{others[0]}: result 0 (polygonlabels 'sky'): annotated on a 480x360 image, the selected image is "
        "240x180; task not used" in err
    )
    assert "task 3: this task is not in the selection" in err
    for rel in others[1:]:
        assert f"{rel}: no annotated task in the export; its regions stay unlabelled" in err
    label = np.array(Image.open(out / label_path(first)))
    expected = np.full((180, 240), 255, np.uint8)
    expected[b["y"] : b["y"] + b["height"], b["x"] : b["x"] + b["width"]] = CAMVID.index("road")
    np.testing.assert_array_equal(label, expected)  # clipped to the region; the other regions got nothing
    state = json.loads((out / "labelled.json").read_text())
    assert [(r["image"], r["box"]) for r in state["regions"]] == [(first, b)]
    if len(by_image[first]) > 1:
        assert "received no label; not added" in err


def test_bad_inputs_are_one_line_errors(selected, tmp_path, capsys):
    _, _, _, _, sel_path = selected
    with pytest.raises(SystemExit, match=r"argument --selection: file '.*nope.json' does not exist"):
        labels.main(["import", "--selection", str(tmp_path / "nope.json"), "--masks", str(tmp_path), "--out", "x"])
    with pytest.raises(SystemExit, match=r"argument --masks: '.*absent' does not exist or is not a folder"):
        labels.main(["import", "--selection", str(sel_path), "--masks", str(tmp_path / "absent"), "--out", "x"])
    (tmp_path / "e.json").write_text('{"not": "a list"}')
    with pytest.raises(SystemExit, match="is not a Label Studio JSON export"):
        labels.main(
            [
                "import",
                "--selection",
                str(sel_path),
                "--label-studio",
                str(tmp_path / "e.json"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
    with pytest.raises(SystemExit) as exc:
        train.main(["--images", str(tmp_path), "--labels", str(tmp_path / "absent")])
    assert exc.value.code == 2 and "argument --labels: labels file" in capsys.readouterr().err
