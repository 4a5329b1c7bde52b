"""``fastral.select`` throughput: images/s scoring a folder of 480x360 CamVid frames with the compact model, and
the share of the time spent outside the network's forward passes (reading files, featurizers, ranking).

Timed: the whole streaming selection (``select_regions``: decode each PNG, forward, featurize, keep the best
regions) over a folder, as the command runs it; the forward passes are timed inside it by its timer.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from fastral.al.timing import Timer
from fastral.data import get_preset
from fastral.data.folder import image_files
from fastral.models import build_model
from fastral.select import FORWARD, BaldScorer, EntropyScorer, select_regions

GROUP = "select: score a folder of 480x360 images, compact model"
CAMVID_ROOT = "../shared/data/camvid/train"


@pytest.fixture(scope="module")
def folder(tmp_path_factory, full_size):
    """8 real CamVid frames (2 under --benchmark-disable), or generated 480x360 images without the data."""
    root, n = tmp_path_factory.mktemp("select-bench"), 8 if full_size else 2
    src = Path(__file__).resolve().parents[1] / CAMVID_ROOT
    frames = sorted(src.glob("*.png"))[:n] if src.is_dir() else []
    for k in range(n):
        if k < len(frames):
            shutil.copy(frames[k], root / frames[k].name)
        else:
            Image.effect_noise((480, 360), 64).convert("RGB").save(root / f"noise{k}.png")
    return root


@pytest.fixture(scope="module")
def model():
    """The compact model, run on one thread: the reader thread decodes the next image on the other core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield build_model(len(get_preset("camvid").class_names), "compact").eval()
    torch.set_num_threads(threads)


def run_selection(benchmark, machine, folder, provider: str, make_scorer):
    files = image_files(folder)
    timers = []

    def once():
        scorer = make_scorer(Timer())
        timers.append(scorer.timer)
        with scorer.timer.section("total"):
            meta = {"policy": provider, "network_hash": "bench"}
            return select_regions(folder, files, scorer, 100, (90, 80), {}, meta, progress=False)

    benchmark.group = GROUP
    benchmark.extra_info.update(machine, provider=provider, images=len(files))
    selection = benchmark.pedantic(once, rounds=3, warmup_rounds=1)
    assert len(selection.candidates.scores) == min(100, 24 * len(files))
    if not benchmark.disabled:
        timer = timers[-1]
        total = sum(timer.seconds.values())
        outside = 1 - timer.seconds[FORWARD] / total
        benchmark.extra_info.update(images_per_s=len(files) / benchmark.stats.stats.median, outside_forward=outside)
        # Reported, not asserted: on a shared 2-core machine the share moves with the other jobs' load.
        print(
            f"\n{provider}: {len(files) / benchmark.stats.stats.median:.2f} images/s, "
            f"{100 * outside:.1f}% of the time outside forward passes (target < 5%)"
        )


def test_entropy(benchmark, machine, folder, model):
    with torch.no_grad():
        run_selection(benchmark, machine, folder, "entropy", lambda t: EntropyScorer(t, model, torch.device("cpu")))


def test_bald_20_samples(benchmark, machine, folder, model):
    run_selection(
        benchmark, machine, folder, "bald (20 samples)", lambda t: BaldScorer(t, model, torch.device("cpu"), 20, seed=0)
    )
