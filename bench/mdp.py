"""Tabular MDP solvers: the lab against pymdptoolbox, and value iteration on large noisy grid worlds.

    lab bench mdp                                   default sizes (a few minutes on 2 cores)
    lab bench mdp --grid-states 10000 100000        skip the 10^6-state world
    lab bench mdp --no-peer                         the lab alone

Part 1 solves the same MDPs with the lab and with pymdptoolbox (`pip install pymdptoolbox`; benchmark only),
side by side in this process: pymdptoolbox's forest example and seeded random MDPs with 8 actions. Both get
the model as A sparse (S, S) matrices and R as an (S, A) array and stop on the same span test (ε = 0.01,
pymdptoolbox's default); a solve is timed from the arrays to the policy (median of --repeats), and
pymdptoolbox's own run() time (which leaves out its constructor) is shown next to it.

Part 2 runs value iteration (ε = 1e-6, γ = 0.99, span stop) on generated grid worlds, reports sweeps, time
per sweep and the bytes one sweep moves (T, R and V read, V written) over that time, next to the copy
bandwidth NumPy measures in the same process, interleaved with the sweeps so that both see the same load.
CPU times are shown next to wall times: on a shared machine the gap is the time other processes took.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import numpy as np

from lab.benchmark import ResultsPath, parse, results_path



@dataclass(frozen=True)
class Options:
    """Benchmark of the tabular MDP solvers."""
    random_states: tuple[int, ...] = (1000, 5000)
    """Sizes of the random MDPs of part 1."""
    actions: int = 8
    """Actions of the random MDPs."""
    successors: int = 20
    """Successors per state-action of the random MDPs (sparse)."""
    forest_states: tuple[int, ...] = (3, 1000)
    """Sizes of pymdptoolbox's forest example."""
    gamma: float = 0.95
    """Discount of part 1."""
    eps: float = 0.01
    """ε of part 1 (pymdptoolbox's default)."""
    grid_states: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    """Approximate state counts of the grid worlds of part 2."""
    repeats: int = 3
    """Timed repeats per solve in part 1 (the median is reported)."""
    peer: bool = True
    """Run pymdptoolbox next to the lab."""
    out: ResultsPath = None


