"""What the three policy-gradient algorithms share around their maths: vector envs with the action
space checked, numpy <-> torch at the env boundary, the ``lab eval`` options, and evaluation with video."""
from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from envs.make import env_spaces, finished_episodes, make_vector_env
from lab.config import positive
from rl.nets import is_image_space
from rl.evaluation import record_video, run_episodes
from rl.pg.policies import ActorCritic, check_action_space


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


TRAINING_EVAL = EvalOptions(episodes=10)
"""What the trainer's periodic evaluation plays."""


def env_setup(env_id: str, num_envs: int, seed: int, training: bool
              ) -> tuple[gym.vector.VectorEnv | None, np.ndarray | None, gym.Space, gym.Space]:
    """(training envs, their first observations, observation space, action space). Without training
    (a loaded agent) no env is kept: (None, None, spaces)."""
    if training:
        envs, obs = make_training_envs(env_id, num_envs, seed)
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


def episode_metrics(infos_returns: list[tuple[float, int]]) -> dict:
    """rollout/ep_return and rollout/ep_length averaged over the episodes that finished (none: no keys)."""
    if not infos_returns:
        return {}
    returns, lengths = zip(*infos_returns)
    return {"rollout/ep_return": float(np.mean(returns)), "rollout/ep_length": float(np.mean(lengths))}


@torch.no_grad()
def evaluate_policy(net: ActorCritic, env_id: str, options: EvalOptions | None, seed: int,
                    device: torch.device) -> dict:
    """eval/ep_return (mean over full episodes), its std, and optionally a video of one episode."""
    options = options or TRAINING_EVAL
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


__all__ = ["EvalOptions", "TRAINING_EVAL", "env_setup", "predict_actions", "make_training_envs", "to_tensor", "to_env", "final_observations",
           "episode_metrics", "evaluate_policy", "finished_episodes"]
