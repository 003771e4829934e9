"""Tabular MDPs (S, A, R, T, γ) given as arrays, a seeded random-MDP generator, and the Gymnasium Env
that samples from the same model.

A model holds
    T[a][s, s']  transition probabilities: a dense array (A, S, S) or a tuple of A scipy.sparse CSR matrices
    R[s, a]      expected reward of taking action a in state s
    gamma        the discount in [0, 1]
Worlds whose actions are a fixed mixture of deterministic moves (the grid world, the corridor) also keep
that compact form in ``moves``: ``successors[s, k]`` is where move k leads from s and ``probs[a, k]`` is the
chance that action a makes move k. T is built from it only when asked for.

A state is *absorbing* when every action keeps it there with reward 0: episodes end there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from collections.abc import Sequence

import gymnasium
import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from lab.errors import LabError
from lab.memory import require_memory

Transitions = np.ndarray | tuple
PROBABILITY_TOLERANCE = 1e-8


@dataclass(frozen=True)
class Moves:
    """Transitions as a mixture of deterministic moves: T(s, a, s') = Σ_k probs[a, k] [successors[s, k] = s']."""
    successors: np.ndarray
    """(S, K) int32: the state move k leads to from state s."""
    probs: np.ndarray
    """(A, K) float64: the probability that action a makes move k (each row sums to 1)."""

    def transitions(self) -> tuple:
        """The same model as A sparse matrices T[a] of shape (S, S)."""
        n_states, n_moves = self.successors.shape
        rows = np.repeat(np.arange(n_states), n_moves)
        matrices = []
        for p in self.probs:
            data = np.broadcast_to(p, (n_states, n_moves)).ravel()
            keep = data > 0
            matrices.append(sp.csr_matrix((data[keep], (rows[keep], self.successors.ravel()[keep])),
                                          shape=(n_states, n_states)))  # duplicates (blocked moves) are summed
        return tuple(matrices)


@dataclass
class TabularMDP:
    """A finite MDP as arrays; checked on construction (shapes, probabilities, γ)."""
    R: np.ndarray
    """(S, A) expected reward of each state-action pair."""
    gamma: float
    """Discount in [0, 1]."""
    T_given: Transitions | None = None
    """(A, S, S) dense array or a sequence of A sparse (S, S) matrices; None when ``moves`` is given."""
    moves: Moves | None = None
    """The compact move form, for worlds made of deterministic moves."""
    start: int = 0
    """The state episodes of the Gymnasium env start in."""
    action_names: tuple = ()
    """Short names of the actions, e.g. ("N", "E", "S", "W")."""
    name: str = "mdp"
    layout: Any = None
    """The grid a world lives on (envs.gridworld.Layout), for printing and plotting; None otherwise."""
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.R = np.ascontiguousarray(self.R, dtype=np.float64)
        if self.R.ndim != 2 or self.R.shape[0] < 1 or self.R.shape[1] < 1:
            raise LabError(f"rewards R must have shape (states, actions), got {self.R.shape}.")
        if not np.all(np.isfinite(self.R)):
            raise LabError("rewards R must be finite numbers.")
        check_gamma(self.gamma)
        if (self.T_given is None) == (self.moves is None):
            raise LabError("give the transitions either as T or as moves, exactly one of them.")
        if self.T_given is not None:
            self.T_given = _as_transitions(self.T_given)
            _check_rows(self.T_given, self.R.shape)
        else:
            _check_moves(self.moves, self.R.shape)
        if not 0 <= self.start < self.n_states:
            raise LabError(f"start state {self.start} is not one of the {self.n_states} states.")
        if not self.action_names:
            self.action_names = tuple(str(a) for a in range(self.n_actions))

    # ------------------------------------------------------------ the model
    @property
    def n_states(self) -> int:
        return self.R.shape[0]

    @property
    def n_actions(self) -> int:
        return self.R.shape[1]

    @property
    def T(self) -> Transitions:
        """T[a][s, s']: dense (A, S, S) or a tuple of A CSR matrices."""
        if self.T_given is None:
            if "T" not in self._cache:
                self._cache["T"] = self.moves.transitions()
            return self._cache["T"]
        return self.T_given

    @property
    def is_dense(self) -> bool:
        return isinstance(self.T, np.ndarray)

    def sparse_T(self) -> tuple:
        """T as A CSR matrices, whatever form it was given in."""
        return tuple(sp.csr_matrix(t) for t in self.T) if self.is_dense else self.T

    def dense_T(self) -> np.ndarray:
        """T as a dense (A, S, S) array (only sensible for small S)."""
        return self.T if self.is_dense else np.stack([t.toarray() for t in self.T])

    @cached_property
    def absorbing(self) -> np.ndarray:
        """(S,) bool: states every action keeps in place with reward 0."""
        stays = np.ones(self.n_states, dtype=bool)
        for t in self.sparse_T():
            stays &= np.isclose(t.diagonal(), 1.0, rtol=0, atol=PROBABILITY_TOLERANCE)
        return stays & np.all(self.R == 0, axis=1)

    def successor_graph(self) -> sp.csr_matrix:
        """(S, S) 0/1 matrix: s -> s' when some action moves s to s' with positive probability."""
        graph = sum((t != 0).astype(np.int8) for t in self.sparse_T())
        return sp.csr_matrix(graph, dtype=np.int8)

    def require_finite_values(self) -> None:
        """For γ = 1, refuse (one sentence) models where a policy can avoid the absorbing states forever
        without paying for it, since values would be infinite or undefined and the solvers would not stop.

        γ = 1 is accepted when every policy reaches an absorbing state, or (the stochastic-shortest-path case)
        when every state can reach one and every step outside them has a negative reward, so that a policy
        that never ends has return -inf and is never optimal.
        """
        if self.gamma < 1:
            return
        absorbing = self.absorbing
        if not absorbing.any():
            raise LabError("gamma=1 needs an absorbing (terminal) state, and this model has none; "
                           "use a gamma below 1.")
        graph = self.successor_graph()
        reach = np.isfinite(steps_to(graph, absorbing))
        if not reach.all():
            stuck = self.describe_state(int(np.flatnonzero(~reach)[0]))
            raise LabError(f"gamma=1 needs every state to reach a terminal state, but {stuck} cannot; use a gamma below 1.")
        exits_surely = np.ones(self.n_states, dtype=bool)   # e.g. terminal cells: every action ends the episode
        for t in self.sparse_T():
            exits_surely &= np.isclose(t @ absorbing.astype(np.float64), 1.0, rtol=0, atol=PROBABILITY_TOLERANCE)
        if np.all(self.R[~absorbing & ~exits_surely] < 0):
            return
        trap = _trap_states(self.sparse_T(), absorbing)
        if trap.any():
            s = int(np.flatnonzero(trap)[0])
            raise LabError(f"gamma=1 needs every policy to reach a terminal state, but from {self.describe_state(s)} a "
                           "policy can avoid them forever without a negative reward per step; "
                           "use a gamma below 1 or a negative living reward.")

    def describe_state(self, s: int) -> str:
        return self.layout.describe_state(s) if self.layout is not None else f"state {s}"


def check_gamma(gamma: float) -> None:
    if not (isinstance(gamma, (int, float)) and np.isfinite(gamma) and 0 <= gamma <= 1):
        raise LabError(f"--gamma must be in [0, 1], got {gamma}.")


def _as_transitions(T) -> Transitions:
    if sp.issparse(T):
        raise LabError("give sparse transitions as a sequence of A sparse (S, S) matrices, one per action.")
    if isinstance(T, np.ndarray):
        return np.ascontiguousarray(T, dtype=np.float64)
    if isinstance(T, Sequence) and T and all(sp.issparse(t) for t in T):
        return tuple(sp.csr_matrix(t, dtype=np.float64) for t in T)
    return np.ascontiguousarray(np.asarray(T, dtype=np.float64))


def _check_rows(T: Transitions, shape: tuple) -> None:
    n_states, n_actions = shape
    if isinstance(T, np.ndarray):
        if T.shape != (n_actions, n_states, n_states):
            raise LabError(f"T must have shape (actions, states, states) = {(n_actions, n_states, n_states)}, got {T.shape}.")
        blocks, sums = [T], T.sum(axis=2)
    else:
        if len(T) != n_actions or any(t.shape != (n_states, n_states) for t in T):
            raise LabError(f"T must be {n_actions} sparse matrices of shape {(n_states, n_states)}.")
        blocks, sums = [t.data for t in T], np.stack([np.asarray(t.sum(axis=1)).ravel() for t in T])
    if not all(np.all(np.isfinite(b)) and np.all(b >= 0) for b in blocks):
        raise LabError("transition probabilities must be finite and non-negative.")
    _check_sums(sums)


def _check_sums(sums: np.ndarray) -> None:
    """sums[a, s] = Σ_s' T(s, a, s') must be 1 within 1e-8."""
    error = np.abs(sums - 1.0)
    if error.max() > PROBABILITY_TOLERANCE:
        a, s = np.unravel_index(int(error.argmax()), error.shape)
        raise LabError(f"transition probabilities of state {s}, action {a} sum to {sums[a, s]:.10g}, not 1.")


def _check_moves(moves: Moves, shape: tuple) -> None:
    n_states, n_actions = shape
    if moves.successors.ndim != 2 or moves.successors.shape[0] != n_states:
        raise LabError(f"move successors must have shape (states, moves), got {moves.successors.shape}.")
    if moves.probs.shape != (n_actions, moves.successors.shape[1]):
        raise LabError(f"move probabilities must have shape (actions, moves), got {moves.probs.shape}.")
    if moves.successors.min() < 0 or moves.successors.max() >= n_states:
        raise LabError("move successors must be state indices.")
    if np.any(moves.probs < 0) or not np.all(np.isfinite(moves.probs)):
        raise LabError("move probabilities must be finite and non-negative.")
    _check_sums(np.broadcast_to(moves.probs.sum(axis=1)[:, None], (n_actions, 1)))


def steps_to(graph: sp.csr_matrix, targets: np.ndarray) -> np.ndarray:
    """(S,) fewest steps from each state to some target state in the directed graph (inf: unreachable)."""
    n = graph.shape[0]
    # a super-target fed by every target; search backwards from it
    edges = sp.bmat([[graph.T, sp.csr_matrix((n, 1), dtype=np.int8)],
                     [sp.csr_matrix(targets[None, :].astype(np.int8)), sp.csr_matrix((1, 1), dtype=np.int8)]],
                    format="csr")
    return csgraph.shortest_path(edges, unweighted=True, indices=n)[:n] - 1


def _trap_states(T: tuple, absorbing: np.ndarray) -> np.ndarray:
    """(S,) bool: the largest set of non-absorbing states some policy never leaves (empty iff every policy
    reaches an absorbing state with probability 1)."""
    trap = ~absorbing
    while True:
        outside = (~trap).astype(np.float64)
        stays = np.zeros_like(trap)
        for t in T:
            stays |= (t @ outside) == 0      # an action whose successors all lie in the trap
        new = trap & stays
        if np.array_equal(new, trap):
            return trap
        trap = new


# ---------------------------------------------------------------- random MDPs
def random_mdp(n_states: int, n_actions: int, gamma: float = 0.95, successors: int | None = None,
               seed: int = 0) -> TabularMDP:
    """A seeded random MDP: rewards uniform in [0, 1); each (s, a) leads to all states (dense, when
    ``successors`` is None) or to ``successors`` distinct random states (sparse), with random probabilities."""
    if n_states < 1 or n_actions < 1:
        raise LabError(f"a random MDP needs at least one state and one action, got {n_states} and {n_actions}.")
    if successors is None:    # the dense T, a random draw of its size, and a solver's working copies
        require_memory(n_states * n_states * n_actions * 3 * 8, f"a dense random MDP of {n_states:,} states",
                       "lower --states or give --successors for a sparse one")
    else:                     # CSR data and indices, the probabilities drawn, a solver's working copies
        require_memory(n_states * n_actions * successors * 4 * 16, f"a random MDP of {n_states:,} states",
                       "lower --states or --successors")
    rng = np.random.default_rng(seed)
    R = rng.random((n_states, n_actions))
    if successors is None:
        T = rng.random((n_actions, n_states, n_states))
        T /= T.sum(axis=2, keepdims=True)
        return TabularMDP(R=R, gamma=gamma, T_given=T, name=f"random-{n_states}x{n_actions}")
    if not 1 <= successors <= n_states:
        raise LabError(f"--successors must be in [1, {n_states}], got {successors}.")
    matrices = []
    for _ in range(n_actions):
        # k distinct successors per state: a random offset set, shifted by the state index
        cols = (np.arange(n_states)[:, None] + rng.permutation(n_states)[None, :successors]
                if successors < n_states else np.tile(np.arange(n_states), (n_states, 1)))
        cols = np.sort(cols % n_states, axis=1) if successors < n_states else cols
        probs = rng.random((n_states, successors)) + 1e-3
        probs /= probs.sum(axis=1, keepdims=True)
        indptr = np.arange(0, n_states * successors + 1, successors)
        matrices.append(sp.csr_matrix((probs.ravel(), cols.ravel(), indptr), shape=(n_states, n_states)))
    return TabularMDP(R=R, gamma=gamma, T_given=tuple(matrices), name=f"random-{n_states}x{n_actions}-k{successors}")


# ---------------------------------------------------------------- Gymnasium
class TabularEnv(gymnasium.Env):
    """A Gymnasium Env that samples transitions from a TabularMDP's T and pays R(s, a).

    Observations and actions are state and action indices. An episode terminates on reaching an absorbing
    state (the grid world's "exit" after a terminal cell) and is truncated after ``max_steps``.
    """
    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, mdp: TabularMDP, max_steps: int = 200, render_mode: str | None = None):
        if render_mode not in (None, "ansi"):
            raise LabError(f"render_mode must be None or 'ansi', got {render_mode!r}.")
        self.mdp, self.max_steps, self.render_mode = mdp, max_steps, render_mode
        self.observation_space = gymnasium.spaces.Discrete(mdp.n_states)
        self.action_space = gymnasium.spaces.Discrete(mdp.n_actions)
        self._rows = [sp.csr_matrix(t) for t in mdp.sparse_T()]
        self._state, self._steps = mdp.start, 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start in the model's start state, or in ``options["state"]`` when given."""
        super().reset(seed=seed)
        state = int((options or {}).get("state", self.mdp.start))
        if not 0 <= state < self.mdp.n_states:
            raise LabError(f"reset state {state} is not one of the {self.mdp.n_states} states.")
        self._state, self._steps = state, 0
        return self._state, {}

    def step(self, action):
        action = int(action)
        if not self.action_space.contains(action):
            raise LabError(f"action {action} is not one of the {self.mdp.n_actions} actions.")
        row = self._rows[action]
        lo, hi = row.indptr[self._state], row.indptr[self._state + 1]
        cumulative = np.cumsum(row.data[lo:hi])
        pick = min(int(np.searchsorted(cumulative, self.np_random.random() * cumulative[-1], side="right")), hi - lo - 1)
        next_state = int(row.indices[lo + pick])
        reward = float(self.mdp.R[self._state, action])
        self._state, self._steps = next_state, self._steps + 1
        terminated = bool(self.mdp.absorbing[next_state])
        truncated = self._steps >= self.max_steps and not terminated
        return next_state, reward, terminated, truncated, {}

    def render(self):
        if self.render_mode == "ansi":
            if self.mdp.layout is not None:
                return self.mdp.layout.render_agent(self._state)
            return f"state {self._state}\n"
        return None


class RandomMDPEnv(TabularEnv):
    """``lab/RandomMDP-v0``: a seeded random MDP (see ``random_mdp``)."""

    def __init__(self, n_states: int = 10, n_actions: int = 3, successors: int | None = 3, gamma: float = 0.95,
                 mdp_seed: int = 0, max_steps: int = 200, render_mode: str | None = None):
        super().__init__(random_mdp(n_states, n_actions, gamma, successors, mdp_seed), max_steps, render_mode)
