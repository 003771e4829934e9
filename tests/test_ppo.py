"""PPO: the clipped objective and value clip on hand-made cases, the update's bookkeeping, Gaussian
log-probs of clipped actions, the shared rollout's GAE against A2C's own computation, exact resume
through the CLI, bad input, and one learning test on the trainer."""
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from lab import checkpoint
from lab.config import from_dict
from lab.runtime import RunOptions, Runtime
from lab.session import train_in_memory
from rl.pg import ppo
from rl.pg.common import EvalOptions, collect_rollout, to_tensor
from rl.pg.losses import clipped_surrogate_pg_loss, clipped_value_loss
from rl.pg.policies import ActorCritic
from rl.pg.returns import gae

# A small CartPole configuration for mechanics tests (not for learning): 2 envs x 16 steps, minibatches of 8.
TINY = dict(env_id="CartPole-v1", num_envs=2, n_steps=16, minibatch_size=8, n_epochs=3, total_steps=320)


def make_agent(seed: int = 0, **overrides) -> ppo.Algorithm:
    return ppo.Algorithm(ppo.Config(**{**TINY, **overrides}), Runtime(RunOptions(device="cpu", seed=seed)))


# ---------------------------------------------------------------- the losses
def test_clipped_surrogate_value_and_gradient_on_hand_made_ratios():
    eps = 0.2
    ratio = torch.tensor([0.5, 0.9, 1.1, 1.5, 0.5, 0.9, 1.1, 1.5], requires_grad=True)
    adv = torch.tensor([1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0])
    loss = clipped_surrogate_pg_loss(ratio, adv, eps)
    # per element min(rho A, clip(rho) A): A > 0 clips above 1.2, A < 0 clips below 0.8
    objective = torch.tensor([0.5, 0.9, 1.1, 1.2, -0.8, -0.9, -1.1, -1.5])
    assert torch.isclose(loss, -objective.mean())
    loss.backward()
    # d objective / d rho: A inside the clip region or on the side the min does not clip, 0 where it clips
    d_objective = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, -1.0, -1.0, -1.0])
    assert torch.allclose(ratio.grad, -d_objective / len(ratio))


def test_clipped_surrogate_inside_the_clip_region_is_the_plain_ratio_objective():
    ratio = torch.tensor([0.85, 1.0, 1.15], requires_grad=True)
    adv = torch.tensor([2.0, -1.0, 0.5])
    clipped_surrogate_pg_loss(ratio, adv, 0.2).backward()
    plain = ratio.detach().clone().requires_grad_(True)
    (-(plain * adv).mean()).backward()
    assert torch.allclose(ratio.grad, plain.grad)


def test_clipped_value_loss_takes_the_larger_error():
    old_v = torch.tensor([2.0, 2.0, 2.0])
    target = torch.zeros(3)
    v = torch.tensor([1.0, 3.0, 2.2], requires_grad=True)
    loss = clipped_value_loss(v, old_v, target, 0.5)
    # v=1: unclipped 1, clipped (1.5)^2 = 2.25 (constant in v); v=3: 9 vs 2.5^2; v=2.2: both 2.2^2
    assert torch.isclose(loss, torch.tensor((2.25 + 9.0 + 2.2 ** 2) / 3))
    loss.backward()
    assert torch.allclose(v.grad, torch.tensor([0.0, 2 * 3.0, 2 * 2.2]) / 3)


# ---------------------------------------------------------------- the update
def adam_steps(agent: ppo.Algorithm) -> int:
    return int(next(iter(agent.optimizer.state.values()))["step"])


