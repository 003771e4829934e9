"""Prioritized experience replay (Schaul et al. 2016, the proportional variant) on top of ``rl.replay``.

Transition i is drawn with probability P(i) = p_i^alpha / sum_k p_k^alpha, where p_i = |delta_i| + eps is its
last TD error (a new transition gets the largest priority seen so far, so it is replayed at least once), and
weighs the loss by the importance weight w_i = (N P(i))^-beta / max_j w_j, beta annealed from its initial value
to 1 over the run by the algorithm. A sum tree finds the transitions of a batch (one uniform draw in each of
B equal slices of the total, as the paper's stratified sampling) and a min tree gives max_j w_j, both in
O(log N) vectorised NumPy per batch, on the host whatever the buffer's device.

The trees cover the buffer's flat slots; a slot holds priority 0 until its transition is complete (n later
steps for n-step returns) and again once the ring overwrites it, so only complete transitions are drawn.
"""
from __future__ import annotations

from collections import deque

import numpy as np
import torch

from rl.replay import Batch, ReplayBuffer


class SegmentTree:
    """A complete binary tree in one array over ``size`` leaves: node i has children 2i and 2i + 1, the
    leaves are nodes capacity..2 capacity - 1, and every inner node holds ``op`` (np.add or np.minimum) of
    its children. Updates and searches handle a whole batch of leaves per tree level."""

    def __init__(self, size: int, op=np.add, empty: float = 0.0):
        self.capacity = 1 << max(0, (size - 1).bit_length())
        self.op, self.empty = op, empty
        self.nodes = np.full(2 * self.capacity, empty, dtype=np.float64)

    @property
    def leaves(self) -> np.ndarray:
        return self.nodes[self.capacity:]

    @property
    def root(self) -> float:
        return float(self.nodes[1])

    def update(self, index: np.ndarray, values: np.ndarray) -> None:
        """Set leaves ``index`` to ``values`` and recompute their ancestors, one level at a time."""
        node = np.asarray(index, dtype=np.int64) + self.capacity
        self.nodes[node] = values
        while node[0] > 1:                    # every leaf is at the same depth; a repeated parent gets one value
            node = node // 2
            self.nodes[node] = self.op(self.nodes[2 * node], self.nodes[2 * node + 1])

    def rebuild(self) -> None:
        """Recompute every inner node from the leaves (after loading them)."""
        width = self.capacity
        while width > 1:
            children = self.nodes[width:2 * width]
            self.nodes[width // 2:width] = self.op(children[0::2], children[1::2])
            width //= 2

    def find(self, prefix: np.ndarray) -> np.ndarray:
        """(Sum tree) the leaf i of each value u with sum_{k<i} p_k <= u < sum_{k<=i} p_k, never an empty leaf."""
        node = np.ones(len(prefix), dtype=np.int64)
        u = np.minimum(prefix, np.nextafter(self.root, 0.0))
        while node[0] < self.capacity:
            left, right = self.nodes[2 * node], self.nodes[2 * node + 1]
            go_right = (u >= left) & (right > 0)
            u = np.where(go_right, u - left, u)
            node = 2 * node + go_right
        return node - self.capacity


def importance_weights(probabilities: np.ndarray, min_probability: float, beta: float) -> np.ndarray:
    # w_i = (N P(i))^-beta / max_j (N P(j))^-beta = (P(i) / min_j P(j))^-beta
    return (probabilities / min_probability) ** -beta


class PrioritizedReplayBuffer(ReplayBuffer):
    """``ReplayBuffer`` sampled by priority; ``sample(batch_size, beta)`` returns importance weights in
    ``Batch.weights``, and ``update_priorities(batch.indices, td_errors)`` records the new |delta|."""

    def __init__(self, *args, alpha: float = 0.6, eps: float = 1e-6, seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha, self.eps = alpha, eps
        self.sums = SegmentTree(self.num_envs * self.slots, np.add, 0.0)
        self.mins = SegmentTree(self.num_envs * self.slots, np.minimum, np.inf)
        self.max_priority = 1.0
        self.pending: deque[np.ndarray] = deque()   # flat slots of the last n_step - 1 adds, not complete yet
        self.rng = np.random.default_rng(seed)

    def _set(self, rows: np.ndarray, priorities: np.ndarray) -> None:
        """Leaf values p^alpha (0: never drawn) in both trees."""
        scaled = priorities ** self.alpha
        self.sums.update(rows, scaled)
        self.mins.update(rows, np.where(scaled > 0, scaled, np.inf))

    def _push(self, envs: np.ndarray, frames) -> None:
        super()._push(envs, frames)                          # the slot written and the stack it breaks
        slot = self.head[envs]
        rows = np.unique(np.concatenate([envs * self.slots + slot, envs * self.slots + (slot + self.k - 1) % self.slots]))
        self._set(rows, np.zeros(len(rows)))

    def add(self, obs, actions, rewards, terminated, next_obs, reset) -> None:
        super().add(obs, actions, rewards, terminated, next_obs, reset)
        self.pending.append(self.all_envs * self.slots + (self.head - 1) % self.slots)
        if len(self.pending) >= self.n_step:                 # n steps later its n-step return is complete
            rows = self.pending.popleft()
            rows = rows[self.flat["valid"][torch.from_numpy(rows).to(self.device)].cpu().numpy()]
            self._set(rows, np.full(len(rows), self.max_priority))

    def sample(self, batch_size: int, beta: float = 1.0) -> Batch:
        """``batch_size`` transitions drawn in proportion to p^alpha, one in each equal slice of the total."""
        total = self.sums.root
        prefix = (np.arange(batch_size) + self.rng.random(batch_size)) * (total / batch_size)
        rows = self.sums.find(prefix)
        weights = importance_weights(self.sums.leaves[rows] / total, self.mins.root / total, beta)
        return self._gather(torch.from_numpy(rows).to(self.device),
                            torch.from_numpy(weights.astype(np.float32)).to(self.device))

    def update_priorities(self, indices: torch.Tensor, td_errors: torch.Tensor) -> None:
        """p_i = |delta_i| + eps for the sampled transitions (a transition drawn twice keeps its last error)."""
        rows = indices.cpu().numpy()
        priorities = td_errors.detach().abs().double().cpu().numpy() + self.eps
        last = len(rows) - 1 - np.unique(rows[::-1], return_index=True)[1]
        self._set(rows[last], priorities[last])
        self.max_priority = max(self.max_priority, float(priorities.max()))

    def state_dict(self) -> dict:
        pending = np.stack(list(self.pending)) if self.pending else np.zeros((0, self.num_envs), np.int64)
        return {**super().state_dict(), "priorities": torch.from_numpy(self.sums.leaves.copy()),
                "max_priority": self.max_priority, "pending": torch.from_numpy(pending),
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.sums.leaves[:] = state["priorities"].numpy()
        self.mins.leaves[:] = np.where(self.sums.leaves > 0, self.sums.leaves, np.inf)
        self.sums.rebuild()
        self.mins.rebuild()
        self.max_priority = state["max_priority"]
        self.pending = deque(state["pending"].numpy())
        self.rng.bit_generator.state = state["rng"]
