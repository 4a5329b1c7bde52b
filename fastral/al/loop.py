"""The RALIS loop: policy-training episodes on D_T, then every policy on D_V at a list of budgets.

A run is a fixed list of tasks (:func:`plan`): per seed, training the query network of each trained policy
(``ralis``, and the ``ralis-shuffled`` control), then one evaluation per policy. After every AL step (and every
final training) the whole run state is written atomically (:mod:`fastral.al.run_state`), so ``--resume``
continues from the last finished one. A Ray run (:mod:`fastral.al.distributed`) runs the same methods as units
on a cluster: policy trainings, evaluation trajectories and final trainings.

**Policy training** (one task per seed and trained policy): ``episodes`` episodes; each starts from theta_0 with
nothing labelled and runs steps of K regions until ``train_budget`` regions are labelled. A step: the agent picks
one candidate per pool (epsilon-greedy), the oracle labels them, the network trains on them, the reward is 100 x
the D_R mIoU gain (the first one against theta_0's mIoU: the official code's first reward is the mIoU itself), the
next state is observed, the K transitions are stored (the last step's are terminal) and the DQN takes one update.
``ralis-shuffled`` trains the same way on rewards shuffled across its replay memory; ``ralis-untrained`` is the
query network at its initialisation (the same initial weights as the other two at a seed).

**Evaluation** (one task per seed and policy): from theta_0, steps of K regions on D_V with the policy's pool size
until the largest budget. When the labelled count reaches a budget, ``final_repeats`` copies of the network are
each trained for exactly ``final_iterations`` SGD iterations on all labelled regions (items drawn per labelled
region, poly-decayed learning rate) and their last weights are tested: every policy at a budget gets the same
training, and repeat r uses the same seed for every policy (common random numbers, so paired differences between
policies do not carry the training noise twice). The trajectory itself continues from the un-finetuned network, so
every budget sees exactly what a separate run to that budget would (as the official code, which runs each budget
separately). The per-step training inside a trajectory is one item per newly labelled region, i.e. the same
ceil(K / batch) iterations per step for every policy: it has no such bias.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .._atomic import torch_save
from ..training import evaluate, make_optimizer, poly_schedule, train_steps
from .dqn import DQNAgent, DQNConfig
from .environment import ALEnvironment, Observation, Pools
from .experiment import Experiment
from .policies import BaldPolicy, EntropyPolicy, Policy, RalisPolicy, UniformPolicy
from .presets import TRAINED_POLICIES
from .query_network import QueryNetwork
from .run_state import Streams, derive_seed, save_state
from .timing import Timer

TRAIN, EVAL = "train", "eval"
PHASES = {TRAIN: "policy_training", EVAL: "evaluation"}


def plan(seeds, policies) -> list[tuple[str, int, str]]:
    """The run's tasks in order: ``(kind, seed, policy)``."""
    tasks = []
    for seed in seeds:
        tasks += [(TRAIN, seed, p) for p in TRAINED_POLICIES if p in policies]
        tasks += [(EVAL, seed, p) for p in policies]
    return tasks


def policy_file(seed: int, policy: str) -> str:
    """File name of a trained query network."""
    return f"policy_seed{seed}.pt" if policy == "ralis" else f"policy_seed{seed}_{policy}.pt"


def class_entropy(pixels) -> float:
    """Entropy (natural log) of a class histogram; 0 for an empty one."""
    p = np.asarray(pixels, np.float64)
    p = p[p > 0]
    return float(-(p / p.sum() * np.log(p / p.sum())).sum()) if p.size else 0.0


def discounted(rewards, gamma: float) -> float:
    """sum_t gamma^t r_t: the return the query network's Q of the initial state estimates."""
    return float(sum(r * gamma**t for t, r in enumerate(rewards)))


def initial_q(agent: DQNAgent, obs: Observation) -> float:
    """The query network's greedy value of an episode's first state: the mean over pools of max_a Q(s_0, a)."""
    return float(agent.q_values(obs.actions, obs.state).max(1).values.mean())


def _pack(obs: Observation) -> dict:
    return {"pools": torch.from_numpy(obs.pools.region_ids), "state": obs.state, "actions": obs.actions}


def _unpack(saved: dict) -> Observation:
    return Observation(Pools(saved["pools"].numpy()), saved["state"], saved["actions"])


