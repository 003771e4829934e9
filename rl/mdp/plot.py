"""Pictures of solutions: a grid world's values as a heat map with the policy as arrows (one panel per
solution, e.g. one per living reward), or the action values of a non-grid MDP."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from envs.gridworld import Layout

DIRECTION = {"N": (0, 1), "E": (1, 0), "S": (0, -1), "W": (-1, 0)}
MAX_ARROWS = 32   # per side: larger worlds show every k-th cell's arrow
TEXT_CELLS = 400  # worlds up to this many cells get their values written in; larger ones their start marked
STATES_SHOWN = 64  # rows of the Q heat map of an MDP without a grid


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def draw_grid(ax, layout: Layout, V: np.ndarray, policy: np.ndarray, title: str, limits: tuple[float, float]):
    """Heat map of V on the grid (walls blank) with the colour scale ``limits``, arrows for the policy,
    terminal rewards written in (small worlds) or the start marked (large ones); returns the image."""
    height, width = layout.shape
    values = layout.on_grid(V)
    import matplotlib
    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="#555555")   # walls in grey
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, interpolation="nearest", vmin=limits[0], vmax=limits[1])
    stride = max(1, int(np.ceil(max(height, width) / MAX_ARROWS)))
    rows, cols = np.mgrid[0:height:stride, 0:width:stride]
    states = layout.state_of[rows, cols]
    show = (states >= 0) & ~layout.map.terminal[rows, cols]
    actions = np.asarray(policy)[states[show]]
    du = np.array([DIRECTION.get(layout.action_names[a], (0, 0))[0] for a in actions], dtype=float)
    dv = np.array([DIRECTION.get(layout.action_names[a], (0, 0))[1] for a in actions], dtype=float)
    # angles="uv": arrows point up/right on screen although the image's rows grow downwards
    ax.quiver(cols[show], rows[show], du, dv, angles="uv", pivot="middle", color="black")
    if height * width <= TEXT_CELLS:
        for i, j in zip(*np.nonzero(~layout.map.walls)):
            if layout.map.terminal[i, j]:
                ax.text(j, i, f"{layout.map.reward[i, j]:+g}", ha="center", va="center", fontsize=11, weight="bold")
            else:
                ax.text(j, i + 0.32, f"{values[i, j]:.3f}", ha="center", va="center", fontsize=7)
    else:
        row, col = layout.map.start
        ax.plot(col, row, marker="*", markersize=14, color="blue", markeredgecolor="white", label="start")
        ax.legend(loc="lower left", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    return image


def save_grid_panels(path: Path, panels: list[tuple[str, Layout, np.ndarray, np.ndarray]]) -> Path:
    """One heat-map panel per (title, layout, V, policy); returns the PNG path."""
    plt = _pyplot()
    height, width = panels[0][1].shape
    scale = 4.0 / max(height, width) if max(height, width) > 12 else 1.0
    size = (max(3.5, width * scale + 1.5), max(2.5, height * scale + 0.8))
    fig, axes = plt.subplots(1, len(panels), figsize=(size[0] * len(panels), size[1]), squeeze=False,
                             layout="constrained")
    grids = [layout.on_grid(V) for _, layout, V, _ in panels]
    limits = (float(min(np.nanmin(g) for g in grids)), float(max(np.nanmax(g) for g in grids)))   # one scale for all
    for ax, (title, layout, V, policy) in zip(axes[0], panels):
        image = draw_grid(ax, layout, V, policy, title, limits)
    fig.colorbar(image, ax=list(axes[0]), shrink=0.9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save_action_values(path: Path, Q: np.ndarray, policy: np.ndarray, action_names: tuple, title: str) -> Path:
    """For MDPs without a grid: Q(s, a) as a heat map (states down, actions across), the greedy action boxed."""
    plt = _pyplot()
    shown = min(len(Q), STATES_SHOWN)
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * Q.shape[1], 1.5 + 0.12 * shown))
    image = ax.imshow(Q[:shown], cmap="viridis", aspect="auto", interpolation="nearest")
    ax.scatter(policy[:shown], np.arange(shown), marker="s", facecolors="none", edgecolors="red", s=30)
    ax.set_xticks(range(Q.shape[1]), action_names)
    ax.set_ylabel("state" + (f" (first {shown} of {len(Q)})" if shown < len(Q) else ""))
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
