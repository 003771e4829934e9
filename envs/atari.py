"""The Atari pipeline of the DQN papers, on ale-py's native C++ vector env (``AtariVectorEnv``).

Preprocessing (Mnih et al. 2015; Machado et al. 2018 for sticky actions), all done inside ALE:
at reset a random number n in [0, noop_max) of start actions (FIRE first in games that have it,
then no-ops: n - 1 of them after FIRE, n without), the action repeated for 4 frames with the max of
the last two frames, 84x84 grayscale (OpenCV's area interpolation), a stack of the last 4 frames
(zeros before the first), sticky actions off unless asked (``repeat_action_probability=0.25``).
The video env (``make_atari_render_env``) does the same in Python, frame for frame.

Training and evaluation differ only in what the agent sees (``for_training``):

* training: the loss of a life ends the agent's episode (``terminated=True``) while the game goes
  on (no reset: the next observation continues the game), and rewards are clipped to their sign;
* evaluation: full games and raw rewards.

Both report, through ``infos["episode"]`` (read it with ``envs.make.finished_episodes``), the
full-game UNCLIPPED return and length of every game that ended, so logged training returns are
game scores. Autoreset is SAME_STEP like ``envs.make.make_vector_env``: when a game ends, ``step``
returns the first observation of the next game and puts the last one in ``infos["final_obs"]``
(mask ``infos["_final_obs"]``). A life loss sets ``terminated`` without a reset, so its mask entry
is False and the returned observation is the true next one.

Shared API (also used by the policy-gradient algorithms; keep it stable):
``make_atari_vector_env(env_id, num_envs, *, for_training, **options)`` and
``make_atari_render_env(env_id, **options)``, with the options of ``AtariOptions``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import ale_py
import gymnasium as gym
import numpy as np

from lab.errors import LabError


@dataclass(frozen=True)
class AtariOptions:
    """The options both makers accept as keyword arguments."""

    repeat_action_probability: float = 0.0
    """Sticky actions: probability that ALE repeats the previous action (0.25 in Machado et al. 2018;
    0 matches the published DQN numbers)."""
    noop_max: int = 30
    """Start actions at reset are drawn from [0, noop_max): FIRE first where the game has it, then no-ops."""
    frame_skip: int = 4
    """Frames each action is repeated for; the observation is the max of the last two."""
    frame_stack: int = 4
    """Number of 84x84 grayscale frames stacked into one observation."""
    max_episode_frames: int = 108_000
    """A game is truncated after this many frames (30 minutes of play at 60 Hz)."""
    num_threads: int = 0
    """Threads ALE steps the games with (0: one per CPU core)."""


def _options(options: dict[str, Any]) -> AtariOptions:
    known = {f.name for f in dataclasses.fields(AtariOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise LabError(f"unknown Atari option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
    return AtariOptions(**options)


def rom_name(env_id: str) -> str:
    """ALE's ROM name of a Gymnasium id: "ALE/Pong-v5" -> "pong"."""
    gym.register_envs(ale_py)
    return gym.spec(env_id).kwargs["game"]


class AtariEpisodes(gym.vector.VectorWrapper):
    """Life loss as episode end and clipped rewards for training; full-game unclipped episode
    statistics in ``infos["episode"]`` ({"r", "l"} with mask ``infos["_episode"]``) always."""

    def __init__(self, env: gym.vector.VectorEnv, for_training: bool):
        super().__init__(env)
        self.for_training = for_training
        self.returns = np.zeros(self.num_envs, dtype=np.float64)
        self.lengths = np.zeros(self.num_envs, dtype=np.int64)
        self.lives = np.zeros(self.num_envs, dtype=np.int64)

    def reset(self, *, seed=None, options=None):
        if isinstance(seed, int):   # ALE's C++ envs take 32-bit seeds (seed .. seed + num_envs - 1)
            seed %= 2**31 - self.num_envs
        obs, infos = self.env.reset(seed=seed, options=options)
        self.returns[:], self.lengths[:] = 0.0, 0
        self.lives = infos["lives"].astype(np.int64)
        return obs, infos

    def step(self, actions):
        obs, rewards, terminated, truncated, infos = self.env.step(np.asarray(actions))
        rewards = rewards.astype(np.float32)
        game_over = terminated | truncated                      # ALE reset these games (SAME_STEP)
        self.returns += rewards
        self.lengths += 1
        infos["_final_obs"] = game_over
        if game_over.any():
            infos["episode"] = {"r": self.returns.copy(), "l": self.lengths.copy()}
            infos["_episode"] = game_over.copy()
            self.returns[game_over], self.lengths[game_over] = 0.0, 0
        lives = infos["lives"].astype(np.int64)
        if self.for_training:
            life_lost = (lives < self.lives) & ~game_over
            terminated = terminated | life_lost                 # a lost life ends the training episode
            rewards = np.sign(rewards)                          # reward clipping to {-1, 0, +1}
        self.lives = lives
        return obs, rewards, terminated, truncated, infos


