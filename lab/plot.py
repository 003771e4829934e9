"""Learning curves from run folders: one panel per metric, one curve per config.

Runs that share the algorithm and config (all but the seed) are aggregated into one curve: mean ± std,
or a 95 % bootstrap interval around the mean or the interquartile mean (IQM), as rliable recommends
for RL (Agarwal et al. 2021). Training rows are drawn in step order (a resumed run is one curve: its
redone rows replaced the dropped ones); rows a command appended later (``lab eval``, marked with a
``source``) are drawn as points, never joined into the training curve.
"""
from __future__ import annotations

import datetime as dt
import io
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from lab import safefs
from lab.errors import LabError
from lab.logger import SOURCE, read_metrics
from lab.rundir import RunDir

DEFAULT_METRICS = ("eval/ep_return", "rollout/ep_return", "eval/fid", "eval/mse", "train/loss")
Aggregate = Literal["mean-std", "mean-ci", "iqm-ci"]
BOOTSTRAP_SAMPLES = 2000


@dataclass
class Run:
    """One run folder: its saved config and its metric rows."""
    path: Path
    saved: dict
    rows: list[dict]

    @property
    def seed(self):
        return self.saved.get("config", {}).get("seed", self.saved.get("options", {}).get("seed"))

    @property
    def resumed_at(self) -> list[int]:
        return [r["from_step"] for r in self.saved.get("resumed", [])]


@dataclass
class Curve:
    """What one legend entry draws on one panel."""
    label: str
    steps: np.ndarray
    center: np.ndarray
    band: tuple[np.ndarray, np.ndarray] | None      # low, high (several runs only)
    points: tuple[np.ndarray, np.ndarray]           # (steps, values) that commands such as `lab eval` logged


def config_key(saved: dict) -> str:
    """Runs that share the algorithm and config (all but the seed) form one curve."""
    config = {k: v for k, v in saved.get("config", {}).items() if k != "seed"}
    return saved.get("algo", "?") + "|" + repr(sorted(config.items()))


def training_series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of ``key`` logged by training, in step order; the last value logged at a step wins."""
    by_step = {r["step"]: float(r[key]) for r in rows
               if SOURCE not in r and isinstance(r.get(key), (int, float))}
    steps = np.array(sorted(by_step), dtype=float)
    return steps, np.array([by_step[s] for s in sorted(by_step)], dtype=float)


def command_points(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of ``key`` in rows that a command (``lab eval``) appended."""
    pairs = [(r["step"], float(r[key])) for r in rows if SOURCE in r and isinstance(r.get(key), (int, float))]
    return np.array([p[0] for p in pairs], dtype=float), np.array([p[1] for p in pairs], dtype=float)


