"""RALIS end to end: train the query network, evaluate it against the baselines, write results and plots.

    python -m fastral.run                                   # smoke run on built-in streets scenes, < 10 minutes
    python -m fastral.run --dataset camvid --data-root ../shared/data/camvid --test-split val --scale 0.5
    python -m fastral.run --policy entropy bald --budgets 480 960 --seeds 1 2 3
    python -m fastral.run --out runs/x --resume            # continue an interrupted run (even after kill -9)
    python -m fastral.run --ray auto --gpus-per-task 1 ...  # its units as tasks on a Ray cluster (same numbers)
    python -m fastral.run --help                            # every flag; each preset value is overridable

Writes into ``--out``: results.json, results.csv, selected_regions.json, miou_vs_budget.png,
class_frequencies.png, selected_regions.png, policy_training.png, policy_seed<s>[_ralis-shuffled].pt, theta0.pt,
splits.json, features.h5 (the feature cache) and run_state.pt (rewritten after every AL step; what ``--resume`` reads).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

from . import available_backends
from ._atomic import remove_stale_temporaries
from ._extras import missing_extra
from ._lock import FolderBusyError, FolderLock

try:  # the AL pipeline needs the [al] extra (the featurizers do not): say so instead of a bare ImportError
    from .al.cache import CacheSpaceError
    from .al.distributed import RayRunError, RayStudy, connect, disconnect, ray_missing
    from .al.experiment import file_hash, prepare
    from .al.loop import Runner
    from .al.presets import CONTROLS, NAMED_PRESETS, POLICIES, PRESETS, TRAINED_POLICIES, RalisConfig, get_config
    from .al.report import summary_table, write_report
    from .al.run_state import STATE_FILE, RunStateError, config_differences, load_state
    from .data import DataLayoutError
    from .models import CheckpointError
    from .training import TrainingDivergedError
except ModuleNotFoundError as exc:
    raise missing_extra("python -m fastral.run", exc) from exc

# read, never written (their SHA-256 is part of the run key)
INPUT_FILES = ("init_checkpoint", "pretrain_from", "backbone_weights", "train_init_checkpoint", "splits")
RUNTIME_KEYS = ("device", "threads")  # may change on --resume (results may then differ in the last digits)


def _preset_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per RalisConfig field; default None = the data set's preset (listed in the help)."""
    group = parser.add_argument_group(
        "preset values (default: the --dataset preset; shown as streets / camvid / cityscapes)"
    )
    for f in dataclasses.fields(RalisConfig):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        presets = " / ".join(str(getattr(PRESETS[d], f.name)) for d in ("streets", "camvid", "cityscapes"))
        kw = {"help": f"{meta['help']} [{presets}]", "default": None}
        for key in ("nargs", "type", "choices"):
            if key in meta:
                kw[key] = meta[key]
        if "nargs" in meta:
            kw["metavar"] = f.name.split("_")[-1].upper()
        group.add_argument("--" + f.name.replace("_", "-"), **kw)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fastral.run",
        description="RALIS (Casanova et al., ICLR 2020): train a batch-mode DQN that picks image regions to label, "
        "then evaluate it against uniform, entropy and BALD selection at several budgets, over several seeds.",
        epilog="With no arguments: the whole pipeline on the built-in streets data set in a few minutes on a CPU.",
    )
    p.add_argument("--dataset", default="streets", choices=sorted(PRESETS), help="data set (streets is built in)")
    names = sorted({n for named in NAMED_PRESETS.values() for n in named})
    p.add_argument(
        "--preset",
        choices=names,
        help="preset of the data set's values: "
        + "; ".join(f"{d}: {', '.join(named)}" for d, named in NAMED_PRESETS.items())
        + " (default: the first; streets' smoke is a quick end-to-end check, "
        "reproduce the comparison, predicted ~2 hours on 2 CPU cores, not yet run end to end)",
    )
    p.add_argument("--data-root", type=Path, help="data folder of camvid / cityscapes (not for streets)")
    p.add_argument(
        "--policy",
        nargs="+",
        choices=[*POLICIES, "all"],
        metavar="POLICY",
        help=f"policies to evaluate: any of {', '.join(POLICIES)}, or all; {' and '.join(CONTROLS)} are "
        "controls (the query network untrained, and trained on shuffled rewards); default: the preset's "
        "(streets smoke: the first four; every other preset: all)",
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device of the segmentation network")
    p.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 is fastest for small networks on a shared machine)"
    )
    p.add_argument(
        "--out",
        type=Path,
        help="output folder (default: runs/ralis-<dataset>, runs/ralis-<dataset>-<preset> for a preset "
        "other than the data set's default)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last finished step")
    p.add_argument(
        "--init-checkpoint",
        type=Path,
        help="theta_0: segmentation weights to start from (e.g. from python -m fastral.train); "
        "default: pretrain as --pretrain says",
    )
    p.add_argument(
        "--pretrain-from",
        type=Path,
        help="weights the theta_0 pretraining (--pretrain) starts from, e.g. GTA5-pretrained ones: the "
        "official GTA5 -> D_T recipe",
    )
    p.add_argument(
        "--backbone-weights",
        type=Path,
        help="a local torchvision ResNet checkpoint (e.g. resnet50-0676ba61.pth from a torch hub cache) "
        "for the backbone before the theta_0 pretraining: the paper's ImageNet start (needs a width-64 "
        "backbone of that depth, e.g. --model paper); nothing is downloaded",
    )
    p.add_argument(
        "--train-init-checkpoint",
        type=Path,
        help="initial weights of the policy-training episodes (the official code: GTA5-only weights, "
        "while --init-checkpoint is GTA5 + D_T); default: theta_0",
    )
    p.add_argument("--splits", type=Path, help="split file from python -m fastral.data.splits (default: build one)")
    p.add_argument("--test-split", help="split of the final test (default: the data set's, e.g. camvid test)")
    p.add_argument("--cache", type=Path, help="HDF5 feature cache, shareable between runs (default: <out>/features.h5)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--print-config", action="store_true", help="print the effective configuration and exit")
    ray = p.add_argument_group(
        "Ray (fastral.al.distributed; needs the [ray] extra; --out must be on a file system every node sees)"
    )
    ray.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run the policy trainings, evaluation trajectories and final trainings as Ray tasks: alone, "
        "on a new local Ray instance; with auto, host:port or ray://host:10001, on that cluster; the "
        "results equal a run without --ray",
    )
    ray.add_argument("--cpus-per-task", type=float, help="CPUs Ray reserves per unit (default: --threads)")
    ray.add_argument(
        "--gpus-per-task", type=float, help="GPUs Ray reserves per unit (default: 1 with --device cuda, else 0)"
    )
    ray.add_argument("--max-retries", type=int, help="retries of a unit whose worker died (default: 3)")
    _preset_flags(p)
    return p


