"""Learning curves from run folders: one panel per metric, mean ± std over seeds of the same config."""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path

import numpy as np

from lab.errors import LabError
from lab.logger import read_metrics
from lab.rundir import RunDir

DEFAULT_METRICS = ("eval/ep_return", "rollout/ep_return", "eval/fid", "eval/mse", "train/loss")


def _group_key(saved: dict) -> str:
    """Runs that share the algorithm and config (all but the seed) form one curve."""
    config = {k: v for k, v in saved.get("config", {}).items() if k != "seed"}
    label = saved.get("algo", "?")
    for key in ("env_id", "env", "data", "dataset"):
        if key in config:
            label += f" {config[key]}"
            break
    return label + "|" + repr(sorted(config.items()))


def _series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(r["step"], float(r[key])) for r in rows if key in r and isinstance(r[key], (int, float))]
    if not pairs:
        return np.empty(0), np.empty(0)
    steps, values = zip(*pairs)
    return np.asarray(steps, dtype=float), np.asarray(values, dtype=float)


def plot_runs(paths: list[Path], metrics: list[str] | None = None, out: Path | None = None) -> Path:
    """Draw the curves of ``metrics`` (default: the usual ones the runs have) and write a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [RunDir.open(p) for p in paths]
    groups: dict[str, list[list[dict]]] = defaultdict(list)
    labels: dict[str, str] = {}
    for run in runs:
        saved = run.read_config()
        key = _group_key(saved)
        labels[key] = key.split("|")[0]
        groups[key].append(read_metrics(run.metrics_file))
    available = {k for rows_list in groups.values() for rows in rows_list for r in rows for k in r}
    if metrics:
        missing = [m for m in metrics if m not in available]
        if missing:
            known = ", ".join(sorted(k for k in available if k != "step"))
            raise LabError(f"no run has metric {missing[0]!r}; these runs have: {known}.")
    else:
        metrics = [m for m in DEFAULT_METRICS if m in available] or sorted(
            k for k in available if k != "step" and not k.startswith("time/"))[:4]
    if not metrics:
        raise LabError("these runs have logged no metrics yet; nothing to plot.")

    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for key, rows_list in groups.items():
            curves = [_series(rows, metric) for rows in rows_list]
            curves = [c for c in curves if len(c[0])]
            if not curves:
                continue
            grid = np.unique(np.concatenate([c[0] for c in curves]))
            lo, hi = max(c[0][0] for c in curves), min(c[0][-1] for c in curves)
            grid = grid[(grid >= lo) & (grid <= hi)] if len(curves) > 1 else grid
            values = np.stack([np.interp(grid, s, v) for s, v in curves])
            mean = values.mean(0)
            label = labels[key] + (f" ({len(curves)} seeds)" if len(curves) > 1 else "")
            line, = ax.plot(grid, mean, label=label)
            if len(curves) > 1:
                std = values.std(0)
                ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.25)
        ax.set_title(metric)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    if out is None:
        if len(runs) == 1:
            out = runs[0].path / "plots" / "curves.png"
        else:
            out = Path(runs[0].path).parent / f"curves-{dt.datetime.now():%Y%m%d-%H%M%S}.png"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
