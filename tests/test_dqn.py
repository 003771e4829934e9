"""DQN: the TD target, the epsilon schedule, the replay buffer's n-step returns, the target
network's period, exact save/resume of agent + buffer, and bad input through the CLI."""
from __future__ import annotations

import io
import json
import re

import gymnasium as gym
import numpy as np
import pytest
import torch

from lab.runtime import RunOptions, Runtime
from rl.dqn.algo import Algorithm, Config, EvalOptions, QNetwork, double_q_target, dueling_q, linear_epsilon, td_target
from rl.replay import ReplayBuffer

# A small, fast CartPole configuration for mechanics tests (not for learning).
TINY = dict(env_id="CartPole-v1", total_steps=400, buffer_size=500, learning_starts=50, batch_size=16,
            train_freq=2, gradient_steps=1, target_period=20, hidden=(16,), eval_episodes=2)


def make_agent(seed: int = 0, **overrides) -> Algorithm:
    return Algorithm(Config(**{**TINY, **overrides}), Runtime(RunOptions(device="cpu", seed=seed)))


# ---------------------------------------------------------------------------- the maths
def test_td_target_bootstraps_on_truncation_not_on_termination():
    q_t = torch.tensor([[1.0, 3.0], [2.0, -1.0], [5.0, 4.0]])   # Q_target(s', .)
    r_t = torch.tensor([1.0, 0.5, -1.0])
    # row 0: ongoing; row 1: terminated (no bootstrap); row 2: truncated by a time limit (bootstrap)
    discount_t = torch.tensor([0.9, 0.0, 0.9])
    expected = torch.tensor([1.0 + 0.9 * 3.0, 0.5, -1.0 + 0.9 * 5.0])
    torch.testing.assert_close(td_target(r_t, discount_t, q_t), expected)


def test_double_q_target_lets_the_online_network_choose():
    q_target = torch.tensor([[1.0, 3.0], [2.0, -1.0]])
    q_online = torch.tensor([[9.0, 0.0], [0.0, 9.0]])          # picks action 0, then action 1
    r_t, discount_t = torch.tensor([0.0, 1.0]), torch.tensor([0.5, 0.5])
    torch.testing.assert_close(double_q_target(r_t, discount_t, q_target, q_online), torch.tensor([0.5, 0.5]))


def test_dueling_advantages_have_mean_zero_and_a_constant_advantage_leaves_q_equal_to_v():
    v, a = torch.tensor([[2.0], [-1.0]]), torch.tensor([[1.0, 3.0, 5.0], [0.0, 0.0, 6.0]])
    q = dueling_q(v, a)
    torch.testing.assert_close(q.mean(-1, keepdim=True), v)                # mean_a (Q - V) = 0
    torch.testing.assert_close(dueling_q(v, torch.full((2, 3), 7.0)), v.expand(2, 3))


@pytest.mark.parametrize("space", [gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)])
def test_dueling_q_network_for_the_mlp_and_the_nature_cnn(space):
    net = QNetwork(space, 3, (16,), dueling=True)
    obs = torch.as_tensor(np.stack([space.sample() for _ in range(2)]))
    h = net.trunk(obs.float() if obs.is_floating_point() else obs)
    torch.testing.assert_close(net(obs).mean(-1), net.head.value(h).squeeze(-1))


def test_linear_epsilon_schedule():
    assert linear_epsilon(0, 1.0, 0.1, 100) == 1.0
    assert linear_epsilon(50, 1.0, 0.1, 100) == pytest.approx(0.55)
    assert linear_epsilon(100, 1.0, 0.1, 100) == pytest.approx(0.1)
    assert linear_epsilon(10_000, 1.0, 0.1, 100) == pytest.approx(0.1)
    agent = make_agent(total_steps=1000, exploration_fraction=0.5, epsilon_end=0.02)
    try:
        assert [agent.epsilon(s) for s in (0, 250, 500, 900)] == pytest.approx([1.0, 0.51, 0.02, 0.02])
    finally:
        agent.close()


def test_env_family_defaults_are_resolved_without_touching_the_config():
    classic, atari = Config(), Config(env_id="ALE/Pong-v5")
    assert classic.lr is None and atari.lr is None                 # what is saved stays unset
    assert (atari.resolved().lr, atari.resolved().batch_size, atari.resolved().train_freq) == (1e-4, 32, 4)
    assert atari.resolved().epsilon_end == 0.01 and atari.resolved().exploration_fraction == 0.1
    assert classic.resolved().buffer_size == 100_000
    assert Config(env_id="ALE/Pong-v5", lr=3e-4).resolved().lr == 3e-4


# ---------------------------------------------------------------------------- replay buffer
def _vector_buffer(n_step: int, gamma: float = 0.5) -> ReplayBuffer:
    return ReplayBuffer(64, 1, (1,), torch.float32, torch.device("cpu"), n_step=n_step, gamma=gamma,
                        generator=torch.Generator().manual_seed(0))


