"""The shared replay module: the move out of rl/dqn/ changed no batch, the buffer sizes itself from the spaces,
and prioritized replay samples, weighs and updates as Schaul et al. (2016) define it."""
from __future__ import annotations

import hashlib
import io

import gymnasium as gym
import numpy as np
import pytest
import torch
from scipy import stats

from rl.prioritized import PrioritizedReplayBuffer, SegmentTree
from rl.replay import make_replay_buffer

VECTOR = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
FRAMES = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)


def _fill(buffer, space: gym.Space, num_envs: int, adds: int, action_space: gym.Space, seed: int = 0) -> None:
    """``adds`` vector steps of random observations, actions and rewards, with random episode ends."""
    rng = np.random.default_rng(seed)
    shape = (num_envs, *space.shape)

    def observation():
        if space.dtype == np.uint8:
            return rng.integers(0, 256, size=shape, dtype=np.uint8)
        return rng.standard_normal(shape).astype(np.float32)

    obs = observation()
    for _ in range(adds):
        if isinstance(action_space, gym.spaces.Discrete):
            actions = rng.integers(0, 3, size=num_envs)
        else:
            actions = rng.uniform(-1, 1, (num_envs, *action_space.shape)).astype(np.float32)
        rewards = rng.standard_normal(num_envs).astype(np.float32)
        end = rng.random(num_envs) < 0.1
        terminated = end & (rng.random(num_envs) < 0.5)
        next_obs = observation()
        buffer.add(obs, actions, rewards, terminated, next_obs, end)
        obs = observation() if end.any() else next_obs


def _digest(space: gym.Space, capacity: int, n_step: int, adds: int) -> str:
    buffer = make_replay_buffer(space, gym.spaces.Discrete(3), capacity, 2, torch.device("cpu"), n_step=n_step,
                                gamma=0.9, generator=torch.Generator().manual_seed(7))
    _fill(buffer, space, 2, adds, gym.spaces.Discrete(3))
    h = hashlib.sha256()
    for _ in range(4):
        batch = buffer.sample(16)
        for t in (batch.obs, batch.actions, batch.returns, batch.discounts, batch.next_obs, batch.weights):
            h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# Recorded before the move: this same scenario run against rl/dqn/replay.py at commit 8963735 (its constructor
# make_replay_buffer(space, capacity, num_envs, device, n_step=, gamma=, generator=) took no action space).
BEFORE_THE_MOVE = {("vector", 1): "c48f2cf96b61d049", ("frames", 1): "d62a7127fca79227",
                   ("vector", 3): "de156c09ae1728ae", ("frames", 3): "125d09d604f1507a"}


@pytest.mark.parametrize("kind, n_step", sorted(BEFORE_THE_MOVE))
def test_the_moved_buffer_samples_bit_identical_batches(kind, n_step):
    space, capacity, adds = (VECTOR, 64, 150) if kind == "vector" else (FRAMES, 40, 60)
    assert _digest(space, capacity, n_step, adds) == BEFORE_THE_MOVE[kind, n_step]


def test_a_dqn_agent_trains_bit_identically_after_the_move():
    """Q-network parameters after 300 steps of Double DQN with 3-step returns, every field explicit; recorded
    with rl/dqn/ at commit 8963735."""
    from lab.runtime import RunOptions, Runtime
    from rl.dqn.algo import Algorithm, Config
    config = Config(env_id="CartPole-v1", total_steps=400, num_envs=2, buffer_size=500, learning_starts=50,
                    batch_size=16, lr=1e-3, train_freq=2, gradient_steps=1, target_period=20, epsilon_end=0.05,
                    exploration_fraction=0.5, eval_epsilon=0.0, hidden=(16,), n_step=3, double_q=True)
    agent = Algorithm(config, Runtime(RunOptions(device="cpu", seed=5)))
    try:
        for step in range(0, 300, 2):
            agent.train_step(step)
        h = hashlib.sha256()
        for p in agent.q.parameters():
            h.update(p.detach().numpy().tobytes())
        assert h.hexdigest()[:16] == "7afe92f8cf7de4c7"
    finally:
        agent.close()


def test_box_actions_are_stored_as_float_vectors():
    space = gym.spaces.Box(-1, 1, (2,), np.float32)
    buffer = make_replay_buffer(VECTOR, space, 64, 1, torch.device("cpu"), generator=torch.Generator().manual_seed(0))
    buffer.add(np.zeros((1, 4), np.float32), np.array([[0.25, -0.5]], np.float32), np.array([1.0], np.float32),
               np.array([False]), np.ones((1, 4), np.float32), np.array([False]))
    batch = buffer.sample(8)
    assert batch.actions.dtype == torch.float32 and batch.actions.shape == (8, 2)
    assert torch.equal(batch.actions[0], torch.tensor([0.25, -0.5]))
    assert batch.indices.dtype == torch.int64 and (batch.indices == 0).all()
    assert buffer.nbytes == type(buffer).nbytes_for(64, 1, (4,), torch.float32, (2,))


# ---------------------------------------------------------------------------- prioritized replay
def _prioritized(capacity: int = 64, n_step: int = 1, alpha: float = 0.6) -> PrioritizedReplayBuffer:
    return make_replay_buffer(VECTOR, gym.spaces.Discrete(3), capacity, 1, torch.device("cpu"), n_step=n_step,
                              generator=torch.Generator().manual_seed(0), cls=PrioritizedReplayBuffer,
                              alpha=alpha, seed=0)


