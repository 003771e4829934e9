"""Fused Bellman optimality sweeps, compiled with numba: one pass over T and V per sweep.

NumPy would need a pass per operation (T·V, + R, max over actions, the residual); here each state's
successor values are read once and its new value is written once, so a sweep runs near memory bandwidth.
Writing into the array being read (``out is V``) gives the Gauss–Seidel variant for free.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def csr_backup(indptr, indices, data, R, gamma, V, out):
    """out[s] = max_a R[s, a] + γ Σ_s' T(s, a, s') V[s'] with T as CSR rows a·S + s.
    Returns the min and max of out - V (the residual's range)."""
    n_states, n_actions = R.shape
    lo, hi = np.inf, -np.inf
    for s in range(n_states):
        best = -np.inf
        for a in range(n_actions):
            row = a * n_states + s
            expected = 0.0
            for j in range(indptr[row], indptr[row + 1]):
                expected += data[j] * V[indices[j]]
            best = max(best, R[s, a] + gamma * expected)   # Bellman optimality backup
        change = best - V[s]
        out[s] = best
        lo, hi = min(lo, change), max(hi, change)
    return lo, hi


@njit(cache=True, nogil=True)
def compass_backup(successors, probs, R, gamma, V, out):
    """The same backup for a grid world's stencil: T(s, a, s') = Σ_k probs[a, k] [successors[s, k] = s'] with
    the 4 compass moves k = N, E, S, W. The 4 neighbour values are read once, kept in registers and shared
    by all actions (twice as fast as a loop over a runtime number of moves)."""
    n_states = successors.shape[0]
    n_actions = probs.shape[0]
    lo, hi = np.inf, -np.inf
    for s in range(n_states):
        north, east = V[successors[s, 0]], V[successors[s, 1]]
        south, west = V[successors[s, 2]], V[successors[s, 3]]
        best = -np.inf
        for a in range(n_actions):
            expected = probs[a, 0] * north + probs[a, 1] * east + probs[a, 2] * south + probs[a, 3] * west
            best = max(best, R[s, a] + gamma * expected)   # Bellman optimality backup
        change = best - V[s]
        out[s] = best
        lo, hi = min(lo, change), max(hi, change)
    return lo, hi
