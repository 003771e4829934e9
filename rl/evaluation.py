"""Greedy (or epsilon) evaluation of any agent, and a video of it playing; shared by every RL algorithm."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from envs.make import finished_episodes, make_render_env, make_vector_env
from lab.media import Video
from lab.progress import Progress

Policy = Callable[[np.ndarray], np.ndarray]
"""Maps a batch of observations to a batch of actions."""


def run_episodes(policy: Policy, env_id: str, episodes: int, seed: int, num_envs: int = 8,
                 **env_options) -> np.ndarray:
    """Full-game returns of ``episodes`` episodes, spread evenly over up to ``num_envs`` envs.

    Each env plays a fixed quota of episodes, so short episodes are not over-represented.
    """
    num_envs = max(1, min(num_envs, episodes))
    quota = np.full(num_envs, episodes // num_envs)
    quota[: episodes % num_envs] += 1
    envs = make_vector_env(env_id, num_envs, for_training=False, **env_options)
    returns: list[list[float]] = [[] for _ in range(num_envs)]
    progress = Progress(episodes, "eval", unit="episode", leave=False)
    try:
        obs, _ = envs.reset(seed=seed)
        while any(len(r) < q for r, q in zip(returns, quota)):
            obs, _, _, _, infos = envs.step(policy(obs))
            episode = infos.get("episode")
            if episode is None:
                continue
            for i in np.flatnonzero(infos.get("_episode", np.ones(num_envs, bool))):
                if len(returns[i]) < quota[i]:
                    returns[i].append(float(episode["r"][i]))
            done = [r for per_env in returns for r in per_env]
            progress.update_to(len(done))
            progress.show({"mean return": f"{np.mean(done):.1f}"})
    finally:
        progress.close()
        envs.close()
    return np.array([r for per_env in returns for r in per_env], dtype=np.float64)


def record_video(policy: Policy, env_id: str, seed: int, max_frames: int = 5000, fps: int = 30,
                 **env_options) -> tuple[Video, float]:
    """One episode played by ``policy`` as a ``lab.Video``, and its return."""
    env = make_render_env(env_id, **env_options)
    progress = Progress(None, "video", unit="frame", leave=False)
    try:
        obs, _ = env.reset(seed=seed)
        frames, total, done = [env.render()], 0.0, False
        while not done and len(frames) < max_frames:
            action = policy(np.asarray(obs)[None])[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
            frames.append(env.render())
            progress.update(1)
    finally:
        progress.close()
        env.close()
    return Video(np.stack(frames), fps=fps), total


__all__ = ["Policy", "run_episodes", "record_video", "finished_episodes"]
