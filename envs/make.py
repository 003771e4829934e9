"""Environment makers shared by every RL algorithm.

``make_vector_env`` returns a Gymnasium vector env in SAME_STEP autoreset mode: when an episode ends,
``step`` returns the first observation of the next episode and puts the last one in
``infos["final_obs"]`` (mask ``infos["_final_obs"]``). Finished episodes' full, unclipped returns come
out of ``finished_episodes(infos)`` for classic and Atari envs alike.
"""
from __future__ import annotations

import difflib
import os

import gymnasium as gym
import numpy as np

from lab.errors import LabError

ATARI_PREFIX = "ALE/"


def is_atari(env_id: str) -> bool:
    return env_id.startswith(ATARI_PREFIX)


def _registry() -> dict:
    if any(k.startswith(ATARI_PREFIX) for k in gym.registry):
        return gym.registry
    try:
        import ale_py
        gym.register_envs(ale_py)
    except ImportError:
        pass
    import envs  # noqa: F401  (registers the lab/ envs)
    return gym.registry


def check_env_id(env_id: str) -> None:
    """A clear error naming the close matches when ``env_id`` is not registered."""
    registry = _registry()
    if env_id in registry:
        return
    close = difflib.get_close_matches(env_id, list(registry), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `lab list envs` shows what is available."
    raise LabError(f"unknown env id {env_id!r}{hint}")


def make_vector_env(env_id: str, num_envs: int, *, for_training: bool = True, **atari_options) -> gym.vector.VectorEnv:
    """``num_envs`` copies of ``env_id`` stepped together (ale-py's native vector env for Atari).

    ``for_training`` selects the Atari training pipeline (life loss ends an episode, clipped rewards);
    evaluation envs play full games with raw rewards. Seed with ``envs.reset(seed=...)``.
    """
    check_env_id(env_id)
    if is_atari(env_id):
        from envs.atari import make_atari_vector_env
        return make_atari_vector_env(env_id, num_envs, for_training=for_training, **atari_options)
    envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


def env_spaces(env_id: str, **atari_options) -> tuple[gym.Space, gym.Space]:
    """(observation space, action space) of one ``env_id`` env as an agent sees it, without keeping any env:
    what a loaded agent needs to build its networks."""
    envs = make_vector_env(env_id, 1, for_training=False, **atari_options)
    try:
        return envs.single_observation_space, envs.single_action_space
    finally:
        envs.close()


def make_render_env(env_id: str, **atari_options) -> gym.Env:
    """One env that renders RGB frames, for videos of the agent (same observations as evaluation)."""
    check_env_id(env_id)
    if is_atari(env_id):
        from envs.atari import make_atari_render_env
        return make_atari_render_env(env_id, **atari_options)
    for driver in ("SDL_VIDEODRIVER", "SDL_AUDIODRIVER"):   # pygame draws off screen: no display, no sound,
        os.environ.setdefault(driver, "dummy")              # and no SDL warning about XDG_RUNTIME_DIR
    return gym.make(env_id, render_mode="rgb_array")


def finished_episodes(infos: dict) -> list[tuple[float, int]]:
    """(return, length) of each episode that ended at this vector step."""
    episode = infos.get("episode")
    if episode is None:
        return []
    mask = infos.get("_episode", np.ones(len(episode["r"]), dtype=bool))
    return [(float(r), int(n)) for r, n, done in zip(episode["r"], episode["l"], mask) if done]
