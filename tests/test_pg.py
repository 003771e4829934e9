"""Policy-gradient pieces against closed forms and hand-made cases; bad input; lab train/eval/resume."""
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from lab.errors import LabError
from lab.logger import read_metrics
from lab.runtime import RunOptions
from lab.session import train_in_memory
from rl.pg import reinforce
from rl.pg.losses import policy_gradient_loss
from rl.pg.policies import ActorCritic, CategoricalHead, GaussianHead, check_action_space
from rl.pg.returns import discounted_returns, episode_returns, gae


# ---------------------------------------------------------------- policies
def test_categorical_log_prob_and_entropy_match_closed_forms():
    torch.manual_seed(0)
    head = CategoricalHead(5, 3)
    h = torch.randn(7, 5)
    dist = head(h)
    logits = head.logits(h)
    p = torch.exp(logits) / torch.exp(logits).sum(-1, keepdim=True)
    actions = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    assert torch.allclose(dist.log_prob(actions), torch.log(p[torch.arange(7), actions]), atol=1e-6)
    assert torch.allclose(dist.entropy(), -(p * torch.log(p)).sum(-1), atol=1e-6)
    assert torch.equal(head.act(h, deterministic=True), logits.argmax(-1))


def test_categorical_sampling_follows_the_softmax():
    """The Gumbel-max sampler draws each action with probability softmax(logits)."""
    torch.manual_seed(0)
    head = CategoricalHead(1, 3)
    with torch.no_grad():
        head.logits.weight.zero_()
        head.logits.bias.copy_(torch.tensor([1.0, 0.0, -1.0]))
    n = 60_000
    counts = torch.bincount(head.act(torch.zeros(n, 1), deterministic=False), minlength=3).float()
    p = torch.softmax(torch.tensor([1.0, 0.0, -1.0]), 0)
    assert torch.all((counts / n - p).abs() < 4 * torch.sqrt(p * (1 - p) / n)), (counts / n, p)


@pytest.mark.parametrize("log_std", ["state-independent", "state-dependent"])
def test_gaussian_log_prob_and_entropy_match_closed_forms(log_std):
    torch.manual_seed(0)
    head = GaussianHead(4, 2, log_std, init_log_std=-0.5)
    with torch.no_grad():   # make the state-dependent std really depend on the state
        if log_std == "state-dependent":
            head.log_std.weight.normal_(0.0, 0.3)
    h = torch.randn(6, 4)
    dist = head(h)
    mean = head.mean(h)
    sigma = (head.log_std(h) if log_std == "state-dependent" else head.log_std.expand_as(mean)).exp()
    a = torch.randn(6, 2)
    closed = (-0.5 * ((a - mean) / sigma) ** 2 - torch.log(sigma) - 0.5 * math.log(2 * math.pi)).sum(-1)
    assert torch.allclose(dist.log_prob(a), closed, atol=1e-5)
    assert torch.allclose(dist.entropy(), (0.5 * torch.log(2 * math.pi * math.e * sigma ** 2)).sum(-1), atol=1e-5)
    assert torch.allclose(head.act(h, deterministic=True), mean)
    if log_std == "state-dependent":
        assert sigma.std(0).sum() > 0   # different states, different stds
    else:
        assert torch.allclose(sigma, torch.full_like(sigma, math.exp(-0.5)))


def test_action_spaces_are_checked():
    check_action_space(gym.spaces.Discrete(3))
    check_action_space(gym.spaces.Box(-2.0, 2.0, (2,)))
    with pytest.raises(LabError, match="infinite bounds"):
        check_action_space(gym.spaces.Box(-np.inf, np.inf, (1,)))
    with pytest.raises(LabError, match="not supported"):
        check_action_space(gym.spaces.MultiDiscrete([2, 2]))


def test_shared_and_separate_trunks():
    obs, act = gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(2)
    shared = ActorCritic(obs, act, trunks="shared")
    separate = ActorCritic(obs, act, trunks="separate")
    assert shared.value_trunk is shared.policy_trunk
    assert separate.value_trunk is not separate.policy_trunk
    dist, value = shared(torch.zeros(4, 3))
    assert value.shape == (4,) and dist.sample().shape == (4,)


# ---------------------------------------------------------------- the estimator
def test_reinforce_gradient_on_a_two_armed_bandit_matches_the_analytic_gradient():
    """grad J = pi_k (r_k - J) for softmax logits theta; the sample estimate is within 4 standard errors."""
    torch.manual_seed(0)
    theta = torch.tensor([0.3, -0.2], requires_grad=True)
    mean_reward = torch.tensor([1.0, 0.2])
    n = 20_000
    dist = torch.distributions.Categorical(logits=theta)
    actions = dist.sample((n,))
    rewards = mean_reward[actions] + 0.5 * torch.randn(n)      # noisy rewards
    estimate, = torch.autograd.grad(-policy_gradient_loss(dist.log_prob(actions), rewards), theta)
    pi = torch.softmax(theta.detach(), 0)
    analytic = pi * (mean_reward - (pi * mean_reward).sum())
    per_sample = (torch.nn.functional.one_hot(actions, 2) - pi) * rewards[:, None]   # grad log pi(a) * r
    standard_error = per_sample.std(0) / math.sqrt(n)
    assert torch.all((estimate - analytic).abs() < 4 * standard_error), (estimate, analytic, standard_error)
    torch.testing.assert_close(estimate, per_sample.mean(0))   # the sample mean of grad log pi(a) r, not a closed form


