"""Exact solvers: hand-solved MDPs, the notes' 4×3 policies, agreement between solvers and backends,
the ε-optimality bound, policy evaluation two ways, and `lab solve`."""
import json
from pathlib import Path

import numpy as np
import pytest

from envs.gridworld import classic, make_gridworld
from envs.tabular import TabularMDP, random_mdp
from lab.errors import LabError
from rl.mdp import evaluate_policy, policy_iteration, q_iteration, value_iteration
from rl.mdp.backends import make_backend

SOLVERS = (value_iteration, policy_iteration, q_iteration)


def solve_cli(lab, *args, **kwargs):
    result = lab(*args, **kwargs)
    return result.returncode, result.stdout, result.stderr


def two_state_mdp(gamma=0.9) -> TabularMDP:
    """Action 0 stays (reward 1 in state 0, 2 in state 1); action 1 switches state (reward 0)."""
    T = np.array([[[1.0, 0.0], [0.0, 1.0]],      # stay
                  [[0.0, 1.0], [1.0, 0.0]]])     # switch
    return TabularMDP(R=np.array([[1.0, 0.0], [2.0, 0.0]]), gamma=gamma, T_given=T)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("backend", ["dense", "sparse", "torch"])
def test_two_state_mdp_solved_by_hand(solver, backend):
    # staying in state 1 forever is worth 2 / (1 - 0.9) = 20; from state 0, switching is worth 0.9·20 = 18,
    # staying only 1 / (1 - 0.9) = 10
    solution = solver(two_state_mdp(), eps=1e-9, backend=backend)
    assert solution.converged
    assert solution.V == pytest.approx([18.0, 20.0], abs=1e-8)
    assert solution.policy.tolist() == [1, 0]


def test_two_state_policy_evaluation_by_hand():
    V, Q = evaluate_policy(two_state_mdp(), [0, 0])
    assert V == pytest.approx([10.0, 20.0])
    assert Q == pytest.approx(np.array([[10.0, 18.0], [20.0, 9.0]]))


ARROWS_4x3 = {   # the notes' figure: optimal policies of the 4×3 world (γ = 1, noise 0.2)
    -0.04: ["→ → → +", "↑ # ↑ -", "↑ ← ← ←"],
    -0.4: ["→ → → +", "↑ # ↑ -", "↑ → ↑ ←"],
    -2.0: ["→ → → +", "↑ # → -", "→ → → ↑"],
}


@pytest.mark.parametrize("living_reward", sorted(ARROWS_4x3))
def test_4x3_optimal_policies_of_the_notes(living_reward):
    mdp = classic(living_reward=living_reward)
    for solver in SOLVERS:
        solution = solver(mdp)
        arrows = mdp.layout.format(solution.V, solution.policy).split("policy:\n")[1].splitlines()
        assert arrows == ARROWS_4x3[living_reward], solver.__name__


def test_4x3_values_of_the_notes():
    V = policy_iteration(classic()).V
    grid = classic().layout.on_grid(V)
    expected = [[0.812, 0.868, 0.918, 1.0], [0.762, np.nan, 0.660, -1.0], [0.705, 0.655, 0.611, 0.388]]
    assert np.allclose(grid, expected, atol=5e-4, equal_nan=True)


@pytest.mark.parametrize("mdp", [random_mdp(150, 4, gamma=0.95, successors=6, seed=3),
                                 random_mdp(60, 3, gamma=0.9, seed=4),
                                 make_gridworld(size=12, gamma=0.95, living_reward=-0.1, seed=2)],
                         ids=["sparse-random", "dense-random", "grid"])
def test_solvers_agree(mdp):
    solutions = [value_iteration(mdp, eps=1e-8, stop="sup"), policy_iteration(mdp), q_iteration(mdp, eps=1e-8),
                 value_iteration(mdp, eps=1e-8, gauss_seidel=True),
                 policy_iteration(mdp, evaluation="iterative", eval_sweeps=5)]
    reference = solutions[1]
    for s in solutions:
        assert np.max(np.abs(s.V - reference.V)) < 1e-6, s.algo
        # identical greedy policies up to ties: each chosen action is optimal under the reference Q
        chosen = reference.Q[np.arange(mdp.n_states), s.policy]
        assert np.all(chosen >= reference.Q.max(axis=1) - 1e-9), s.algo