def resolve(args, p: argparse.ArgumentParser) -> tuple[RalisConfig, list[str]]:
    """The effective configuration and policy list, or a parser error naming the bad argument."""
    fields = [f for f in dataclasses.fields(RalisConfig) if f.metadata.get("cli", True)]
    overrides = {f.name: getattr(args, f.name) for f in fields}
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    try:
        config = get_config(args.dataset, args.preset, **overrides)
    except ValueError as exc:
        p.error(str(exc))
    chosen = config.policies if args.policy is None else args.policy
    policies = list(POLICIES) if "all" in chosen else list(dict.fromkeys(chosen))
    trained = [x for x in policies if x in TRAINED_POLICIES]
    if trained and config.episodes < 1:
        p.error(f"argument --episodes: the {trained[0]} policy needs >= 1 training episode, got {config.episodes}")
    if args.threads < 1:
        p.error(f"argument --threads: expected an integer >= 1, got {args.threads}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("argument --device: cuda requested but torch finds no CUDA device")
    if args.dataset == "streets" and args.data_root is not None:
        p.error(f"argument --data-root: streets is generated and takes no data root, got '{args.data_root}'")
    if args.init_checkpoint is not None and args.pretrain_from is not None:
        p.error("argument --pretrain-from: not with --init-checkpoint (theta_0 is then that checkpoint)")
    for other in ("init_checkpoint", "pretrain_from"):
        if args.backbone_weights is not None and getattr(args, other) is not None:
            p.error(
                f"argument --backbone-weights: not with --{other.replace('_', '-')} (its weights hold the backbone)"
            )
    check_ray_args(args, p)
    for name in INPUT_FILES:
        path = getattr(args, name)
        if path is not None and not path.is_file():
            p.error(f"argument --{name.replace('_', '-')}: file '{path}' does not exist")
    return config, policies


def check_ray_args(args, p: argparse.ArgumentParser) -> None:
    """Parser errors for Ray flags without --ray, bad resource numbers, and --ray without Ray installed."""
    checks = {
        "cpus_per_task": ("a number > 0", lambda v: 0 < v < math.inf),  # comparisons: NaN fails them
        "gpus_per_task": ("a number >= 0", lambda v: 0 <= v < math.inf),
        "max_retries": ("an integer >= 0", lambda v: v >= 0),
    }
    for name, (expected, ok) in checks.items():
        value, flag = getattr(args, name), "--" + name.replace("_", "-")
        if value is not None and args.ray is None:
            p.error(f"argument {flag}: only with --ray, got {flag} {value} without it")
        if value is not None and not ok(value):
            p.error(f"argument {flag}: expected {expected}, got {value}")
    if args.ray is not None and (missing := ray_missing()):
        p.error(f"argument --ray: {missing}")


def open_state(
    p: argparse.ArgumentParser, out: Path, resume: bool, run_key: dict, runtime: dict, ray: bool = False
) -> dict | None:
    """The saved state to resume (checked against this run's settings), None for a new run; parser errors for
    --resume without a state or with other settings, and for a new run into a folder that holds one."""
    if not resume:
        if (out / STATE_FILE).exists():
            p.error(
                f"argument --out: '{out}' already holds a run; pass --resume to continue it or choose another --out"
            )
        return None
    try:
        state = load_state(out)
    except RunStateError as exc:
        p.error(str(exc))
    if ("ray" in state) != ray:  # the two keep different progress records (AL steps / finished units)
        how = "with --ray" if "ray" in state else "without --ray"
        p.error(f"argument --ray: the run in '{out}' was started {how}; resume it the same way")
    diffs = config_differences(state["run_key"], run_key)
    if diffs:
        p.error(f"--resume: the run in '{out}' was started with other settings: {'; '.join(diffs)}")
    if state.get("runtime") != runtime:
        warnings.warn(
            f"--resume with {runtime}, the run started with {state.get('runtime')}: floating-point "
            "results may differ slightly from an uninterrupted run",
            stacklevel=1,
        )
    return state


def main(argv: list[str] | None = None) -> dict | None:
    p = parser()
    args = p.parse_args(argv)
    config, policies = resolve(args, p)
    if args.print_config:
        print(json.dumps({**config.to_dict(), "policies": policies}, indent=1))
        return None
    torch.set_num_threads(args.threads)
    default_preset = config.preset == PRESETS[config.dataset].preset
    out = args.out or Path("runs") / f"ralis-{config.dataset}{'' if default_preset else '-' + config.preset}"
    run_key = {
        "config": config.to_dict(),
        "policies": policies,
        "init_checkpoint": str(args.init_checkpoint),
        "pretrain_from": str(args.pretrain_from),
        "train_init_checkpoint": str(args.train_init_checkpoint),
        "splits": str(args.splits),
        "test_split": args.test_split,
    }
    # A file replaced between a kill and --resume would give a silently mixed run: its content is part of the key.
    contents = {name: file_hash(path) for name in INPUT_FILES if (path := getattr(args, name)) is not None}
    if contents:
        run_key["input_sha256"] = contents
    runtime = {"device": args.device, "threads": args.threads}
    lock = FolderLock(out)
    try:
        lock.acquire()
    except FolderBusyError as exc:
        p.error(f"argument --out: {exc}; wait for that run to end or choose another --out")
    except OSError as exc:
        p.error(f"argument --out: cannot write to '{out}': {exc.strerror or exc}")
    try:
        return run_locked(p, args, config, policies, out, run_key, runtime)
    finally:
        lock.release()
        disconnect()


def run_locked(p, args, config: RalisConfig, policies, out: Path, run_key: dict, runtime: dict) -> dict:
    """The run, with ``out`` locked: no other writer is live there."""
    state = open_state(p, out, args.resume, run_key, runtime, ray=args.ray is not None)
    if args.ray is not None:
        try:
            address = connect(args.ray)
        except ConnectionError as exc:
            p.error(f"argument --ray: {exc}")
    stale = remove_stale_temporaries(out)
    if stale:
        print(f"fastral.run: removed {len(stale)} temporary file(s) that a killed run left in '{out}'")
    started = time.perf_counter()
    smoke = " (SMOKE RUN: a quick end-to-end check, too few seeds for conclusions)" if config.preset == "smoke" else ""
    print(
        f"fastral.run: {config.dataset}{smoke}, policies {', '.join(policies)}, seeds {list(config.seeds)}, "
        f"budgets {list(config.budgets)}, {args.threads} thread(s) on {args.device} -> {out}"
    )
    try:
        exp = prepare(
            config,
            args.data_root,
            out,
            torch.device(args.device),
            init_checkpoint=args.init_checkpoint,
            pretrain_from=args.pretrain_from,
            backbone_weights=args.backbone_weights,
            train_init_checkpoint=args.train_init_checkpoint,
            splits_file=args.splits,
            cache_file=args.cache,
            test_split=args.test_split,
            resume=state is not None,
            progress=not args.no_progress,
        )
    except (DataLayoutError, CheckpointError, ValueError) as exc:
        p.error(str(exc))
    prepare_seconds = time.perf_counter() - started
    runner = Runner(exp, policies, out, state, progress=not args.no_progress, started=started)
    runner.state.update(run_key=run_key, runtime=runtime)
    ray_info = None
    try:
        if args.ray is None:
            runner.run()
        else:
            gpus = args.gpus_per_task if args.gpus_per_task is not None else float(args.device == "cuda")
            study = RayStudy(
                runner,
                address,
                args.cpus_per_task or args.threads,
                gpus,
                3 if args.max_retries is None else args.max_retries,
                args.threads,
            )
            ray_info = study.run(progress=not args.no_progress)
    except TrainingDivergedError as exc:
        sys.exit(f"fastral.run: error: {exc} (the run state of the last good step is in '{out}')")
    except CacheSpaceError as exc:
        again = "the same command with --resume" if (out / STATE_FILE).exists() else "the same command"
        sys.exit(f"fastral.run: error: {exc}; free some space and run {again}")
    except RayRunError as exc:
        sys.exit(f"fastral.run: error: {exc}; the finished units are kept: rerun the same command with --resume")
    run_info = {
        "wall_seconds": time.perf_counter() - started,
        "wall_seconds_all_attempts": runner.wall_seconds(),
        "prepare_seconds": prepare_seconds,
        "resumed": args.resume,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "ops_backends": {
            op: [b for b, status in available_backends(exp.device, op).items() if status]
            for op in ("region_stats", "kl_histogram", "bald")
        },
        **runtime,
    }
    if ray_info is not None:
        run_info["ray"] = ray_info
    timing = {phase: t.summary() for phase, t in runner.timers.items()}
    results = write_report(out, exp, runner.state, policies, run_info, timing, plots=not args.no_plots)
    print("\n" + summary_table(results))
    print(
        f"\nwrote {out}/results.json, results.csv, selected_regions.json"
        f"{'' if args.no_plots else ' and the PNG plots'} in {run_info['wall_seconds']:.0f} s"
    )
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
