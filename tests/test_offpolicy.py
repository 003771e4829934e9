"""SAC and TD3: their targets and losses on hand-computed tensors, the squashed Gaussian's log-probability, the
temperature's gradient, TD3's policy delay, exact resume, the command line, and bad input."""
from __future__ import annotations

import io
import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Independent, Normal, TransformedDistribution
from torch.distributions.transforms import TanhTransform

from lab import load as load_run
from lab.errors import LabError
from lab.runtime import RunOptions, Runtime
from rl import sac, td3
from rl.offpolicy import check_spaces, to_bounds

TINY = dict(env_id="Pendulum-v1", total_steps=400, buffer_size=500, learning_starts=50, batch_size=16, hidden=(16,),
            eval_episodes=1)


def make_agent(module, seed: int = 0, **overrides):
    return module.Algorithm(module.Config(**{**TINY, **overrides}), Runtime(RunOptions(device="cpu", seed=seed)))


# ---------------------------------------------------------------------------- the maths
def test_soft_bellman_target_on_hand_computed_tensors():
    r_t = torch.tensor([1.0, -2.0, 0.5])
    discount_t = torch.tensor([0.9, 0.0, 0.9])                 # row 1 terminated: no bootstrap
    q1_t, q2_t = torch.tensor([3.0, 5.0, -1.0]), torch.tensor([4.0, 1.0, -2.0])
    log_pi_t = torch.tensor([-1.0, 0.3, 2.0])
    expected = torch.tensor([1.0 + 0.9 * (3.0 - 0.2 * -1.0), -2.0, 0.5 + 0.9 * (-2.0 - 0.2 * 2.0)])
    torch.testing.assert_close(sac.soft_q_target(r_t, discount_t, q1_t, q2_t, log_pi_t, 0.2), expected)


def test_td3_target_and_its_clipped_smoothing_on_hand_computed_tensors():
    mu_t = torch.tensor([[0.9, -0.2], [0.0, -0.95]])
    noise = torch.tensor([[0.3, 0.1], [-0.8, -0.1]])
    # clip(noise, -0.5, 0.5) then clip(mu + noise, -1, 1)
    expected = torch.tensor([[1.0, -0.1], [-0.5, -1.0]])
    torch.testing.assert_close(td3.smoothed_target_action(mu_t, noise, 0.5), expected)
    r_t, discount_t = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.0])
    q1_t, q2_t = torch.tensor([4.0, 9.0]), torch.tensor([2.0, 10.0])
    torch.testing.assert_close(td3.td3_target(r_t, discount_t, q1_t, q2_t), torch.tensor([2.0, 0.0]))


def test_squashed_gaussian_log_prob_matches_a_tanh_transformed_distribution():
    torch.manual_seed(0)
    mean, log_std = torch.randn(64, 3), torch.randn(64, 3).clamp(-2, 1)
    u = mean + log_std.exp() * torch.randn(64, 3) * 2.0            # far into the tails too
    tanh = TanhTransform(cache_size=1)         # log_prob(tanh(u)) inverts through its cache, not atanh(+-1)
    reference = TransformedDistribution(Independent(Normal(mean, log_std.exp()), 1), [tanh])
    ours = sac.squashed_gaussian_log_prob(u, mean, log_std)
    torch.testing.assert_close(ours, reference.log_prob(tanh(u)), rtol=1e-5, atol=1e-5)
    actor = sac.SquashedGaussianActor(gym.spaces.Box(-1, 1, (4,), np.float32), 2, (8,))
    action, log_pi = actor(torch.randn(5, 4))
    assert action.abs().max() < 1.0 and log_pi.shape == (5,)


@pytest.mark.parametrize("log_pi, grows", [(torch.tensor([1.0, 2.0]), True), (torch.tensor([-5.0, -4.0]), False)])
def test_the_temperature_rises_when_the_entropy_is_below_its_target(log_pi, grows):
    """Target entropy -1: entropy -log pi of -1.5 is too low (alpha must grow), 4.5 too high (it must shrink)."""
    log_alpha = torch.zeros((), requires_grad=True)
    sac.temperature_loss(log_alpha, log_pi, target_entropy=-1.0).backward()
    assert (log_alpha.grad < 0) == grows                         # gradient descent moves log alpha against the gradient


def test_actions_are_rescaled_to_the_box_bounds():
    space = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 10.0], np.float32))
    np.testing.assert_allclose(to_bounds(np.array([[-1.0, -1.0], [0.0, 0.5], [1.0, 1.0]]), space),
                               [[-2.0, 0.0], [0.0, 7.5], [2.0, 10.0]])


# ---------------------------------------------------------------------------- the agents
def _params(module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in module.parameters()])


def test_td3_steps_its_actor_and_targets_once_every_d_critic_steps():
    agent = make_agent(td3, policy_delay=3, learning_starts=20)
    try:
        step, changed = 0, []
        while step < 50:
            actor, target, critic = _params(agent.actor), _params(agent.q1_target), _params(agent.q1)
            agent.train_step(step)
            step += agent.step_size
            if not torch.equal(critic, _params(agent.q1)):
                changed.append((agent.updates, not torch.equal(actor, _params(agent.actor)),
                                not torch.equal(target, _params(agent.q1_target))))
        assert [u for u, _, _ in changed] == list(range(1, 32))        # a critic step at every env step from 20 on
        assert [u for u, a, t in changed if a and t] == [3, 6, 9, 12, 15, 18, 21, 24, 27, 30]
        assert all(a == t for _, a, t in changed)
    finally:
        agent.close()


def _round_trip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)


