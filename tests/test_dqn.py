"""The RALIS query network, double-DQN targets, epsilon schedule and replay memory, on hand-computed values."""

import copy
import math

import numpy as np
import pytest
import torch
from _data_helpers import single_thread  # noqa: F401 (fixture)

from fastral.al.dqn import DQNAgent, DQNConfig, td_targets
from fastral.al.query_network import QueryNetwork
from fastral.al.replay import ReplayMemory, Transition

pytestmark = pytest.mark.usefixtures("single_thread")
R, DS, DA, N, K = 6, 10, 14, 5, 3  # state regions, state features, action features (4 of them KL), pool size, pools


def network(seed=0):
    torch.manual_seed(seed)
    return QueryNetwork(state_dim=DS, state_regions=R, action_dim=DA, gate_dim=4)


def test_double_dqn_targets_by_hand():
    rewards = torch.tensor([1.0, 2.0, 3.0])
    policy_next = torch.tensor([[0.1, 0.9, 0.3], [5.0, 1.0, 2.0]])  # picks a* = 1 for row 0, a* = 0 for row 1
    target_next = torch.tensor([[10.0, 20.0, 30.0], [40.0, 50.0, 60.0]])
    out = td_targets(rewards, [0, 2], policy_next, target_next, gamma=0.5)
    # transition 0: 1 + 0.5 * 20; transition 1 is terminal: 2; transition 2: 3 + 0.5 * 40
    assert out.tolist() == [11.0, 2.0, 23.0]
    assert td_targets(rewards, [], torch.zeros(0, 3), torch.zeros(0, 3), 0.5).tolist() == [1.0, 2.0, 3.0]


def test_gate_scales_the_fused_value():
    """Q = sigmoid(g) * f: with the gate's last conv fixed to output b, Q scales by sigmoid(b) / sigmoid(0)."""
    net = network().eval()
    actions, state = torch.randn(K, N, DA), torch.randn(1, R, DS)
    gate_conv = net.gate[-1]
    with torch.no_grad():
        gate_conv.weight.zero_()
        gate_conv.bias.fill_(0.0)
        half = net(actions, state)
        gate_conv.bias.fill_(2.0)
        scaled = net(actions, state)
    torch.testing.assert_close(scaled, half * (1 / (1 + math.exp(-2.0))) / 0.5)


def test_shared_state_equals_repeated_state():
    net = network().eval()
    actions, state = torch.randn(K, N, DA), torch.randn(1, R, DS)
    torch.testing.assert_close(net(actions, state), net(actions, state.expand(K, R, DS)))


def test_shapes_are_checked():
    net = network()
    with pytest.raises(ValueError, match=r"actions must be \[B, N, 14\]"):
        net(torch.randn(K, N, DA + 1), torch.randn(1, R, DS))
    with pytest.raises(ValueError, match=r"state must be \[B, 6, 10\]"):
        net(torch.randn(K, N, DA), torch.randn(1, R + 1, DS))


def test_epsilon_schedule_is_the_official_one():
    agent = DQNAgent(network(), DQNConfig())
    values = []
    for _ in range(3):
        values.append(agent.epsilon())
        agent.end_step()
    assert values == pytest.approx([0.05 + 0.85 * math.exp(-t / 10) for t in range(3)])


def test_select_is_greedy_per_pool_without_exploration():
    agent = DQNAgent(network(), DQNConfig())
    pools, state = torch.randn(K, N, DA), torch.randn(R, DS)
    expected = agent.q_values(pools, state).argmax(1)
    assert torch.equal(agent.select(pools, state, explore=False), expected)
    agent.config.eps_end = agent.config.eps_start = 1.0  # always explore: uniform indices in range
    picks = torch.stack([agent.select(pools, state, explore=True) for _ in range(50)])
    assert picks.min() >= 0 and picks.max() < N and len(picks.unique()) > 1


def fill(agent, steps, terminal_last=True):
    for step in range(steps):
        last = terminal_last and step == steps - 1
        agent.remember(
            torch.randn(R, DS),
            torch.randn(K, N, DA),
            torch.randint(0, N, (K,)),
            float(step),
            None if last else torch.randn(R, DS),
            None if last else torch.randn(K, N, DA),
        )
        agent.end_step()


