"""``--ray``: a RALIS study and pool scoring on a local two-CPU Ray cluster give the serial numbers, also when a
worker or the driver is killed (the [ray] extra; about a minute in all, most of it Ray and worker start-up)."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _data_helpers import single_thread  # noqa: F401 (fixture)
from _labelling_helpers import camvid_folder, run_select, tiny_checkpoint, tiny_policy
from test_run_cli import COMPARED, REPO, TINY, error_of

from fastral import run as cli
from fastral.al.distributed import STARTED, SUBMITTED

# Two seeds x (ralis, uniform): 2 policy trainings, 4 trajectories, 16 final trainings.
STUDY = [*TINY, "--policy", "ralis", "uniform", "--no-plots"]
UNITS = 2 + 4 + 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """``ray start --head --num-cpus 2``; its address. ``--block`` ties the cluster's processes to this one. No
    token authentication (which ``ray start`` enables by default): the drivers join without a token."""
    pytest.importorskip("ray")
    cmd = [
        str(Path(sys.executable).with_name("ray")),
        "start",
        "--head",
        "--block",
        "--num-cpus",
        "2",
        "--port",
        str(_free_port()),
        "--ray-client-server-port",
        str(_free_port()),
        "--include-dashboard",
        "false",
        "--disable-usage-stats",
    ]
    log = tmp_path_factory.mktemp("ray") / "ray_start.log"
    with open(log, "wb") as f:
        env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
        head = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 90
    while not (found := re.search(r"ray start --address='([^']+)'", log.read_text())):
        assert time.monotonic() < deadline and head.poll() is None, f"the Ray head did not start: {log.read_text()}"
        time.sleep(0.2)
    yield found[1]
    head.send_signal(signal.SIGTERM)  # ray start --block stops the processes it started
    head.wait(timeout=60)


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """The study without --ray, in this process."""
    threads = torch.get_num_threads()
    try:
        return cli.main([*STUDY, "--out", str(tmp_path_factory.mktemp("serial") / "out")])
    finally:
        torch.set_num_threads(threads)


def _driver(out: Path, address: str, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "fastral.run", *STUDY, "--out", str(out), "--ray", address, *extra]
    with open(f"{out}.log", "ab") as log:
        return subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


def _wait_for(condition, proc: subprocess.Popen, what: str):
    deadline = time.monotonic() + 120
    while not (found := condition()):
        assert proc.poll() is None and time.monotonic() < deadline, f"the driver ended before {what}"
        time.sleep(0.01)
    return found


def _same_as_serial(out: Path, serial: dict) -> dict:
    results = json.loads((out / "results.json").read_text())
    for key in COMPARED:
        assert results[key] == json.loads(json.dumps(serial[key])), key
    assert results["timing"]["evaluation"]["steps"] == serial["timing"]["evaluation"]["steps"]
    assert not (out / "units").exists()  # every unit is in the run state
    return results


def _log(out: Path, unit: str) -> str:
    path = out / "logs" / f"{unit}.log"
    return path.read_text() if path.is_file() else ""


def test_a_killed_worker_is_retried_and_the_study_equals_the_serial_run(cluster, serial, tmp_path):
    out = tmp_path / "run"
    proc = _driver(out, cluster)

    def worker_pid():
        line = next((x for x in _log(out, "train_seed0_ralis").splitlines() if STARTED in x), None)
        return line and int(line.split("pid ")[1].split()[0])

    pid = _wait_for(worker_pid, proc, "the first policy training started")
    os.kill(pid, signal.SIGKILL)  # mid-unit: a policy training takes about a second
    assert proc.wait(timeout=300) == 0, Path(f"{out}.log").read_text()
    results = _same_as_serial(out, serial)
    info = results["run"]["ray"]
    assert info["units"] == {"train": 2, "trajectory": 4, "final": 16} and info["cluster_resources"]["CPU"] == 2
    assert [(r["unit"], r["attempts"]) for r in info["retried"]] == [("train_seed0_ralis", 2)]
    assert _log(out, "train_seed0_ralis").count(STARTED) == 2 and f"pid {pid} " in _log(out, "train_seed0_ralis")
    assert (out / "policy_seed0.pt").is_file() and (out / "policy_seed1.pt").is_file()


def test_resume_after_the_driver_is_killed_reruns_only_unfinished_units(cluster, serial, tmp_path, capsys):
    out = tmp_path / "run"
    proc = _driver(out, cluster)

    def recorded():
        try:
            units = torch.load(out / "run_state.pt", weights_only=True)["ray"]["units"]
        except (FileNotFoundError, EOFError, RuntimeError, KeyError):
            return None
        return set(units) if len(units) >= 6 else None

    done = _wait_for(recorded, proc, "six units were recorded")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(done) < UNITS
    err = error_of([*STUDY, "--out", str(out), "--resume"], capsys)  # a Ray run resumes as one only
    assert "was started with --ray; resume it the same way" in err
    resume = _driver(out, cluster, "--resume")
    assert resume.wait(timeout=300) == 0, Path(f"{out}.log").read_text()
    _same_as_serial(out, serial)
    state = torch.load(out / "run_state.pt", weights_only=True)
    assert len(state["ray"]["units"]) == UNITS
    for unit in done:  # recorded before the kill: not run again
        assert _log(out, unit).count(SUBMITTED) == 1, unit
    assert any(_log(out, u).count(SUBMITTED) == 2 for u in state["ray"]["units"])  # and some were


@pytest.mark.parametrize("policy", ["bald", "ralis"])
def test_select_on_a_local_ray_instance_equals_the_serial_selection(policy, tmp_path, single_thread):  # noqa: F811
    """``--ray`` alone: the command starts (and stops) its own Ray instance. Not on the shared cluster: Ray Data
    leaves detached actors there that slow its shutdown by 30 s. ralis scores groups of >= 40 regions (two of
    these 24-region images), so its shards of --shard-size 1 must still hold whole groups: (a, b), (c, d)."""
    images, _ = camvid_folder(tmp_path)
    ckpt = tiny_checkpoint(tmp_path / "net.pt")
    if policy == "bald":
        argv = ["--policy", "bald", "--bald-samples", "3"]
    else:
        tiny_policy(tmp_path / "policy.pt")
        argv = ["--policy", "ralis", "--policy-checkpoint", str(tmp_path / "policy.pt")]
    argv += ["--budget", "7", "--region", "45", "40"]
    serial = run_select(images, ckpt, tmp_path / "serial", *argv)
    cmd = [
        sys.executable,
        "-m",
        "fastral.select",
        "--images",
        str(images),
        "--checkpoint",
        str(ckpt),
        "--out",
        str(tmp_path / "ray"),
        "--threads",
        "1",
        "--no-progress",
        *argv,
        "--ray",
        "--shard-size",
        "1",
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)  # (a driver of its own, as a user runs it)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "ray" / "selected_regions.json").read_text()) == serial
    assert len(serial["regions"]) == 7 and serial["images_scored"] == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cpus-per-task", "2"], "argument --cpus-per-task: only with --ray, got --cpus-per-task 2.0 without it"),
        (["--ray", "--cpus-per-task", "0"], "argument --cpus-per-task: expected a number > 0, got 0.0"),
        (["--ray", "--gpus-per-task", "nan"], "argument --gpus-per-task: expected a number >= 0, got nan"),
        (["--ray", "--max-retries", "-1"], "argument --max-retries: expected an integer >= 0, got -1"),
        (["--ray", "127.0.0.1:1"], "argument --ray: cannot connect to a Ray cluster at '127.0.0.1:1'"),
        (["--ray", "somewhere"], "argument --ray: cannot connect to a Ray cluster at 'somewhere': expected auto"),
    ],
)
def test_bad_ray_flags_are_named(argv, message, tmp_path, capsys):
    assert message in error_of([*STUDY, "--out", str(tmp_path / "x"), *argv], capsys)


def test_without_ray_installed_the_error_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray: ModuleNotFoundError
    err = error_of([*STUDY, "--out", str(tmp_path / "x"), "--ray"], capsys)
    assert 'argument --ray: Ray is not installed: pip install "fastral-al[ray]"' in err
