"""Where the arithmetic of the solvers runs. Every backend gives the same two operations on its own arrays:

    expect(V)[s, a] = Σ_s' T(s, a, s') V(s')           the expectation over next states
    optimality_backup(V, out) -> (min, max) of out - V   one Bellman optimality sweep, written into ``out``

and the solvers (rl/mdp/solvers.py) are written once on top of them.

    dense    NumPy (A, S, S) arrays                    small MDPs
    sparse   SciPy CSR, rows a·S + s; fused numba sweep  any sparse MDP
    moves    the grid world's 4-neighbour stencil        the fast path at 10^6 states
    torch    torch tensors (CSR or dense) on the GPU when there is one, else the CPU
"""
from __future__ import annotations

import warnings
from typing import Literal, get_args

import numpy as np
import scipy.sparse as sp

from envs.tabular import TabularMDP
from lab.errors import LabError

Backend = Literal["auto", "dense", "sparse", "moves", "torch"]
BACKENDS = get_args(Backend)
DENSE_LIMIT = 4096   # above this many states the dense backend is not chosen automatically


def stacked_csr(mdp: TabularMDP) -> sp.csr_matrix:
    """T as one (A·S, S) CSR matrix whose row a·S + s is T(s, a, ·) (the actions' matrices stacked).
    Built once per model."""
    if "stacked_csr" not in mdp._cache:
        mdp._cache["stacked_csr"] = sp.vstack(mdp.sparse_T(), format="csr")
    return mdp._cache["stacked_csr"]


class NumpyBackend:
    """The shared NumPy pieces: arrays are float64 ndarrays, V is (S,), Q is (S, A)."""
    name = "numpy"

    def __init__(self, mdp: TabularMDP):
        self.mdp, self.gamma = mdp, float(mdp.gamma)
        self.R = mdp.R

    def zeros(self, *shape) -> np.ndarray:
        return np.zeros(shape or (self.mdp.n_states,))

    def asarray(self, x) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)

    def to_numpy(self, x) -> np.ndarray:
        return np.asarray(x)

    def greedy(self, Q) -> tuple[np.ndarray, np.ndarray]:
        actions = np.argmax(Q, axis=1)
        return np.take_along_axis(Q, actions[:, None], 1)[:, 0], actions

    def take(self, Q, policy) -> np.ndarray:
        """Q[s, policy[s]]."""
        return np.take_along_axis(Q, np.asarray(policy)[:, None], 1)[:, 0]

    def range(self, x) -> tuple[float, float]:
        return float(x.min()), float(x.max())

    def optimality_backup(self, V, out):
        # Bellman optimality backup V(s) <- max_a R(s,a) + γ Σ_s' T(s,a,s') V(s'), unfused
        new = (self.R + self.gamma * self.expect(V)).max(axis=1)
        lo, hi = self.range(new - V)
        out[:] = new
        return lo, hi


DENSE_BYTES_LIMIT = 2 * 2**30   # the dense backend refuses to build a T larger than this


class DenseBackend(NumpyBackend):
    name = "dense"

    def __init__(self, mdp: TabularMDP):
        needed = 8 * mdp.n_actions * mdp.n_states ** 2
        if not mdp.is_dense and needed > DENSE_BYTES_LIMIT:
            raise LabError(f"--backend dense would need {needed / 2**30:.1f} GiB for T at {mdp.n_states} states; "
                           "use --backend sparse or moves.")
        super().__init__(mdp)
        self.T = mdp.dense_T()

    def expect(self, V) -> np.ndarray:
        return (self.T @ V).T


class SparseBackend(NumpyBackend):
    name = "sparse"

    def __init__(self, mdp: TabularMDP):
        super().__init__(mdp)
        self.T = stacked_csr(mdp)

    def expect(self, V) -> np.ndarray:
        return (self.T @ V).reshape(self.mdp.n_actions, self.mdp.n_states).T

    def optimality_backup(self, V, out):
        from rl.mdp.kernels import csr_backup
        return csr_backup(self.T.indptr, self.T.indices, self.T.data, self.R, self.gamma, V, out)

    def bytes_per_sweep(self) -> int:
        """Bytes of T, R and V read (and V written) by one fused sweep."""
        return self.T.data.nbytes + self.T.indices.nbytes + self.T.indptr.nbytes + self.R.nbytes + 2 * 8 * self.mdp.n_states