def test_optimize_learns_the_reward_of_terminal_transitions():
    """With only terminal transitions the target is the reward: the loss must fall towards zero."""
    agent = DQNAgent(network(), DQNConfig(lr=1e-2, batch_size=8, buffer_size=64, eps_decay=1.0))
    for _ in range(8):
        agent.remember(torch.randn(R, DS), torch.randn(K, N, DA), torch.randint(0, N, (K,)), 0.5, None, None)
    assert agent.memory.states and len(agent.memory) == 24
    losses = [agent.optimize() for _ in range(150)]
    assert losses[-1] < 0.2 * losses[0], (losses[0], losses[-1])


def test_optimize_waits_for_a_full_batch_and_copies_the_target():
    agent = DQNAgent(network(), DQNConfig(batch_size=16, target_update=2))
    agent.remember(torch.randn(R, DS), torch.randn(K, N, DA), torch.zeros(K, dtype=torch.long), 1.0, None, None)
    assert agent.optimize() is None  # 3 transitions < 16
    fill(agent, 6)
    assert agent.optimize() is not None
    assert any(
        not torch.equal(p, q)
        for p, q in zip(agent.policy.state_dict().values(), agent.target.state_dict().values(), strict=True)
    )
    agent.end_step()  # steps in episode: 6 + 1 = 7 -> no copy; one more -> copy
    agent.end_step()
    assert all(
        torch.equal(p, q)
        for p, q in zip(agent.policy.state_dict().values(), agent.target.state_dict().values(), strict=True)
    )


def test_replay_ring_buffer_overwrites_oldest_and_drops_unused_states():
    memory = ReplayMemory(capacity=4)
    for i in range(6):
        if i % 2 == 0:
            state_id = memory.add_state(torch.full((R, DS), float(i)))
        memory.push(Transition(state_id, torch.zeros(N, DA), i, float(i), None, None))
    assert len(memory) == 4
    assert sorted(t.action for t in memory.transitions) == [2, 3, 4, 5]  # 0 and 1 were overwritten
    assert set(memory.states) == {1, 2}  # state 0 is no longer referenced
    batch = memory.sample(4, np.random.default_rng(0))
    assert sorted(t.action for t in batch) == [2, 3, 4, 5]  # without replacement


def test_agent_state_round_trip_resumes_identically():
    agent = DQNAgent(network(1), DQNConfig(batch_size=4), seed=3)
    fill(agent, 4)
    agent.optimize()
    saved = agent.state_dict()
    twin = DQNAgent(network(2), DQNConfig(batch_size=4), seed=99)
    twin.load_state_dict(saved)
    assert twin.epsilon() == agent.epsilon()
    torch.manual_seed(0)
    loss_a = agent.optimize()
    torch.manual_seed(0)
    loss_b = twin.optimize()
    assert loss_a == loss_b


def test_optimize_computes_huber_loss_against_double_dqn_and_terminal_targets():
    """One update on a terminal and a live transition, recomputed by hand from copies of the two nets."""
    agent = DQNAgent(network(3), DQNConfig(batch_size=2, buffer_size=2, gamma=0.5), seed=4)
    s, s_next = torch.randn(R, DS), torch.randn(R, DS)
    pools, next_pools = torch.randn(2, N, DA), torch.randn(2, N, DA)
    agent.remember(s, pools[:1], torch.tensor([1]), 1.0, None, None)  # the episode's last step: terminal
    agent.remember(s, pools[1:], torch.tensor([3]), 2.0, s_next, next_pools[1:])
    policy, target = copy.deepcopy(agent.policy).eval(), copy.deepcopy(agent.target)
    with torch.no_grad():
        best = policy(next_pools[1:], s_next[None]).argmax(1)  # the policy net picks a* ...
        live_target = 2.0 + 0.5 * target(next_pools[1:], s_next[None])[0, best]  # ... the target net rates it
    targets = {1: torch.tensor([1.0]), 3: live_target}
    order = copy.deepcopy(agent.rng).choice(2, size=2, replace=False)  # the batch order optimize() will draw
    batch = [agent.memory.transitions[i] for i in order]
    policy.train()
    q = policy(torch.stack([t.actions for t in batch]), torch.stack([s, s]))
    q = q[torch.arange(2), torch.tensor([t.action for t in batch])]
    expected = torch.nn.functional.smooth_l1_loss(q, torch.cat([targets[t.action] for t in batch]))
    assert agent.optimize() == pytest.approx(expected.item(), rel=1e-5)


