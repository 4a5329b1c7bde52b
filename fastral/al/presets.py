"""Per-data-set RALIS hyper-parameters: the official CamVid / Cityscapes values and a small ``streets`` preset.

Every field of :class:`RalisConfig` is overridable (``python -m fastral.run --<field-name> ...``; the flags are
generated from the fields below, with their help text). The official values come from the authors' scripts
(``scripts/launch_{train,test}_ralis.sh``, ``launch_baseline.sh``) and parser defaults; see
``notes/official-code-facts.md``. ``streets`` is tuned so that ``python -m fastral.run`` with no arguments runs
the whole pipeline (policy training, four policies at three budgets, final training, plots) in a few minutes on a
2-core CPU: small images, a narrow network, a short policy training.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .._validate import MAX_SEED
from ..training import BATCHNORM_MODES

POLICIES = ("ralis", "uniform", "entropy", "bald", "ralis-untrained", "ralis-shuffled")
# Controls: the query network at initialisation, and one trained on rewards shuffled across transitions. A RALIS
# gain that comes from learning beats both; either matching RALIS means the gain is not the DQN's doing.
CONTROLS = ("ralis-untrained", "ralis-shuffled")
TRAINED_POLICIES = ("ralis", "ralis-shuffled")  # policies whose query network is trained per seed
PRETRAIN_SOURCES = ("source", "d_t", "none")


def _f(default, help: str, **meta) -> Any:
    """A dataclass field with CLI metadata: ``help``, and ``nargs``/``type`` for the generated flag."""
    factory = {"default_factory": lambda: default} if isinstance(default, (list, dict)) else {"default": default}
    return field(**factory, metadata={"help": help, **meta})


@dataclass(frozen=True)
class RalisConfig:
    """Everything a RALIS run depends on besides the data root, device and output folder."""

    dataset: str = _f("streets", "data set the preset is for", cli=False)
    preset: str = _f("official", "what the preset is for ('smoke' = a quick check of the pipeline)", cli=False)
    policies: tuple[str, ...] = _f(POLICIES, "policies evaluated when --policy is not given", cli=False)
    # -- data -----------------------------------------------------------------------------------------------
    image_size: tuple[int, int] | None = _f(None, "streets only: generated image size (H, W)", nargs=2, type=int)
    region: tuple[int, int] | None = _f(None, "AL region (h, w) in pixels; default: the data set's", nargs=2, type=int)
    scale: float = _f(1.0, "resize factor of camvid / cityscapes images (regions scale along)", type=float)
    streets_seed: int = _f(0, "streets only: seed of the generated data set", type=int)
    streets_images: tuple[int, int, int] | None = _f(
        None,
        "streets only: number of train / val / test images to generate (default 360 / 60 / 100)",
        nargs=3,
        type=int,
    )
    d_s: int | None = _f(None, "images in the state set D_S (default: the data set's recipe, 10)", type=int)
    d_t: int | None = _f(None, "images in D_T, the pool the policy is trained on (default: the recipe)", type=int)
    d_r: int | None = _f(
        None,
        "images of the source split in D_R, the reward and validation set (Cityscapes' recipe: 200; camvid and "
        "streets use their whole val split instead: see --reward-images)",
        type=int,
    )
    d_v: int | None = _f(None, "images in D_V, the pool policies are evaluated on (default: the rest)", type=int)
    d_test: int | None = _f(
        None,
        "hold back this many images of the source split as the test set, disjoint from D_S / D_T / D_R / D_V "
        "(for data without a labelled test split, e.g. CamVid with train and val only; default: the data set's "
        "test split)",
        type=int,
    )
    reward_images: int | None = _f(None, "use only the first N images of D_R for rewards and early stopping", type=int)
    split_seed: int = _f(0, "seed of the D_S / D_T / D_R / D_V split (one split for all seeds)", type=int)
    # -- segmentation network ---------------------------------------------------------------------------------
    model: str = _f("compact", "model size preset of fastral.models (compact or paper)", choices=("compact", "paper"))
    width: int | None = _f(None, "backbone base width (default: the model preset's)", type=int)
    fpn_channels: int | None = _f(None, "FPN channels (default: the model preset's)", type=int)
    head_channels: int | None = _f(None, "channels of each semantic branch (default: the model preset's)", type=int)
    dropout: float = _f(0.5, "dropout before the classifier (MC dropout for BALD)", type=float)
    # -- initial weights theta_0 ------------------------------------------------------------------------------
    pretrain: str = _f(
        "d_t",
        "how theta_0 is made without --init-checkpoint: 'source' = labelled generated images disjoint from every "
        "split (streets' stand-in for GTA5), 'd_t' = all labels of D_T, 'none' = random weights",
        choices=PRETRAIN_SOURCES,
    )
    pretrain_images: int = _f(60, "'source' pretraining: number of generated images", type=int)
    pretrain_epochs: int = _f(30, "pretraining epochs (early stopping on D_R)", type=int)
    pretrain_patience: int = _f(5, "pretraining early-stopping patience (epochs)", type=int)
    pretrain_lr: float = _f(0.01, "pretraining SGD learning rate", type=float)
    pretrain_seed: int = _f(0, "seed of the initial weights and of the pretraining", type=int)
    # -- active learning --------------------------------------------------------------------------------------
    regions_per_step: int = _f(24, "K: regions labelled per step = number of pools", type=int)
    train_pool_size: int = _f(20, "N while training the policy: candidates per pool", type=int)
    pool_size: int = _f(10, "N of the RALIS policy at evaluation", type=int)
    baseline_pool_size: int = _f(10, "N of the entropy and BALD baselines", type=int)
    uniform_pool_size: int = _f(50, "N of the uniform baseline", type=int)
    train_budget: int = _f(480, "regions labelled per policy-training episode (the episode's budget)", type=int)
    episodes: int = _f(100, "policy-training episodes", type=int)
    budgets: tuple[int, ...] = _f(
        (480, 720, 960, 1200, 1440, 1920), "evaluation budgets (regions)", nargs="+", type=int
    )
    seeds: tuple[int, ...] = _f(
        (20, 50, 82, 12, 4560), "seeds: one policy training + evaluation each", nargs="+", type=int
    )
    bald_samples: int = _f(20, "MC-dropout samples of the BALD baseline", type=int)
    entropy_pool: tuple[int, int] = _f((8, 8), "entropy pooling grid per region (ph, pw)", nargs=2, type=int)
    kl_bins: int = _f(32, "bins of each KL histogram", type=int)
    # -- segmentation training --------------------------------------------------------------------------------
    lr: float = _f(1e-3, "SGD learning rate of the segmentation net (AL steps and final training)", type=float)
    momentum: float = _f(0.95, "SGD momentum of the segmentation net", type=float)
    weight_decay: float = _f(1e-4, "SGD weight decay of the segmentation net", type=float)
    batch_size: int = _f(32, "segmentation training batch size", type=int)
    crop: tuple[int, int] | None = _f(
        (224, 224), "random training crop (h, w) that contains the region", nargs=2, type=int
    )
    grad_clip: float = _f(4.0, "gradient-norm clipping (0 = off)", type=float)
    step_epochs: int = _f(1, "epochs over the newly labelled regions after each AL step", type=int)
    step_lr: float | None = _f(
        None, "SGD learning rate of the training after each AL step (default: --lr, as the official code)", type=float
    )
    step_batchnorm: str = _f(
        "train",
        "BatchNorm during the training after each AL step: 'train' (batch statistics, running statistics updated, "
        "as the official code) or 'frozen' (theta_0's running statistics kept; the final training always uses "
        "'train')",
        choices=BATCHNORM_MODES,
    )
    final_iterations: int = _f(
        3000,
        "final training at a budget: SGD iterations on all labelled regions (the same for every policy; poly-decayed "
        "learning rate; the last weights are tested)",
        type=int,
    )
    final_repeats: int = _f(
        3, "final trainings per labelled set, each with its own seed (test mIoU = their mean)", type=int
    )
    eval_batch_size: int = _f(4, "batch size of evaluation and MC-dropout passes", type=int)
    # -- DQN ----------------------------------------------------------------------------------------------------
    dqn_lr: float = _f(1e-3, "query network SGD learning rate", type=float)
    dqn_momentum: float = _f(0.95, "query network SGD momentum", type=float)
    dqn_weight_decay: float = _f(1e-3, "query network weight decay", type=float)
    dqn_lr_decay: float = _f(0.97, "query network LR decay per episode", type=float)
    dqn_gamma: float = _f(0.999, "discount factor", type=float)
    dqn_batch_size: int = _f(16, "transitions per DQN update", type=int)
    dqn_updates_per_step: int = _f(
        1,
        "DQN gradient updates after each AL step (the official code: 1; its --dqn-epochs is parsed, unused)",
        type=int,
    )
    replay_size: int = _f(600, "replay memory capacity (transitions; K per step)", type=int)
    target_update: int = _f(5, "copy the policy net into the target net every this many steps", type=int)
    eps_start: float = _f(0.9, "epsilon-greedy: start value", type=float)
    eps_end: float = _f(0.05, "epsilon-greedy: final value", type=float)
    eps_decay: float = _f(10.0, "epsilon-greedy: decay constant in AL steps (over all episodes)", type=float)
    eps_decay_fraction: float | None = _f(
        None,
        "epsilon-greedy: decay constant as a fraction of all policy-training steps (episodes x steps per episode), "
        "so the schedule scales with the run; overrides --eps-decay",
        type=float,
    )
    greedy_every: int = _f(
        5,
        "policy training: a greedy episode on D_T (no exploration, no updates) after every this many episodes "
        "(0 = none): the greedy_return learning diagnostic",
        type=int,
    )

    def replace(self, **changes) -> RalisConfig:
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown RALIS config fields {unknown}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @property
    def steps_per_episode(self) -> int:
        return -(-self.train_budget // self.regions_per_step)

    @property
    def epsilon_decay_steps(self) -> float:
        """The epsilon decay constant in AL steps: ``eps_decay``, or ``eps_decay_fraction`` of the whole run."""
        if self.eps_decay_fraction is None:
            return self.eps_decay
        return self.eps_decay_fraction * self.episodes * self.steps_per_episode

    def pool_size_of(self, policy: str) -> int:
        """N (candidates per pool) that ``policy`` uses at evaluation."""
        return {"ralis": self.pool_size, "uniform": self.uniform_pool_size}.get(policy, self.baseline_pool_size)

    def check(self) -> None:
        """Raise ValueError naming the field, the expected range and the value received."""

        def need(ok: bool, name: str, expected: str) -> None:
            if not ok:
                raise ValueError(
                    f"argument --{name.replace('_', '-')}: expected {expected}, got {getattr(self, name)!r}"
                )

        for f in dataclasses.fields(self):  # NaN and inf pass every range check below: refuse them first
            value = getattr(self, f.name)
            if isinstance(value, float):
                need(math.isfinite(value), f.name, "a finite number")
        positive = (
            "regions_per_step",
            "train_pool_size",
            "pool_size",
            "baseline_pool_size",
            "uniform_pool_size",
            "train_budget",
            "bald_samples",
            "kl_bins",
            "batch_size",
            "step_epochs",
            "final_iterations",
            "final_repeats",
            "eval_batch_size",
            "dqn_batch_size",
            "dqn_updates_per_step",
            "replay_size",
            "target_update",
            "pretrain_images",
        )
        for name in positive:
            need(getattr(self, name) >= 1, name, "an integer >= 1")
        for name in ("episodes", "pretrain_epochs", "pretrain_patience"):
            need(getattr(self, name) >= 0, name, "an integer >= 0")
        need(len(self.budgets) >= 1 and all(b >= 1 for b in self.budgets), "budgets", "one or more budgets >= 1")
        need(list(self.budgets) == sorted(set(self.budgets)), "budgets", "strictly increasing budgets")
        need(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds), "seeds", "one or more distinct seeds")
        need(all(0 <= s <= MAX_SEED for s in self.seeds), "seeds", f"seeds in [0, {MAX_SEED}]")
        for name in ("split_seed", "pretrain_seed", "streets_seed"):
            need(0 <= getattr(self, name) <= MAX_SEED, name, f"a seed in [0, {MAX_SEED}]")
        need(self.scale > 0, "scale", "a factor > 0")
        for name in ("lr", "dqn_lr", "pretrain_lr"):
            need(getattr(self, name) > 0, name, "a learning rate > 0")
        need(self.step_lr is None or self.step_lr > 0, "step_lr", "a learning rate > 0")
        need(0 <= self.dropout < 1, "dropout", "a probability in [0, 1)")
        for name in ("momentum", "dqn_momentum"):
            need(0 <= getattr(self, name) < 1, name, "a momentum in [0, 1)")
        for name in ("weight_decay", "dqn_weight_decay"):
            need(getattr(self, name) >= 0, name, "a weight decay >= 0")
        need(self.grad_clip >= 0, "grad_clip", "a gradient-norm bound >= 0 (0 = off)")
        need(0 < self.dqn_lr_decay <= 1, "dqn_lr_decay", "a decay factor in (0, 1]")
        need(0 < self.dqn_gamma <= 1, "dqn_gamma", "a discount in (0, 1]")
        need(0 <= self.eps_end <= self.eps_start <= 1, "eps_start", "0 <= eps_end <= eps_start <= 1")
        need(self.eps_decay > 0, "eps_decay", "a decay constant > 0")
        need(self.eps_decay_fraction is None or self.eps_decay_fraction > 0, "eps_decay_fraction", "a fraction > 0")
        need(self.greedy_every >= 0, "greedy_every", "an integer >= 0")
        need(self.replay_size >= self.dqn_batch_size, "replay_size", f">= --dqn-batch-size ({self.dqn_batch_size})")
        need(self.pretrain in PRETRAIN_SOURCES, "pretrain", f"one of {PRETRAIN_SOURCES}")
        need(
            self.pretrain != "source" or self.dataset == "streets",
            "pretrain",
            "'d_t' or 'none' ('source' images are generated, streets only)",
        )
        for name in ("image_size", "streets_images"):
            need(getattr(self, name) is None or self.dataset == "streets", name, "nothing (streets only)")
        for name in ("region", "crop", "entropy_pool", "image_size"):
            value = getattr(self, name)
            need(value is None or min(value) >= 1, name, "sizes >= 1")
        for name in ("d_s", "d_t", "d_r", "d_v", "d_test", "reward_images"):
            need(getattr(self, name) is None or getattr(self, name) >= 1, name, "an integer >= 1")


# The field defaults are the official CamVid values, except the final training: a fixed number of iterations
# (fastral's choice, not tuned; officially up to 1000 epochs with early stopping on D_R, patience 150).
CAMVID = RalisConfig(dataset="camvid")

CITYSCAPES = RalisConfig(
    dataset="cityscapes",
    regions_per_step=256,
    train_pool_size=20,
    pool_size=100,
    baseline_pool_size=200,
    uniform_pool_size=500,
    train_budget=3840,
    episodes=50,
    budgets=(1920, 3840, 7680, 11520, 19200, 30720),
    seeds=(20, 50, 234, 77, 12),
    lr=1e-4,
    batch_size=16,
    crop=(256, 512),
    final_iterations=5000,  # fastral's choice (official: early stopping, patience 60 epochs): not tuned
    eval_batch_size=1,
    dqn_lr=1e-4,
    replay_size=3200,
)

# The no-argument SMOKE RUN: the whole pipeline (theta_0, policy training, ralis / uniform / entropy / bald at two
# budgets, three final trainings each, plots; --policy all adds the two controls) in under 10 minutes on 2 CPU
# cores; too few seeds and episodes for a result (the output says so). The data set's own 128x160 scenes with
# 32x32 regions (20 per image, 5000 in D_V) and the network that learns every class of them with all labels
# (python -m fastral.train); theta_0 is trained on 10 generated scenes outside every split (the stand-in for GTA5
# pretraining), so the budgets (64 and 128 regions: 32% and 64% more labelled pixels than theta_0 saw) matter.
# Measured (2 seeds): theta_0 on 64x80 crops reaches 32.0 test mIoU (rare classes ~0 IoU) and uniform 33.2 / 34.3 at
# the budgets; theta_0 on whole images reaches 38.0, and every policy then ended below it (31.5 / 33.8 uniform).
# K = 16 regions per step; D_R is the first 30 val images (rewards are its most frequent cost).
STREETS = RalisConfig(
    dataset="streets",
    preset="smoke",
    policies=POLICIES[:4],  # the controls cost 2 more trainings and evaluations per seed: --policy all
    pretrain="source",
    pretrain_images=10,
    pretrain_epochs=120,
    pretrain_patience=120,
    pretrain_lr=0.05,
    model="compact",
    width=16,
    fpn_channels=32,
    head_channels=16,
    regions_per_step=16,
    train_pool_size=10,
    pool_size=10,
    baseline_pool_size=10,
    uniform_pool_size=50,
    train_budget=64,
    episodes=10,
    budgets=(64, 128),
    seeds=(0, 1),
    reward_images=30,
    lr=0.01,
    batch_size=8,
    crop=(64, 80),
    final_iterations=80,
    eval_batch_size=16,
    dqn_lr=1e-3,
    replay_size=600,
)

# The reproduction of the paper's comparison on the built-in world (``--preset reproduce``): enough seeds,
# policies, budgets and query-network updates (2,000 per seed) for a result, resumable. The per-step learning rate
# 0.03 is the smallest at which the reward favours high-entropy regions over low-entropy ones (measured on D_T / D_R
# with docs/results/reward_signal_probe.py; at 0.01 and 0.001 it favours the least uncertain regions). Its run and
# its reading: docs/results/README.md.
STREETS_REPRODUCE = STREETS.replace(
    preset="reproduce",
    policies=POLICIES,
    seeds=(0, 1, 2, 3, 4),
    episodes=100,
    dqn_updates_per_step=5,
    eps_decay_fraction=0.2,
    greedy_every=10,
    budgets=(64, 128, 192),
    step_lr=0.03,
)

# Every (data set, preset name); the first preset of a data set is its default.
NAMED_PRESETS: dict[str, dict[str, RalisConfig]] = {
    "streets": {"smoke": STREETS, "reproduce": STREETS_REPRODUCE},
    "camvid": {"official": CAMVID},
    "cityscapes": {"official": CITYSCAPES},
}
PRESETS: dict[str, RalisConfig] = {name: next(iter(named.values())) for name, named in NAMED_PRESETS.items()}


def get_config(dataset: str, preset: str | None = None, **overrides) -> RalisConfig:
    """The ``preset`` of ``dataset`` (default: the data set's first) with ``overrides`` applied (None values are
    ignored) and checked."""
    if dataset not in NAMED_PRESETS:
        raise ValueError(f"argument --dataset: expected one of {sorted(NAMED_PRESETS)}, got {dataset!r}")
    named = NAMED_PRESETS[dataset]
    if preset is not None and preset not in named:
        raise ValueError(f"argument --preset: {dataset} has the presets {list(named)}, got {preset!r}")
    base = named[preset] if preset is not None else PRESETS[dataset]
    config = base.replace(**{k: v for k, v in overrides.items() if v is not None})
    config.check()
    return config
