"""RALIS: reinforced active learning for semantic segmentation (Casanova et al., ICLR 2020).

Modules, one concern each:
  presets       per-data-set hyper-parameters (official CamVid / Cityscapes, small ``streets``), all overridable
  features      the state / action feature layout (class distribution, pooled entropy, KL histograms)
  cache         HDF5 cache of per-region features keyed by data set, image and weights hash
  environment   labelled set, official candidate sampling, features, training step, reward
  policies      ralis / uniform / entropy / bald behind ``select(pools) -> one pool position per pool``
  query_network, dqn, replay   the batch-mode double DQN
  experiment    data sets, splits, theta_0 and the cache of a run
  loop          policy-training episodes and evaluation at budgets, checkpointed after every step
  run_state     the atomic per-step run state and the named random streams
  report        results.json / CSV / selected_regions.json / plots / summary table; timing: per-step breakdown
``python -m fastral.run`` (:mod:`fastral.run`) drives them.

Deliberate deviations from the official code (github.com/ArantxaCasanova/ralis), each for a bug, a fragility or
speed without changing what is computed:
  * the first reward of an episode is the D_R mIoU gain over the initial network's, not the mIoU itself;
  * the first C+1 columns of the state and action features (the MLPs' class-count input) are fractions of the
    region's pixels, not raw counts floored at 1e-7 (features.py); the gate's KL histograms are computed from the
    official vectors (raw predicted counts floored at 1e-7, ground-truth fractions with void, floored at 1e-7);
    regions are numbered row-major, not x-major; D_S regions are in sorted-file order, not listdir order;
  * the query network's 1x1 convolutions are linear layers over rows (the same function, faster on a CPU);
  * DQN: the next state's best action is picked with the policy net in eval mode (no BatchNorm drift), the
    policy's learning rate decays per episode rather than per step, all-terminal batches work (dqn.py);
  * uniform selection runs no network at all, entropy computes no state and no KL histograms, BALD runs the
    backbone once per batch of images and streams 20 dropout + classifier passes (no 3.2 GB sample stacks); the
    official code forwards every candidate for every policy;
  * entropy and BALD are exact from logits (no +1e-10 inside the log);
  * one evaluation trajectory per seed and policy, with final trainings on copies of the network at each budget
    (the official code repeats the run from scratch for each budget: with the same seed the trajectories agree);
    evaluation steps skip the per-step D_R validation the official test loop computes and never uses;
  * the final training at a budget is ``final_repeats`` (default 3) runs of exactly ``final_iterations`` SGD
    iterations with a poly-decayed learning rate, items drawn per labelled region, testing the last weights; the
    reported test mIoU is their mean. The official code trains up to 1000 epochs *over labelled images* with
    early stopping on D_R and tests the best-on-D_R weights: a policy that spreads its regions over more images
    (uniform) then gets more SGD steps per epoch and a longer patience window, and one seed of that training
    moved the test mIoU of one labelled set by 8 points, more than the gaps between policies;
  * two controls that the paper does not have: ``ralis-untrained`` (the query network at initialisation) and
    ``ralis-shuffled`` (trained on rewards shuffled across the replay memory);
  * the per-episode one-epoch "final train" that only chose ``policy_best`` is skipped; evaluations use the last
    policy, as the official test script does (``policy_last``);
  * ``--step-lr`` and ``--step-batchnorm`` separate the training after each AL step from the final training
    (defaults: the official single learning rate, BatchNorm in train mode); the streets reproduction uses a per-step
    learning rate of 0.03 (see its comment in presets.py and docs/results/README.md for what was measured);
  * when fewer than K*N unlabelled regions remain, N shrinks instead of the sampler failing;
  * the segmentation learning rate is constant (the official ExponentialLR(0.998) is stepped twice per epoch);
  * splits are disjoint (the official Cityscapes D_S lies inside D_V) and built in sorted file order;
  * theta_0: without ``--init-checkpoint`` it is pretrained here, on generated scenes outside every split for
    ``streets`` (the stand-in for GTA5) or on D_T for CamVid / Cityscapes; ``--train-init-checkpoint`` gives the
    policy-training episodes other initial weights (officially GTA5-only, versus GTA5 + D_T for evaluation).
"""