@pytest.mark.parametrize("module, extra", [(sac, {}), (sac, {"alpha": 0.1}), (td3, {})])
def test_save_and_resume_of_agent_and_buffer_continue_identically(module, extra):
    first, second = (make_agent(module, seed=3, save_buffer=True, num_envs=2, **extra) for _ in range(2))
    try:
        with torch.no_grad():
            for p in second.actor.parameters():
                p.add_(1.0)
        for s in range(0, 120, 2):
            first.train_step(s)
        state = _round_trip(first.state_dict())
        torch_state = torch.get_rng_state()
        first.load_state_dict(_round_trip(first.state_dict()))
        second.load_state_dict(state)
        for agent in (first, second):
            torch.set_rng_state(torch_state)                       # the trainer restores the global streams
            for s in range(120, 180, 2):
                agent.train_step(s)
        for a, b in zip(first.actor.parameters(), second.actor.parameters()):
            assert torch.equal(a, b)
        for a, b in zip(first.q2_target.parameters(), second.q2_target.parameters()):
            assert torch.equal(a, b)
    finally:
        first.close()
        second.close()


def test_sac_learns_its_temperature_and_a_fixed_one_stays():
    learned, fixed = make_agent(sac, learning_starts=20), make_agent(sac, learning_starts=20, alpha=0.3)
    try:
        for agent in (learned, fixed):
            for s in range(60):
                metrics = agent.train_step(s)
        assert learned.temperature.log_alpha.item() != 0.0
        assert float(metrics["train/alpha"]) == pytest.approx(0.3) and not hasattr(fixed, "temperature")
    finally:
        learned.close()
        fixed.close()


def test_unbounded_or_discrete_or_image_spaces_are_refused():
    box = gym.spaces.Box(-1, 1, (3,), np.float32)
    with pytest.raises(LabError, match="continuous"):
        check_spaces("SAC", "CartPole-v1", box, gym.spaces.Discrete(2))
    with pytest.raises(LabError, match="unbounded"):
        check_spaces("SAC", "X-v0", box, gym.spaces.Box(-np.inf, np.inf, (2,), np.float32))
    with pytest.raises(LabError, match="vector observations"):
        check_spaces("TD3", "X-v0", gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), box)


# ---------------------------------------------------------------------------- the command line
class UnboundedPendulum(gym.Wrapper):
    def __init__(self):
        super().__init__(gym.make("Pendulum-v1"))
        self.action_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)


gym.register("test/UnboundedPendulum-v0", entry_point=UnboundedPendulum, max_episode_steps=200)


@pytest.mark.parametrize("algo", ["sac", "td3"])
@pytest.mark.parametrize("args, message", [
    (["--env-id", "CartPole-v1"], "needs a continuous (Box) action space"),
    (["--env-id", "test/UnboundedPendulum-v0"], "is unbounded"),
    (["--gradient-steps", 0], "--gradient-steps must be > 0"),
    (["--tau", 0], "--tau must be > 0"),
    (["--tau", 1.5], "--tau must be in [0.0, 1.0]"),
    (["--buffer-size", 100, "--batch-size", 256], "--batch-size 256 is larger than the --buffer-size 100"),
])
def test_cli_bad_input_is_one_line_and_leaves_no_run_folder(lab, tmp_path, algo, args, message):
    result = lab("train", algo, *args, "--runs-dir", tmp_path / "runs")
    assert result.returncode == 2
    assert result.stderr.startswith("lab: error:") and result.stderr.count("\n") == 1 and message in result.stderr, \
        result.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("alpha", [0, -0.5])
def test_cli_refuses_a_temperature_that_is_not_positive(lab, tmp_path, alpha):
    result = lab("train", "sac", "--alpha", alpha, "--runs-dir", tmp_path / "runs")
    assert result.returncode == 2 and f"--alpha must be > 0, got {float(alpha)}" in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()


def test_cli_train_resume_eval_with_video_then_load_and_export(lab, tmp_path):
    run = tmp_path / "run"
    result = lab("train", "sac", "--total-steps", 300, "--learning-starts", 100, "--batch-size", 32, "--hidden", 16,
                 "--eval-episodes", 1, "--save-buffer", "--run-dir", run, "--checkpoint-every", 150, "--eval-every", 300)
    assert result.returncode == 0, result.stderr
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["lr"] == 1e-3 and config["buffer_size"] == 1_000_000 and config["alpha"] is None
    assert lab("resume", run, "--total-steps", 400).returncode == 0
    result = lab("eval", run, "--episodes", 2, "--video", "--checkpoint", "last")
    assert result.returncode == 0, result.stderr
    assert "eval/ep_return" in result.stdout and list((run / "videos").iterdir())
    agent = load_run(run)
    assert not hasattr(agent.algorithm, "replay") and not hasattr(agent.algorithm, "q1")
    assert agent.network is agent.algorithm.acting_network and not agent.network.training
    obs = np.zeros(3, np.float32)
    action, _ = agent.predict(obs, deterministic=True)
    assert action.shape == (1,) and -2.0 <= action[0] <= 2.0                # Pendulum's torque bounds
    np.testing.assert_array_equal(agent.predict(obs, deterministic=True)[0], action)
    assert lab("export", run).returncode == 0


@pytest.mark.parametrize("algo", ["sac", "td3"])
@pytest.mark.parametrize("env_id, extra", [("HalfCheetah-v5", "mujoco"), ("LunarLanderContinuous-v3", "Box2D")])
def test_a_5000_step_smoke_run_with_the_optional_extra(lab, tmp_path, algo, env_id, extra):
    pytest.importorskip(extra, reason=f"needs the {'mujoco' if extra == 'mujoco' else 'box2d'} extra: "
                                      "pip install -e '.[mujoco]' / '.[box2d]'")
    result = lab("train", algo, "--env-id", env_id, "--total-steps", 5000, "--learning-starts", 4000,
                 "--eval-episodes", 1, "--run-dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr
