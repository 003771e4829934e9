"""The Python API: lab.train / lab.load / lab.resume, agents with SB3's predict signature, pipelines,
lean loading, and one sentence for bad input."""
from __future__ import annotations

import json
import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import lab
from conftest import run_lab
from lab.errors import LabError

ROOT = Path(__file__).resolve().parent.parent
FAST = dict(device="cpu", seed=0)


@pytest.fixture(scope="module")
def dqn_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("api") / "dqn"
    return lab.train("dqn", env_id="CartPole-v1", total_steps=1_500, learning_starts=500, eval_episodes=2,
                     run_dir=path, **FAST)


def test_train_returns_the_run_and_load_gives_an_agent_without_training_state(dqn_run, monkeypatch):
    assert dqn_run.status == "finished" and dqn_run.exit_code == 0 and dqn_run.algo == "dqn"
    import rl.dqn.algo as dqn
    monkeypatch.setattr(dqn, "make_replay_buffer", lambda *a, **k: pytest.fail("a replay buffer was built"))
    monkeypatch.setattr(dqn, "make_vector_env", lambda *a, **k: pytest.fail("training envs were built"))
    agent = lab.load(dqn_run.path)
    assert isinstance(agent, lab.Agent)
    assert not hasattr(agent.algorithm, "replay") and not hasattr(agent.algorithm, "optimizer")
    assert not agent.q_network.training


def test_predict_takes_one_observation_or_a_batch_and_acts_greedily(dqn_run):
    agent = lab.load(dqn_run.path, checkpoint="last")
    env = gym.make("CartPole-v1")
    obs = np.stack([env.reset(seed=s)[0] for s in range(5)])
    greedy = agent.q_network(torch.as_tensor(obs)).argmax(-1).numpy()
    actions, state = agent.predict(obs)
    assert state is None and np.array_equal(actions, greedy)
    single, _ = agent.predict(obs[2])
    assert np.ndim(single) == 0 and single == greedy[2]
    assert env.action_space.contains(int(single))


def test_agent_evaluate_gives_the_numbers_of_lab_eval(dqn_run):
    ours = lab.load(dqn_run.path).evaluate(episodes=4)
    result = run_lab("eval", dqn_run.path, "--episodes", 4, "--json")
    assert result.returncode == 0, result.stderr
    assert ours["eval/ep_return"] == json.loads(result.stdout)["metrics"]["eval/ep_return"]


def test_sb3_style_evaluation_code_can_drive_an_agent(dqn_run):
    """The loop SB3's evaluate_policy runs: predict(obs, state, episode_start, deterministic) on a vector env."""
    agent = lab.load(dqn_run.path)
    envs = gym.make_vec("CartPole-v1", num_envs=2)
    obs, _ = envs.reset(seed=0)
    state, starts = None, np.ones(2, dtype=bool)
    for _ in range(10):
        actions, state = agent.predict(obs, state=state, episode_start=starts, deterministic=True)
        obs, _, terminated, truncated, _ = envs.step(actions)
        starts = terminated | truncated
    envs.close()


@pytest.mark.parametrize("algo, fields", [
    ("reinforce", dict(rollout_steps=64, total_steps=256)),
    ("actor-critic", dict(n_steps=8, total_steps=256)),
    ("a2c", dict(total_steps=320)),
    ("ppo", dict(total_steps=256, num_envs=2, n_steps=64, minibatch_size=64, n_epochs=1)),
])
def test_policy_gradient_agents_predict_their_policy_mode(tmp_path, algo, fields):
    run = lab.train(algo, env_id="CartPole-v1", run_dir=tmp_path / algo, **fields, **FAST)
    agent = lab.load(run.path)
    obs = np.stack([gym.make("CartPole-v1").reset(seed=s)[0] for s in range(4)])
    with torch.no_grad():
        mode = agent.policy.act(torch.as_tensor(obs), deterministic=True).numpy()
    assert np.array_equal(agent.predict(obs)[0], mode)
    assert agent.predict(obs[0], deterministic=False)[0] in (0, 1)


def test_a_ddpm_pipeline_returns_the_requested_samples_reproducibly(tmp_path):
    run = lab.train("ddpm", data="ring8", total_steps=30, eval_samples=16, run_dir=tmp_path / "ddpm", **FAST)
    pipe = lab.load(run.path)
    assert isinstance(pipe, lab.Pipeline)
    a = pipe(n=12, seed=3, sampler="ddim", steps=10)
    assert a.shape == (12, 2) and torch.equal(a, pipe(n=12, seed=3, sampler="ddim", steps=10))
    assert not torch.equal(a, pipe(n=12, seed=4, sampler="ddim", steps=10))
    with pytest.raises(LabError, match="takes no option 'temperature'"):
        pipe(n=2, temperature=0.5)


def test_image_pipelines_sample_images_in_the_unit_range_and_save_a_grid(tmp_path):
    run = lab.train("gan", data="digits", conditional=True, total_steps=4, eval_samples=16,
                    run_dir=tmp_path / "gan", **FAST)
    pipe = lab.load(run.path)
    images = pipe(n=10, seed=0, label=7)
    assert images.shape[:2] == (10, 1) and 0 <= images.min() and images.max() <= 1
    with pytest.raises(LabError, match="--label must be in \\[0, 9\\]"):
        pipe(n=2, label=10)
    grid = pipe.save_grid(tmp_path / "grid.png", n=16)
    assert grid.exists() and grid.suffix == ".png"


def test_a_pixelcnn_pipeline_samples_pixel_by_pixel_reproducibly(tmp_path):
    run = lab.train("pixelcnn", channels=8, layers=2, batch_size=16, total_steps=2, run_dir=tmp_path / "px", **FAST)
    pipe = lab.load(run.path)
    images = pipe(n=3, seed=1)
    assert images.shape == (3, 1, 8, 8) and torch.equal(images, pipe(n=3, seed=1))
    assert set((images * 16).round().unique().tolist()) <= set(range(17))    # the data's 17 gray levels


def test_a_vae_pipeline_encodes_decodes_and_reconstructs(tmp_path):
    run = lab.train("vae", total_steps=5, run_dir=tmp_path / "vae", **FAST)
    pipe = lab.load(run.path)
    x = pipe(n=6, seed=0)
    mean, log_var = pipe.encode(x)
    assert mean.shape == log_var.shape == (6, pipe.config.latent_dim)
    assert pipe.decode(mean).shape == x.shape == pipe.reconstruct(x).shape


def test_resume_through_the_api_extends_a_run(tmp_path):
    run = lab.train("toy", total_steps=20, run_dir=tmp_path / "toy", **FAST)
    resumed = lab.resume(run.path, total_steps=30)
    assert resumed.status == "finished" and resumed.exit_code == 0
    from lab import checkpoint
    assert checkpoint.load(run.path / "checkpoints" / "last.pt")["step"] == 30


def test_bad_input_is_one_sentence(tmp_path, dqn_run):
    with pytest.raises(LabError, match="unknown field 'learning_rate'"):
        lab.train("toy", learning_rate=0.1, run_dir=tmp_path / "x", **FAST)
    assert not (tmp_path / "x").exists()
    with pytest.raises(LabError, match="unknown algorithm"):
        lab.train("dqnn")
    empty = tmp_path / "empty"
    (empty / "checkpoints").mkdir(parents=True)
    (empty / "config.json").write_text(json.dumps({"algo": "toy", "config": {}, "options": {}}))
    with pytest.raises(LabError, match="no checkpoint"):
        lab.load(empty)
    (empty / "config.json").write_text(json.dumps({"algo": "sarsa", "config": {}, "options": {}}))
    with pytest.raises(LabError, match="unknown algorithm 'sarsa'"):
        lab.load(empty)
    with pytest.raises(LabError, match="takes \\(4,\\) or a batch"):
        lab.load(dqn_run.path).predict(np.zeros((2, 5)))
    with pytest.raises(LabError, match="neither agents nor generative"):
        lab.load(lab.train("toy", total_steps=5, run_dir=tmp_path / "toy", **FAST).path)


def test_the_readme_python_examples_run_as_written(tmp_path, monkeypatch):
    """Every ```python block of the README's "Python API" section, run in order in one namespace."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "the README has no Python API examples"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
