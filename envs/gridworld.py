"""The noisy grid world of the notes, the 1-D corridor, text maps, and generated worlds of any size.

The 4×3 world (cells named (x, y), x from the left and y from the bottom, both from 1):

    .  .  .  T+1        T+1 / T-1: terminal cells with reward +1 / -1
    .  #  .  T-1        #: wall, the cell (2, 2)
    S  .  .  .          S: the start; '.': a cell paying the living reward; a plain number: that reward

Actions N, E, S, W move in the intended direction with probability 1 - noise and slip to each side
(90° left or right) with probability noise / 2; a move into a wall or off the grid stays in place.
Each step in a non-terminal cell pays its reward (the living reward, -0.04 by default). In a terminal
cell every action pays the terminal reward and leads to one absorbing "exit" state, where the episode
ends; so V(terminal cell) is its reward, as in the notes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from envs.tabular import Moves, TabularEnv, TabularMDP
from lab.errors import LabError
from lab.memory import require_memory

ACTIONS = ("N", "E", "S", "W")
ARROWS = {"N": "↑", "E": "→", "S": "↓", "W": "←"}
STEPS = {"N": (-1, 0), "E": (0, 1), "S": (1, 0), "W": (0, -1)}   # (row, column) offsets; row 0 is the top

CLASSIC_MAP = """\
.  .  .  T+1
.  #  .  T-1
S  .  .  .
"""


@dataclass(frozen=True)
class GridMap:
    """A world on a grid of cells (row 0 is the top row)."""
    walls: np.ndarray
    """(H, W) bool."""
    terminal: np.ndarray
    """(H, W) bool."""
    reward: np.ndarray
    """(H, W) float: the terminal reward of terminal cells, a cell's own reward, or NaN for 'the living reward'."""
    start: tuple
    """(row, column) of the start cell."""

    @property
    def shape(self) -> tuple:
        return self.walls.shape


def parse_map(text: str) -> GridMap:
    """Read a text map: one row per line, cells separated by spaces: '.', '#', 'S', 'T<reward>' or '<reward>'.
    Lines starting with ';' are comments."""
    rows = [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith(";")]
    if not rows:
        raise LabError("the map is empty.")
    if len({len(r) for r in rows}) != 1:
        raise LabError(f"every map row must have the same number of cells; got rows of {sorted({len(r) for r in rows})}.")
    shape = (len(rows), len(rows[0]))
    walls, terminal = np.zeros(shape, bool), np.zeros(shape, bool)
    reward = np.full(shape, np.nan)
    start = None
    for i, row in enumerate(rows):
        for j, token in enumerate(row):
            if token == "#":
                walls[i, j] = True
            elif token == "S":
                if start is not None:
                    raise LabError(f"the map has two start cells, at row {start[0] + 1} and row {i + 1}.")
                start = (i, j)
            elif token != ".":
                is_terminal = token[0] in "Tt"
                try:
                    reward[i, j] = float(token[1:] if is_terminal else token)
                except ValueError:
                    raise LabError(f"unknown map cell {token!r} in row {i + 1}; use '.', '#', 'S', "
                                   "'T<reward>' (terminal) or a number (that cell's reward).") from None
                if not np.isfinite(reward[i, j]):
                    raise LabError(f"map cell {token!r} in row {i + 1} must be a finite reward.")
                terminal[i, j] = is_terminal
    if not terminal.any():
        raise LabError("the map has no terminal cell; mark at least one with T<reward>, e.g. T+1.")
    if start is None:
        free = np.argwhere(~walls & ~terminal)
        if not len(free):
            raise LabError("the map has no free cell to start in.")
        start = tuple(int(v) for v in free[-1])
    return GridMap(walls, terminal, reward, start)


def load_map(path: Path) -> GridMap:
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise LabError(f"cannot read the map {path}: {error.strerror}.") from None
    except UnicodeDecodeError:
        raise LabError(f"the map {path} is not a text file.") from None
    return parse_map(text)


GRID_BYTES_PER_STATE = 600
"""A generous estimate of what solving a generated world holds per state (map, moves, sparse T, R, V, Q)."""