def _play(buffer: ReplayBuffer, rewards, end: str) -> None:
    """One episode with observations 0, 1, 2, ... and final observation 100, then one step of the next."""
    for t, r in enumerate(rewards):
        last = t == len(rewards) - 1
        next_obs = 100.0 if last else t + 1.0
        terminated = last and end == "terminated"
        buffer.add(np.array([[t]], np.float32), np.array([t % 2]), np.array([r], np.float32),
                   np.array([terminated]), np.array([[next_obs]], np.float32), np.array([last]))
    buffer.add(np.array([[50.0]], np.float32), np.array([0]), np.array([0.0], np.float32), np.array([False]),
               np.array([[51.0]], np.float32), np.array([False]))


def _by_obs(batch) -> dict:
    return {float(o): (float(g), float(d), float(n)) for o, g, d, n in
            zip(batch.obs[:, 0], batch.returns, batch.discounts, batch.next_obs[:, 0])}


@pytest.mark.parametrize("end", ["terminated", "truncated"])
def test_n_step_returns_stop_at_the_episode_end(end):
    buffer = _vector_buffer(n_step=3)
    _play(buffer, [1.0, 2.0, 3.0, 4.0], end)
    for _ in range(3):       # later steps, so the newest transitions have their n steps
        buffer.add(np.array([[51.0]], np.float32), np.array([0]), np.array([0.0], np.float32),
                   np.array([False]), np.array([[52.0]], np.float32), np.array([False]))
    seen = _by_obs(buffer.sample(400))
    bootstrap = 0.0 if end == "terminated" else 1.0
    assert seen[0.0] == pytest.approx((1 + 0.5 * 2 + 0.25 * 3, 0.125, 3.0))
    assert seen[2.0] == pytest.approx((3 + 0.5 * 4, 0.25 * bootstrap, 100.0))
    assert seen[3.0] == pytest.approx((4.0, 0.5 * bootstrap, 100.0))
    assert 100.0 not in seen                                  # the final observation is no transition


def test_one_step_replay_and_termination_flags():
    buffer = _vector_buffer(n_step=1, gamma=0.9)
    _play(buffer, [1.0, 2.0], "terminated")
    seen = _by_obs(buffer.sample(200))
    assert seen[0.0] == pytest.approx((1.0, 0.9, 1.0))
    assert seen[1.0] == pytest.approx((2.0, 0.0, 100.0))
    assert seen[50.0] == pytest.approx((0.0, 0.9, 51.0))
    assert len(buffer) == 3


def test_replay_refuses_a_buffer_that_does_not_fit_in_memory():
    with pytest.raises(Exception, match=r"needs .* GB .* bytes"):
        ReplayBuffer(10**12, 1, (84, 84), torch.uint8, torch.device("cpu"), frame_stack=4)


# ---------------------------------------------------------------------------- the agent
def _target_params(agent: Algorithm) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in agent.q_target.parameters()])


def test_target_network_changes_only_at_its_period():
    agent = make_agent(num_envs=2, learning_starts=40, target_period=20, train_freq=2)
    try:
        previous, changed_at, step = _target_params(agent), [], 0
        while step < 200:
            agent.train_step(step)
            step += agent.step_size
            now = _target_params(agent)
            if not torch.equal(now, previous):
                changed_at.append(step)
            previous = now
        assert changed_at == list(range(40, 201, 20))
        torch.testing.assert_close(_target_params(agent), torch.cat([p.detach().flatten() for p in agent.q.parameters()]))
    finally:
        agent.close()


def _round_trip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("n_step", [1, 3])
def test_save_and_resume_of_agent_and_buffer_continue_identically(n_step):
    first = make_agent(seed=3, save_buffer=True, n_step=n_step, num_envs=2)
    second = make_agent(seed=3, save_buffer=True, n_step=n_step, num_envs=2)
    try:
        with torch.no_grad():                                     # whatever it held is overwritten
            for p in second.q.parameters():
                p.add_(1.0)
        step = 0
        while step < 160:
            first.train_step(step)
            step += first.step_size
        state = _round_trip(first.state_dict())
        first.load_state_dict(_round_trip(first.state_dict()))    # both restart their envs the same way
        second.load_state_dict(state)
        assert second.env_steps == first.env_steps == 160
        for agent in (first, second):
            for s in range(step, step + 120, agent.step_size):
                agent.train_step(s)
        for a, b in zip(first.q.parameters(), second.q.parameters()):
            assert torch.equal(a, b)
        for name, tensor in first.replay.tensors().items():
            assert torch.equal(tensor, second.replay.tensors()[name]), name
        assert torch.equal(first.replay.sample(32).obs, second.replay.sample(32).obs)
    finally:
        first.close()
        second.close()