def _steps(buffer, values) -> None:
    """One long episode: observation t is [t, 0, 0, 0]."""
    for t in values:
        buffer.add(np.array([[t, 0, 0, 0]], np.float32), np.array([0]), np.array([0.0], np.float32),
                   np.array([False]), np.array([[t + 1, 0, 0, 0]], np.float32), np.array([False]))


def test_sum_tree_sums_and_min_tree_minima_hold_at_every_node():
    sums, mins = SegmentTree(6, np.add, 0.0), SegmentTree(6, np.minimum, np.inf)
    values = np.array([1.0, 2.0, 3.0, 4.0, 0.5, 10.0])
    sums.update(np.arange(6), values)
    mins.update(np.arange(6), values)
    assert sums.root == values.sum() and mins.root == 0.5
    sums.update(np.array([5, 5]), np.array([7.0, 7.0]))
    assert sums.root == values.sum() - 3.0
    # leaf i covers [sum_{k<i} p_k, sum_{k<=i} p_k)
    np.testing.assert_array_equal(sums.find(np.array([0.0, 0.99, 1.0, 2.999, 3.0, 9.9, 10.4, 10.5, 100.0])),
                                  [0, 0, 1, 1, 2, 3, 4, 5, 5])


def test_sampling_frequencies_are_proportional_to_priority_alpha():
    """A chi-squared test of 40,000 draws against P(i) = p_i^alpha / sum_k p_k^alpha."""
    alpha = 0.6
    buffer = _prioritized(alpha=alpha)
    _steps(buffer, range(8))
    rows = torch.arange(8)
    errors = torch.tensor([0.1, 0.5, 1.0, 2.0, 3.0, 0.2, 4.0, 1.5], dtype=torch.float64)
    buffer.update_priorities(rows, errors)
    expected = (errors.numpy() + buffer.eps) ** alpha
    expected /= expected.sum()
    counts = np.zeros(8)
    for _ in range(400):
        batch = buffer.sample(100)
        counts += np.bincount(batch.indices.numpy(), minlength=64)[:8]
    assert counts.sum() == 40_000
    assert stats.chisquare(counts, expected * counts.sum()).pvalue > 1e-3


def test_importance_weights_follow_the_formula():
    alpha, beta = 0.6, 0.4
    buffer = _prioritized(alpha=alpha)
    _steps(buffer, range(5))
    errors = torch.tensor([0.5, 1.0, 2.0, 4.0, 8.0], dtype=torch.float64)
    buffer.update_priorities(torch.arange(5), errors)
    batch = buffer.sample(50, beta)
    p = (errors.numpy() + buffer.eps) ** alpha
    probability = p / p.sum()
    n = len(p)
    w = (n * probability) ** -beta / ((n * probability) ** -beta).max()   # w_i = (N P(i))^-beta / max_j w_j
    np.testing.assert_allclose(batch.weights.numpy(), w[batch.indices.numpy()], rtol=1e-6)
    assert batch.weights.max() <= 1.0
    assert torch.equal(batch.obs[:, 0].long(), batch.indices)            # the batch is the transitions drawn


def test_priority_updates_and_new_transitions_at_the_largest_priority():
    buffer = _prioritized(alpha=1.0)
    _steps(buffer, range(4))
    assert np.array_equal(buffer.sums.leaves[:5], [1.0, 1.0, 1.0, 1.0, 0.0])   # slot 4 holds s_4: no transition yet
    buffer.update_priorities(torch.tensor([1, 2, 2]), torch.tensor([-3.0, 0.5, 5.0]))
    assert buffer.sums.leaves[1] == pytest.approx(3.0 + buffer.eps)
    assert buffer.sums.leaves[2] == pytest.approx(5.0 + buffer.eps)                 # the last error of a row counts
    assert buffer.max_priority == pytest.approx(5.0 + buffer.eps)
    _steps(buffer, [4])
    assert buffer.sums.leaves[4] == pytest.approx(5.0 + buffer.eps)
    assert buffer.sums.root == pytest.approx(buffer.sums.leaves.sum())
    assert buffer.mins.root == pytest.approx(1.0)


def test_n_step_transitions_are_drawn_only_once_complete():
    buffer = _prioritized(n_step=3)
    _steps(buffer, range(5))
    assert np.flatnonzero(buffer.sums.leaves).tolist() == [0, 1, 2]       # s_3 and s_4 lack their 3 steps
    assert set(buffer.sample(64).indices.tolist()) <= {0, 1, 2}


def test_a_ring_that_wraps_around_leaves_overwritten_slots_at_priority_zero():
    buffer = _prioritized(capacity=16)
    _steps(buffer, range(40))
    leaves = buffer.sums.leaves[:16]
    stored = buffer.flat["valid"].numpy()
    assert np.array_equal(leaves > 0, stored)                            # exactly the complete transitions
    assert buffer.sums.root == pytest.approx(leaves.sum())
    seen = buffer.sample(256).obs[:, 0]
    assert seen.min() >= 40 - 15 and seen.max() <= 39                    # only the newest 15 transitions


def test_a_saved_prioritized_buffer_restores_its_trees_and_stream():
    buffer, copy = _prioritized(n_step=3), _prioritized(n_step=3)
    _steps(buffer, range(20))
    buffer.update_priorities(torch.arange(10), torch.linspace(0.1, 3.0, 10))
    saved = io.BytesIO()
    torch.save(buffer.state_dict(), saved)
    copy.load_state_dict(torch.load(io.BytesIO(saved.getvalue()), weights_only=True))
    np.testing.assert_array_equal(copy.sums.nodes, buffer.sums.nodes)
    np.testing.assert_array_equal(copy.mins.nodes, buffer.mins.nodes)
    assert torch.equal(copy.sample(32, 0.5).indices, buffer.sample(32, 0.5).indices)