class MovesBackend(NumpyBackend):
    """The grid world's stencil: each state's 4 compass neighbours, shared by all actions."""
    name = "moves"

    def __init__(self, mdp: TabularMDP):
        if not _has_compass_moves(mdp):
            raise LabError(f"--backend moves needs a world of the 4 compass moves (a grid world or corridor); "
                           f"{mdp.name} is not.")
        super().__init__(mdp)
        self.successors = np.ascontiguousarray(mdp.moves.successors)
        self.probs = np.ascontiguousarray(mdp.moves.probs)

    def expect(self, V) -> np.ndarray:
        return V[self.successors] @ self.probs.T

    def optimality_backup(self, V, out):
        from rl.mdp.kernels import compass_backup
        return compass_backup(self.successors, self.probs, self.R, self.gamma, V, out)

    def bytes_per_sweep(self) -> int:
        return self.successors.nbytes + self.probs.nbytes + self.R.nbytes + 2 * 8 * self.mdp.n_states


class TorchBackend:
    """Torch tensors (float64) on ``device``: T as a sparse CSR (A·S, S) matrix, or dense (A, S, S) when the
    model is dense."""
    name = "torch"

    def __init__(self, mdp: TabularMDP, device: str | None = None):
        import torch
        self.torch, self.mdp, self.gamma = torch, mdp, float(mdp.gamma)
        try:
            self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        except RuntimeError:
            raise LabError(f"--device must be a torch device such as cpu or cuda, got {device!r}.") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise LabError("--device cuda: no CUDA GPU is available here; use --device cpu.")
        self.R = torch.as_tensor(mdp.R, device=self.device)
        if mdp.is_dense:
            self.T_dense, self.T_csr = torch.as_tensor(mdp.T, device=self.device), None
        else:
            csr = stacked_csr(mdp)
            self.T_dense = None
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                self.T_csr = torch.sparse_csr_tensor(torch.as_tensor(csr.indptr, dtype=torch.int64),
                                                     torch.as_tensor(csr.indices, dtype=torch.int64),
                                                     torch.as_tensor(csr.data), size=csr.shape,
                                                     check_invariants=True).to(self.device)

    def zeros(self, *shape):
        return self.torch.zeros(shape or (self.mdp.n_states,), dtype=self.torch.float64, device=self.device)

    def asarray(self, x):
        return self.torch.as_tensor(np.asarray(x), dtype=self.torch.float64, device=self.device)

    def to_numpy(self, x) -> np.ndarray:
        return x.detach().cpu().numpy()

    def expect(self, V):
        if self.T_dense is not None:
            return (self.T_dense @ V).T
        return (self.T_csr @ V[:, None]).view(self.mdp.n_actions, self.mdp.n_states).T

    def greedy(self, Q):
        values, actions = Q.max(dim=1)
        return values, actions

    def take(self, Q, policy):
        policy = self.torch.as_tensor(np.asarray(policy), device=self.device)
        return Q.gather(1, policy[:, None])[:, 0]

    def range(self, x) -> tuple[float, float]:
        lo, hi = self.torch.aminmax(x)
        return float(lo), float(hi)   # one host sync per sweep, for the stopping test

    def optimality_backup(self, V, out):
        # Bellman optimality backup V(s) <- max_a R(s,a) + γ Σ_s' T(s,a,s') V(s')
        new = (self.R + self.gamma * self.expect(V)).amax(dim=1)
        lo, hi = self.range(new - V)
        out.copy_(new)
        return lo, hi


def _has_compass_moves(mdp: TabularMDP) -> bool:
    return mdp.moves is not None and mdp.moves.successors.shape[1] == 4


def make_backend(mdp: TabularMDP, name: str = "auto", device: str | None = None):
    """The backend called ``name``; 'auto' picks moves for grid worlds, dense for small dense models, else sparse."""
    if name not in BACKENDS:
        raise LabError(f"--backend must be one of {', '.join(BACKENDS)}; got {name!r}.")
    if name == "auto":
        name = "moves" if _has_compass_moves(mdp) else (
            "dense" if mdp.is_dense and mdp.n_states <= DENSE_LIMIT else "sparse")
    if name == "torch":
        return TorchBackend(mdp, device)
    return {"dense": DenseBackend, "sparse": SparseBackend, "moves": MovesBackend}[name](mdp)