class Runner:
    """Runs (or resumes) the tasks of one experiment; ``state`` is a loaded run state or None for a new run."""

    def __init__(
        self,
        exp: Experiment,
        policies,
        out: Path,
        state: dict | None = None,
        progress: bool = True,
        started: float | None = None,
        checkpoints: bool = True,
    ):
        """``started``: ``time.perf_counter()`` when this attempt began (default: now), for :meth:`wall_seconds`.
        ``checkpoints=False``: no per-step run state (a unit on a Ray worker: the driver owns the run state)."""
        self.exp, self.config, self.policies, self.out, self.progress = exp, exp.config, list(policies), out, progress
        self.checkpoints = checkpoints
        self.started = time.perf_counter() if started is None else started
        self.state = (
            state
            if state is not None
            else {
                "task_index": 0,
                "task": None,
                "agents": {},
                "training": {},
                "evaluations": [],
                "trajectories": {},
                "timers": {},
            }
        )
        self.timers = {phase: Timer() for phase in PHASES.values()}
        for phase, saved in self.state["timers"].items():
            self.timers[phase].load_state_dict(saved)
        self._earlier_seconds = float(self.state.get("wall_seconds", 0.0))  # earlier attempts, to their last save

    def wall_seconds(self) -> float:
        """Wall time of the run over all its attempts (an interrupted attempt counts up to its last save)."""
        return self._earlier_seconds + time.perf_counter() - self.started

    # -- plumbing --------------------------------------------------------------------------------------------
    def save(self, timer: Timer | None = None) -> None:
        self.state["timers"] = {k: t.state_dict() for k, t in self.timers.items()}
        self.state["wall_seconds"] = self.wall_seconds()
        if timer is None:
            save_state(self.out, self.state)
            return
        with timer.section("checkpoint"):
            save_state(self.out, self.state)

    def make_env(self, images, timer: Timer, theta0: dict) -> ALEnvironment:
        exp, c = self.exp, self.config
        return ALEnvironment(
            exp.train,
            images,
            exp.images("d_s"),
            exp.model,
            theta0,
            exp.step_train_config(),
            exp.reward,
            exp.reward_indices,
            exp.cache,
            timer,
            step_epochs=c.step_epochs,
            entropy_pool=c.entropy_pool,
            kl_bins=c.kl_bins,
            eval_batch_size=c.eval_batch_size,
        )

    def make_agent(self, seed: int, policy: str) -> DQNAgent:
        """The agent of a ralis-family ``policy`` at ``seed``, its query network at initialisation: the same
        initial weights for ralis, ralis-shuffled and ralis-untrained (only how they are trained differs)."""
        c, exp = self.config, self.exp
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "query-network-init"))
            net = QueryNetwork(
                state_dim=exp.feature_dim,
                state_regions=len(exp.images("d_s")) * exp.train.regions.per_image,
                action_dim=exp.feature_dim + 2 * c.kl_bins,
                gate_dim=2 * c.kl_bins,
            )
        dqn = DQNConfig(
            lr=c.dqn_lr,
            momentum=c.dqn_momentum,
            weight_decay=c.dqn_weight_decay,
            lr_decay_per_episode=c.dqn_lr_decay,
            gamma=c.dqn_gamma,
            batch_size=c.dqn_batch_size,
            buffer_size=c.replay_size,
            target_update=c.target_update,
            eps_start=c.eps_start,
            eps_end=c.eps_end,
            eps_decay=c.epsilon_decay_steps,
            shuffle_rewards=policy == "ralis-shuffled",
        )
        return DQNAgent(net, dqn, seed=derive_seed(seed, TRAIN, policy, "agent"))

    def make_policy(self, name: str, env: ALEnvironment, streams: Streams, seed: int) -> Policy:
        if name == "uniform":
            return UniformPolicy(streams.policy)
        if name == "entropy":
            return EntropyPolicy(env)
        if name == "bald":
            return BaldPolicy(env, self.config.bald_samples, streams.mc)
        if name.startswith("ralis"):
            agent = self.make_agent(seed, name)
            if name in TRAINED_POLICIES:
                agent.policy.load_state_dict(self.state["agents"][f"{seed}/{name}"])
            return RalisPolicy(env, agent)
        raise ValueError(f"unknown policy {name!r}")

    def bar(self, **kw) -> tqdm:
        return tqdm(disable=not self.progress, dynamic_ncols=True, **kw)

    # -- the run ---------------------------------------------------------------------------------------------
    def run(self) -> dict:
        tasks = plan(self.config.seeds, self.policies)
        for index in range(self.state["task_index"], len(tasks)):
            kind, seed, policy = tasks[index]
            if kind == TRAIN:
                self.train_policy(seed, policy)
                self.save_policy(seed, policy)
            else:
                self.evaluate_policy(seed, policy)
            self.state.update(task_index=index + 1, task=None)
            self.save()
        return self.state

    def train_policy(self, seed: int, policy: str) -> None:
        c, exp, timer = self.config, self.exp, self.timers[PHASES[TRAIN]]
        env = self.make_env(exp.images("d_t"), timer, exp.train_theta0)
        streams = Streams((seed, TRAIN, policy), (seed, TRAIN, policy), exp.device)
        agent = self.make_agent(seed, policy)
        task = self.state["task"]
        if task is None:
            task = {
                "kind": TRAIN,
                "seed": seed,
                "policy": policy,
                "episode": 0,
                "pending": None,
                "log": None,
                "prev_miou": None,
            }
        else:
            env.load_state_dict(task["env"])
            agent.load_state_dict(task["agent"])
            streams.load_state_dict(task["streams"])
        history = self.state["training"].setdefault(f"{seed}/{policy}", [])
        episodes = self.bar(
            total=c.episodes, initial=task["episode"], desc=f"seed {seed}: training {policy}", unit="episode"
        )
        steps = self.bar(total=c.steps_per_episode, desc="  AL steps", unit="step", leave=False)
        while task["episode"] < c.episodes:
            if task["pending"] is None:  # a new episode: theta_0, nothing labelled
                env.reset()
                task["prev_miou"] = exp.train_theta0_miou
                obs = env.observe(env.sample_pools(c.regions_per_step, c.train_pool_size, streams.pools))
                task["log"] = {
                    "episode": task["episode"],
                    "epsilon_start": agent.epsilon(),
                    "lr": agent.lr(),
                    "q_initial": None,
                    "rewards": [],
                    "d_r_miou": [],
                    "dqn_loss": [],
                }
                steps.reset()
            else:
                obs = _unpack(task["pending"])
            log = task["log"]
            if log["q_initial"] is None:
                log["q_initial"] = initial_q(agent, obs)
            reward, miou, loss, nxt = self.training_step(env, agent, streams, obs, task["prev_miou"])
            task["prev_miou"] = miou
            steps.update()
            log["rewards"].append(reward)
            log["d_r_miou"].append(miou)
            log["dqn_loss"].append(loss)
            task["pending"] = None if nxt is None else _pack(nxt)
            if nxt is None:  # the budget is spent: the episode ends
                losses = [x for x in log["dqn_loss"] if x is not None]
                history.append(
                    {
                        **log,
                        "return": sum(log["rewards"]),
                        "discounted_return": discounted(log["rewards"], c.dqn_gamma),
                        "final_d_r_miou": miou,
                        "mean_dqn_loss": float(np.mean(losses)) if losses else None,
                        "updates": agent.updates,
                        "class_entropy": class_entropy(env.labelled.class_histogram()),
                        "greedy_return": None,
                    }
                )
                if c.greedy_every and (task["episode"] + 1) % c.greedy_every == 0:
                    history[-1]["greedy_return"] = self.greedy_episode(agent, seed, policy, task["episode"])
                task["episode"] += 1
                episodes.update()
                episodes.set_postfix(ret=f"{history[-1]['return']:+.2f}", eps=f"{agent.epsilon():.2f}")
            if self.checkpoints:  # (a Ray unit skips the snapshots: the driver records whole units)
                task.update(env=env.state_dict(), agent=agent.state_dict(), streams=streams.state_dict())
                self.state["task"] = task
                self.save(timer)
        steps.close()
        episodes.close()
        self.state["agents"][f"{seed}/{policy}"] = {k: v.detach().clone() for k, v in agent.policy.state_dict().items()}

    def save_policy(self, seed: int, policy: str) -> None:
        """Write the trained query network of ``policy`` at ``seed`` (from the run state) to its policy file."""
        torch_save(
            {
                "format": "fastral-ralis-policy/1",
                "config": self.config.to_dict(),
                "seed": seed,
                "policy": policy,
                "state_dict": self.state["agents"][f"{seed}/{policy}"],
            },
            self.out / policy_file(seed, policy),
        )

    def greedy_episode(self, agent: DQNAgent, seed: int, policy: str, episode: int) -> float:
        """Return of one episode on D_T with the agent greedy and frozen (the ``greedy_return`` diagnostic).

        It has its own generators and environment, and forks torch's global generator, so the policy training is
        the same whether or not greedy episodes are interleaved.
        """
        c, exp = self.config, self.exp
        with self.timers[PHASES[TRAIN]].section("greedy_episodes"), torch.random.fork_rng(devices=[]):
            env = self.make_env(exp.images("d_t"), Timer(), exp.train_theta0)
            pools = np.random.default_rng(derive_seed(seed, policy, "greedy", episode, "pools"))
            train = torch.Generator().manual_seed(derive_seed(seed, policy, "greedy", episode, "train"))
            torch.manual_seed(derive_seed(seed, policy, "greedy", episode, "global"))
            total, prev = 0.0, exp.train_theta0_miou
            while len(env.labelled) < c.train_budget:
                obs = env.observe(env.sample_pools(c.regions_per_step, c.train_pool_size, pools))
                env.acquire(obs.pools, agent.select(obs.actions, obs.state, explore=False), c.train_budget, train)
                miou = env.reward_miou()
                total, prev = total + 100.0 * (miou - prev), miou
        return total

    def training_step(
        self, env: ALEnvironment, agent: DQNAgent, streams: Streams, obs: Observation, prev_miou: float
    ) -> tuple[float, float, float | None, Observation | None]:
        """One AL step of policy training from observation ``obs``: select (epsilon-greedy), label, train,
        reward, observe the next state, store the K transitions, update the DQN. Returns (reward, D_R mIoU, DQN
        loss or None, next observation or None when the episode's budget is spent)."""
        c, timer = self.config, self.timers[PHASES[TRAIN]]
        with timer.section("dqn"):
            positions = agent.select(obs.actions, obs.state, explore=True).numpy()
        n = len(env.acquire(obs.pools, positions, c.train_budget, streams.train))
        miou = env.reward_miou()
        terminal = len(env.labelled) >= c.train_budget
        nxt = None if terminal else env.observe(env.sample_pools(c.regions_per_step, c.train_pool_size, streams.pools))
        reward = 100.0 * (miou - prev_miou)
        with timer.section("dqn"):
            agent.remember(
                obs.state,
                obs.actions[:n],
                torch.from_numpy(positions[:n]),
                reward,
                None if terminal else nxt.state,
                None if terminal else nxt.actions[:n],
            )
            losses = [agent.optimize() for _ in range(c.dqn_updates_per_step)]
            losses = [x for x in losses if x is not None]
            loss = float(np.mean(losses)) if losses else None
            agent.end_step()
            if terminal:
                agent.end_episode()
        timer.step()
        return reward, miou, loss, nxt

    def evaluate_policy(self, seed: int, name: str, finals: bool = True) -> list[dict]:
        """The evaluation trajectory of policy ``name`` at ``seed``, with its final trainings at every budget.

        ``finals=False`` (a trajectory unit of a Ray run): the final trainings are left to units of their own and
        the environment's state at each budget (:meth:`ALEnvironment.state_dict`, what they start from) is
        returned instead, one per budget; the trajectory is the same either way (it never sees the finals).
        """
        c, exp, timer = self.config, self.exp, self.timers[PHASES[EVAL]]
        env = self.make_env(exp.images("d_v"), timer, exp.theta0)
        streams = Streams((seed, EVAL, name), (seed, EVAL), exp.device)
        policy = self.make_policy(name, env, streams, seed)
        task = self.state["task"]
        if task is None:
            task = {
                "kind": EVAL,
                "seed": seed,
                "policy": name,
                "budget_index": 0,
                "step": 0,
                "steps": [],
                "records": [],
                "final": None,
            }
        else:
            env.load_state_dict(task["env"])
            streams.load_state_dict(task["streams"])
        K, N = c.regions_per_step, c.pool_size_of(name)
        budget_states = []  # finals=False only: such a unit is never resumed mid-way (it reruns from the start)
        bar = self.bar(
            total=math.ceil(c.budgets[-1] / K), initial=task["step"], desc=f"seed {seed}: {name}", unit="step"
        )
        while task["budget_index"] < len(c.budgets):
            target = c.budgets[task["budget_index"]]
            if task["final"] is None:  # an AL step
                pools = env.sample_pools(K, N, streams.pools)
                ids = env.acquire(pools, policy.select(pools), target, streams.train)
                timer.step()
                task["steps"] += [task["step"]] * len(ids)
                task["step"] += 1
                bar.update()
                if len(env.labelled) == target and finals:
                    task["final"] = []
                elif len(env.labelled) == target:
                    budget_states.append(env.state_dict())
                    task["budget_index"] += 1
            else:  # the final trainings at this budget, one repeat per checkpoint
                repeat = len(task["final"])
                bar.set_postfix(budget=target, status=f"final training {repeat + 1}/{c.final_repeats}")
                task["final"].append(self.final_training(env, seed, target, repeat))
                if len(task["final"]) == c.final_repeats:
                    record = self.budget_record(env, seed, name, target, task["final"])
                    task["records"].append(record)
                    task.update(budget_index=task["budget_index"] + 1, final=None)
                    bar.set_postfix(budget=target, test_miou=f"{100 * record['test_miou']:.2f}")
            if self.checkpoints:
                task.update(env=env.state_dict(), streams=streams.state_dict())
                self.state["task"] = task
                self.save(timer)
        bar.close()
        self.state["evaluations"] += task["records"]
        self.state["trajectories"][f"{seed}/{name}"] = {"region_ids": env.labelled.region_ids, "steps": task["steps"]}
        return budget_states

    def final_training(self, env: ALEnvironment, seed: int, budget: int, repeat: int) -> dict:
        """Repeat ``repeat`` of the final training at ``budget``: a copy of the network trained for exactly
        ``final_iterations`` SGD iterations on every labelled region (poly-decayed learning rate), the last
        weights tested on the test split and measured on D_R.

        Its generators (and a forked global torch generator) are seeded by (seed, budget, repeat) only: every
        policy's repeat r draws the same crops, flips, batch orders and dropout masks, and the AL trajectory does
        not depend on which budgets were evaluated along it.
        """
        c, exp, timer = self.config, self.exp, self.timers[PHASES[EVAL]]
        model = copy.deepcopy(env.model)
        generator = torch.Generator().manual_seed(derive_seed(seed, "final", budget, repeat))
        devices = [exp.device.index or 0] if exp.device.type == "cuda" else []
        config = exp.train_config()
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(derive_seed(seed, "final", budget, repeat, "global"))
            with timer.section("final_training"):
                optimizer = make_optimizer(model, config)
                items = env.labelled.training_items(env.labelled.region_ids)
                train_steps(
                    model,
                    exp.train,
                    items,
                    optimizer,
                    config,
                    iterations=c.final_iterations,
                    generator=generator,
                    scheduler=poly_schedule(optimizer, c.final_iterations),
                )
        with timer.section("test_evaluation"):
            ev = evaluate(model, exp.test, exp.test_indices, c.eval_batch_size)
            d_r = evaluate(model, exp.reward, exp.reward_indices, c.eval_batch_size)
        return {"test_miou": ev.miou, "test_iou": ev.iou.tolist(), "test_accuracy": ev.accuracy, "d_r_miou": d_r.miou}

    def budget_record(self, env: ALEnvironment, seed: int, policy: str, budget: int, repeats: list[dict]) -> dict:
        """The evaluation record of one labelled set: means over the final-training repeats, and each repeat."""
        iou = np.array([[np.nan if v is None else v for v in r["test_iou"]] for r in repeats], np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a class absent from the test split: NaN, not a mean
            mean_iou = np.nanmean(iou, 0)
        pixels = env.labelled.class_histogram()
        return {
            "seed": seed,
            "policy": policy,
            "budget": budget,
            "final_iterations": self.config.final_iterations,
            "test_miou": float(np.mean([r["test_miou"] for r in repeats])),
            "test_miou_repeats": [r["test_miou"] for r in repeats],
            "test_iou": mean_iou.tolist(),
            "test_accuracy": float(np.mean([r["test_accuracy"] for r in repeats])),
            "d_r_miou": float(np.mean([r["d_r_miou"] for r in repeats])),
            "d_r_miou_repeats": [r["d_r_miou"] for r in repeats],
            "labelled_images": len(env.labelled.images()),
            "labelled_pixels": pixels.tolist(),
            "class_entropy": class_entropy(pixels),
        }
