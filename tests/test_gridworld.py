"""The tabular worlds: the 4×3 grid world's model by hand, maps, the corridor, random MDPs, the Gymnasium envs."""
import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the lab/ ids)
from envs.gridworld import classic, corridor, generate_map, grid_mdp, make_gridworld, parse_map
from envs.tabular import TabularEnv, TabularMDP, random_mdp
from lab.errors import LabError
from rl.mdp import policy_iteration, value_iteration


def cell(mdp, x, y):
    """State of the cell (x, y) in the notes' coordinates (x from the left, y from the bottom, from 1)."""
    height = mdp.layout.shape[0]
    return int(mdp.layout.state_of[height - y, x - 1])


def test_classic_world_transitions_by_hand():
    mdp = classic()
    assert mdp.n_states == 12 and mdp.n_actions == 4          # 11 cells + the exit
    T = mdp.dense_T()
    north, east = mdp.action_names.index("N"), mdp.action_names.index("E")
    s = cell(mdp, 1, 1)
    # N from (1,1): 0.8 up to (1,2), 0.1 right to (2,1), 0.1 left into the edge: stays
    assert T[north, s, cell(mdp, 1, 2)] == pytest.approx(0.8)
    assert T[north, s, cell(mdp, 2, 1)] == pytest.approx(0.1)
    assert T[north, s, s] == pytest.approx(0.1)
    # E from (1,2) runs into the wall at (2,2): 0.8 stay, 0.1 up, 0.1 down
    s = cell(mdp, 1, 2)
    assert T[east, s, s] == pytest.approx(0.8)
    assert T[east, s, cell(mdp, 1, 3)] == pytest.approx(0.1) and T[east, s, cell(mdp, 1, 1)] == pytest.approx(0.1)
    # terminal cells pay their reward and exit; the exit is the one absorbing state
    exit_state = mdp.n_states - 1
    assert np.all(T[:, cell(mdp, 4, 3), exit_state] == 1) and np.all(mdp.R[cell(mdp, 4, 3)] == 1)
    assert np.all(mdp.R[cell(mdp, 4, 2)] == -1) and np.all(mdp.R[cell(mdp, 1, 1)] == -0.04)
    assert mdp.absorbing.tolist() == [False] * 11 + [True]
    assert np.allclose(T.sum(axis=2), 1)


def test_map_rewards_start_and_errors():
    world = parse_map("S  -0.5  T+2\n#  .  T-1\n")
    mdp = grid_mdp(world, living_reward=-0.1, gamma=0.9)
    assert mdp.n_states == 6 and mdp.start == 0
    assert mdp.R[:, 0].tolist() == [-0.1, -0.5, 2.0, -0.1, -1.0, 0.0]
    with pytest.raises(LabError, match="no terminal cell"):
        parse_map(". . .\n. S .")
    with pytest.raises(LabError, match="same number of cells"):
        parse_map(". T1\n. . .")
    with pytest.raises(LabError, match="unknown map cell"):
        parse_map(". X T1")
    with pytest.raises(LabError, match="--size"):
        generate_map(-3)
    with pytest.raises(LabError, match="--noise"):
        classic(noise=1.5)


def test_generated_world_and_gamma_one_refusals():
    mdp = make_gridworld(size=30, seed=1)
    assert mdp.gamma == 0.99 and mdp.layout.shape == (30, 30)
    assert mdp.n_states == int((~mdp.layout.map.walls).sum()) + 1
    with pytest.raises(LabError, match="every state to reach a terminal"):
        # a free cell walled in on all sides can never reach a terminal
        grid_mdp(parse_map(". # . T1\n# . # .\n. # . ."), gamma=1.0).require_finite_values()
    with pytest.raises(LabError, match="avoid them forever"):
        classic(living_reward=0.0).require_finite_values()
    classic(living_reward=-0.04).require_finite_values()     # the stochastic-shortest-path case is fine
    classic(living_reward=0.5, gamma=0.9).require_finite_values()