def generate_map(size: int, seed: int = 0, wall_fraction: float = 0.1, start_distance: int | None = None) -> GridMap:
    """A size × size world with random walls (so fewer states than cells), a +1 terminal in the top-right
    corner, a -1 terminal below it, and the start ``start_distance`` steps from the +1 on the diagonal
    towards the bottom-left corner (in that corner when None or farther)."""
    if not isinstance(size, (int, np.integer)) or size < 2:
        raise LabError(f"--size must be an integer >= 2, got {size}.")
    require_memory(size * size * GRID_BYTES_PER_STATE, f"a {size}x{size} world", "lower --size")
    rng = np.random.default_rng(seed)
    walls = rng.random((size, size)) < wall_fraction
    terminal = np.zeros((size, size), bool)
    reward = np.full((size, size), np.nan)
    for (i, j), r in (((0, size - 1), 1.0), ((1, size - 1), -1.0)):
        walls[i, j], terminal[i, j], reward[i, j] = False, True, r
    distance = 2 * (size - 1) if start_distance is None else min(start_distance, 2 * (size - 1))
    start = (min(size - 1, (distance + 1) // 2), max(0, size - 1 - distance // 2))
    walls[start] = False
    return GridMap(walls, terminal, reward, start)


# ---------------------------------------------------------------- the MDP of a grid
@dataclass(frozen=True)
class Layout:
    """Where the states of a grid MDP lie: state s < n_cells is the cell ``cells[s]`` (flat index), the last
    state is the absorbing exit."""
    map: GridMap
    cells: np.ndarray
    """(n_cells,) flat cell index of each cell state, in row-major order."""
    state_of: np.ndarray
    """(H, W) state index of each cell, -1 for walls."""
    action_names: tuple

    @property
    def shape(self) -> tuple:
        return self.map.shape

    def describe_state(self, s: int) -> str:
        if s >= len(self.cells):
            return "the exit state"
        i, j = divmod(int(self.cells[s]), self.shape[1])
        return f"cell (x={j + 1}, y={self.shape[0] - i})"

    def on_grid(self, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """(H, W) array of a per-state quantity (walls get ``fill``)."""
        grid = np.full(self.shape, fill, dtype=float)
        grid.flat[self.cells] = np.asarray(values)[: len(self.cells)]
        return grid

    def format(self, values: np.ndarray, policy: np.ndarray, digits: int = 3) -> str:
        """The grid of values and the grid of policy arrows as text."""
        width = digits + 4
        value_rows, arrow_rows = [], []
        for i in range(self.shape[0]):
            vs, arrows = [], []
            for j in range(self.shape[1]):
                s = self.state_of[i, j]
                if s < 0:
                    vs.append("#".center(width))
                    arrows.append("#")
                    continue
                vs.append(f"{values[s]:{width}.{digits}f}")
                if self.map.terminal[i, j]:
                    arrows.append("+" if self.map.reward[i, j] > 0 else "-" if self.map.reward[i, j] < 0 else "0")
                else:
                    arrows.append(ARROWS.get(self.action_names[policy[s]], self.action_names[policy[s]]))
            value_rows.append(" ".join(vs))
            arrow_rows.append(" ".join(arrows))
        return "values:\n" + "\n".join(value_rows) + "\npolicy:\n" + "\n".join(arrow_rows)

    def render_agent(self, state: int) -> str:
        lines = []
        for i in range(self.shape[0]):
            row = []
            for j in range(self.shape[1]):
                s = self.state_of[i, j]
                row.append("#" if s < 0 else "A" if s == state else "T" if self.map.terminal[i, j] else ".")
            lines.append(" ".join(row))
        return "\n".join(lines) + ("\n(exited)\n" if state >= len(self.cells) else "\n")


def grid_mdp(world: GridMap, noise: float = 0.2, living_reward: float = -0.04, gamma: float = 1.0,
             actions: tuple = ACTIONS, name: str = "gridworld") -> TabularMDP:
    """The noisy grid-world MDP of a map, in move form (vectorized: fast at 10^6 cells)."""
    if not (np.isfinite(noise) and 0 <= noise <= 1):
        raise LabError(f"--noise must be in [0, 1], got {noise}.")
    if not np.isfinite(living_reward):
        raise LabError(f"--living-reward must be a finite number, got {living_reward}.")
    if not world.terminal.any():
        raise LabError("the map has no terminal cell; mark at least one with T<reward>, e.g. T+1.")
    height, width = world.shape
    open_cells = ~world.walls
    state_of = np.full(world.shape, -1, dtype=np.int64)
    cells = np.flatnonzero(open_cells.ravel())
    n_cells = len(cells)
    exit_state = n_cells
    state_of.flat[cells] = np.arange(n_cells)
    rows, cols = np.divmod(cells, width)

    # move k = one step in direction ACTIONS[k]; blocked (wall or edge) moves stay; terminal cells exit
    successors = np.empty((n_cells + 1, len(ACTIONS)), dtype=np.int32)
    for k, direction in enumerate(ACTIONS):
        di, dj = STEPS[direction]
        r, c = rows + di, cols + dj
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        target = np.full(n_cells, -1, dtype=np.int64)
        target[inside] = state_of[r[inside], c[inside]]
        successors[:n_cells, k] = np.where(target >= 0, target, np.arange(n_cells))
    terminal_states = world.terminal.ravel()[cells]
    successors[:n_cells][terminal_states] = exit_state
    successors[exit_state] = exit_state

    # action a: intended move with 1 - noise, each perpendicular move with noise / 2
    probs = np.zeros((len(actions), len(ACTIONS)))
    for a, name_a in enumerate(actions):
        k = ACTIONS.index(name_a)
        probs[a, k] += 1 - noise
        probs[a, (k + 1) % 4] += noise / 2
        probs[a, (k - 1) % 4] += noise / 2

    cell_reward = world.reward.ravel()[cells]
    cell_reward = np.where(np.isnan(cell_reward), living_reward, cell_reward)
    R = np.zeros((n_cells + 1, len(actions)))
    R[:n_cells] = cell_reward[:, None]
    layout = Layout(world, cells, state_of, tuple(actions))
    return TabularMDP(R=R, gamma=gamma, moves=Moves(successors, probs), start=int(state_of[world.start]),
                      action_names=tuple(actions), name=name, layout=layout)


def classic(noise: float = 0.2, living_reward: float = -0.04, gamma: float = 1.0) -> TabularMDP:
    """The 4×3 world of the notes."""
    return grid_mdp(parse_map(CLASSIC_MAP), noise, living_reward, gamma, name="gridworld-4x3")


def corridor(length: int = 7, left_reward: float = 1.0, right_reward: float = 10.0, noise: float = 0.0,
             living_reward: float = 0.0, gamma: float = 0.9) -> TabularMDP:
    """The 1-D corridor: ``length`` cells, terminal at both ends with different rewards, actions W and E
    (a slip, with probability ``noise``, leaves the agent in place); the start is the middle cell."""
    if not isinstance(length, (int, np.integer)) or length < 3:
        raise LabError(f"--length of the corridor must be an integer >= 3, got {length}.")
    cells = ["."] * length
    cells[0], cells[-1], cells[length // 2] = f"T{left_reward}", f"T{right_reward}", "S"
    return grid_mdp(parse_map(" ".join(cells)), noise, living_reward, gamma, actions=("W", "E"),
                    name=f"corridor-{length}")


def make_gridworld(map: str | None = None, size: int | None = None, noise: float = 0.2,
                   living_reward: float = -0.04, gamma: float | None = None, seed: int = 0) -> TabularMDP:
    """The world the CLI and the env ids build: a map file, a generated size × size world, or the 4×3 world.
    γ defaults to 1 for the 4×3 world and maps, 0.99 for generated worlds (whose start is then 100 steps
    from the goal)."""
    if map is not None and size is not None:
        raise LabError("give either --map or --size, not both.")
    if size is not None:
        gamma = 0.99 if gamma is None else gamma
        # the start within the discount's horizon 1/(1-γ) of the goal: farther, every value is the floor
        # living_reward/(1-γ) and the heat map shows nothing around the start
        horizon = round(1 / (1 - gamma)) if gamma < 1 else None
        world, name = generate_map(size, seed, start_distance=horizon), f"gridworld-{size}x{size}"
    elif map is not None:
        world, name = load_map(Path(map)), f"gridworld-{Path(map).stem}"
    else:
        world, name = parse_map(CLASSIC_MAP), "gridworld-4x3"
    return grid_mdp(world, noise, living_reward, 1.0 if gamma is None else gamma, name=name)


class GridWorldEnv(TabularEnv):
    """``lab/GridWorld-v0``: the noisy grid world (the 4×3 world by default; ``map=`` a file, ``size=`` n)."""

    def __init__(self, map: str | None = None, size: int | None = None, noise: float = 0.2,
                 living_reward: float = -0.04, gamma: float | None = None, seed: int = 0,
                 max_steps: int = 200, render_mode: str | None = None):
        super().__init__(make_gridworld(map, size, noise, living_reward, gamma, seed), max_steps, render_mode)


class CorridorEnv(TabularEnv):
    """``lab/Corridor-v0``: the 1-D corridor with two terminal ends."""

    def __init__(self, length: int = 7, left_reward: float = 1.0, right_reward: float = 10.0, noise: float = 0.0,
                 living_reward: float = 0.0, gamma: float = 0.9, max_steps: int = 100,
                 render_mode: str | None = None):
        super().__init__(corridor(length, left_reward, right_reward, noise, living_reward, gamma), max_steps,
                         render_mode)