# ---------------------------------------------------------------- returns and GAE
GAMMA = 0.9
#           env 0: terminates after t=1, then a new episode truncated at t=3
#           env 1: one episode truncated after t=2, a new one at t=3 (the rollout ends mid-episode)
R = torch.tensor([[1.0, 2.0], [2.0, 0.0], [0.5, 1.0], [1.0, 3.0]])
V = torch.tensor([[0.5, 1.0], [1.5, 0.2], [0.3, 0.7], [0.8, 1.1]])
TERMINATED = torch.tensor([[0, 0], [1, 0], [0, 0], [0, 0]], dtype=torch.float32)
DONE = torch.tensor([[0, 0], [1, 0], [0, 1], [1, 0]], dtype=torch.float32)
# V(s_{t+1}): the next row, or V(final obs) where an episode ended (4.0 after termination: must be ignored)
V_TP1 = torch.tensor([[1.5, 0.2], [4.0, 0.7], [0.8, 2.5], [1.7, 0.6]])


def test_gae_lambda_zero_is_the_one_step_td_error():
    expected = R + GAMMA * V_TP1 * (1 - TERMINATED) - V
    assert torch.allclose(gae(R, V, V_TP1, TERMINATED, DONE, GAMMA, 0.0), expected)
    assert torch.isclose(expected[1, 0], torch.tensor(2.0 - 1.5))           # termination: no bootstrap
    assert torch.isclose(expected[2, 1], torch.tensor(1.0 + 0.9 * 2.5 - 0.7))  # truncation: bootstrapped


def test_gae_lambda_one_is_the_monte_carlo_advantage():
    mc_return = torch.tensor([
        [1.0 + GAMMA * 2.0,                  2.0 + GAMMA * 0.0 + GAMMA ** 2 * (1.0 + GAMMA * 2.5)],
        [2.0,                                0.0 + GAMMA * (1.0 + GAMMA * 2.5)],
        [0.5 + GAMMA * (1.0 + GAMMA * 1.7),  1.0 + GAMMA * 2.5],
        [1.0 + GAMMA * 1.7,                  3.0 + GAMMA * 0.6],
    ])
    assert torch.allclose(gae(R, V, V_TP1, TERMINATED, DONE, GAMMA, 1.0), mc_return - V, atol=1e-6)


def test_reward_to_go_and_episode_return_restart_at_episode_ends():
    r = torch.tensor([1.0, 1.0, 1.0, 2.0, 3.0])
    done = torch.tensor([0, 0, 1, 0, 1])
    assert torch.allclose(discounted_returns(r, done, 0.5), torch.tensor([1.75, 1.5, 1.0, 3.5, 3.0]))
    assert torch.allclose(episode_returns(r, done, 0.5), torch.tensor([1.75, 1.75, 1.75, 3.5, 3.5]))


# ---------------------------------------------------------------- bad input and the command line
def _one_line_error(result):
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lab: error:"), result.stderr
    return lines[0]


def test_unknown_env_id_is_one_sentence(lab, tmp_path):
    line = _one_line_error(lab("train", "a2c", "--env-id", "CartPol-v1", "--run-dir", tmp_path / "run"))
    assert "CartPole-v1" in line
    assert not (tmp_path / "run").exists()


def test_observation_space_the_network_cannot_take(lab, tmp_path):
    line = _one_line_error(lab("train", "reinforce", "--env-id", "FrozenLake-v1", "--run-dir", tmp_path / "run"))
    assert "Discrete(16)" in line and "one-hot" in line


def test_bad_flag_value(lab, tmp_path):
    line = _one_line_error(lab("train", "a2c", "--gae-lambda", "1.5", "--run-dir", tmp_path / "run"))
    assert "--gae-lambda" in line


def test_reinforce_stops_at_its_budget():
    config = reinforce.Config(num_envs=4, rollout_steps=128, total_steps=1_000)   # 1,000 = 512 + 488
    trainer = train_in_memory("reinforce", config, RunOptions(device="cpu", eval_every=1_000, log_every=1_000))
    assert trainer.step == 1_000


@pytest.mark.parametrize("algo", ["reinforce", "actor-critic", "a2c", "ppo"])
def test_train_eval_video_resume(lab, tmp_path, algo):
    run = tmp_path / algo
    result = lab("train", algo, "--total-steps", "1024", "--eval-every", "1024", "--eval-episodes", "3", "--run-dir", run)
    assert result.returncode == 0, result.stderr
    evaluations = [row for row in read_metrics(run / "metrics.jsonl") if "eval/episodes" in row]
    assert [row["eval/episodes"] for row in evaluations] == [3]
    result = lab("eval", run, "--episodes", "2", "--video")
    assert result.returncode == 0, result.stderr
    assert list((run / "videos").glob("episode*")), list(run.rglob("*"))
    result = lab("resume", run, "--total-steps", "2048")
    assert result.returncode == 0, result.stderr
    assert (run / "checkpoints" / "last.pt").exists()


def test_gaussian_policies_train_on_reach1d(lab, tmp_path):
    for algo, extra in [("reinforce", ["--log-std", "state-dependent"]), ("actor-critic", [])]:
        result = lab("train", algo, "--env-id", "lab/Reach1D-v0", "--total-steps", "1024", "--eval-every", "1024",
                     "--run-dir", tmp_path / algo, *extra)
        assert result.returncode == 0, result.stderr
