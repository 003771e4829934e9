"""Experience replay for every off-policy algorithm: a fixed-capacity ring of transitions sampled in uniform
random minibatches (``rl.prioritized`` samples them by priority instead).

One class serves vector observations (CartPole, Pendulum) and stacked Atari frames, with the actions of
either kind of space, sized from the spaces as Stable-Baselines3's buffers are: one integer per transition
for a Discrete space, a float32 vector for a Box. Each of the N vector
environments owns a ring of ``slots``; a slot holds one observation *frame* (the whole observation
for vectors, the newest 84x84 frame for a stack of k frames) and the transition taken from it:

    slot:      s-3   s-2   s-1   s     s+1
    frame:     f     f     f     f     f'      obs(s)  = frames s-k+1..s    (k = 4 for Atari)
    action:                      a           next(s) = frames s-k+2..s+1
    reward:                      r

So each frame is stored once, not k times in the stack and again as the next observation: a
million Atari transitions take 7,056 bytes each (~7.1 GB) instead of 2 x 4 x 7,056 (~56 GB; or
~28 GB when next observations are not stored twice). Stacks are rebuilt at sample time. An episode
start writes its whole first stack (k slots, the first k-1 never sampled) and an episode end writes
the final observation (a slot with no action), so a rebuilt stack never crosses an episode boundary
and equals the stack the environment returned. A transition records ``terminated`` (no bootstrap)
and ``done`` (the episode ended: terminated, or truncated by a time limit, where the target still
bootstraps from the final observation).

Sampling draws (env, slot) pairs uniformly with torch on the buffer's device and keeps the first
``batch_size`` that hold a complete transition (rejection sampling: the kept ones are exactly
uniform over the stored transitions). Optional n-step returns are assembled at sample time. A batch
carries the flat indices (env * slots + slot) of its transitions, so prioritized replay can update them.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch

from lab.errors import LabError
from lab.memory import available_memory, require_memory

GiB = 1024**3


class Batch(NamedTuple):
    obs: torch.Tensor          # (B, *obs_shape), stored dtype (uint8 frames stay uint8)
    actions: torch.Tensor      # (B,) int64 for a Discrete space; (B, A) float32 for a Box
    returns: torch.Tensor      # (B,) float32: r_t, or the n-step sum of discounted rewards
    discounts: torch.Tensor    # (B,) float32: gamma^n, or 0 after a termination
    next_obs: torch.Tensor     # (B, *obs_shape): the observation to bootstrap from
    weights: torch.Tensor      # (B,) float32: 1 for every sampled transition (0 only if rejection ran short);
                               # prioritized replay: the importance weight
    indices: torch.Tensor      # (B,) int64: the flat slot (env * slots + slot) of each transition


def weighted_mean(losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    # importance-weighted mean over the valid draws: sum_i w_i l_i / #{i: w_i > 0} (uniform replay: w_i = 1)
    return (losses * weights).sum() / weights.gt(0).sum().clamp(min=1)


class ReplayBuffer:
    """Ring buffer of ``capacity`` slots split over ``num_envs`` environments (see module doc).

    ``frame_stack`` k > 1 stores (k, H, W) observations frame by frame; k = 1 stores whole
    observations. ``action_shape`` () stores integer actions, (A,) float32 vectors. ``n_step`` > 1
    samples n-step returns with discount ``gamma``.
    """

    def __init__(self, capacity: int, num_envs: int, obs_shape: tuple[int, ...], obs_dtype: torch.dtype,
                 device: torch.device, *, action_shape: tuple[int, ...] = (), frame_stack: int = 1, n_step: int = 1,
                 gamma: float = 0.99, generator: torch.Generator | None = None):
        self.num_envs, self.k, self.n_step, self.gamma = num_envs, frame_stack, n_step, gamma
        self.device = torch.device(device)
        self.obs_shape = tuple(obs_shape)
        self.frame_shape = self.obs_shape[1:] if frame_stack > 1 else self.obs_shape
        self.slots = math.ceil(capacity / num_envs)
        if self.slots <= frame_stack + n_step + 1:
            raise LabError(f"--buffer-size {capacity} leaves {self.slots} slots per environment; it needs more "
                           f"than {frame_stack + n_step + 1} (frame stack + n-step + 1).")
        self.generator = generator or torch.Generator(self.device)
        self.action_shape = tuple(action_shape)
        self.action_dtype = np.float32 if self.action_shape else np.int32
        require_memory(self.nbytes_for(capacity, num_envs, self.frame_shape, obs_dtype, self.action_shape),
                       "the replay buffer", "lower --buffer-size or free memory", self.device)
        shape = (num_envs, self.slots)
        self.frames = torch.zeros(*shape, *self.frame_shape, dtype=obs_dtype, device=self.device)
        self.actions = torch.zeros(*shape, *self.action_shape, dtype=torch.float32 if self.action_shape else torch.int32,
                                   device=self.device)
        self.rewards = torch.zeros(shape, dtype=torch.float32, device=self.device)
        self.terminated = torch.zeros(shape, dtype=torch.bool, device=self.device)
        self.done = torch.zeros(shape, dtype=torch.bool, device=self.device)
        self.valid = torch.zeros(shape, dtype=torch.bool, device=self.device)   # slot holds a full transition
        # Writes go through NumPy views of host tensors (cheap small writes) or torch on a GPU.
        self.on_host = self.device.type == "cpu"
        self.store = {name: (t.numpy() if self.on_host else t) for name, t in self.tensors().items()}
        self.flat = {name: t.view(num_envs * self.slots, *t.shape[2:]) for name, t in self.tensors().items()}
        self.flat_frames = self.flat["frames"]
        # Bookkeeping lives on the host: the slot of each env's current observation, frames ever written.
        self.head = np.full(num_envs, -1, dtype=np.int64)
        self.count = np.zeros(num_envs, dtype=np.int64)
        self.starting = np.ones(num_envs, dtype=bool)   # the next obs of these envs begins an episode
        self.head_on_device = (torch.from_numpy(self.head) if self.on_host
                               else torch.zeros(num_envs, dtype=torch.int64, device=self.device))
        self.all_envs = np.arange(num_envs)
        self.stack_offsets = torch.arange(-frame_stack + 1, 1, device=self.device)
        self.step_offsets = torch.arange(n_step, device=self.device)
        self.gamma_powers = gamma ** torch.arange(n_step + 1, dtype=torch.float32, device=self.device)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"frames": self.frames, "actions": self.actions, "rewards": self.rewards,
                "terminated": self.terminated, "done": self.done, "valid": self.valid}

    @staticmethod
    def nbytes_for(capacity: int, num_envs: int, frame_shape: tuple[int, ...], dtype: torch.dtype,
                   action_shape: tuple[int, ...] = ()) -> int:
        """Bytes a buffer of this size allocates: one frame, the action (4 bytes per dimension) and 7 bytes of
        scalars per slot."""
        slots = math.ceil(capacity / num_envs) * num_envs
        frame = math.prod(frame_shape) * torch.empty((), dtype=dtype).element_size()
        return slots * (frame + 4 * math.prod(action_shape) + 4 + 1 + 1 + 1)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in
                   (self.frames, self.actions, self.rewards, self.terminated, self.done, self.valid))

    def __len__(self) -> int:
        """Complete transitions held now (a host sync: for tests and logs, not the hot loop)."""
        return int(self.valid.sum())

    # ------------------------------------------------------------------ writing
    def _write(self, name: str, envs: np.ndarray, slots: np.ndarray, values) -> None:
        if self.on_host:
            self.store[name][envs, slots] = values.numpy() if isinstance(values, torch.Tensor) else values
        else:
            index = torch.from_numpy(envs).to(self.device), torch.from_numpy(slots).to(self.device)
            self.store[name][index] = torch.as_tensor(values).to(self.device, non_blocking=True)

    def _push(self, envs: np.ndarray, frames) -> None:
        """Write one frame per env in ``envs`` at its next slot; stacks reading the overwritten
        (oldest) slot are no longer complete."""
        slot = (self.head[envs] + 1) % self.slots
        self._write("frames", envs, slot, frames)
        self._write("valid", np.concatenate([envs, envs]),
                    np.concatenate([slot, (slot + self.k - 1) % self.slots]), False)
        self.head[envs] = slot
        self.count[envs] += 1

    def add(self, obs, actions, rewards, terminated, next_obs, reset) -> None:
        """Store one vector step: ``obs`` (N, *obs_shape), the actions taken, rewards, ``terminated``,
        ``next_obs`` (the final observation where an episode ended) and ``reset`` (True where the env
        was reset, so that ``obs`` of the next call starts a new episode). NumPy arrays."""
        if self.starting.any():                          # a new episode: store its whole first observation
            ids = np.flatnonzero(self.starting)
            first = np.asarray(obs)[ids]
            for i in range(self.k):
                self._push(ids, first if self.k == 1 else first[:, i])
        envs, slot = self.all_envs, self.head.copy()
        terminated, reset = np.asarray(terminated, dtype=bool), np.asarray(reset, dtype=bool)
        self._write("actions", envs, slot, np.asarray(actions, dtype=self.action_dtype))
        self._write("rewards", envs, slot, np.asarray(rewards, dtype=np.float32))
        self._write("terminated", envs, slot, terminated)
        self._write("done", envs, slot, terminated | reset)
        self._push(envs, np.asarray(next_obs)[:, -1] if self.k > 1 else np.asarray(next_obs))
        self._write("valid", envs, slot, True)
        self.starting = reset.copy()
        if not self.on_host:
            self.head_on_device.copy_(torch.from_numpy(self.head), non_blocking=True)

    # ------------------------------------------------------------------ sampling
    def _stack(self, rows: torch.Tensor) -> torch.Tensor:
        """Observations of flat slot indices (env * slots + slot), rebuilt from k frames when stacked."""
        if self.k == 1:
            return self.flat_frames.index_select(0, rows)
        slot = rows % self.slots
        window = rows[:, None] - slot[:, None] + (slot[:, None] + self.stack_offsets) % self.slots
        return self.flat_frames.index_select(0, window.reshape(-1)).view(len(rows), self.k, *self.frame_shape)

    def sample(self, batch_size: int) -> Batch:
        """A uniform random minibatch of stored transitions, on the buffer's device (no host sync)."""
        return self._gather(*self._uniform_rows(batch_size))

    def _uniform_rows(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat slots of ``batch_size`` uniform draws of complete transitions, and their weights (1; 0 where
        the rejection sampling ran short)."""
        draws = 2 * batch_size + 16
        filled = min(int(self.count.max()), self.slots)           # host value: no sync
        envs = torch.randint(self.num_envs, (draws,), device=self.device, generator=self.generator)
        slots = torch.randint(filled, (draws,), device=self.device, generator=self.generator)
        rows = envs * self.slots + slots
        age = (self.head_on_device.index_select(0, envs) - slots) % self.slots   # frames written since
        ok = self.flat["valid"].index_select(0, rows) & (age >= self.n_step)   # n-step needs n later steps
        keep = torch.argsort((~ok).to(torch.uint8), stable=True)[:batch_size]   # first valid draws
        return rows.index_select(0, keep), ok.index_select(0, keep).float()

    def _gather(self, rows: torch.Tensor, weights: torch.Tensor) -> Batch:
        """The transitions at flat slots ``rows``, with their n-step returns and bootstrap observations."""
        if self.n_step == 1:
            returns = self.flat["rewards"].index_select(0, rows)
            discounts = self.gamma * (~self.flat["terminated"].index_select(0, rows)).float()
            steps = 1
        else:
            returns, discounts, steps = self._n_step(rows)
        next_rows = rows - rows % self.slots + (rows % self.slots + steps) % self.slots
        actions = self.flat["actions"].index_select(0, rows)
        return Batch(self._stack(rows), actions if self.action_shape else actions.long(), returns, discounts,
                     self._stack(next_rows), weights, rows)

    def _n_step(self, rows: torch.Tensor):
        """Discounted sum of up to n rewards, stopping at the end of the episode; the discount
        gamma^steps (0 after a termination) and the number of steps to the bootstrap observation."""
        slot = rows % self.slots
        window = (rows - slot)[:, None] + (slot[:, None] + self.step_offsets) % self.slots
        rewards = self.flat["rewards"][window]
        done = self.flat["done"][window].float()
        ones = torch.ones_like(done[:, :1])
        alive = torch.cumprod(torch.cat([ones, 1.0 - done[:, :-1]], 1), 1)   # no episode end before step i
        returns = (rewards * alive * self.gamma_powers[:-1]).sum(1)
        steps = alive.sum(1).long()
        last = window.gather(1, (steps - 1)[:, None]).squeeze(1)
        discounts = self.gamma_powers[steps] * (~self.flat["terminated"][last]).float()
        return returns, discounts, steps

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """The stored transitions (only the filled part of the ring) and the write positions."""
        filled = min(int(self.count.max()), self.slots)
        state = {name: (t if filled == self.slots else t[:, :filled].clone()) for name, t in self.tensors().items()}
        return {**state, "head": torch.from_numpy(self.head.copy()), "count": torch.from_numpy(self.count.copy()),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a saved buffer. The environments restart on resume, so the interrupted episodes
        end here: their last transition is marked done (a truncation that still bootstraps)."""
        filled = state["frames"].shape[1]
        if state["frames"].shape[0] != self.num_envs or filled > self.slots:
            raise LabError("the saved replay buffer does not fit this run's --buffer-size/--num-envs.")
        for name, tensor in self.tensors().items():
            tensor[:, :filled] = state[name].to(self.device)
        self.head[:] = state["head"].numpy()
        self.count[:] = state["count"].numpy()
        self.head_on_device.copy_(torch.from_numpy(self.head))
        self.generator.set_state(state["generator"])
        envs = torch.arange(self.num_envs, device=self.device)
        last = torch.from_numpy((self.head - 1) % self.slots).to(self.device)
        self.done[envs, last] |= self.valid[envs, last]
        self.starting[:] = True


def resume_replay(replay: ReplayBuffer, state: dict, env_steps: int, learning_starts: int) -> int:
    """Restore an agent's saved buffer (``state["replay"]``) and return the step its learning resumes from: the
    saved one, or without a saved buffer ``learning_starts`` steps after the resume (the empty buffer refills)."""
    if state["replay"] is not None:
        replay.load_state_dict(state["replay"])
        return state["learning_from"]
    return max(state["learning_from"], env_steps + learning_starts)


def buffer_layout(observation_space: gym.Space, action_space: gym.Space) -> dict:
    """The buffer's arguments a pair of spaces decides: stacked uint8 frames (C, 84, 84) are stored frame by
    frame, other observations whole as float32; Discrete actions as integers, Box actions as float32 vectors."""
    shape = tuple(observation_space.shape)
    stacked = observation_space.dtype == np.uint8 and len(shape) == 3
    return {"obs_shape": shape, "obs_dtype": torch.uint8 if stacked else torch.float32,
            "frame_stack": shape[0] if stacked else 1,
            "action_shape": () if isinstance(action_space, gym.spaces.Discrete) else tuple(action_space.shape)}


def make_replay_buffer(observation_space: gym.Space, action_space: gym.Space, capacity: int, num_envs: int,
                       device: torch.device, *, n_step: int = 1, gamma: float = 0.99,
                       generator: torch.Generator | None = None, cls: type[ReplayBuffer] = ReplayBuffer,
                       **options) -> ReplayBuffer:
    """A buffer (``cls``: this one, or ``rl.prioritized.PrioritizedReplayBuffer`` with its ``options``) sized
    from the spaces (``buffer_layout``)."""
    return cls(capacity, num_envs, device=device, n_step=n_step, gamma=gamma, generator=generator,
               **buffer_layout(observation_space, action_space), **options)


def buffer_device(choice: str, train_device: torch.device, nbytes: int) -> torch.device:
    """Where a replay buffer of ``nbytes`` lives (``--buffer-device``): "cpu", "train" (the training device), or
    "auto": the training GPU when it has room for the buffer plus 2 GiB, else host memory."""
    if choice == "cpu" or train_device.type != "cuda":
        return torch.device("cpu")
    if choice == "train":
        return train_device
    return train_device if nbytes + 2 * GiB < available_memory(train_device) else torch.device("cpu")
