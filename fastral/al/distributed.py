"""A RALIS study on a Ray cluster (``python -m fastral.run --ray [ADDRESS]``): its independent parts as Ray tasks.

Units, each one Ray task with ``--cpus-per-task`` / ``--gpus-per-task`` and Ray's ``max_retries``:

  * ``train``: one policy training (seed, trained policy): the query network's weights and its per-episode log;
  * ``trajectory``: one evaluation trajectory (seed, policy) from theta_0 to the largest budget: the labelled
    regions in order and the environment's state (network, optimiser, labelled set) at every budget; a trained
    policy's trajectory takes its seed's trained weights as an object ref, so Ray starts it when they exist;
  * ``final``: one final training (seed, policy, budget, repeat): its test and D_R numbers; it takes the
    trajectory's state at that budget as an object ref (a trajectory's return values arrive together, so its
    finals wait for the whole trajectory: it is short beside the final trainings it feeds).

**Same numbers as a serial run.** Every unit is a method of the :class:`~fastral.al.loop.Runner` that the serial
run uses, and every unit seeds its own named random streams (:class:`~fastral.al.run_state.Streams`, the final
trainings' (seed, budget, repeat) generators), so a unit's result does not depend on where, when, beside which
others or how many times it ran; on a CPU with the same ``--threads`` the results equal the serial run's exactly.

**Files.** ``--out`` (with ``--cache``) is assumed to be on a file system that every node sees (as it is on one
machine; on a cluster, e.g. NFS): each unit first reads a marker file with a token the driver wrote there for this
attempt, and stops with an error naming ``--out`` when it does not see it. A worker writes its unit's result
atomically to ``<out>/units/<unit>.pt`` (a trajectory's includes the environment state at every budget, what its
final trainings start from) and its log to ``<out>/logs/<unit>.log``; it also returns the result, and the units
that need it get it as an object ref. The driver records each finished unit in the run state (atomically, after
each one) and writes the policy files and reports. ``--resume`` after the driver was killed takes every unit
recorded in the state or written to ``units/`` and reruns only the others. The theta_0 feature cache (HDF5) is
filled by the driver with every feature a unit can read before any unit is submitted; workers open it read-only
(:class:`ReadOnlyFeatureCache`), so it never has two writers.

**Failures.** A worker process that dies (killed, out of memory) is retried by Ray, up to ``--max-retries`` times;
every attempt appends a line to its unit's log, and results.json lists the units that took more than one
(``run.ray.retried``). An exception inside a unit is not retried (a unit is deterministic: it would fail again):
the run stops with it, its finished units kept for ``--resume``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import shutil
import socket
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .._atomic import remove_stale_temporaries, torch_save
from .._extras import DISTRIBUTION
from .cache import FeatureCache
from .loop import EVAL, PHASES, TRAIN, Runner, plan
from .presets import TRAINED_POLICIES
from .timing import Timer

FINAL = "final"
KINDS = {TRAIN: "policy trainings", "trajectory": "trajectories", FINAL: "final trainings"}
MARKER = "ray_shared_out"  #: in ``<out>/logs/``: a worker that cannot read it does not see ``--out``
UNIT_FORMAT = "fastral-ray-unit/1"
STARTED = "attempt started"  #: the log line of each attempt (counted: attempts after a worker died)
SUBMITTED = "submitted by the driver"


def ray_missing() -> str | None:
    """None when Ray imports, else the parser message that says how to install it."""
    try:
        import ray  # noqa: F401
    except ModuleNotFoundError:
        return f'Ray is not installed: pip install "{DISTRIBUTION}[ray]" (from a checkout: pip install ".[ray]")'
    return None


class RayRunError(RuntimeError):
    """A unit that failed on the cluster (the message names it and its log)."""


def unit_name(unit: tuple) -> str:
    """``train_seed0_ralis``, ``trajectory_seed1_uniform``, ``final_seed0_bald_b480_r2``."""
    kind, seed, policy, *rest = unit
    name = f"{kind}_seed{seed}_{policy}"
    return name + (f"_b{rest[0]}_r{rest[1]}" if rest else "")


class ReadOnlyFeatureCache(FeatureCache):
    """The driver's feature cache as a worker opens it: lookups only (HDF5 opened read-only, under the cache's
    shared lock). A miss would make the worker a second HDF5 writer, so it is an error: the driver fills the cache
    with every theta_0 feature a unit reads before it submits any."""

    def _validate_file(self) -> None:  # the driver created and checked it; a worker never creates or moves it
        if not self.path.is_file():
            raise FileNotFoundError(f"feature cache '{self.path}' is not visible on node {socket.gethostname()}")

    def store(self, weights, images, features) -> None:
        raise RuntimeError(
            f"feature cache {self.path}: a Ray worker asked to write the features of {len(images)} "
            "images the driver did not build (a bug: workers only read the cache)"
        )

    def _rebuild(self, problem: str) -> None:
        raise RuntimeError(f"feature cache {self.path} is {problem} (only the driver may rebuild it)")


def build_theta0_cache(runner: Runner) -> float:
    """Fill the feature cache with the theta_0 features of every image a unit can read: D_T and D_S under the
    policy-training weights (if a policy is trained), D_V and D_S under theta_0. Returns the seconds it took."""
    exp, start = runner.exp, time.perf_counter()
    d_s = exp.images("d_s")
    pools = [(exp.images("d_v"), exp.theta0)]
    if any(p in TRAINED_POLICIES for p in runner.policies):
        pools.append((exp.images("d_t"), exp.train_theta0))
    for images, theta0 in pools:
        runner.make_env(images, Timer(), theta0).features(sorted(set(images) | set(d_s)))
    return time.perf_counter() - start


def _log(path: Path, line: str) -> None:
    with open(path, "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")


def _attempts(path: Path) -> int:
    """Attempts of a unit since the driver last submitted it (from its log)."""
    lines = path.read_text().splitlines()
    last = max((i for i, line in enumerate(lines) if SUBMITTED in line), default=-1)
    return sum(STARTED in line for line in lines[last + 1 :])


def unit_file(out: Path, unit: tuple) -> Path:
    return out / "units" / f"{unit_name(unit)}.pt"


def run_unit(exp, policies: list[str], out: str, unit: tuple, threads: int, marker: str, agent=None, budget_state=None):
    """One unit on a worker (the body of the Ray task). ``agent``: a trained policy's weights (trajectory of
    ralis / ralis-shuffled); ``budget_state``: the trajectory's environment state at the budget (final).

    Returns the unit's result dict; a trajectory returns it and then its environment state at every budget (one
    object ref each, so each final training depends on its own budget's state only)."""
    out = Path(out)
    log = out / "logs" / f"{unit_name(unit)}.log"
    if not (out / "logs" / MARKER).is_file() or (out / "logs" / MARKER).read_text() != marker:
        raise RayRunError(
            f"argument --out: '{out}' is not visible on node {socket.gethostname()}: --ray needs --out "
            "(and --cache) on a file system every node of the cluster shares"
        )
    _log(log, f"{STARTED}: pid {os.getpid()} on {socket.gethostname()}")
    start = time.perf_counter()
    torch.set_num_threads(threads)  # the serial run's thread count: the same floating-point reductions
    c = exp.cache
    exp = dataclasses.replace(exp, cache=ReadOnlyFeatureCache(c.path, c.namespace, c.num_images, c.regions))
    runner = Runner(exp, policies, out, progress=False, checkpoints=False)
    kind, seed, policy, *rest = unit
    states = []
    with open(log, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):  # warnings, prints
        if kind == TRAIN:
            runner.train_policy(seed, policy)
            key = f"{seed}/{policy}"
            result = {"weights": runner.state["agents"][key], "history": runner.state["training"][key]}
        elif kind == "trajectory":
            if agent is not None:  # a train unit's result
                runner.state["agents"][f"{seed}/{policy}"] = agent["weights"]
            states = runner.evaluate_policy(seed, policy, finals=False)
            result = {"trajectory": runner.state["trajectories"][f"{seed}/{policy}"]}
        else:
            budget, repeat = rest
            env = runner.make_env(exp.images("d_v"), runner.timers[PHASES[EVAL]], exp.theta0)
            env.load_state_dict(budget_state)
            result = {"final": runner.final_training(env, seed, budget, repeat)}
    seconds = time.perf_counter() - start
    _log(log, f"finished in {seconds:.2f} s")
    result.update(
        timers={k: t.state_dict() for k, t in runner.timers.items()},
        seconds=seconds,
        attempts=_attempts(log),
        node=socket.gethostname(),
        pid=os.getpid(),
    )
    torch_save(
        {"format": UNIT_FORMAT, "unit": list(unit), "result": result, "budget_states": states}, unit_file(out, unit)
    )
    return (result, *states) if kind == "trajectory" else result


