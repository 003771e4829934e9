"""What the policy-gradient algorithms share around their maths: vector envs with the action space
checked, numpy <-> torch at the env boundary, the rollout A2C and PPO learn from, the ``lab eval``
options, and evaluation with video."""
from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from envs.make import env_spaces, finished_episodes, make_vector_env
from lab.config import positive
from lab.runtime import Runtime
from rl.nets import is_image_space
from rl.evaluation import record_video, run_episodes
from rl.pg.policies import ActorCritic, check_action_space
from rl.pg.returns import gae


@dataclass(frozen=True)
class EvalOptions:
    """How `lab eval` plays the policy."""

    episodes: int = 10
    """Number of evaluation episodes."""
    video: bool = False
    """Also record one episode under videos/ (MP4 with imageio-ffmpeg, else GIF)."""
    deterministic: bool | None = None
    """Act with the policy's mode (argmax, or the Gaussian mean) instead of sampling from it. Default:
    the mode for vector observations, samples for Atari frames (a greedy policy can stall a game forever
    by never pressing FIRE)."""

    def __post_init__(self):
        positive(self, "episodes")


def env_setup(env_id: str, num_envs: int, runtime: Runtime, training: bool
              ) -> tuple[gym.vector.VectorEnv | None, np.ndarray | None, gym.Space, gym.Space]:
    """(training envs, their first observations, observation space, action space). ``num_envs`` counts
    the envs of the whole job: under torchrun each process plays its share (``rt.shard``), seeded by its
    own ``envs/0`` stream. Without training (a loaded agent) no env is kept: (None, None, spaces)."""
    if training:
        here = runtime.shard(num_envs)
        envs, obs = make_training_envs(env_id, here.stop - here.start, runtime.derive_seed("envs/0"))
        return envs, obs, envs.single_observation_space, envs.single_action_space
    obs_space, action_space = env_spaces(env_id)
    check_action_space(action_space)
    return None, None, obs_space, action_space


@torch.no_grad()
def predict_actions(net: ActorCritic, obs: np.ndarray, deterministic: bool, device: torch.device) -> np.ndarray:
    """Actions for a batch of observations, as the env takes them: the policy's mode or a sample."""
    return to_env(net.act(to_tensor(obs, device), deterministic=deterministic), net.action_space)


def make_training_envs(env_id: str, num_envs: int, seed: int) -> tuple[gym.vector.VectorEnv, np.ndarray]:
    """``num_envs`` training envs (action space checked) and their first observations."""
    envs = make_vector_env(env_id, num_envs, for_training=True)
    try:
        check_action_space(envs.single_action_space)
    except Exception:
        envs.close()
        raise
    obs, _ = envs.reset(seed=seed)
    return envs, obs


def to_tensor(obs: np.ndarray, device: torch.device) -> torch.Tensor:
    """Observations as a tensor on ``device``: uint8 frames stay uint8 (the CNN scales them), vectors float32."""
    obs = np.asarray(obs)
    return torch.as_tensor(obs if obs.dtype == np.uint8 else obs.astype(np.float32, copy=False), device=device)


def to_env(action: torch.Tensor, space: gym.Space) -> np.ndarray:
    """Actions as the env takes them: integer indices, or Gaussian samples clipped to the Box bounds."""
    action = action.cpu().numpy()
    if isinstance(space, gym.spaces.Box):
        return np.clip(action, space.low, space.high).astype(space.dtype)
    return action


def final_observations(next_obs: np.ndarray, infos: dict) -> np.ndarray:
    """The true next observations s_{t+1}: the final observation where an episode just ended."""
    mask = infos.get("_final_obs")
    if mask is None or not mask.any():
        return next_obs
    real = np.array(next_obs, copy=True)
    for i in np.flatnonzero(mask):
        real[i] = infos["final_obs"][i]
    return real


@dataclass(frozen=True)
class Rollout:
    """``n_steps`` steps of N envs, time-major (T, N, ...), with what the acting policy saw and said."""

    obs: torch.Tensor           # s_t
    actions: torch.Tensor       # a_t as sampled (Gaussian samples before clipping to the bounds)
    log_probs: torch.Tensor     # log pi_old(a_t|s_t) of the acting policy
    values: torch.Tensor        # V_old(s_t) of the acting critic
    rewards: torch.Tensor       # r_t
    terminated: torch.Tensor    # s_{t+1} is terminal: never bootstrapped
    done: torch.Tensor          # the episode ended after step t (terminated or truncated)
    next_values: torch.Tensor   # V_old(s_{t+1}); V(final observation) where a time limit cut the episode
    episodes: list              # (return, length) of the episodes that finished

    def advantages(self, gamma: float, lam: float) -> torch.Tensor:
        """GAE(lambda) advantages A_t of every step (Schulman et al. 2016)."""
        return gae(self.rewards, self.values, self.next_values, self.terminated, self.done, gamma, lam)


