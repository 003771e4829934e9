"""Reach1D: a tiny continuous-control task for testing Gaussian policies in seconds.

A point at x in [-1, 1] must reach a target g in [-1, 1]. Observation (x, g); action a in [-1, 1]
moves the point by 0.2 * a (clipped to the track). Reward -|x - g| per step; the episode terminates
when |x - g| < 0.05 and is truncated after 50 steps (registration's max_episode_steps). Heading
straight for the target scores about -1.5 on average; standing still about -35, random actions -32.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

SPEED = 0.2
TOLERANCE = 0.05


class Reach1D(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, render_mode: str | None = None):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.render_mode = render_mode
        self.x = self.goal = 0.0

    def _obs(self) -> np.ndarray:
        return np.array([self.x, self.goal], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.x, self.goal = (float(v) for v in self.np_random.uniform(-1.0, 1.0, size=2))
        return self._obs(), {}

    def step(self, action):
        move = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -1.0, 1.0))
        self.x = float(np.clip(self.x + SPEED * move, -1.0, 1.0))
        distance = abs(self.x - self.goal)
        return self._obs(), -distance, distance < TOLERANCE, False, {}

    def render(self) -> np.ndarray:
        """A 32x128 strip: the target in green, the point in white."""
        frame = np.zeros((32, 128, 3), dtype=np.uint8)
        column = lambda v: int(round((v + 1.0) / 2.0 * 127))
        frame[8:24, max(column(self.goal) - 2, 0):column(self.goal) + 3, 1] = 255
        frame[12:20, max(column(self.x) - 1, 0):column(self.x) + 2] = 255
        return frame
