"""`lab solve`: solve a tabular MDP exactly, print the values and the policy, write a run folder.

    lab solve                                             the 4×3 world of the notes, value iteration
    lab solve --algo policy-iteration --living-reward -0.4
    lab solve --size 1000                                 a generated 1000×1000 world (γ = 0.99; 899,759 states)
    lab solve --map world.txt --json                      a world from a text map; JSON to stdout
    lab solve --sweep-living-reward -2 -0.4 -0.04         the notes' figure: one policy per living reward
    lab solve --env random --states 500 --actions 4 --successors 10

The run folder (runs/solve-<env>-<algo>-<time>-s<seed>/) holds config.json, solution.json (V, policy,
iterations, residual, time; for more than 100,000 states V and the policy go to solution.npz) and
plots/values.png (the heat map with arrows) or plots/living_reward_sweep.png.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import tyro

from envs.gridworld import corridor, make_gridworld
from envs.tabular import TabularMDP, random_mdp
from lab.cli import parse_flags
from lab.config import in_range, one_of, positive, require, to_dict
from lab.rundir import RunDir
from rl.mdp.backends import BACKENDS, Backend
from rl.mdp.plot import STATES_SHOWN, TEXT_CELLS, save_action_values, save_grid_panels
from rl.mdp.solvers import Solution, policy_iteration, q_iteration, value_iteration

JSON_ARRAY_LIMIT = 100_000   # states above which V and the policy are written to solution.npz


@dataclass(frozen=True)
class SolveCommand:
    """Solve a tabular MDP exactly (value iteration, policy iteration or Q iteration)."""

    env: Literal["gridworld", "corridor", "random"] = "gridworld"
    """The world: the noisy grid world (the 4×3 world of the notes, --map or --size), the 1-D corridor,
    or a seeded random MDP."""
    algo: Literal["value-iteration", "policy-iteration", "q-iteration"] = "value-iteration"
    """The solver."""
    living_reward: float = -0.04
    """Reward of each step in a non-terminal cell of the grid world or the corridor."""
    gamma: float | None = None
    """Discount in [0, 1]; default 1 for the 4×3 world and maps, 0.99 for --size worlds, 0.9 for the corridor,
    0.95 for random MDPs."""
    noise: float = 0.2
    """Probability of slipping 90° (half to each side) instead of moving as intended (in the corridor a
    slip stays in place)."""
    map: Path | None = None
    """Grid world: a text map ('.', '#', 'S', 'T<reward>' terminal, or a number: that cell's reward)."""
    size: int | None = None
    """Grid world: generate a size × size world with random walls instead of the 4×3 world."""
    length: int = 7
    """Corridor: number of cells, both ends terminal."""
    left_reward: float = 1.0
    """Corridor: reward of the left end."""
    right_reward: float = 10.0
    """Corridor: reward of the right end."""
    states: int = 100
    """Random MDP: number of states."""
    actions: int = 4
    """Random MDP: number of actions."""
    successors: int | None = None
    """Random MDP: successors per state-action (sparse); all states when not given (dense)."""
    seed: int = 0
    """Seed of generated worlds and random MDPs."""
    eps: float = 1e-6
    """Target accuracy: stop when the greedy policy is ε-optimal (γ < 1), or when ‖ΔV‖∞ < ε (γ = 1)."""
    stop: Literal["span", "sup"] = "span"
    """Stopping test of value / Q iteration: span or sup-norm of V_{k+1} - V_k (see rl/mdp/solvers.py)."""
    gauss_seidel: bool = False
    """Value iteration: update values in place (Gauss-Seidel) instead of from the previous sweep; it stops
    on the sup-norm test."""
    evaluation: Literal["exact", "iterative"] = "exact"
    """Policy iteration: evaluate by a linear solve or by iterated Bellman expectation backups."""
    eval_sweeps: int | None = None
    """Policy iteration with iterative evaluation: sweeps per evaluation (modified policy iteration);
    until convergence when not given."""
    backend: Backend = "auto"
    """Where the arithmetic runs: NumPy dense, SciPy sparse (fused numba sweeps), the grid world's move
    stencil, or torch (on the GPU when there is one); auto picks moves for grid worlds."""
    device: str | None = None
    """Torch backend: the device (default cuda when available, else cpu)."""
    sweep_living_reward: tuple[float, ...] = ()
    """Solve the grid world once per living reward given here and draw one policy panel each (the notes'
    figure), e.g. --sweep-living-reward -2 -0.4 -0.04."""
    json: bool = False
    """Print the solution as JSON to stdout instead of text."""
    runs_dir: Path = Path("runs")
    """Where run folders are created."""
    run_dir: Path | None = None
    """Exact run folder to create instead of runs/solve-<env>-<algo>-<time>-s<seed>."""

    def __post_init__(self):
        if self.gamma is not None:
            in_range(self, "gamma", 0.0, 1.0)
        positive(self, "eps", "states", "actions")
        in_range(self, "noise", 0.0, 1.0)
        require(self.size is None or self.size >= 2, f"--size must be an integer >= 2, got {self.size}.")
        require(self.length >= 3, f"--length must be >= 3, got {self.length}.")
        require(self.successors is None or 1 <= self.successors <= self.states,
                f"--successors must be in [1, --states={self.states}], got {self.successors}.")
        require(self.eval_sweeps is None or self.eval_sweeps >= 1, f"--eval-sweeps must be >= 1, got {self.eval_sweeps}.")
        one_of(self, "backend", BACKENDS)
        require(not (self.gauss_seidel and self.algo != "value-iteration"),
                "--gauss-seidel applies to --algo value-iteration only.")
        require(not (self.sweep_living_reward and self.env != "gridworld"),
                "--sweep-living-reward applies to --env gridworld only.")


def build_mdp(cmd: SolveCommand, living_reward: float | None = None) -> TabularMDP:
    living = cmd.living_reward if living_reward is None else living_reward
    if cmd.env == "gridworld":
        return make_gridworld(None if cmd.map is None else str(cmd.map), cmd.size, cmd.noise, living, cmd.gamma, cmd.seed)
    if cmd.env == "corridor":
        return corridor(cmd.length, cmd.left_reward, cmd.right_reward, cmd.noise, living,
                        0.9 if cmd.gamma is None else cmd.gamma)
    return random_mdp(cmd.states, cmd.actions, 0.95 if cmd.gamma is None else cmd.gamma, cmd.successors, cmd.seed)


def solve(cmd: SolveCommand, mdp: TabularMDP) -> Solution:
    if cmd.algo == "value-iteration":
        return value_iteration(mdp, cmd.eps, cmd.stop, cmd.gauss_seidel, cmd.backend, cmd.device)
    if cmd.algo == "q-iteration":
        return q_iteration(mdp, cmd.eps, cmd.stop, cmd.backend, cmd.device)
    return policy_iteration(mdp, cmd.evaluation, cmd.eval_sweeps, cmd.eps, cmd.backend, cmd.device)


def summary(mdp: TabularMDP, solution: Solution) -> dict:
    """The numbers of a solution, JSON-ready (without the per-state arrays)."""
    return {"env": mdp.name, "algo": solution.algo, "backend": solution.backend, "states": mdp.n_states,
            "actions": mdp.n_actions, "gamma": mdp.gamma, "iterations": solution.iterations,
            "evaluation_sweeps": solution.evaluation_sweeps, "residual": solution.residual,
            "seconds": round(solution.seconds, 6), "converged": solution.converged,
            "start_value": float(solution.V[mdp.start]), "action_names": list(mdp.action_names)}


def arrays(mdp: TabularMDP, solution: Solution) -> dict:
    result = {"V": solution.V.tolist(), "policy": solution.policy.tolist()}
    layout = mdp.layout
    if layout is not None:
        grid_v = layout.on_grid(solution.V)
        result["grid_values"] = [[None if np.isnan(v) else float(v) for v in row] for row in grid_v]
        result["grid_policy"] = [row.split(" ") for row in layout.format(solution.V, solution.policy)
                                 .split("policy:\n", 1)[1].splitlines()]
    return result


def headline(mdp: TabularMDP, s: Solution) -> str:
    counts = f"{s.iterations} {'improvements' if s.algo == 'policy-iteration' else 'sweeps'}"
    if s.evaluation_sweeps:
        counts += f" ({s.evaluation_sweeps} evaluation sweeps)"
    state = "" if s.converged else "  NOT CONVERGED"
    return (f"{mdp.name} ({mdp.n_states:,} states, {mdp.n_actions} actions, γ={mdp.gamma:g}) · {s.algo} on "
            f"{s.backend}: {counts}, residual {s.residual:.3g}, {s.seconds:.3f} s{state}")


def text_of(mdp: TabularMDP, s: Solution) -> str:
    if mdp.layout is not None and mdp.layout.shape[0] * mdp.layout.shape[1] <= TEXT_CELLS:
        return mdp.layout.format(s.V, s.policy)
    if mdp.layout is None and mdp.n_states <= 30:
        return "\n".join(f"  state {i:3d}: V = {v:.6f}  action {mdp.action_names[a]}"
                         for i, (v, a) in enumerate(zip(s.V, s.policy)))
    value = f"value of the start state: {s.V[mdp.start]:.6f}"
    if mdp.layout is not None:
        return value + " (the heat map shows V on the whole world, the start as a star)"
    shown = min(mdp.n_states, STATES_SHOWN)
    return value + f" (the heat map shows Q of the first {shown} of {mdp.n_states:,} states)"


def _run_folder(cmd: SolveCommand, label: str) -> RunDir:
    path = cmd.run_dir or RunDir.default_path(cmd.runs_dir, "solve", label, cmd.seed)
    config = {"algo": "solve", "config": to_dict(cmd)}
    return RunDir.create(path, config)


def _emit(cmd: SolveCommand, payload: dict, lines: list[str]) -> None:
    if cmd.json:
        print(json.dumps(payload, default=float))
    else:
        print("\n".join(lines))


def run_single(cmd: SolveCommand) -> int:
    mdp = build_mdp(cmd)
    solution = solve(cmd, mdp)
    run = _run_folder(cmd, f"{mdp.name}-{cmd.algo}")
    payload = summary(mdp, solution)
    if mdp.n_states <= JSON_ARRAY_LIMIT:
        payload.update(arrays(mdp, solution))
    else:
        np.savez_compressed(run / "solution.npz", V=solution.V, policy=solution.policy)
        payload["arrays"] = "solution.npz"
    reward = f" · living reward {cmd.living_reward:g}" if cmd.env != "random" else ""
    title = f"{mdp.name} · {solution.algo}{reward} · γ={mdp.gamma:g}"
    if mdp.layout is not None:
        picture = save_grid_panels(run / "plots" / "values.png", [(title, mdp.layout, solution.V, solution.policy)])
    else:
        picture = save_action_values(run / "plots" / "values.png", solution.Q, solution.policy, mdp.action_names, title)
    run.write_json("solution.json", payload)
    run.write_status("finished" if solution.converged else "stopped", solution.iterations,
                     "" if solution.converged else "the iteration limit was reached before the stopping test held")
    payload["run_dir"] = str(run.path)
    _emit(cmd, payload, [headline(mdp, solution), text_of(mdp, solution),
                         f"wrote {run / 'solution.json'}", f"wrote {picture}"])
    return 0 if solution.converged else 1


def run_sweep(cmd: SolveCommand) -> int:
    panels, results, lines = [], [], []
    for reward in cmd.sweep_living_reward:
        mdp = build_mdp(cmd, reward)
        solution = solve(cmd, mdp)
        results.append({"living_reward": reward, **summary(mdp, solution),
                        **(arrays(mdp, solution) if mdp.n_states <= JSON_ARRAY_LIMIT else {})})
        panels.append((f"living reward {reward:g}", mdp.layout, solution.V, solution.policy))
        lines += [f"living reward {reward:g}: " + headline(mdp, solution), text_of(mdp, solution)]
    run = _run_folder(cmd, f"{mdp.name}-sweep")
    picture = save_grid_panels(run / "plots" / "living_reward_sweep.png", panels)
    run.write_json("solution.json", {"sweep": results})
    run.write_status("finished", len(results))
    _emit(cmd, {"sweep": results, "run_dir": str(run.path)}, lines + [f"wrote {run / 'solution.json'}", f"wrote {picture}"])
    return 0 if all(r["converged"] for r in results) else 1


def main(argv: list[str]) -> int:
    cmd = parse_flags(SolveCommand, list(argv), "lab solve", description=__doc__.split("\n\n")[0],
                      config=(tyro.conf.OmitArgPrefixes,))
    return run_sweep(cmd) if cmd.sweep_living_reward else run_single(cmd)

