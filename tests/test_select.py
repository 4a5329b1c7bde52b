"""python -m fastral.select on a folder of real CamVid frames (PNG and JPEG, nested folders)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from _data_helpers import single_thread  # noqa: F401 (fixture)
from _labelling_helpers import camvid_folder, run_select, tiny_checkpoint, tiny_policy
from PIL import Image

import fastral
from fastral._atomic import torch_save
from fastral.al.features import region_features
from fastral.al.query_network import QueryNetwork
from fastral.data import normalize
from fastral.data.folder import read_image
from fastral.models import load_checkpoint
from fastral.select import RECTANGLE_LABEL, overlay_name

REGION = ("45", "40")  # 4 x 6 regions of each 180 x 240 image


@pytest.fixture
def folder(tmp_path, single_thread):  # noqa: F811
    images, truth = camvid_folder(tmp_path)
    return images, tiny_checkpoint(tmp_path / "net.pt"), truth


def boxes_of(sel):
    return [(r["image"], r["box"]["y"], r["box"]["x"], r["box"]["height"], r["box"]["width"]) for r in sel["regions"]]


def test_entropy_selection_scores_files_and_label_studio_project(folder, tmp_path):
    images, ckpt, _ = folder
    out = tmp_path / "out"
    sel = run_select(images, ckpt, out, "--policy", "entropy", "--budget", "7", "--region", *REGION)
    assert sel == json.loads((out / "selected_regions.json").read_text())
    assert sel["images_found"] == sel["images_scored"] == 4 and sel["regions_scored"] == 96
    assert len(sel["regions"]) == 7 and sel["skipped_images"] == []
    scores = [r["score"] for r in sel["regions"]]
    assert scores == sorted(scores, reverse=True)
    # Each score is the region's mean pixel entropy under the network, and nothing scored higher was left out.
    model, _ = load_checkpoint(ckpt)
    model.eval()
    everything = []
    with torch.no_grad():
        for rel in ("a.png", "b.png", "more/d.jpg", "street/c.png"):
            logits = model(normalize(read_image(images / rel))[None])
            everything += [
                (float(e), rel, k) for k, e in enumerate(fastral.region_stats(logits, (45, 40)).entropy_mean)
            ]
    best = sorted(everything, key=lambda t: -t[0])[:7]
    assert [(rel, (k // 6) * 45, (k % 6) * 40) for _, rel, k in best] == [(b[0], b[1], b[2]) for b in boxes_of(sel)]
    np.testing.assert_allclose(scores, [s for s, _, _ in best], rtol=1e-5)
    assert {r["network_hash"] for r in sel["regions"]} == {sel["network_hash"]} and sel["policy"] == "entropy"

    tasks = json.loads((out / "label_studio" / "tasks.json").read_text())
    assert sorted(t["data"]["fastral_image"] for t in tasks) == sorted({r["image"] for r in sel["regions"]})
    by_image = {t["data"]["fastral_image"]: t for t in tasks}
    for r in sel["regions"]:
        rects = by_image[r["image"]]["predictions"][0]["result"]
        v = next(x for x in rects if x["id"] == f"fastral-{r['order']}")["value"]
        assert v["rectanglelabels"] == [RECTANGLE_LABEL]
        assert (v["x"] * 2.4, v["y"] * 1.8, v["width"] * 2.4, v["height"] * 1.8) == pytest.approx(
            (r["box"]["x"], r["box"]["y"], r["box"]["width"], r["box"]["height"])
        )
    assert all(t["data"]["image"] == "/data/local-files/?d=images/" + t["data"]["fastral_image"] for t in tasks)
    config = ET.fromstring((out / "label_studio" / "config.xml").read_text())
    camvid = list(fastral.data.PRESETS["camvid"].class_names)
    for tag in ("BrushLabels", "PolygonLabels"):
        assert [lab.get("value") for lab in config.find(tag)] == camvid
    assert config.find("Image").get("value") == "$image"

    for image in by_image:
        overlay = np.array(Image.open(out / "overlays" / overlay_name(image)))
        r = next(x for x in sel["regions"] if x["image"] == image)["box"]
        assert tuple(overlay[r["y"] + r["height"] // 2, r["x"]]) == (255, 0, 0)  # the box's left edge is red


def test_same_inputs_same_selection_and_prior_regions_never_picked_again(folder, tmp_path):
    images, ckpt, _ = folder
    args = ("--policy", "bald", "--bald-samples", "2", "--budget", "6", "--region", *REGION)
    first = run_select(images, ckpt, tmp_path / "a", *args)
    again = run_select(images, ckpt, tmp_path / "b", *args)
    assert first == again
    assert (tmp_path / "a" / "label_studio" / "tasks.json").read_bytes() == (
        tmp_path / "b" / "label_studio" / "tasks.json"
    ).read_bytes()
    second = run_select(
        images, ckpt, tmp_path / "c", *args, "--labelled", str(tmp_path / "a" / "selected_regions.json")
    )
    assert len(second["regions"]) == 6 and not set(boxes_of(first)) & set(boxes_of(second))
    assert second["regions_scored"] == 96 - 6
    # The best regions left are the ones ranked 7-12 in the first pass (scores do not depend on the prior).
    wider = run_select(
        images, ckpt, tmp_path / "d", "--policy", "bald", "--bald-samples", "2", "--budget", "12", "--region", *REGION
    )
    assert boxes_of(second) == boxes_of(wider)[6:]


def test_uniform_scores_do_not_depend_on_the_other_files(folder, tmp_path):
    images, ckpt, _ = folder
    full = run_select(images, ckpt, tmp_path / "a", "--policy", "uniform", "--budget", "96", "--region", *REGION)
    (images / "b.png").unlink()
    part = run_select(images, ckpt, tmp_path / "b", "--policy", "uniform", "--budget", "72", "--region", *REGION)

    def strip(sel):
        return [(r["image"], r["box"], r["score"]) for r in sel["regions"]]

    assert strip(part) == [r for r in strip(full) if r[0] != "b.png"]
    assert len({r["score"] for r in full["regions"]}) == 96


def test_unreadable_and_too_small_images_are_listed_and_skipped(folder, tmp_path, capsys):
    images, ckpt, _ = folder
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    Image.new("RGB", (30, 30)).save(images / "street" / "tiny.jpg")
    sel = run_select(images, ckpt, tmp_path / "out", "--budget", "3", "--region", *REGION)
    skipped = {s["image"]: s["reason"] for s in sel["skipped_images"]}
    assert set(skipped) == {"broken.png", "street/tiny.jpg"} and "cannot read image file" in skipped["broken.png"]
    assert "smaller than the 40x45 region" in skipped["street/tiny.jpg"]
    assert sel["images_found"] == 6 and sel["images_scored"] == 4
    err = capsys.readouterr().err
    assert "skipped broken.png: cannot read image file" in err and "skipped street/tiny.jpg" in err


def test_ralis_scores_are_the_query_networks_q_values(folder, tmp_path):
    images, ckpt, _ = folder
    model, _ = load_checkpoint(ckpt)
    model.eval()
    policy = tmp_path / "policy_seed0.pt"
    net = tiny_policy(policy)
    args = ("--policy", "ralis", "--policy-checkpoint", str(policy), "--budget", "5", "--region", *REGION)
    sel = run_select(images, ckpt, tmp_path / "out", *args)
    assert sel == run_select(images, ckpt, tmp_path / "again", *args)
    # Recompute: state = the first 30 regions in file order (a.png's 24, then 6 of b.png); the candidates are
    # scored in groups of >= 40 regions (a + b, then c + d, in sorted order: more/d.jpg before street/c.png).
    with torch.no_grad():
        feats = {
            rel: region_features(model(normalize(read_image(images / rel))[None]), (45, 40), (4, 4))
            for rel in ("a.png", "b.png", "more/d.jpg", "street/c.png")
        }
        state = torch.cat([feats["a.png"].base, feats["b.png"].base])[:30]
        q = {}
        for group in (("a.png", "b.png"), ("more/d.jpg", "street/c.png")):
            base = torch.cat([feats[g].base for g in group])
            counts = torch.cat([feats[g].class_counts for g in group])
            actions = fastral.al.features.action_features(base, counts, torch.zeros(0, 12), 8)
            values = net(actions[None], state[None])[0]
            q.update({(g, k): float(values[i * 24 + k]) for i, g in enumerate(group) for k in range(24)})
    best = sorted(q.items(), key=lambda kv: -kv[1])[:5]
    assert [(g, (k // 6) * 45, (k % 6) * 40) for (g, k), _ in best] == [b[:3] for b in boxes_of(sel)]
    np.testing.assert_allclose([r["score"] for r in sel["regions"]], [v for _, v in best], rtol=1e-4, atol=1e-6)


def test_ralis_state_set_too_small_is_a_clear_error(folder, tmp_path, capsys):
    images, ckpt, _ = folder
    net = QueryNetwork(12 + 3 * 64, state_regions=500, action_dim=12 + 3 * 64 + 64)
    policy = tmp_path / "policy.pt"
    torch_save(
        {
            "format": "fastral-ralis-policy/1",
            "state_dict": net.state_dict(),
            "config": {"entropy_pool": [8, 8], "kl_bins": 32, "regions_per_step": 2, "pool_size": 2},
        },
        policy,
    )
    with pytest.raises(SystemExit, match=r"state set of 500 regions of 45x40, the readable images of .* have only 96"):
        run_select(
            images,
            ckpt,
            tmp_path / "out",
            "--policy",
            "ralis",
            "--policy-checkpoint",
            str(policy),
            "--budget",
            "2",
            "--region",
            *REGION,
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("--budget", "0"), "argument --budget: expected an integer >= 1, got 0"),
        (("--region", "0", "5"), "argument --region: expected two sizes >= 1, got [0, 5]"),
        (("--policy", "ralis"), "argument --policy-checkpoint: expected a query-network file with --policy ralis"),
        (("--classes", "sky,road"), "argument --classes: expected 11 distinct non-empty class names"),
        (("--labelled", "missing.json"), "argument --labelled: expected an existing JSON file"),
    ],
)
def test_bad_flags_are_one_line_errors(folder, tmp_path, capsys, change, message):
    images, ckpt, _ = folder
    argv = ["--budget", "2", "--region", *REGION, *change]
    with pytest.raises(SystemExit) as exc:
        run_select(images, ckpt, tmp_path / "out", *argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_empty_folder_and_bad_checkpoint_are_errors(tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    ckpt = tiny_checkpoint(tmp_path / "net.pt")
    with pytest.raises(SystemExit) as exc:
        run_select(tmp_path / "empty", ckpt, tmp_path / "out", "--budget", "1", "--region", "8", "8")
    assert exc.value.code == 2
    assert "argument --images: expected a folder with PNG/JPEG images, found none under" in capsys.readouterr().err
    Image.new("RGB", (16, 16)).save(tmp_path / "empty" / "x.png")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match=r"cannot read checkpoint '.*junk.pt'"):
        run_select(tmp_path / "empty", tmp_path / "junk.pt", tmp_path / "out", "--budget", "1", "--region", "8", "8")
