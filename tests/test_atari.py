"""The Atari pipeline (ale-py's vector env) and the frame-deduplicated replay buffer on real frames."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs.atari import resize_area
from envs.make import finished_episodes, make_render_env, make_vector_env
from rl.replay import ReplayBuffer, make_replay_buffer


def _random_play(env_id: str, steps: int, num_envs: int = 2, seed: int = 0, **options):
    """Transitions (obs, action, reward, terminated, next_obs, reset) of random play, as the agent sees them."""
    envs = make_vector_env(env_id, num_envs, for_training=True, **options)
    rng = np.random.default_rng(seed)
    obs, _ = envs.reset(seed=seed)
    out, episodes = [], []
    try:
        for _ in range(steps):
            actions = rng.integers(envs.single_action_space.n, size=num_envs)
            next_obs, rewards, terminated, truncated, infos = envs.step(actions)
            reset = infos["_final_obs"]
            real_next = next_obs.copy()
            if reset.any():
                real_next[reset] = infos["final_obs"][reset]
            out.append((obs, actions, rewards, terminated, truncated, real_next, reset))
            episodes += finished_episodes(infos)
            obs = next_obs
        return out, episodes, envs.single_observation_space
    finally:
        envs.close()


def test_training_env_ends_episodes_on_life_loss_and_clips_rewards_but_logs_full_games():
    steps, episodes, space = _random_play("ALE/Breakout-v5", 600, num_envs=2)
    assert space.shape == (4, 84, 84) and space.dtype == np.uint8
    terminated = np.array([t[3] for t in steps])
    resets = np.array([t[6] for t in steps])
    rewards = np.array([t[2] for t in steps])
    assert terminated.sum() > resets.sum() > 0           # life losses end training episodes without a reset
    assert set(np.unique(rewards)) <= {-1.0, 0.0, 1.0}
    assert len(episodes) == resets.sum()                   # one full game per reset, with its raw score
    assert all(length > 50 for _, length in episodes)      # a whole game of 5 lives, not one life


def test_evaluation_env_reports_unclipped_scores_and_training_clips_them():
    """Space Invaders pays 5 to 30 points an alien: the evaluation env must pass them on, training must clip."""
    rng = np.random.default_rng(0)
    rewards = {}
    for training in (False, True):
        envs = make_vector_env("ALE/SpaceInvaders-v5", 1, for_training=training)
        try:
            envs.reset(seed=0)
            rewards[training] = [envs.step(rng.integers(6, size=1))[1][0] for _ in range(600)]
        finally:
            envs.close()
    assert max(rewards[False]) > 1.0
    assert set(np.unique(rewards[True])) <= {0.0, 1.0} and max(rewards[True]) == 1.0
    render = make_render_env("ALE/Pong-v5")
    try:
        obs, _ = render.reset(seed=0)
        assert np.asarray(obs).shape == (4, 84, 84) and render.render().shape == (210, 160, 3)
    finally:
        render.close()


def test_frame_deduplicated_stacks_equal_the_stacks_a_naive_buffer_stores():
    # short games (truncated at 400 frames) so episode starts, life losses, game overs and truncations
    # all happen, and a small ring so that it wraps around
    steps, _, space = _random_play("ALE/Breakout-v5", 450, num_envs=2, max_episode_frames=400)
    assert any(t[4].any() for t in steps) and any((t[3] & ~t[6]).any() for t in steps)
    buffer = make_replay_buffer(space, gym.spaces.Discrete(4), capacity=2 * 300, num_envs=2, device=torch.device("cpu"),
                                gamma=0.9, generator=torch.Generator().manual_seed(0))
    naive = {}
    for obs, actions, rewards, terminated, truncated, next_obs, reset in steps:
        buffer.add(obs, actions, rewards, terminated, next_obs, reset)
        for e in range(2):
            key = (obs[e].tobytes(), int(actions[e]), next_obs[e].tobytes())
            naive[key] = (float(rewards[e]), 0.0 if terminated[e] else 0.9)
    assert buffer.nbytes < 2 * 300 * (84 * 84 + 16)                # one frame per slot
    batch = buffer.sample(4000)
    assert batch.weights.min() == 1.0
    obs, next_obs = batch.obs.numpy(), batch.next_obs.numpy()
    for i in range(len(obs)):
        key = (obs[i].tobytes(), int(batch.actions[i]), next_obs[i].tobytes())
        assert key in naive, "a rebuilt stack differs from every stack the env returned"
        assert (float(batch.returns[i]), float(batch.discounts[i])) == pytest.approx(naive[key])
    first_of_episode = (obs[:, 0] == 0).all(axis=(1, 2)) & (obs[:, 3] != 0).any(axis=(1, 2))
    assert first_of_episode.any() and (batch.discounts == 0).any()   # boundaries were sampled


def test_a_million_atari_transitions_fit_in_7_1_gb():
    """Measured on a real buffer (what its tensors hold), and the pre-allocation estimate agrees."""
    space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    buffer = make_replay_buffer(space, gym.spaces.Discrete(4), capacity=20_000, num_envs=2, device=torch.device("cpu"))
    per_transition = buffer.nbytes / 20_000
    assert per_transition * 1_000_000 <= 7.1e9
    assert buffer.nbytes == ReplayBuffer.nbytes_for(20_000, 2, (84, 84), torch.uint8)


def test_dqn_smoke_on_pong_through_the_full_pipeline(lab, tmp_path):
    run = tmp_path / "pong"
    result = lab("train", "dqn", "--env-id", "ALE/Pong-v5", "--total-steps", 300, "--num-envs", 2,
                 "--buffer-size", 1000, "--learning-starts", 100, "--target-period", 100, "--eval-episodes", 1,
                 "--run-dir", run, "--eval-every", 10_000)
    assert result.returncode == 0, result.stderr
    rows = (run / "metrics.jsonl").read_text()
    assert "train/loss" in rows and "eval/ep_return" in rows


def test_area_resize_equals_opencv_inter_area_on_a_hand_checkable_frame():
    # 5 -> 2 pixels: each output averages 2.5 inputs, the middle one shared half and half (OpenCV's rule)
    frame = np.array([[0, 10, 20, 30, 40]], np.uint8).repeat(5, 0)
    expected = np.rint([(0 + 10 + 0.5 * 20) / 2.5, (0.5 * 20 + 30 + 40) / 2.5])
    assert (resize_area(frame, 2, 2) == expected.astype(np.uint8)).all()


@pytest.mark.parametrize("seed", [1, 2])
def test_video_env_sees_exactly_what_the_vector_env_sees_frame_for_frame(seed, monkeypatch):
    """Same start actions and actions: the Python pipeline of the videos equals ALE's vector env bit for bit."""
    vector = make_vector_env("ALE/Breakout-v5", 1, for_training=False)
    render = make_render_env("ALE/Breakout-v5")
    rng = np.random.default_rng(seed)
    try:
        first, _ = vector.reset(seed=seed)
        starts = []
        for count in range(30):      # which start-action count ALE drew for this seed
            monkeypatch.setattr(render, "start_actions", lambda count=count: count)
            if (render.reset(seed=seed)[0] == first[0]).all():
                starts.append(count)
        assert starts, "no start-action count reproduces the vector env's first observation"
        monkeypatch.setattr(render, "start_actions", lambda: starts[0])
        render.reset(seed=seed)
        for step in range(2000):
            action = int(rng.integers(4))
            obs, reward, *_, infos = vector.step(np.array([action]))
            mine, my_reward, terminated, truncated, _ = render.step(action)
            if infos["_final_obs"][0]:     # the game ends on the same step (the agent acts on no later frame)
                assert terminated and my_reward == reward[0]
                break
            assert (mine == obs[0]).all(), f"observations differ at step {step}"
            assert my_reward == reward[0] and not (terminated or truncated)
        else:
            pytest.fail("the game never ended; the comparison did not reach a game over")
    finally:
        vector.close()
        render.close()