def test_model_checks_refuse_bad_input():
    R = np.zeros((2, 1))
    with pytest.raises(LabError, match="sum to 0.9"):
        TabularMDP(R=R, gamma=0.9, T_given=np.array([[[0.5, 0.4], [0.0, 1.0]]]))
    TabularMDP(R=R, gamma=0.9, T_given=np.array([[[0.5, 0.5 + 1e-10], [0.0, 1.0]]]))   # within 1e-8 is fine
    with pytest.raises(LabError, match="non-negative"):
        TabularMDP(R=R, gamma=0.9, T_given=np.array([[[1.5, -0.5], [0.0, 1.0]]]))
    for gamma in (-0.1, 1.01, float("nan")):
        with pytest.raises(LabError, match="--gamma"):
            TabularMDP(R=R, gamma=gamma, T_given=np.array([[[1.0, 0.0], [0.0, 1.0]]]))


def test_corridor_policy_by_hand():
    # γ = 0.5, ends worth 1 (left) and 10 (right), 7 cells: from cell 1 going left is worth 0.5·1 = 0.5
    # and going right 0.5^5·10 = 0.31, so W; from cell 2, 0.25 against 0.5^4·10 = 0.625, so E.
    mdp = corridor(7, left_reward=1.0, right_reward=10.0, gamma=0.5)
    solution = policy_iteration(mdp)
    names = [mdp.action_names[a] for a in solution.policy[1:6]]
    assert names == ["W", "E", "E", "E", "E"]
    assert solution.V[1] == pytest.approx(0.5) and solution.V[5] == pytest.approx(5.0)


def test_random_mdp_is_seeded_and_well_formed():
    a, b = random_mdp(40, 3, successors=5, seed=7), random_mdp(40, 3, successors=5, seed=7)
    assert all((x != y).nnz == 0 for x, y in zip(a.T, b.T)) and np.array_equal(a.R, b.R)
    assert all(np.all(np.diff(t.indptr) == 5) for t in a.T)
    assert np.allclose(np.stack([t.sum(axis=1).A1 for t in a.T]), 1)
    dense = random_mdp(20, 2, seed=0)
    assert dense.is_dense and np.allclose(dense.T.sum(axis=2), 1)


@pytest.mark.parametrize("env_id", ["lab/GridWorld-v0", "lab/Corridor-v0", "lab/RandomMDP-v0"])
def test_registered_envs_pass_the_checker(env_id):
    env = gymnasium.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    observation, _ = env.reset(seed=0)
    assert env.observation_space.contains(observation)


def test_env_transition_frequencies_match_T():
    mdp = classic()
    env = TabularEnv(mdp)
    T = mdp.dense_T()
    n = 4000
    for s, a in [(cell(mdp, 1, 1), 0), (cell(mdp, 3, 2), 1), (cell(mdp, 3, 1), 3)]:
        counts = np.zeros(mdp.n_states)
        env.reset(seed=s)
        for _ in range(n):
            env.reset(options={"state": s})
            next_state, reward, terminated, truncated, _ = env.step(a)
            counts[next_state] += 1
            assert reward == mdp.R[s, a]
        p = T[a, s]
        sigma = np.sqrt(p * (1 - p) / n)
        assert np.all(np.abs(counts / n - p) <= 5 * sigma + 1e-12), (counts / n, p)


def test_env_episode_ends_at_the_exit_and_pays_terminal_reward():
    mdp = classic(noise=0.0)
    env = TabularEnv(mdp)
    env.reset(seed=0)
    ret, terminated, steps = 0.0, False, 0
    policy = value_iteration(mdp).policy
    state = mdp.start
    while not terminated:
        state, reward, terminated, truncated, _ = env.step(policy[state])
        ret += reward
        steps += 1
    # 5 moves from (1,1) to (4,3) at -0.04 each, then the exit pays +1
    assert steps == 6 and ret == pytest.approx(1 - 5 * 0.04)