def _bandit(agent: DQNAgent, rng: np.random.Generator, steps: int) -> None:
    """Terminal one-step transitions: the reward is the first action feature of the chosen candidate."""
    for _ in range(steps):
        pools = torch.from_numpy(rng.normal(size=(K, N, DA)).astype(np.float32))
        actions = torch.from_numpy(rng.integers(0, N, K))
        state = torch.from_numpy(rng.normal(size=(R, DS)).astype(np.float32))
        for k, a in enumerate(actions.tolist()):  # one reward per transition: K single-pool steps
            agent.remember(state, pools[k : k + 1], torch.tensor([a]), float(pools[k, a, 0]), None, None)
        agent.optimize()


@pytest.mark.parametrize("shuffled", [False, True])
def test_shuffled_rewards_break_the_link_between_action_and_reward(shuffled):
    """The ralis-shuffled control: with its rewards shuffled across transitions the agent cannot learn which
    candidate pays (it picks the best one about as often as chance, 1 / N = 0.2, or an untrained net: <= 0.4 on
    seeds 0-3); with the true rewards the same agent picks it in about 9 pools of 10."""
    rng = np.random.default_rng(0)
    config = DQNConfig(lr=1e-2, batch_size=16, buffer_size=256, shuffle_rewards=shuffled)
    agent = DQNAgent(network(), config, seed=1)
    _bandit(agent, rng, 200)
    pools = torch.from_numpy(rng.normal(size=(256, N, DA)).astype(np.float32))
    q = agent.q_values(pools, torch.from_numpy(rng.normal(size=(R, DS)).astype(np.float32)))
    best_picked = float((q.argmax(1) == pools[..., 0].argmax(1)).float().mean())
    if shuffled:
        assert best_picked < 0.5, best_picked
    else:
        assert best_picked > 0.8, best_picked


def _entropy_world(agent: DQNAgent, rng: np.random.Generator, episodes: int, steps: int = 3, pools: int = 8):
    """A toy AL environment with a known best action: feature 0 of a candidate plays its mean entropy, and the
    reward of a step, shared by its K sub-actions as in RALIS, is the mean entropy of the K chosen candidates.
    Episodes of ``steps`` steps with a new state each step, epsilon-greedy picks, one DQN update per step: the
    calls of the real training loop."""
    draw = lambda *shape: torch.from_numpy(rng.normal(size=shape).astype(np.float32))  # noqa: E731
    for _ in range(episodes):
        state, obs = draw(R, DS), draw(pools, N, DA)
        for t in range(steps):
            actions = agent.select(obs, state, explore=True)
            reward = float(obs[torch.arange(pools), actions, 0].mean())
            last = t == steps - 1
            nxt_state, nxt = (None, None) if last else (draw(R, DS), draw(pools, N, DA))
            agent.remember(state, obs, actions, reward, nxt_state, nxt)
            agent.optimize()
            agent.end_step()
            state, obs = nxt_state, nxt
        agent.end_episode()


@pytest.mark.parametrize("seed", [0, 1])
def test_a_trained_query_network_learns_the_known_best_action_and_the_untrained_control_does_not(seed):
    """The RALIS credit signal in miniature: one reward per step shared by 8 pools. After 200 episodes (600
    updates) the trained agent's greedy picks have a mean entropy of 0.73-0.83 (seeds 0-2; the best candidate of
    each pool: 1.15-1.20, chance: 0); the same network untrained (the ralis-untrained control) gets -0.29-0.39."""
    rng = np.random.default_rng(seed)
    config = DQNConfig(lr=1e-3, batch_size=16, buffer_size=512, eps_decay=100.0, lr_decay_per_episode=1.0)
    trained, untrained = DQNAgent(network(seed), config, seed=1), DQNAgent(network(seed), config, seed=1)
    _entropy_world(trained, rng, 200)
    pools = torch.from_numpy(rng.normal(size=(512, N, DA)).astype(np.float32))
    state = torch.from_numpy(rng.normal(size=(R, DS)).astype(np.float32))
    picked = {
        name: float(pools[torch.arange(512), agent.select(pools, state, explore=False), 0].mean())
        for name, agent in (("trained", trained), ("untrained", untrained))
    }
    assert picked["trained"] > 0.6 and picked["untrained"] < 0.45, picked
