"""Environments: the tabular worlds of the notes registered with Gymnasium, and env makers."""
from __future__ import annotations

import gymnasium as _gymnasium

_gymnasium.register("lab/Reach1D-v0", entry_point="envs.reach:Reach1D", max_episode_steps=50)  # Gaussian-policy test bed
# the tabular worlds of the notes (envs/gridworld.py, envs/tabular.py); each truncates itself after max_steps
_gymnasium.register("lab/GridWorld-v0", entry_point="envs.gridworld:GridWorldEnv")
_gymnasium.register("lab/Corridor-v0", entry_point="envs.gridworld:CorridorEnv")
_gymnasium.register("lab/RandomMDP-v0", entry_point="envs.tabular:RandomMDPEnv")


def describe() -> list[tuple[str, str]]:
    """Rows for `lab list envs`: the lab's own envs, then the families Gymnasium and ale-py provide."""
    import gymnasium

    rows = [(env_id, str(spec.entry_point).split(":")[-1])
            for env_id, spec in sorted(gymnasium.registry.items()) if env_id.startswith("lab/")]
    classic = [i for i in ("CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1", "LunarLander-v3")
               if i in gymnasium.registry]
    rows.append(("classic control", ", ".join(classic)))
    try:
        import ale_py
        gymnasium.register_envs(ale_py)
        atari = [i for i in gymnasium.registry if i.startswith("ALE/") and i.endswith("-v5")]
        rows.append(("Atari (ale-py)", f"{len(atari)} games, e.g. ALE/Pong-v5, ALE/Breakout-v5"))
    except ImportError:
        rows.append(("Atari", "not installed: pip install ale-py"))
    return rows