def test_gauss_seidel_needs_fewer_sweeps():
    mdp = classic()
    jacobi, gauss_seidel = value_iteration(mdp, eps=1e-10), value_iteration(mdp, eps=1e-10, gauss_seidel=True)
    assert np.max(np.abs(jacobi.V - gauss_seidel.V)) < 1e-8
    assert gauss_seidel.iterations < 0.8 * jacobi.iterations


def test_backends_agree_to_1e9():
    dense = random_mdp(80, 3, gamma=0.95, seed=5)
    grid = make_gridworld(size=15, gamma=0.97, seed=3)
    V = np.random.default_rng(0).normal(size=80)
    expectations = [np.asarray(make_backend(dense, b).to_numpy(make_backend(dense, b).expect(
        make_backend(dense, b).asarray(V)))) for b in ("dense", "sparse", "torch")]
    for e in expectations[1:]:
        assert np.max(np.abs(e - expectations[0])) < 1e-12
    for mdp, backends in ((dense, ("dense", "sparse", "torch")), (grid, ("moves", "sparse", "dense", "torch"))):
        values = [value_iteration(mdp, eps=1e-11, backend=b).V for b in backends]
        for v in values[1:]:
            assert np.max(np.abs(v - values[0])) < 1e-9


@pytest.mark.parametrize("stop", ["span", "sup"])
def test_stopping_bound_gives_an_eps_optimal_policy(stop):
    mdp = random_mdp(200, 5, gamma=0.95, successors=4, seed=11)
    optimal = policy_iteration(mdp).V
    eps = 0.05
    loose = value_iteration(mdp, eps=eps, stop=stop)
    V_pi, _ = evaluate_policy(mdp, loose.policy)
    assert np.all(V_pi >= optimal - eps)
    assert loose.iterations < value_iteration(mdp, eps=1e-9, stop=stop).iterations


def test_policy_evaluation_linear_solve_equals_iterative():
    for mdp in (random_mdp(100, 3, gamma=0.9, successors=5, seed=1), classic()):
        policy = np.random.default_rng(2).integers(0, mdp.n_actions, mdp.n_states)
        if mdp.gamma == 1:
            policy = policy_iteration(mdp).policy            # γ = 1 needs a policy that ends
        exact, Q_exact = evaluate_policy(mdp, policy, "exact")
        iterative, Q_iterative = evaluate_policy(mdp, policy, "iterative", eps=1e-12)
        assert np.max(np.abs(exact - iterative)) < 1e-9
        assert np.max(np.abs(Q_exact - Q_iterative)) < 1e-9


def test_improper_policy_is_refused_at_gamma_one():
    mdp = classic()
    # N in (1,3) and W in (2,3): the agent bounces between the two cells forever
    policy = np.zeros(mdp.n_states, dtype=int)
    policy[int(mdp.layout.state_of[0, 1])] = mdp.action_names.index("W")
    for method in ("exact", "iterative"):
        with pytest.raises(LabError, match="never reaches a terminal"):
            evaluate_policy(mdp, policy, method)


def test_policy_iteration_reports_both_counts():
    mdp = make_gridworld(size=10, gamma=0.9, seed=0)
    exact = policy_iteration(mdp)
    modified = policy_iteration(mdp, evaluation="iterative", eval_sweeps=3)
    assert exact.converged and exact.evaluation_sweeps == 0 and exact.iterations >= 2
    assert modified.converged and modified.evaluation_sweeps > 3 * (modified.iterations - 1)
    assert np.max(np.abs(modified.V - exact.V)) < 1e-6


# ---------------------------------------------------------------- lab solve
def test_lab_solve_writes_a_run_folder(lab, tmp_path):
    code, out, err = solve_cli(lab, "solve", "--runs-dir", tmp_path, cwd=tmp_path)
    assert code == 0, err
    assert "0.812" in out and "→ → → +" in out
    run = next(tmp_path.glob("solve-gridworld-4x3-value-iteration-*"))
    solution = json.loads((run / "solution.json").read_text())
    assert solution["converged"] and solution["iterations"] > 0 and len(solution["V"]) == 12
    assert solution["grid_policy"][2] == ["↑", "←", "←", "←"]
    assert (run / "plots" / "values.png").stat().st_size > 0 and (run / "config.json").is_file()