def test_optimizer_steps_per_update_are_epochs_times_minibatches():
    agent = make_agent()
    try:
        metrics = agent.train_step(0)
        assert adam_steps(agent) == 3 * (2 * 16 // 8)
        assert metrics["train/epochs"] == 3.0
        for key in ("train/approx_kl", "train/clip_fraction", "train/explained_variance"):
            assert math.isfinite(float(metrics[key])), key
    finally:
        agent.close()


def test_target_kl_stops_the_epochs_early():
    agent = make_agent(target_kl=1e-12, n_epochs=10)
    try:
        metrics = agent.train_step(0)
        assert metrics["train/epochs"] == 1.0
        assert adam_steps(agent) == 2 * 16 // 8          # one epoch of minibatches, then the stop
    finally:
        agent.close()


def test_learning_rate_and_clip_range_anneal_linearly():
    agent = make_agent(lr=1e-3, clip_range=0.2, anneal_lr=True, anneal_clip_range=True, total_steps=320)
    try:
        metrics = agent.train_step(160)
        assert math.isclose(metrics["train/lr"], 5e-4) and math.isclose(metrics["train/clip_range"], 0.1)
        assert math.isclose(agent.optimizer.param_groups[0]["lr"], 5e-4)
    finally:
        agent.close()


def test_gaussian_log_prob_is_that_of_the_unclipped_sample():
    """Pendulum's torque is bounded by 2; with sigma = 5 most samples fall outside and are clipped at the env."""
    torch.manual_seed(0)
    envs = gym.make_vec("Pendulum-v1", num_envs=2, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
    net = ActorCritic(envs.single_observation_space, envs.single_action_space, init_log_std=math.log(5.0))
    obs, _ = envs.reset(seed=0)
    try:
        rollout, _ = collect_rollout(net, envs, obs, 8, torch.device("cpu"))
    finally:
        envs.close()
    actions = rollout.actions.flatten(0, 1)
    assert (actions.abs() > 2.0).any()
    with torch.no_grad():
        dist = net.policy(rollout.obs.flatten(0, 1))
    assert torch.allclose(rollout.log_probs.flatten(), dist.log_prob(actions), atol=1e-5)
    assert not torch.allclose(rollout.log_probs.flatten(), dist.log_prob(actions.clamp(-2.0, 2.0)), atol=1e-3)


# ---------------------------------------------------------------- the shared rollout
def short_cartpoles(num_envs: int) -> gym.vector.VectorEnv:
    """CartPoles cut by a time limit after 12 steps, so a rollout holds terminations and truncations."""
    return gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1", max_episode_steps=12)] * num_envs,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def a2c_advantages_before_the_lift(net, actions, seed, gamma, lam):
    """A2C's own advantage computation before the rollout moved to rl.pg.common: replay the actions,
    values from one pass over the stacked observations, V(final obs) where a time limit cut an episode."""
    envs = short_cartpoles(actions.shape[1])
    obs, _ = envs.reset(seed=seed)
    observations, rewards, terminated, done, truncated_at = [], [], [], [], []
    for t, action in enumerate(actions):
        observations.append(to_tensor(obs, "cpu"))
        obs, r, term, trunc, infos = envs.step(action.numpy())
        rewards.append(r)
        terminated.append(term)
        done.append(term | trunc)
        truncated_at += [(t, int(i), infos["final_obs"][i]) for i in np.flatnonzero(trunc & ~term)]
    envs.close()
    T, N = actions.shape
    with torch.no_grad():
        v_t = net.value(torch.stack(observations).flatten(0, 1)).view(T, N)
        v_tp1 = torch.cat([v_t[1:], net.value(to_tensor(obs, "cpu"))[None]])
        for t, i, final in truncated_at:
            v_tp1[t, i] = net.value(to_tensor(final[None], "cpu"))[0]
    as_tensor = lambda rows: torch.tensor(np.array(rows), dtype=torch.float32)
    advantages = gae(as_tensor(rewards), v_t, v_tp1, as_tensor(terminated), as_tensor(done), gamma, lam)
    return advantages, as_tensor(terminated), as_tensor(done)


def test_gae_through_the_shared_rollout_equals_a2cs():
    torch.manual_seed(1)
    envs = short_cartpoles(3)
    net = ActorCritic(envs.single_observation_space, envs.single_action_space)
    with torch.no_grad():
        net.value_out.bias.fill_(5.0)                     # a critic far from 0 makes a missed bootstrap visible
    obs, _ = envs.reset(seed=7)
    rollout, _ = collect_rollout(net, envs, obs, 40, torch.device("cpu"))
    envs.close()
    expected, terminated, done = a2c_advantages_before_the_lift(net, rollout.actions, seed=7, gamma=0.99, lam=0.95)
    assert terminated.sum() > 0 and (done - terminated).sum() > 0, "the rollout must end episodes both ways"
    assert torch.equal(rollout.done, done)
    assert torch.allclose(rollout.advantages(0.99, 0.95), expected, atol=1e-5)


# ---------------------------------------------------------------- the command line
def test_resume_through_the_cli_continues_exactly(lab, tmp_path):
    """lab train to step 256, lab resume to 512; restoring step-256.pt by hand (agent, optimizer, RNG) and
    playing on must give the same network: nothing of the schedule or the random streams is lost."""
    run = tmp_path / "run"
    common = ["--device", "cpu", "--deterministic", "--num-envs", 2, "--n-steps", 32, "--minibatch-size", 16,
              "--n-epochs", 2, "--eval-every", 256, "--checkpoint-every", 256]
    assert lab("train", "ppo", "--total-steps", 256, "--keep-checkpoints", *common, "--run-dir", run).returncode == 0
    result = lab("eval", run, "--episodes", 2, "--video")
    assert result.returncode == 0, result.stderr
    assert list((run / "videos").glob("episode*"))
    result = lab("resume", run, "--total-steps", 512)
    assert result.returncode == 0, result.stderr
    resumed = checkpoint.load(run / "checkpoints" / "last.pt")

    saved = checkpoint.load(run / "checkpoints" / "step-256.pt")
    config = from_dict(ppo.Config, {**saved["config"], "total_steps": 512})
    runtime = Runtime(from_dict(RunOptions, saved["options"]))
    agent = ppo.Algorithm(config, runtime)
    try:
        agent.load_state_dict(saved["algorithm"])
        runtime.load_state_dict(saved["runtime"])
        for step in range(256, 512, agent.step_size):
            agent.train_step(step)
    finally:
        agent.close()
    assert resumed["step"] == 512 and resumed["algorithm"]["updates"] == agent.updates == 8
    for key, tensor in agent.net.state_dict().items():
        assert torch.equal(tensor, resumed["algorithm"]["net"][key]), key


class _MultiDiscreteEnv(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.MultiDiscrete([2, 3])


class _UnboundedEnv(_MultiDiscreteEnv):
    action_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)


gym.register("lab-test/MultiDiscrete-v0", entry_point=_MultiDiscreteEnv)
gym.register("lab-test/Unbounded-v0", entry_point=_UnboundedEnv)


@pytest.mark.parametrize("args, named", [
    (["--minibatch-size", 512], "--minibatch-size"),             # exceeds the 8 x 32 = 256 steps of a rollout
    (["--minibatch-size", 100], "--minibatch-size"),             # does not divide 256
    (["--clip-range", 0], "--clip-range"),
    (["--n-epochs", 0], "--n-epochs"),
    (["--gamma", 1.5], "--gamma"),
    (["--gae-lambda", -0.1], "--gae-lambda"),
    (["--env-id", "lab-test/MultiDiscrete-v0"], "MultiDiscrete"),
    (["--env-id", "lab-test/Unbounded-v0"], "infinite bounds"),
])
def test_bad_input_is_one_sentence_and_leaves_no_run_folder(lab, tmp_path, args, named):
    result = lab("train", "ppo", *args, "--run-dir", tmp_path / "run")
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lab: error:") and named in lines[0], result.stderr
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- learning
def test_ppo_solves_cartpole_within_100k_steps():
    """RL Zoo's tuned CartPole preset; a greedy mean of 475 over 20 episodes, checked every 10,240 steps."""
    trainer = train_in_memory("ppo", ppo.Config(env_id="CartPole-v1", total_steps=100_000),
                              RunOptions(device="cpu", seed=0, eval_every=10_240),
                              eval_options=EvalOptions(episodes=20),
                              stop_when=lambda step, results: results["eval/ep_return"] >= 475.0)
    assert trainer.stopped_early, f"greedy mean {trainer.history[-1][1]['eval/ep_return']:.1f} < 475 after 100k steps"


@pytest.mark.parametrize("space", [gym.spaces.Discrete(3), gym.spaces.Box(-1.0, 1.0, (2,))])
def test_evaluate_actions_matches_the_distribution(space):
    torch.manual_seed(0)
    net = ActorCritic(gym.spaces.Box(-1.0, 1.0, (4,)), space, init_log_std=-0.3)
    obs = torch.randn(5, 4)
    actions, log_prob_when_acting, value_when_acting = net.act_with_value(obs)
    log_prob, entropy, value = net.evaluate_actions(obs, actions)
    dist, value_of_forward = net(obs)
    assert torch.allclose(log_prob, dist.log_prob(actions), atol=1e-5)
    assert torch.allclose(log_prob_when_acting, log_prob, atol=1e-5)
    assert torch.allclose(entropy, dist.entropy(), atol=1e-5)
    assert torch.allclose(value, value_of_forward) and torch.allclose(value_when_acting, value)
