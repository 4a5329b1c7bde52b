"""The labelling loop through a real Label Studio server: select -> Label Studio -> import -> fine-tune.

Label Studio (``label-studio`` 1.23 + ``label-studio-sdk``) lives in its own virtual environment because it pins
numpy and many other packages (the README shows how to install it). The server executable is
``$FASTRAL_LABEL_STUDIO`` (which must then exist), else ``.venv-ls/bin/label-studio`` in the repository, else
``label-studio`` on the PATH; the test is skipped, saying so, only when none exists. CI installs it and sets
``FASTRAL_LABEL_STUDIO``. The annotator runs in that environment's Python (tests/label_studio_client.py).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from _data_helpers import single_thread  # noqa: F401 (fixture)
from _labelling_helpers import camvid_folder, expected_label, fine_tune, run_select, tiny_checkpoint
from PIL import Image

from fastral import labels
from fastral.data.folder import label_path

REPO = Path(__file__).resolve().parents[1]
CLIENT = Path(__file__).with_name("label_studio_client.py")
START_TIMEOUT_S = 120


def label_studio_executable() -> Path | None:
    """The server executable; a $FASTRAL_LABEL_STUDIO that does not exist is an error (CI sets it)."""
    if named := os.environ.get("FASTRAL_LABEL_STUDIO"):
        if not Path(named).is_file():
            pytest.fail(f"FASTRAL_LABEL_STUDIO={named!r} is not a file")
        return Path(named)
    for candidate in (REPO / ".venv-ls" / "bin" / "label-studio", shutil.which("label-studio")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    exe = label_studio_executable()
    if exe is None:
        pytest.skip("Label Studio is not installed: set FASTRAL_LABEL_STUDIO or install it into .venv-ls (README)")
    images, truth = camvid_folder(tmp_path)
    port, token = free_port(), secrets.token_hex(20)
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(tmp_path / "ls-data"),
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(images.resolve().parent),
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
    }
    # A throw-away user with a legacy token: legacy tokens are off by default, --enable-legacy-api-token turns
    # them on for this new organisation (personal access tokens would need a login round trip first).
    cmd = [
        str(exe),
        "start",
        "--no-browser",
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--username",
        "annotator@fastral.test",
        "--password",
        secrets.token_hex(12),
        "--user-token",
        token,
        "--enable-legacy-api-token",
    ]
    log = open(tmp_path / "server.log", "wb")  # closed in the finally below
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url, start = f"http://127.0.0.1:{port}", time.monotonic()
    try:
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() - start > START_TIMEOUT_S:
                pytest.fail(
                    f"Label Studio did not answer /health within {START_TIMEOUT_S} s:\n"
                    f"{(tmp_path / 'server.log').read_text()[-3000:]}"
                )
            time.sleep(0.5)
        print(f"Label Studio answered /health after {time.monotonic() - start:.1f} s")
        yield {"url": url, "token": token, "python": exe.with_name("python"), "images": images, "truth": truth}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def box_labels(truth: np.ndarray, boxes) -> np.ndarray:
    """255 outside the boxes, each box filled with its most common non-void ground-truth class (0 if all void)."""
    label = np.full_like(truth, 255)
    for b in boxes:
        rows, cols = slice(b["y"], b["y"] + b["height"]), slice(b["x"], b["x"] + b["width"])
        ids = truth[rows, cols]
        label[rows, cols] = np.bincount(ids[ids != 255], minlength=1).argmax()
    return label


@pytest.mark.slow
def test_label_studio_round_trip(server, tmp_path, single_thread):  # noqa: F811
    images, truth = server["images"], server["truth"]
    ckpt = tiny_checkpoint(tmp_path / "net.pt")
    sel = run_select(images, ckpt, tmp_path / "sel", "--budget", "8", "--region", "45", "40")
    truth_dir = tmp_path / "truth"
    for rel, ids in truth.items():
        (truth_dir / label_path(rel)).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ids).save(truth_dir / label_path(rel))
    client = [
        str(server["python"]),
        str(CLIENT),
        server["url"],
        server["token"],
        str(tmp_path),
        str(tmp_path / "sel" / "selected_regions.json"),
        str(truth_dir),
    ]
    done = subprocess.run(client, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr

    # Label Studio served the task's image from the images folder (its local-files storage).
    served = json.loads((tmp_path / "served_image.json").read_text())["image"]
    assert (tmp_path / "served_image.bin").read_bytes() == (images / served).read_bytes()

    export = json.loads((tmp_path / "export.json").read_text())
    assert len(export) == len({r["image"] for r in sel["regions"]})
    assert all(t["annotations"][0]["result"] for t in export)
    out = tmp_path / "labels"
    state = labels.main(
        [
            "import",
            "--selection",
            str(tmp_path / "sel" / "selected_regions.json"),
            "--label-studio",
            str(tmp_path / "export.json"),
            "--out",
            str(out),
        ]
    )
    assert [(r["image"], r["box"]) for r in state["regions"]] == [(r["image"], r["box"]) for r in sel["regions"]]
    polygons = json.loads((tmp_path / "polygon_task.json").read_text())["image"]  # its regions: one class each
    for rel in {r["image"] for r in sel["regions"]}:
        boxes = [r["box"] for r in sel["regions"] if r["image"] == rel]
        expected = expected_label(truth[rel], boxes) if rel != polygons else box_labels(truth[rel], boxes)
        np.testing.assert_array_equal(np.array(Image.open(out / label_path(rel))), expected, err_msg=rel)

    summary = fine_tune(images, out, ckpt, tmp_path / "ft", batch_size=8)
    assert summary["iterations"] == 1 and np.isfinite(summary["mean_loss"])
