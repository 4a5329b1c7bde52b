"""The RALIS environment and the four policies: candidate sampling, feature rows, and what each policy computes."""

import math

import numpy as np
import pytest
import test_al_features as official
import torch
from _data_helpers import single_thread  # noqa: F401 (fixture)

from fastral import bald, kl_histogram, region_stats
from fastral.al import environment as environment_module
from fastral.al.cache import FeatureCache
from fastral.al.dqn import DQNAgent, DQNConfig
from fastral.al.environment import ALEnvironment
from fastral.al.features import region_features
from fastral.al.policies import BaldPolicy, EntropyPolicy, RalisPolicy, UniformPolicy
from fastral.al.query_network import QueryNetwork
from fastral.al.timing import Timer
from fastral.data import Streets
from fastral.models import SemanticFPN
from fastral.training import TrainConfig

pytestmark = pytest.mark.usefixtures("single_thread")
REGION = (16, 16)
PER_IMAGE = 4 * 5
D = 12 + 3 * 64  # class distribution (11 classes + ignore) + 3 pooled entropy maps


@pytest.fixture(scope="module")
def ds():
    return Streets("train", num_images=12, size=(64, 80), region=REGION, progress=False)


def make_env(ds, tmp_path, pool=range(2, 10)):
    torch.manual_seed(0)
    model = SemanticFPN(11, width=4, fpn_channels=8, head_channels=4).eval()
    theta0 = {k: v.clone() for k, v in model.state_dict().items()}
    cache = FeatureCache(tmp_path / "f.h5", "streets-test", len(ds), PER_IMAGE)
    config = TrainConfig(lr=0.05, batch_size=4, crop=(48, 48))
    return ALEnvironment(ds, pool, [0, 1], model, theta0, config, ds, [10, 11], cache, Timer(), eval_batch_size=4)


@pytest.fixture
def env(ds, tmp_path):
    return make_env(ds, tmp_path)


def count_forwards(model):
    """A list that grows by the batch size of every full forward of ``model``."""
    calls = []
    model.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    return calls


def image_features(env, image):
    with torch.no_grad():
        return region_features(env.model(env.dataset.image(image)[None]), REGION)


def test_pools_follow_the_official_sampling(env):
    env.label([2 * PER_IMAGE + 3, 5 * PER_IMAGE])
    pools = env.sample_pools(4, 5, np.random.default_rng(0))
    ids = pools.region_ids
    assert ids.shape == (4, 5) and ids.dtype == np.int64
    assert len(np.unique(ids)) == 20 and not any(int(r) in env.labelled for r in ids.ravel())
    images = np.unique(env.grid.image_of(ids.ravel()))
    assert set(images) <= set(range(2, 10))
    assert len(images) <= 3  # images are drawn only until their unlabelled regions exceed K * N = 20
    again = env.sample_pools(4, 5, np.random.default_rng(0))
    assert np.array_equal(again.region_ids, ids)
    assert pools.chosen([0, 1, 2, 3]).tolist() == [ids[0, 0], ids[1, 1], ids[2, 2], ids[3, 3]]
    with pytest.raises(ValueError, match=r"4 pool positions in \[0, 5\)"):
        pools.chosen([0, 1, 2, 5])


def test_pools_shrink_then_run_out(ds, tmp_path):
    env = make_env(ds, tmp_path, pool=[2, 3])
    env.label(np.arange(2 * PER_IMAGE, 2 * PER_IMAGE + 34))  # 6 of 40 regions left
    pools = env.sample_pools(2, 5, np.random.default_rng(1))
    assert pools.shape == (2, 3)
    assert sorted(pools.region_ids.ravel()) == list(range(2 * PER_IMAGE + 34, 4 * PER_IMAGE))
    env.label(np.arange(2 * PER_IMAGE + 34, 4 * PER_IMAGE - 1))
    with pytest.raises(ValueError, match="1 unlabelled regions left, fewer than the 2 pools"):
        env.sample_pools(2, 5, np.random.default_rng(1))