@torch.no_grad()
def collect_rollout(net: ActorCritic, envs: gym.vector.VectorEnv, obs: np.ndarray, n_steps: int,
                    device: torch.device) -> tuple[Rollout, np.ndarray]:
    """Play ``n_steps`` in every env with one forward pass per step; the rollout and the next observations."""
    space = envs.single_action_space
    rewards, terminated, done = (np.zeros((n_steps, envs.num_envs), np.float32) for _ in range(3))
    observations, actions, log_probs, values, episodes = [], [], [], [], []
    truncated_at: list[tuple[int, int, np.ndarray]] = []   # (t, env, final obs) where a time limit cut an episode
    for t in range(n_steps):
        obs_t = to_tensor(obs, device)
        action, log_prob, value = net.act_with_value(obs_t)
        obs, rewards[t], terminated_t, truncated_t, infos = envs.step(to_env(action, space))
        terminated[t], done[t] = terminated_t, terminated_t | truncated_t
        for i in np.flatnonzero(truncated_t & ~terminated_t):
            truncated_at.append((t, int(i), infos["final_obs"][i]))
        observations.append(obs_t)
        actions.append(action)
        log_probs.append(log_prob)
        values.append(value)
        episodes += finished_episodes(infos)
    values_t = torch.stack(values)
    next_values = torch.cat([values_t[1:], net.value(to_tensor(obs, device))[None]])
    if truncated_at:
        t_idx, env_idx, final = zip(*truncated_at)
        next_values[list(t_idx), list(env_idx)] = net.value(to_tensor(np.stack(final), device))
    as_tensor = lambda rows: torch.from_numpy(rows).to(device)
    rollout = Rollout(torch.stack(observations), torch.stack(actions), torch.stack(log_probs), values_t,
                      as_tensor(rewards), as_tensor(terminated), as_tensor(done), next_values, episodes)
    return rollout, obs


def episode_metrics(infos_returns: list[tuple[float, int]]) -> dict:
    """rollout/ep_return and rollout/ep_length averaged over the episodes that finished (none: no keys)."""
    if not infos_returns:
        return {}
    returns, lengths = zip(*infos_returns)
    return {"rollout/ep_return": float(np.mean(returns)), "rollout/ep_length": float(np.mean(lengths))}


@torch.no_grad()
def evaluate_policy(net: ActorCritic, config, options: EvalOptions | None, seed: int,
                    device: torch.device) -> dict:
    """eval/ep_return (mean over full episodes), its std, and optionally a video of one episode, in
    ``config.env_id``; without ``options`` (evaluation during training) ``config.eval_episodes`` episodes."""
    options = options or EvalOptions(episodes=config.eval_episodes, video=config.capture_video)
    env_id = config.env_id
    was_training = net.training
    net.eval()
    deterministic = options.deterministic
    if deterministic is None:
        deterministic = not is_image_space(net.observation_space)

    def policy(obs: np.ndarray) -> np.ndarray:
        return predict_actions(net, obs, deterministic, device)

    try:
        returns = run_episodes(policy, env_id, options.episodes, seed=seed)
        results = {"eval/ep_return": float(returns.mean()), "eval/ep_return_std": float(returns.std()),
                   "eval/episodes": len(returns), "eval/deterministic": float(deterministic)}
        if options.video:
            results["videos/episode"], results["eval/video_return"] = record_video(policy, env_id, seed=seed)
    finally:
        net.train(was_training)
    return results


class RolloutAgent:
    """What REINFORCE, A2C and PPO share beyond their update: greedy evaluation, acting for a loaded agent,
    checkpoints and closing. Needs ``config.env_id``, ``rt``, ``training``, ``net``, ``updates`` (updates
    made) and, when training, ``optimizer`` and ``envs``."""

    best_metric = ("eval/ep_return", "max")

    def evaluate(self, options: EvalOptions | None = None, *, during_training: bool = False) -> dict:
        return evaluate_policy(self.net, self.config, options, device=self.rt.device,
                               seed=self.rt.derive_seed("eval", per_rank=False))

    def predict(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        return predict_actions(self.net, obs, deterministic, self.rt.device)

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        """Networks, optimizer and update count; the envs restart fresh episodes seeded by the update count.
        A loaded agent (``training=False``) restores its network alone."""
        self.net.load_state_dict(state["net"])
        self.updates = state["updates"]
        if not self.training:
            return
        self.optimizer.load_state_dict(state["optimizer"])
        self.obs, _ = self.envs.reset(seed=self.rt.derive_seed(f"envs/{self.updates}"))

    def close(self) -> None:
        if self.envs is not None:
            self.envs.close()


__all__ = ["EvalOptions", "env_setup", "predict_actions", "make_training_envs", "to_tensor",
           "to_env", "final_observations", "Rollout", "collect_rollout", "RolloutAgent", "episode_metrics",
           "evaluate_policy", "finished_episodes"]