def test_prioritized_replay_updates_priorities_and_resumes_exactly():
    first = make_agent(seed=2, prioritized=True, dueling=True, save_buffer=True, n_step=3, num_envs=2)
    second = make_agent(seed=2, prioritized=True, dueling=True, save_buffer=True, n_step=3, num_envs=2)
    try:
        for s in range(0, 160, 2):
            first.train_step(s)
        leaves = first.replay.sums.leaves
        assert len(np.unique(leaves[leaves > 0])) > 10               # TD errors, not the initial priority
        assert first.beta() == pytest.approx(0.4 + 0.6 * 160 / TINY["total_steps"])
        state = _round_trip(first.state_dict())
        first.load_state_dict(_round_trip(first.state_dict()))
        second.load_state_dict(state)
        for agent in (first, second):
            for s in range(160, 240, 2):
                agent.train_step(s)
        for a, b in zip(first.q.parameters(), second.q.parameters()):
            assert torch.equal(a, b)
        np.testing.assert_array_equal(first.replay.sums.nodes, second.replay.sums.nodes)
    finally:
        first.close()
        second.close()


def test_resume_without_a_saved_buffer_refills_before_learning():
    agent = make_agent()
    try:
        for s in range(0, 120):
            agent.train_step(s)
        state = _round_trip(agent.state_dict())
        assert state["replay"] is None
        fresh = make_agent()
        fresh.load_state_dict(state)
        assert fresh.learning_from == 120 + TINY["learning_starts"]
        fresh.close()
    finally:
        agent.close()


def test_continuous_actions_are_refused():
    with pytest.raises(Exception, match="discrete action space"):
        make_agent(env_id="Pendulum-v1")


# ---------------------------------------------------------------------------- the command line
def _run(lab, *args):
    result = lab(*args)
    return result.returncode, result.stdout, result.stderr


def test_cli_train_resume_with_buffer_and_eval_with_video(lab, tmp_path):
    run = tmp_path / "run"
    code, out, err = _run(lab, "train", "dqn", "--total-steps", 300, "--learning-starts", 60, "--buffer-size", 400,
                         "--batch-size", 16, "--train-freq", 4, "--gradient-steps", 1, "--target-period", 40,
                         "--hidden", 16, "--eval-episodes", 2, "--save-buffer", "--run-dir", run,
                         "--checkpoint-every", 150, "--eval-every", 300)
    assert code == 0, err
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert saved["algorithm"]["replay"]["frames"].shape[1] > 0
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["lr"] == 2.3e-3 and config["hidden"] == [16]   # preset values written in; flags kept
    code, out, err = _run(lab, "resume", run, "--total-steps", 450)
    assert code == 0, err
    code, out, err = _run(lab, "eval", run, "--episodes", 3, "--epsilon", 0.0, "--video", "--checkpoint", "last")
    assert code == 0, err
    assert "eval/ep_return" in out and re.search(r"eval/episodes\s+3\n", out)
    assert list((run / "videos").iterdir())


def test_a_run_that_ends_before_learning_starts_says_so_in_one_line(lab, tmp_path):
    code, out, err = _run(lab, "train", "dqn", "--total-steps", 100, "--learning-starts", 200, "--eval-episodes", 1,
                          "--run-dir", tmp_path / "run")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "never learns" in line]
    assert len(warnings) == 1 and "learning starts at step 200" in warnings[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize("args, message", [
    (["--env-id", "CartPol-v1"], "CartPole-v1"),
    (["--env-id", "Pendulum-v1"], "discrete action space"),
    (["--batch-size", 64, "--learning-starts", 10], "--batch-size 64 is larger than the 10 transitions"),
    (["--buffer-size", 2_000_000_000], "replay buffer needs"),
    (["--env-id", "CartPole-v1", "--sticky-actions"], "Atari option"),
    (["--gradient-steps", 0], "--gradient-steps must be > 0"),
    (["--tau", 0], "--tau must be > 0"),
    (["--tau", 1.5], "--tau must be in [0.0, 1.0]"),
    (["--prioritized", "--priority-alpha", 1.2], "--priority-alpha must be in [0.0, 1.0]"),
    (["--prioritized", "--priority-beta", -0.1], "--priority-beta must be in [0.0, 1.0]"),
    (["--buffer-size", 32, "--batch-size", 64, "--learning-starts", 100], "--batch-size 64 is larger than the 32"),
])
def test_cli_bad_input_is_one_line_and_leaves_no_run_folder(lab, tmp_path, args, message):
    code, out, err = _run(lab, "train", "dqn", *args, "--runs-dir", tmp_path / "runs")
    assert code == 2
    assert err.startswith("lab: error:") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_eval_options_defaults():
    options = EvalOptions()
    assert (options.episodes, options.epsilon, options.video) == (30, None, False)
