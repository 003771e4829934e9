"""Exact dynamic programming on a known MDP (S, A, R, T, γ): value iteration (Jacobi and Gauss–Seidel),
policy iteration (exact or iterative evaluation), Q iteration, and evaluation of a given policy.

Each solver is written once against a backend (rl/mdp/backends.py), so the same lines run on NumPy arrays,
SciPy sparse matrices, the grid world's move stencil, or torch tensors on a GPU.

Stopping. With γ < 1, value iteration stops when the residual r = V_{k+1} - V_k satisfies
    sup-norm:  ‖r‖∞ < ε (1 - γ) / (2γ)          (then ‖V_{k+1} - V*‖∞ < ε/2 and the greedy policy is ε-optimal)
    span:      max r - min r < ε (1 - γ) / γ     (Puterman §6.6: the greedy policy is ε-optimal; pymdptoolbox's test)
With γ = 1 (allowed only where values are finite, see TabularMDP.require_finite_values) no such bound
exists and the solvers stop when ‖r‖∞ < ε.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from envs.tabular import TabularMDP, steps_to
from lab.errors import LabError
from lab.progress import Progress
from rl.mdp.backends import make_backend, stacked_csr

Stop = Literal["span", "sup"]
DIRECT_SOLVE_LIMIT = 500   # states up to which policy evaluation uses a dense LU, above it GMRES


@dataclass
class Solution:
    """What a solver returns (NumPy arrays, whatever backend ran)."""
    algo: str
    V: np.ndarray
    """(S,) state values."""
    Q: np.ndarray
    """(S, A) action values, Q(s,a) = R(s,a) + γ Σ_s' T(s,a,s') V(s')."""
    policy: np.ndarray
    """(S,) greedy action per state."""
    iterations: int
    """Sweeps (value / Q iteration) or policy improvements (policy iteration)."""
    residual: float
    """The last stopping statistic (sup-norm or span of V_{k+1} - V_k; 0 for a stable policy)."""
    seconds: float
    converged: bool
    backend: str
    evaluation_sweeps: int = 0
    """Policy iteration with iterative evaluation: sweeps spent evaluating, in total."""


def stopping_threshold(eps: float, gamma: float, stop: Stop) -> float:
    """The residual below which the greedy policy is ε-optimal (see the module doc)."""
    if stop not in ("span", "sup"):
        raise LabError(f"--stop must be span or sup, got {stop!r}.")
    if not eps > 0:
        raise LabError(f"--eps must be > 0, got {eps}.")
    if gamma == 0:
        return np.inf   # one sweep is exact
    if gamma == 1:
        return eps
    return eps * (1 - gamma) / gamma / (1 if stop == "span" else 2)


def _statistic(lo: float, hi: float, stop: Stop, gamma: float) -> float:
    return hi - lo if stop == "span" and gamma < 1 else max(abs(lo), abs(hi))


def _span_estimate(V, lo: float, hi: float, stop: Stop, gamma: float):
    """After a span stop, V_k + γ/(1-γ)·(min r + max r)/2: the middle of MacQueen's bounds on V*
    (V* lies between V_k + γ/(1-γ)·min r and V_k + γ/(1-γ)·max r), so within ε/2 of V*."""
    if stop != "span" or not 0 < gamma < 1 or not np.isfinite(lo + hi):
        return V
    return V + gamma / (1 - gamma) * (lo + hi) / 2


def _prepare(mdp: TabularMDP, backend: str, device: str | None):
    mdp.require_finite_values()
    return make_backend(mdp, backend, device)


def _finish(algo, be, V, iterations, residual, start, converged, **kwargs) -> Solution:
    Q = be.R + be.gamma * be.expect(V)
    _, policy = be.greedy(Q)
    return Solution(algo, be.to_numpy(V), be.to_numpy(Q), be.to_numpy(policy).astype(np.int64), iterations,
                    float(residual), time.perf_counter() - start, converged, be.name, **kwargs)


# ---------------------------------------------------------------- value iteration
def value_iteration(mdp: TabularMDP, eps: float = 1e-6, stop: Stop = "span", gauss_seidel: bool = False,
                    backend: str = "auto", device: str | None = None, max_sweeps: int = 1_000_000) -> Solution:
    """Repeat the Bellman optimality backup until the residual meets the ε-optimality bound.
    Gauss–Seidel updates V in place (each state sees the values already updated in this sweep); it always
    stops on the sup-norm test, since the span bounds hold for the plain (Jacobi) backup only."""
    stop = "sup" if gauss_seidel else stop
    threshold = stopping_threshold(eps, mdp.gamma, stop)
    be = _prepare(mdp, backend, device)
    if gauss_seidel and backend == "auto" and be.name not in ("sparse", "moves"):
        be = make_backend(mdp, "sparse")
    if gauss_seidel and be.name not in ("sparse", "moves"):
        raise LabError(f"Gauss-Seidel value iteration runs on the sparse and moves backends, not {be.name}.")
    start = time.perf_counter()
    V = be.zeros()
    out = V if gauss_seidel else be.zeros()
    residual, sweeps, lo, hi = np.inf, 0, np.nan, np.nan
    with _progress("value iteration", "sweep") as progress:
        while sweeps < max_sweeps and not residual < threshold:
            # Bellman optimality backup: V(s) <- max_a R(s,a) + γ Σ_s' T(s,a,s') V(s')  (fused per backend)
            lo, hi = be.optimality_backup(V, out)
            if not gauss_seidel:
                V, out = out, V
            residual, sweeps = _statistic(lo, hi, stop, mdp.gamma), sweeps + 1
            _report(progress, residual, threshold)
    V = _span_estimate(V, lo, hi, stop, mdp.gamma)
    return _finish("value-iteration" + ("-gs" if gauss_seidel else ""), be, V, sweeps, residual, start,
                   bool(residual < threshold))


# ---------------------------------------------------------------- Q iteration
def q_iteration(mdp: TabularMDP, eps: float = 1e-6, stop: Stop = "span", backend: str = "auto",
                device: str | None = None, max_sweeps: int = 1_000_000) -> Solution:
    """Repeat Q(s,a) <- R(s,a) + γ Σ_s' T(s,a,s') max_a' Q(s',a') with the same stopping test on max_a Q."""
    threshold = stopping_threshold(eps, mdp.gamma, stop)
    be = _prepare(mdp, backend, device)
    start = time.perf_counter()
    Q = be.zeros(mdp.n_states, mdp.n_actions)
    V, _ = be.greedy(Q)
    residual, sweeps, lo, hi = np.inf, 0, np.nan, np.nan
    with _progress("Q iteration", "sweep") as progress:
        while sweeps < max_sweeps and not residual < threshold:
            Q = be.R + be.gamma * be.expect(V)   # Q iteration: Q(s,a) <- R(s,a) + γ Σ_s' T(s,a,s') max_a' Q(s',a')
            V_next, _ = be.greedy(Q)
            lo, hi = be.range(V_next - V)
            V, residual, sweeps = V_next, _statistic(lo, hi, stop, mdp.gamma), sweeps + 1
            _report(progress, residual, threshold)
    V = _span_estimate(V, lo, hi, stop, mdp.gamma)
    return _finish("q-iteration", be, V, sweeps, residual, start, bool(residual < threshold))


# ---------------------------------------------------------------- policy evaluation
def policy_system(mdp: TabularMDP, policy: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """P_π (S, S) with P_π[s, s'] = T(s, π(s), s') and r_π[s] = R(s, π(s))."""
    policy = np.asarray(policy, dtype=np.int64)
    states = np.arange(mdp.n_states)
    if mdp.moves is not None:
        successors, probs = mdp.moves.successors, mdp.moves.probs[policy]
        P = sp.csr_matrix((probs.ravel(), (np.repeat(states, successors.shape[1]), successors.ravel())),
                          shape=(mdp.n_states,) * 2)
        P.eliminate_zeros()   # moves this action never makes are no edges
    else:
        P = stacked_csr(mdp)[policy * mdp.n_states + states]
    return P, mdp.R[states, policy]


def evaluate_exact(mdp: TabularMDP, policy: np.ndarray) -> np.ndarray:
    """V^π by one linear solve of (I - γ P_π) V = r_π over the non-absorbing states (V = 0 on absorbing ones,
    which keeps the system regular when γ = 1). Up to 500 states: a dense LU. Above: a sparse LU (SuperLU)
    for grid worlds, whose planar structure keeps its fill-in small; GMRES to a relative residual of 1e-12
    for other sparse models (a sparse LU fills in badly on random graphs: 54 s at 5,000 states against
    0.1 s), with SuperLU as the fallback when GMRES does not converge."""
    P, r = policy_system(mdp, policy)
    require_proper(mdp, P)
    live = np.flatnonzero(~mdp.absorbing)
    A = sp.identity(len(live), format="csr") - mdp.gamma * P[live][:, live]
    V = np.zeros(mdp.n_states)
    # policy evaluation linear solve: V^π = (I - γ P_π)^{-1} r_π
    if len(live) <= DIRECT_SOLVE_LIMIT:
        V[live] = np.linalg.solve(A.toarray(), r[live])
    elif mdp.moves is not None:
        V[live] = spla.spsolve(A.tocsc(), r[live])
    else:
        solution, info = spla.gmres(A, r[live], rtol=1e-12, atol=0.0, restart=50, maxiter=20)
        V[live] = solution if info == 0 else spla.spsolve(A.tocsc(), r[live])
    return V


def require_proper(mdp: TabularMDP, P: sp.csr_matrix) -> None:
    """With γ = 1 a policy has a finite value only if it reaches an absorbing state from every state."""
    if mdp.gamma == 1 and not np.all(np.isfinite(steps_to(P, mdp.absorbing))):
        raise LabError("this policy never reaches a terminal state from some state, so with gamma=1 its value is "
                       "undefined; use a gamma below 1.")


def evaluate_iterative(be, policy, V, threshold: float, max_sweeps: int) -> tuple:
    """V^π by repeated Bellman expectation backups from V; returns (V, sweeps, residual)."""
    r_pi = be.take(be.R, policy)
    residual, sweeps = np.inf, 0
    with _progress("policy evaluation", "sweep") as progress:
        while sweeps < max_sweeps and not residual < threshold:
            V_next = r_pi + be.gamma * be.take(be.expect(V), policy)   # Bellman expectation backup for π
            lo, hi = be.range(V_next - V)
            V, residual, sweeps = V_next, max(abs(lo), abs(hi)), sweeps + 1
            _report(progress, residual, threshold)
    return V, sweeps, residual


def evaluate_policy(mdp: TabularMDP, policy, method: Literal["exact", "iterative"] = "exact", eps: float = 1e-10,
                    backend: str = "auto", device: str | None = None,
                    max_sweeps: int = 1_000_000) -> tuple[np.ndarray, np.ndarray]:
    """(V^π, Q^π) of a deterministic policy (S,) of action indices."""
    policy = _check_policy(mdp, policy)
    be = _prepare(mdp, backend, device)
    require_proper(mdp, policy_system(mdp, policy)[0])
    if method == "exact":
        V = be.asarray(evaluate_exact(mdp, policy))
    elif method == "iterative":
        V, _, _ = evaluate_iterative(be, policy, be.zeros(), stopping_threshold(eps, mdp.gamma, "sup"), max_sweeps)
    else:
        raise LabError(f"--evaluation must be exact or iterative, got {method!r}.")
    return be.to_numpy(V), be.to_numpy(be.R + be.gamma * be.expect(V))


def _check_policy(mdp: TabularMDP, policy) -> np.ndarray:
    policy = np.asarray(policy)
    if policy.shape != (mdp.n_states,) or not np.issubdtype(policy.dtype, np.integer) \
            or policy.min() < 0 or policy.max() >= mdp.n_actions:
        raise LabError(f"a policy must be {mdp.n_states} action indices in [0, {mdp.n_actions}).")
    return policy.astype(np.int64)


# ---------------------------------------------------------------- policy iteration
def proper_policy(mdp: TabularMDP) -> np.ndarray:
    """A policy that reaches an absorbing state with probability 1 from every state that can reach one:
    in each state, the action with a successor closest (in steps) to an absorbing state."""
    distance = steps_to(mdp.successor_graph(), mdp.absorbing)
    closest = np.stack([np.minimum.reduceat(distance[t.indices], t.indptr[:-1]) for t in mdp.sparse_T()], axis=1)
    return np.argmin(closest, axis=1)


def policy_iteration(mdp: TabularMDP, evaluation: Literal["exact", "iterative"] = "exact",
                     eval_sweeps: int | None = None, eps: float = 1e-6, backend: str = "auto",
                     device: str | None = None, max_iterations: int = 10_000) -> Solution:
    """Evaluate the policy, improve it greedily, until it is stable (no state changes its action).

    evaluation='exact' solves the linear system; 'iterative' sweeps the Bellman expectation backup until
    ‖ΔV‖∞ < ε(1-γ)/(2γ), or for ``eval_sweeps`` sweeps only (modified policy iteration: once its policy is
    stable, the evaluations run to convergence, so that the stop is a true fixed point). Improvement keeps the
    current action on ties, so the loop cannot cycle between equally good policies."""
    if evaluation not in ("exact", "iterative"):
        raise LabError(f"--evaluation must be exact or iterative, got {evaluation!r}.")
    threshold = stopping_threshold(eps, mdp.gamma, "sup")
    be = _prepare(mdp, backend, device)
    start = time.perf_counter()
    # γ = 1: start from a proper policy, so that every evaluation is finite
    policy = proper_policy(mdp) if mdp.gamma == 1 else np.argmax(mdp.R, axis=1)
    V, improvements, evaluation_sweeps, stable, partial = be.zeros(), 0, 0, False, eval_sweeps is not None
    with _progress("policy iteration", "improvement") as progress:
        while not stable and improvements < max_iterations:
            if evaluation == "exact":
                V = be.asarray(evaluate_exact(mdp, policy))
            else:
                V, sweeps, _ = evaluate_iterative(be, policy, V, threshold, eval_sweeps if partial else 1_000_000)
                evaluation_sweeps += sweeps
            Q = be.R + be.gamma * be.expect(V)   # greedy improvement: π'(s) = argmax_a R(s,a) + γ Σ_s' T V^π(s')
            best, greedy = (be.to_numpy(x) for x in be.greedy(Q))
            keep = be.to_numpy(be.take(Q, policy)) >= best - 1e-12 * (1 + np.abs(best))   # ties keep the action
            new_policy = np.where(keep, policy, greedy)
            changed = int((new_policy != policy).sum())
            stable, policy, improvements = changed == 0, new_policy, improvements + 1
            progress.update(1)
            progress.show({"states changed": str(changed)})
            if stable and evaluation == "iterative" and partial:
                stable, partial = False, False   # confirm with a converged evaluation
    solution = _finish("policy-iteration", be, V, improvements, 0.0, start, stable,
                       evaluation_sweeps=evaluation_sweeps)
    solution.policy = policy   # the stable policy itself (greedy up to ties)
    return solution


def _progress(what: str, unit: str) -> Progress:
    """A solver loop's progress (count, rate, residual); transient, so a short solve prints nothing without a terminal."""
    return Progress(None, what, unit=unit, leave=False)


def _report(progress: Progress, residual: float, threshold: float) -> None:
    progress.update(1)
    progress.show({"residual": f"{residual:.3g}", "stops below": f"{threshold:.3g}"})


SOLVERS = {"value-iteration": value_iteration, "policy-iteration": policy_iteration, "q-iteration": q_iteration}