def connect(address: str) -> str:
    """``ray.init`` a new local instance (``address`` "local": never an existing one, as ray.init() alone would
    join the last ``ray start`` cluster of this machine, even a dead one) or join a cluster (``auto``,
    ``host:port``, ``ray://host:10001``); returns ``address``. Raises ConnectionError with a one-line reason."""
    import ray

    if address not in ("local", "auto"):  # ray.init retries an unreachable GCS for minutes: ask the port first
        host, _, port = address.removeprefix("ray://").rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except (OSError, ValueError) as exc:
            reason = "expected auto, host:port or ray://host:port" if isinstance(exc, ValueError) else exc
            raise ConnectionError(f"cannot connect to a Ray cluster at '{address}': {reason}") from None
    local = {"include_dashboard": False} if address == "local" else {}  # joining a cluster: its own settings
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False, **local)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Authentication" in type(exc.__cause__).__name__:  # ray start enables token authentication (Ray 2.52+)
            reason += (
                "; the cluster uses token authentication: set RAY_AUTH_MODE=token here, with the cluster's "
                "token in RAY_AUTH_TOKEN or ~/.ray/auth_token"
            )
        raise ConnectionError(f"cannot connect to a Ray cluster at '{address}': {reason}") from exc
    return address


def disconnect() -> None:
    """``ray.shutdown()`` if this process joined (or started) Ray: a local instance stops with it."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


class RayStudy:
    """The driver: submits every unit that the run state does not hold yet, records each result as it arrives."""

    def __init__(
        self, runner: Runner, address: str, cpus_per_task: float, gpus_per_task: float, max_retries: int, threads: int
    ):
        self.runner, self.exp, self.config, self.out = runner, runner.exp, runner.config, runner.out
        self.address, self.threads = address, threads
        self.resources = {"num_cpus": cpus_per_task, "num_gpus": gpus_per_task, "max_retries": max_retries}
        self.fresh = "ray" not in runner.state  # a new run (not --resume)
        self.state = runner.state.setdefault("ray", {"units": {}, "finals": {}, "records": {}})
        self.logs = self.out / "logs"
        self.budget_refs: dict[str, list] = {}  # "seed/policy" -> object refs of its trajectory's budget states

    def done(self, unit: tuple) -> bool:
        return unit_name(unit) in self.state["units"]

    def units(self) -> list[tuple]:
        """Every unit of the run, in the serial run's order."""
        out = []
        for kind, seed, policy in plan(self.config.seeds, self.runner.policies):
            if kind == TRAIN:
                out.append((TRAIN, seed, policy))
                continue
            out.append(("trajectory", seed, policy))
            out += [(FINAL, seed, policy, b, r) for b in self.config.budgets for r in range(self.config.final_repeats)]
        return out

    def budget_state(self, seed: int, policy: str, budget: int):
        """The object ref of the environment state of trajectory (seed, policy) at ``budget``; for a trajectory an
        earlier attempt finished, read from its unit file."""
        import ray

        key = f"{seed}/{policy}"
        if key not in self.budget_refs:
            saved = torch.load(unit_file(self.out, ("trajectory", seed, policy)), weights_only=True)
            self.budget_refs[key] = [ray.put(s) for s in saved["budget_states"]]
        return self.budget_refs[key][self.config.budgets.index(budget)]

    # -- the run -----------------------------------------------------------------------------------------------
    def run(self, progress: bool = True) -> dict:
        import ray

        units_dir = self.out / "units"
        if self.fresh:  # without a run state the folder holds nothing resumable (the state is saved first)
            shutil.rmtree(units_dir, ignore_errors=True)
        units_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(units_dir)  # of workers killed mid-write: no unit of this attempt is live yet
        marker = secrets.token_hex(8)
        (self.logs / MARKER).write_text(marker)
        self.runner.save()  # from now on --resume knows this is a Ray run
        cache_seconds = build_theta0_cache(self.runner)
        units = self.units()
        for unit in units:  # units a worker finished after the driver's last save (the driver was killed)
            if not self.done(unit) and unit_file(self.out, unit).is_file():
                self.record(unit, torch.load(unit_file(self.out, unit), weights_only=True)["result"])
        task = ray.remote(run_unit)
        exp_ref = ray.put(self.exp)  # once: every unit reads the same object
        bars = {
            kind: tqdm(
                total=sum(u[0] == kind for u in units),
                initial=sum(u[0] == kind and self.done(u) for u in units),
                desc=label,
                unit="unit",
                position=i,
                disable=not progress,
                dynamic_ncols=True,
            )
            for i, (kind, label) in enumerate(KINDS.items())
        }
        pending: dict = {}  # object ref -> unit, of every result the driver waits for

        def submit(unit: tuple, **kw) -> list:
            _log(self.logs / f"{unit_name(unit)}.log", SUBMITTED)
            n = 1 + len(self.config.budgets) if unit[0] == "trajectory" else 1
            refs = task.options(num_returns=n, name=unit_name(unit), **self.resources).remote(
                exp_ref, self.runner.policies, str(self.out), unit, self.threads, marker, **kw
            )
            refs = refs if n > 1 else [refs]
            pending[refs[0]] = unit
            return refs

        agents = {}  # "seed/policy" -> object ref of a trained policy (what its trajectory waits for)
        for unit in units:
            kind, seed, policy, *rest = unit
            key = f"{seed}/{policy}"
            if kind == TRAIN:
                done = self.done(unit)
                agents[key] = ray.put({"weights": self.runner.state["agents"][key]}) if done else submit(unit)[0]
            elif kind == "trajectory" and not self.done(unit):
                self.budget_refs[key] = submit(unit, agent=agents.get(key))[1:]
            elif kind == FINAL and not self.done(unit):
                submit(unit, budget_state=self.budget_state(seed, policy, rest[0]))
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            unit = pending.pop(ref)
            self.record(unit, self.result(ref, unit))
            bars[unit[0]].update()
        for bar in bars.values():
            bar.close()
        self.finish()
        shutil.rmtree(units_dir)  # everything is in the run state now
        return self.summary(cache_seconds)

    def result(self, ref, unit: tuple) -> dict:
        import ray

        log = self.logs / f"{unit_name(unit)}.log"
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # an exception inside the unit (not retried)
            cause = exc.cause if isinstance(exc.cause, Exception) else exc
            if isinstance(cause, RayRunError):
                raise RayRunError(str(cause)) from None
            raise RayRunError(f"unit {unit_name(unit)}: {type(cause).__name__}: {cause} (log {log})") from None
        except ray.exceptions.RayError as exc:  # the worker died more than --max-retries times, the node was lost
            first = str(exc).strip().splitlines()[0]
            raise RayRunError(
                f"unit {unit_name(unit)} failed after {_attempts(log)} attempt(s) ({first}); log {log}"
            ) from None

    def record(self, unit: tuple, result: dict) -> None:
        """Record a finished unit in the run state and write it (atomically) before anything else happens."""
        import ray

        runner, state = self.runner, self.runner.state
        kind, seed, policy, *rest = unit
        key = f"{seed}/{policy}"
        if kind == TRAIN:
            state["agents"][key], state["training"][key] = result["weights"], result["history"]
            runner.save_policy(seed, policy)
        elif kind == "trajectory":
            state["trajectories"][key] = result["trajectory"]
        else:
            budget, repeat = rest
            finals = self.state["finals"].setdefault(f"{key}/{budget}", {})
            finals[str(repeat)] = result["final"]
            if len(finals) == self.config.final_repeats:  # the budget's record, as the serial run makes it
                env = runner.make_env(self.exp.images("d_v"), Timer(), self.exp.theta0)
                env.load_state_dict(ray.get(self.budget_state(seed, policy, budget)))
                repeats = [finals[str(r)] for r in range(self.config.final_repeats)]
                self.state["records"][f"{key}/{budget}"] = runner.budget_record(env, seed, policy, budget, repeats)
                self.budget_refs[key][self.config.budgets.index(budget)] = None  # frees it in the object store
        for phase, saved in result["timers"].items():  # the units' time adds up as the serial run's does
            timer = runner.timers[phase]
            for section, seconds in saved["seconds"].items():
                timer.seconds[section] = timer.seconds.get(section, 0.0) + seconds
            timer.steps += saved["steps"]
        self.state["units"][unit_name(unit)] = {k: result[k] for k in ("seconds", "attempts", "node", "pid")}
        runner.save()

    def finish(self) -> None:
        """The serial run's order (seed, then policy, then budget) in every record of the state, whatever order
        the units ended in: the reports list them in that order."""
        state, tasks = self.runner.state, plan(self.config.seeds, self.runner.policies)
        for name in ("agents", "training", "trajectories"):
            kind = TRAIN if name != "trajectories" else EVAL
            state[name] = {f"{s}/{p}": state[name][f"{s}/{p}"] for k, s, p in tasks if k == kind}
        records, budgets = self.state["records"], self.config.budgets
        state["evaluations"] = [records[f"{s}/{p}/{b}"] for k, s, p in tasks if k == EVAL for b in budgets]
        self.runner.save()

    def summary(self, cache_seconds: float) -> dict:
        """What results.json says about the cluster run: resources, retries, seconds per unit."""
        import ray

        units = self.state["units"]
        seconds = {kind: [u["seconds"] for name, u in units.items() if name.startswith(kind + "_")] for kind in KINDS}
        return {
            "address": self.address,
            "nodes": len([n for n in ray.nodes() if n.get("Alive")]),
            "cluster_resources": {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")},
            "cpus_per_task": self.resources["num_cpus"],
            "gpus_per_task": self.resources["num_gpus"],
            "max_retries": self.resources["max_retries"],
            "theta0_cache_seconds": cache_seconds,
            "units": {kind: len(s) for kind, s in seconds.items()},
            "unit_seconds_total": {kind: float(np.sum(s)) for kind, s in seconds.items()},
            "unit_seconds_mean": {kind: float(np.mean(s)) if s else None for kind, s in seconds.items()},
            "retried": [{"unit": name, **u} for name, u in units.items() if u["attempts"] > 1],
        }