def test_lab_solve_json_and_other_worlds(lab, tmp_path):
    code, out, err = solve_cli(lab, "solve", "--algo", "policy-iteration", "--json", "--runs-dir", tmp_path)
    assert code == 0, err
    payload = json.loads(out)
    assert payload["algo"] == "policy-iteration" and payload["V"][0] == pytest.approx(0.8116, abs=1e-4)
    for args in (["--env", "random", "--states", "30", "--successors", "4", "--algo", "q-iteration"],
                 ["--env", "corridor", "--gamma", "0.5"],
                 ["--size", "20", "--backend", "sparse", "--gauss-seidel"]):
        code, out, err = solve_cli(lab, "solve", *args, "--json", "--runs-dir", tmp_path)
        assert code == 0, (args, err)
        assert json.loads(out)["converged"]


def test_lab_solve_living_reward_sweep(lab, tmp_path):
    code, out, err = solve_cli(lab, "solve", "--sweep-living-reward", "-2", "-0.4", "-0.04", "--runs-dir", tmp_path)
    assert code == 0, err
    run = next(tmp_path.glob("solve-*-sweep-*"))
    sweep = json.loads((run / "solution.json").read_text())["sweep"]
    assert [r["living_reward"] for r in sweep] == [-2.0, -0.4, -0.04]
    assert [r["grid_policy"][2] for r in sweep] == [ARROWS_4x3[r].__getitem__(2).split() for r in (-2.0, -0.4, -0.04)]
    assert (run / "plots" / "living_reward_sweep.png").is_file()


@pytest.mark.parametrize("args, message", [
    (["--gamma", "1.5"], "--gamma must be in"),
    (["--gamma", "-0.1"], "--gamma must be in"),
    (["--size", "-3"], "--size must be"),
    (["--living-reward", "0.1"], "gamma=1 needs every policy"),
    (["--map", "MAP_WITHOUT_TERMINAL"], "no terminal cell"),
    (["--map", "missing.txt"], "cannot read the map"),
    (["--size", "200", "--backend", "dense"], "would need"),
    (["--env", "random", "--backend", "moves"], "needs a world of the 4 compass moves"),
    (["--backend", "torch", "--device", "nonsense"], "--device must be"),
])
def test_lab_solve_bad_input_is_one_sentence(lab, tmp_path, args, message):
    if "MAP_WITHOUT_TERMINAL" in args:
        (tmp_path / "map.txt").write_text(". . .\nS # .\n")
        args = ["--map", str(tmp_path / "map.txt")]
    code, out, err = solve_cli(lab, "solve", *args, "--runs-dir", tmp_path, cwd=tmp_path)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("lab: error: ") and message in err
    assert not list(Path(tmp_path).glob("solve-*"))


def test_sweep_panels_share_one_colour_scale(tmp_path, monkeypatch):
    from rl.mdp import plot
    scales = []
    draw = plot.draw_grid
    monkeypatch.setattr(plot, "draw_grid", lambda *args: scales.append(args[-1]) or draw(*args))
    panels = []
    for reward in (-2.0, -0.04):
        mdp = classic(living_reward=reward)
        solution = value_iteration(mdp)
        panels.append((f"{reward}", mdp.layout, solution.V, solution.policy))
    plot.save_grid_panels(tmp_path / "sweep.png", panels)
    lowest = min(np.nanmin(p[1].on_grid(p[2])) for p in panels)
    assert scales[0] == scales[1] == (pytest.approx(lowest), pytest.approx(1.0))


def test_solve_text_says_what_the_figure_shows(lab, tmp_path):
    code, out, err = solve_cli(lab, "solve", "--env", "random", "--states", "500", "--runs-dir", tmp_path)
    assert code == 0, err
    assert "500 states" in out and "first 64 of 500 states" in out and "whole" not in out


def test_a_generated_world_starts_where_its_values_are_not_all_the_floor():
    mdp = make_gridworld(size=150)              # γ = 0.99: the floor is -0.04 / (1 - γ) = -4
    solution = value_iteration(mdp)
    assert -3.0 < solution.V[mdp.start] < 0.0
    row, col = mdp.layout.map.start
    assert row + (149 - col) == 100             # the horizon 1 / (1 - γ) from the +1 in the top-right corner
    assert mdp.n_states < 150 * 150             # walls: fewer states than cells