def make_atari_vector_env(env_id: str, num_envs: int, *, for_training: bool, **options) -> gym.vector.VectorEnv:
    """``num_envs`` Atari games in one ALE vector env with the preprocessing above."""
    from ale_py.vector_env import AtariVectorEnv

    opts = _options(options)
    env = AtariVectorEnv(
        rom_name(env_id), num_envs,
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        repeat_action_probability=opts.repeat_action_probability,
        noop_max=opts.noop_max, frameskip=opts.frame_skip, maxpool=True,
        img_height=84, img_width=84, grayscale=True, stack_num=opts.frame_stack,
        max_num_frames_per_episode=opts.max_episode_frames,
        episodic_life=False, life_loss_info=False,              # life loss is handled by AtariEpisodes
        reward_clipping=False, use_fire_reset=True, num_threads=opts.num_threads,
    )
    return AtariEpisodes(env, for_training)


def _area_taps(source: int, target: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's INTER_AREA table for shrinking ``source`` pixels to ``target``: for each output pixel
    the (up to 3) source pixels it covers and their float32 coverage weights, in OpenCV's order."""
    scale = source / target
    index, weight = np.zeros((target, 3), np.int64), np.zeros((target, 3), np.float32)
    for out in range(target):
        begin, end = out * scale, out * scale + scale
        cell = min(scale, source - begin)
        first, last = math.ceil(begin), min(math.floor(end), source - 1)
        first = min(first, last)
        taps = [(first - 1, (first - begin) / cell)] if first - begin > 1e-3 else []
        taps += [(s, 1.0 / cell) for s in range(first, last)]
        if end - last > 1e-3:
            taps.append((last, min(end - last, 1.0, cell) / cell))
        for k, (s, w) in enumerate(taps):
            index[out, k], weight[out, k] = s, w
    return index, weight


def resize_area(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Shrink a uint8 grayscale frame as ``cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)``
    does (ale-py's vector env, gymnasium's AtariPreprocessing): float32 sums of covered source pixels,
    columns then rows, rounded half to even. Bit-identical to ALE's observations."""
    rows, row_w = _area_taps(frame.shape[0], height)
    cols, col_w = _area_taps(frame.shape[1], width)
    pixels = frame.astype(np.float32)
    across = pixels[:, cols[:, 0]] * col_w[:, 0] + pixels[:, cols[:, 1]] * col_w[:, 1] + pixels[:, cols[:, 2]] * col_w[:, 2]
    out = (across[rows[:, 0]] * row_w[:, 0, None] + across[rows[:, 1]] * row_w[:, 1, None]
           + across[rows[:, 2]] * row_w[:, 2, None])
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


class AtariRenderEnv(gym.Wrapper):
    """One raw ALE game (frameskip 1) with the vector env's pipeline redone in Python, step for step:
    its start actions at reset, action repeat with max-pooling of the last two frames, 84x84 grayscale
    by OpenCV's area interpolation, frame stack. With the same start actions and actions (and no sticky
    actions) its observations equal the vector env's bit for bit; ``render()`` gives RGB for videos."""

    def __init__(self, env: gym.Env, opts: AtariOptions):
        super().__init__(env)
        self.opts = opts
        self.observation_space = gym.spaces.Box(0, 255, (opts.frame_stack, 84, 84), np.uint8)
        self.stack = np.zeros((opts.frame_stack, 84, 84), np.uint8)
        self.screens = np.zeros((2, 210, 160), np.uint8)   # the last two frames, max-pooled as in ALE

    def _push_screens(self) -> np.ndarray:
        frame = resize_area(np.maximum(self.screens[0], self.screens[1]), 84, 84)
        self.stack = np.concatenate([self.stack[1:], frame[None]])
        return self.stack.copy()

    def start_actions(self) -> int:
        """How many start actions this game begins with (FIRE counts as the first), as ALE draws it."""
        return int(self.env.unwrapped.np_random.integers(max(self.opts.noop_max, 1)))

    def reset(self, **kwargs):
        _, info = self.env.reset(**kwargs)
        ale = self.env.unwrapped.ale
        count = self.start_actions()
        if "FIRE" in self.env.unwrapped.get_action_meanings():
            ale.act(ale_py.Action.FIRE)
            count -= 1
        for _ in range(count):
            ale.act(ale_py.Action.NOOP)
            if ale.game_over():
                ale.reset_game()
        self.screens[0], self.screens[1] = 0, ale.getScreenGrayscale()
        self.stack[:] = 0
        return self._push_screens(), info

    def step(self, action):
        ale, total = self.env.unwrapped.ale, 0.0
        terminated = truncated = False
        for remaining in range(self.opts.frame_skip, 0, -1):
            _, reward, terminated, truncated, info = self.env.step(int(action))
            total += float(reward)
            if remaining <= 2:
                self.screens[2 - remaining] = ale.getScreenGrayscale()
            if terminated or truncated:
                break
        return self._push_screens(), total, terminated, truncated, info


def make_atari_render_env(env_id: str, **options) -> gym.Env:
    """One game that renders RGB frames, with the evaluation observations (full game, raw rewards)."""
    gym.register_envs(ale_py)
    opts = _options(options)
    env = gym.make(env_id, render_mode="rgb_array", frameskip=1,
                   repeat_action_probability=opts.repeat_action_probability,
                   max_num_frames_per_episode=opts.max_episode_frames)
    return AtariRenderEnv(env, opts)