def interquartile_mean(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Mean of the middle 50 % along ``axis`` (rliable's IQM: scipy's trim_mean with 25 % cut each side)."""
    from scipy.stats import trim_mean
    return trim_mean(values, 0.25, axis=axis)


def aggregate(values: np.ndarray, how: Aggregate, seed: int = 0) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Center and band over runs (axis 0) of ``values`` (runs, steps)."""
    if how == "mean-std":
        mean, std = values.mean(0), values.std(0)
        return mean, (mean - std, mean + std)
    statistic = np.mean if how == "mean-ci" else interquartile_mean
    resampled = values[np.random.default_rng(seed).integers(len(values), size=(BOOTSTRAP_SAMPLES, len(values)))]
    estimates = statistic(resampled, axis=1)                                  # (samples, steps)
    low, high = np.percentile(estimates, [2.5, 97.5], axis=0)                 # percentile bootstrap, 95 %
    return statistic(values, axis=0), (low, high)


def labels(groups: dict[str, list[Run]]) -> dict[str, str]:
    """A legend label per group that tells groups apart: the algorithm and env or data, the config
    fields in which groups with the same name differ, the seeds, and where a run was resumed."""
    names = {key: _name(runs[0].saved) for key, runs in groups.items()}
    result = {}
    for key, runs in groups.items():
        rivals = [groups[k][0].saved.get("config", {}) for k in groups if k != key and names[k] == names[key]]
        config = runs[0].saved.get("config", {})
        differing = sorted({f for rival in rivals for f in config if f != "seed" and rival.get(f) != config[f]})
        label = " ".join([names[key], *(f"{f}={config[f]}" for f in differing)])
        seeds = ", ".join(str(r.seed) for r in runs)
        label += f" (seed {seeds})" if len(runs) == 1 else f" ({len(runs)} seeds: {seeds})"
        resumes = [f"{r.seed}@{step}" if len(runs) > 1 else str(step) for r in runs for step in r.resumed_at]
        if resumes:
            label += f", resumed at {', '.join(resumes)}"
        result[key] = label
    return result


def _name(saved: dict) -> str:
    config = saved.get("config", {})
    data = next((config[k] for k in ("env_id", "env", "data", "dataset") if k in config), None)
    return saved.get("algo", "?") + (f" {data}" if data else "")


def group_by_config(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs that share the algorithm and config (all but the seed), in order of first appearance."""
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        groups[config_key(run.saved)].append(run)
    return groups


def curves(runs: list[Run], metric: str, how: Aggregate = "mean-std") -> list[Curve]:
    """One curve per config group that has ``metric``."""
    groups = group_by_config(runs)
    names = labels(groups)
    result = []
    for key, group in groups.items():
        series = [s for s in (training_series(r.rows, metric) for r in group) if len(s[0])]
        point_sets = [command_points(r.rows, metric) for r in group]
        points = (np.concatenate([p[0] for p in point_sets]), np.concatenate([p[1] for p in point_sets]))
        if not series and not len(points[0]):
            continue
        steps, center, band = _combine(series, how)
        result.append(Curve(names[key], steps, center, band, points))
    return result


def _combine(series: list[tuple[np.ndarray, np.ndarray]], how: Aggregate):
    """Runs interpolated onto the steps all of them cover, then aggregated."""
    if not series:
        return np.empty(0), np.empty(0), None
    if len(series) == 1:
        return series[0][0], series[0][1], None
    grid = np.unique(np.concatenate([s for s, _ in series]))
    grid = grid[(grid >= max(s[0] for s, _ in series)) & (grid <= min(s[-1] for s, _ in series))]
    values = np.stack([np.interp(grid, s, v) for s, v in series])
    center, band = aggregate(values, how)
    return grid, center, band


def plot_runs(paths: list[Path], metrics: list[str] | None = None, out: Path | None = None,
              how: Aggregate = "mean-std") -> Path:
    """Draw the curves of ``metrics`` (default: the usual ones the runs have) and write a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [_open(run) for path in paths for run in run_folders(path)]
    metrics = _choose_metrics(runs, metrics)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4.0), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for curve in curves(runs, metric, how):
            _draw(ax, curve, how)
        ax.set_title(metric)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=110)
    plt.close(fig)
    out, root = (Path(out), None) if out is not None else _default_out(runs)
    if root is None:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise LabError(f"cannot create {out.parent}: {error.strerror}.") from None
    safefs.write_atomically(out, image.getvalue(), root)
    return out


def run_folders(path: Path) -> list[Path]:
    """The run folders a path names: itself, a sweep folder's runs (its manifest's, in order) or the run
    folders directly inside a folder."""
    from lab.sweeps import MANIFEST, read_manifest
    path = Path(path)
    if (path / "config.json").is_file() or not path.is_dir():
        return [path]                                  # RunDir.open says what is wrong with anything else
    if os.path.lexists(path / MANIFEST):
        found = [path / name for name in read_manifest(path)["runs"] if (path / name / "config.json").is_file()]
    else:
        found = sorted(p for p in path.iterdir() if (p / "config.json").is_file())
    if not found:
        raise LabError(f"{path} holds no run folders yet.")
    return found


def _open(path: Path) -> Run:
    run = RunDir.open(path)
    return Run(run.path, run.read_config(), read_metrics(run.metrics_file, run.path))


def _choose_metrics(runs: list[Run], metrics: list[str] | None) -> list[str]:
    available = {k for run in runs for row in run.rows for k in row if k not in ("step", SOURCE)}
    if metrics:
        missing = [m for m in metrics if m not in available]
        if missing:
            raise LabError(f"no run has metric {missing[0]!r}; these runs have: {', '.join(sorted(available))}.")
        return metrics
    chosen = [m for m in DEFAULT_METRICS if m in available] or sorted(
        k for k in available if not k.startswith("time/"))[:4]
    if not chosen:
        raise LabError("these runs have logged no metrics yet; nothing to plot.")
    return chosen


def _draw(ax, curve: Curve, how: Aggregate) -> None:
    color = None
    if len(curve.steps):
        runs = " ± std" if how == "mean-std" else (", 95% CI of the mean" if how == "mean-ci" else ", IQM, 95% CI")
        line, = ax.plot(curve.steps, curve.center, label=curve.label + (runs if curve.band else ""))
        color = line.get_color()
        if curve.band is not None:
            ax.fill_between(curve.steps, *curve.band, color=color, alpha=0.25)
    if len(curve.points[0]):
        ax.scatter(*curve.points, marker="D", s=30, color=color, zorder=3, label=f"{curve.label}: lab eval")


def _default_out(runs: list[Run]) -> tuple[Path, Path | None]:
    """Where the PNG goes and the run folder it must not leave (None: a folder of runs, not a run)."""
    if len(runs) == 1:
        return runs[0].path / "plots" / "curves.png", runs[0].path
    return Path(runs[0].path).parent / f"curves-{dt.datetime.now():%Y%m%d-%H%M%S}.png", None