def test_action_features_are_the_rows_of_their_regions(env):
    pools = env.sample_pools(3, 4, np.random.default_rng(2))
    actions = env.action_features(pools)
    assert actions.shape == (3, 4, D + 64)
    ids = pools.region_ids.ravel()
    rows = torch.stack([image_features(env, r // PER_IMAGE).base[r % PER_IMAGE] for r in ids])
    torch.testing.assert_close(actions.reshape(12, -1)[:, :D], rows)
    assert (actions[..., D : D + 32] == 0).all()  # nothing labelled: no KL to the labelled set
    # the KL inputs are the raw predicted counts (+ an empty ignore slot), floored at 1e-7 inside kl_histogram
    counts = torch.stack([image_features(env, r // PER_IMAGE).class_counts[r % PER_IMAGE] for r in ids])
    assert counts.shape == (12, 12) and (counts[:, -1] == 0).all() and (counts.sum(1) == 16 * 16).all()
    torch.testing.assert_close(actions.reshape(12, -1)[:, D + 32 :], kl_histogram(counts, counts, 32))
    env.label([ids[0], ids[5]])
    gt = torch.from_numpy(env.labelled.region_class_counts()).double()
    labelled = torch.where(gt > 0, gt / gt.sum(1, keepdim=True), 1e-7)  # ground truth, void last, as officially
    torch.testing.assert_close(env.labelled_distribution(), labelled.float())
    after = env.action_features(pools).reshape(12, -1)
    torch.testing.assert_close(after[:, D : D + 32], kl_histogram(counts, labelled.float(), 32))


def test_action_features_match_the_official_code(env):
    """Through the environment: the gate's 64 columns of every candidate of a step equal the official code's
    (official-code-facts.md §2, re-computed with numpy + scipy from the argmax and ground-truth maps)."""
    rng = np.random.default_rng(7)
    for _ in range(3):  # three steps of K = 6 labelled regions, picked from the step's pools as the loop does
        env.label(env.sample_pools(6, 8, rng).chosen(rng.integers(0, 8, 6)))
    pools = env.sample_pools(6, 10, rng)
    actions = env.action_features(pools).reshape(60, -1).numpy()
    with torch.no_grad():
        argmax = np.stack([env.model(env.dataset.image(i)[None])[0].numpy().argmax(0) for i in range(len(env.dataset))])
    gt = np.stack([env.dataset.label(i).numpy() for i in range(len(env.dataset))])
    assert (gt == 255).any()  # void pixels, counted in the ignore slot of the ground truth
    corners = lambda ids: official.corners(ids, PER_IMAGE, 5, REGION)  # noqa: E731
    ref_lab, ref_pool, kl_rows = official.official_kl_columns(
        argmax, gt, REGION, corners(pools.region_ids), corners(env.labelled.region_ids), 11
    )
    assert official.compare_histograms(actions[:, D : D + 32], ref_lab, [r[0] for r in kl_rows], "labelled") <= 1
    assert official.compare_histograms(actions[:, D + 32 :], ref_pool, [r[1] for r in kl_rows], "pool") <= 1


def test_state_and_entropy_scores(env):
    state = env.state()
    assert state.shape == (2 * PER_IMAGE, D)
    torch.testing.assert_close(state[PER_IMAGE:], image_features(env, 1).base)
    pools = env.sample_pools(2, 3, np.random.default_rng(3))
    scores = env.entropy_scores(pools)
    expected = []
    for r in pools.region_ids.ravel():
        with torch.no_grad():
            logits = env.model(env.dataset.image(r // PER_IMAGE)[None])
        expected.append(region_stats(logits, REGION).entropy_mean[r % PER_IMAGE])
    torch.testing.assert_close(scores, torch.stack(expected).reshape(2, 3))


def test_bald_scores_stream_the_same_samples_as_stacked_bald(env):
    pools = env.sample_pools(4, 5, np.random.default_rng(4))
    scores = env.bald_scores(pools, 5, torch.Generator().manual_seed(7))
    images = np.unique(env.grid.image_of(pools.region_ids.ravel()))
    generator, per_region = torch.Generator().manual_seed(7), []
    for start in range(0, len(images), 4):  # the environment's batches of eval_batch_size images
        x = env.dataset.images(images[start : start + 4].tolist())
        stacked = torch.stack(list(env.model.mc_samples(x, 5, generator=generator)))
        per_region.append(bald(stacked, region=REGION).region_bald)
    per_region = torch.cat(per_region)
    rows = [np.searchsorted(images, r // PER_IMAGE) * PER_IMAGE + r % PER_IMAGE for r in pools.region_ids.ravel()]
    torch.testing.assert_close(scores, per_region[rows].reshape(4, 5), rtol=1e-5, atol=1e-6)
    assert (scores >= -1e-6).all()


def test_features_are_computed_once_per_weights(env):
    forwards = count_forwards(env.model)
    first = env.state()
    assert len(forwards) == 2  # one forward per D_S image, batch of one
    env.reset()  # back to theta_0: cached
    torch.testing.assert_close(env.state(), first)
    assert len(forwards) == 2 and env.cache.hits == 2
    env.label([40, 41])
    env.train_on([40, 41], torch.Generator().manual_seed(0))  # new weights: recomputed, not stored
    forwards.clear()
    assert not torch.equal(env.state(), first)
    assert forwards == [1, 1] and env.cache.lookup(env.weights_key(), [0, 1]) == {}


def test_policies_compute_only_what_they_score(env, monkeypatch):
    pools = env.sample_pools(4, 5, np.random.default_rng(5))
    candidate_images = len(np.unique(env.grid.image_of(pools.region_ids.ravel())))
    forwards = count_forwards(env.model)
    positions = UniformPolicy(np.random.default_rng(0)).select(pools)
    assert forwards == [] and positions.shape == (4,) and positions.max() < 5

    def no_kl(*args, **kw):
        raise AssertionError("the entropy baseline must not compute KL histograms")

    monkeypatch.setattr(environment_module, "action_features", no_kl)
    positions = EntropyPolicy(env).select(pools)
    assert forwards == [1] * candidate_images  # candidates only: no state set
    assert torch.equal(torch.from_numpy(positions), env.entropy_scores(pools).argmax(1))
    forwards.clear()
    backbone, heads = [], []
    features, head = env.model.features, env.model.head
    monkeypatch.setattr(env.model, "features", lambda x: backbone.append(len(x)) or features(x))
    monkeypatch.setattr(env.model, "head", lambda *a, **kw: heads.append(1) or head(*a, **kw))
    BaldPolicy(env, 20, torch.Generator().manual_seed(0)).select(pools)
    assert forwards == []  # no full forward: the backbone once per batch of images, then 20 heads
    assert backbone == [min(4, candidate_images - s) for s in range(0, candidate_images, 4)]
    assert len(heads) == 20 * math.ceil(candidate_images / 4)


def test_ralis_policy_is_greedy_on_the_q_values(env):
    torch.manual_seed(0)
    net = QueryNetwork(state_dim=D, state_regions=2 * PER_IMAGE, action_dim=D + 64, gate_dim=64)
    agent = DQNAgent(net, DQNConfig())
    pools = env.sample_pools(3, 4, np.random.default_rng(6))
    expected = agent.q_values(env.action_features(pools), env.state()).argmax(1).numpy()
    assert np.array_equal(RalisPolicy(env, agent).select(pools), expected)


def test_environment_state_round_trip(ds, tmp_path):
    env = make_env(ds, tmp_path)
    env.label([40, 61, 62])
    env.train_on([40, 61, 62], torch.Generator().manual_seed(0))
    twin = make_env(ds, tmp_path)
    twin.load_state_dict(env.state_dict())
    assert twin.labelled.region_ids == [40, 61, 62] and twin.weights_key() == env.weights_key()
    for e in (env, twin):
        e.label([80])
        torch.manual_seed(3)  # training dropout draws from the global generator (the run state restores it)
        e.train_on([80], torch.Generator().manual_seed(1))
    assert twin.weights_key() == env.weights_key()  # optimiser momentum restored too