class CopyProbe:
    """Copy bandwidth of this machine: np.copyto between two arrays much larger than the caches
    (bytes read + bytes written per second)."""

    def __init__(self, megabytes: int = 256):
        self.source = np.ones(megabytes * 2**20 // 8)
        self.target = np.empty_like(self.source)

    def seconds(self) -> float:
        start = time.perf_counter()
        np.copyto(self.target, self.source)
        return time.perf_counter() - start

    def gbps(self, seconds: float) -> float:
        return 2 * self.source.nbytes / seconds / 1e9


def _median_time(run, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def part1(opts: Options, mdptoolbox) -> list[dict]:
    from envs.tabular import TabularMDP, random_mdp
    from rl.mdp import policy_iteration, value_iteration

    problems = []
    if mdptoolbox is not None:
        import mdptoolbox.example
        for n in opts.forest_states:
            P, R = mdptoolbox.example.forest(S=n, is_sparse=True)
            problems.append((f"forest S={n}", TabularMDP(R=R, gamma=opts.gamma, T_given=tuple(P), name="forest")))
    for n in opts.random_states:
        problems.append((f"random S={n} A={opts.actions} k={opts.successors}",
                         random_mdp(n, opts.actions, opts.gamma, opts.successors, seed=0)))
    rows = []
    for label, mdp in problems:
        P, R = list(mdp.sparse_T()), mdp.R
        fresh = lambda: TabularMDP(R=R, gamma=opts.gamma, T_given=tuple(P))   # no state kept between solves
        for algo in ("value-iteration", "policy-iteration"):
            if algo == "value-iteration":
                ours = lambda: value_iteration(fresh(), eps=opts.eps, stop="span")
                peer = lambda: mdptoolbox.mdp.ValueIteration(P, R, opts.gamma, epsilon=opts.eps)
            else:
                ours = lambda: policy_iteration(fresh())
                peer = lambda: mdptoolbox.mdp.PolicyIteration(P, R, opts.gamma)
            ours()   # warm-up (numba loads its compiled kernels once)
            seconds, solution = _median_time(ours, opts.repeats)
            row = {"problem": label, "algo": algo, "states": mdp.n_states, "lab_seconds": seconds,
                   "lab_iterations": solution.iterations}
            if mdptoolbox is not None:
                def run_peer():
                    solver = peer()
                    solver.run()
                    return solver
                peer_seconds, solver = _median_time(run_peer, max(1, opts.repeats if mdp.n_states < 5000 else 1))
                row.update(peer_seconds=peer_seconds, peer_run_seconds=float(solver.time),
                           peer_iterations=int(solver.iter),
                           speedup=peer_seconds / seconds,
                           same_policy=bool(np.array_equal(np.asarray(solver.policy), solution.policy)))
            rows.append(row)
            print(_format_row1(row), flush=True)
    return rows


def part2(opts: Options, probe: CopyProbe) -> list[dict]:
    from envs.gridworld import make_gridworld
    from rl.mdp import value_iteration
    from rl.mdp.backends import make_backend

    rows = []
    for target in opts.grid_states:
        size = int(math.ceil(math.sqrt(target / 0.9)))     # 10% of the cells are walls
        mdp = make_gridworld(size=size, gamma=0.99, seed=0)
        for backend in ("moves", "sparse"):
            be = make_backend(mdp, backend)
            V, out = be.zeros(), be.zeros()
            be.optimality_backup(V, out)   # warm-up
            sweeps, copies, cpu = [], [], []
            for _ in range(7):             # a copy, then a sweep: both see the same load
                copies.append(probe.seconds())
                start, start_cpu = time.perf_counter(), time.process_time()
                be.optimality_backup(V, out)
                sweeps.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
                V, out = out, V
            per_sweep, bandwidth = float(np.median(sweeps)), probe.gbps(float(np.median(copies)))
            moved = be.bytes_per_sweep()
            row = {"states": mdp.n_states, "grid": f"{size}x{size}", "backend": backend,
                   "seconds_per_sweep": per_sweep, "cpu_seconds_per_sweep": float(np.median(cpu)),
                   "bytes_per_sweep": moved, "achieved_GBps": moved / per_sweep / 1e9, "copy_GBps": bandwidth,
                   "x_bandwidth_bound": per_sweep / (moved / (bandwidth * 1e9))}
            if backend == "moves":
                cpu_start = time.process_time()
                solution = value_iteration(mdp, eps=1e-6, stop="span", backend="moves")
                row.update(sweeps=solution.iterations, solve_seconds=solution.seconds,
                           solve_cpu_seconds=time.process_time() - cpu_start, converged=solution.converged)
            rows.append(row)
            print(_format_row2(row), flush=True)
    return rows


def _format_row1(r: dict) -> str:
    text = f"  {r['problem']:<28} {r['algo']:<17} lab {r['lab_seconds']*1e3:9.1f} ms {r['lab_iterations']:5d} it"
    if "peer_seconds" in r:
        text += (f" | pymdptoolbox {r['peer_seconds']*1e3:9.1f} ms (run() {r['peer_run_seconds']*1e3:8.1f} ms)"
                 f" {r['peer_iterations']:5d} it"
                 f" | ×{r['speedup']:7.1f} | same policy: {'yes' if r['same_policy'] else 'NO'}")
    return text


def _format_row2(r: dict) -> str:
    solve = (f" | {r['sweeps']:5d} sweeps, solved in {r['solve_seconds']:6.1f} s"
             f" ({r['solve_cpu_seconds']:.1f} s of CPU)" if "sweeps" in r else "")
    return (f"  {r['states']:>9,d} states {r['grid']:>11} {r['backend']:<6} {r['seconds_per_sweep']*1e3:8.2f} ms/sweep"
            f" ({r['cpu_seconds_per_sweep']*1e3:.2f} ms CPU)"
            f" {r['bytes_per_sweep']/1e6:8.1f} MB {r['achieved_GBps']:5.1f} GB/s (copy {r['copy_GBps']:.1f} GB/s,"
            f" ×{r['x_bandwidth_bound']:.1f} the bound){solve}")


def main(argv: list[str]) -> int:
    import warnings

    warnings.filterwarnings("ignore", module="mdptoolbox")   # its SparseEfficiencyWarning on every solve
    opts = parse(Options, argv, "mdp")
    mdptoolbox = None
    if opts.peer:
        try:
            import mdptoolbox
            import mdptoolbox.mdp
        except ImportError:
            print("pymdptoolbox is not installed, so part 1 runs the lab alone: pip install pymdptoolbox")
    probe = CopyProbe()
    bandwidth = probe.gbps(float(np.median([probe.seconds() for _ in range(5)])))
    print(f"copy bandwidth (np.copyto, 256 MiB): {bandwidth:.1f} GB/s")
    print("part 1: lab vs pymdptoolbox (same model, same span test, median time per solve)")
    rows1 = part1(opts, mdptoolbox)
    print("part 2: value iteration on noisy grid worlds (γ = 0.99, ε = 1e-6)")
    rows2 = part2(opts, probe)
    out = results_path(opts.out, "mdp")
    out.write_text(json.dumps({"copy_GBps": bandwidth, "peer": rows1, "grid": rows2}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0
