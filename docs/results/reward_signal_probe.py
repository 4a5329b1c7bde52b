"""Does the RALIS reward tell informative regions from uninformative ones? (streets smoke preset, D_T and D_R only)

From one state (theta_0, or after 2 steps of uniform picks), the K = 16 pools of one step are labelled three ways:
the highest-entropy candidate of each pool ("ent"), the lowest-entropy one ("anti"), a random one ("rand"); each
is trained on and rewarded 3 times with different training seeds. Printed per setting: the mean reward of each
choice with the spread between training seeds, and the paired difference ent - anti (mean +- standard error over
10 states). No test data is touched.

    python docs/results/reward_signal_probe.py BATCHNORM LR MODE ITERATIONS [DROPOUT]
      BATCHNORM  train | frozen        (--step-batchnorm)
      LR         per-step learning rate (--step-lr)
      MODE       new: one epoch on the K new regions (the official step), all: ITERATIONS batches on every
                 labelled region so far
      DROPOUT    on (default: dropout before the classifier while training, as fastral trains) | off (the official
                 code never trains with it)
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fastral.al.experiment import prepare
from fastral.al.loop import Runner
from fastral.al.presets import get_config
from fastral.training import train_steps

torch.set_num_threads(1)
bn, lr, mode, iterations = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
dropout = sys.argv[5] if len(sys.argv) > 5 else "on"
out = Path(tempfile.mkdtemp(prefix="reward-probe-"))
exp = prepare(
    get_config("streets", step_batchnorm=bn, step_lr=lr, seeds=(0,)),
    None,
    out,
    torch.device("cpu"),
    progress=False,
    log=lambda *a: None,
)
runner = Runner(exp, ["uniform"], out, progress=False)
env = runner.make_env(exp.images("d_t"), next(iter(runner.timers.values())), exp.train_theta0)
env.model.train_dropout = dropout == "on"
rng = np.random.default_rng(0)


def label_and_train(ids, seed: int) -> float:
    generator = torch.Generator().manual_seed(seed)
    if mode == "new":
        env.label(ids)
        env.train_on(ids, generator)
    else:
        env.label(ids)
        items = env.labelled.training_items(env.labelled.region_ids)
        train_steps(
            env.model, env.dataset, items, env.optimizer, env.train_config, iterations=iterations, generator=generator
        )
        env.model.eval()
        env._weights = None  # the weights changed: their features are not theta_0's
    return env.reward_miou()


rewards = {"ent": [], "anti": [], "rand": []}
start = time.time()
for prefix in (0, 2):
    for _ in range(5):
        env.reset()
        for _ in range(prefix):
            pools = env.sample_pools(16, 10, rng)
            label_and_train(pools.chosen(rng.integers(0, 10, 16)), int(rng.integers(1 << 30)))
        snapshot, before = env.state_dict(), env.reward_miou()
        pools = env.sample_pools(16, 10, rng)
        entropy = env.entropy_scores(pools).numpy()
        choices = {"ent": entropy.argmax(1), "anti": entropy.argmin(1), "rand": rng.integers(0, 10, 16)}
        for name, picks in choices.items():
            per_seed = []
            for seed in range(3):
                env.load_state_dict(snapshot)
                per_seed.append(100 * (label_and_train(pools.chosen(picks), 1000 + seed) - before))
            rewards[name].append(per_seed)
summary = {k: f"{np.mean(v):+.3f} (seed sd {np.std(v, 1).mean():.3f})" for k, v in rewards.items()}
d = np.array(rewards["ent"]).mean(1) - np.array(rewards["anti"]).mean(1)
print(
    f"batchnorm {bn}, lr {lr}, {mode} {iterations}, dropout {dropout}: {summary}; ent - anti {d.mean():+.3f} +- "
    f"{d.std(ddof=1) / np.sqrt(len(d)):.3f} ({time.time() - start:.0f} s)"
)
