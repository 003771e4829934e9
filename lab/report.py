"""`lab report DIR`: the results of a sweep (or of any folder of runs) as statistics a reviewer trusts.

    lab report runs/sweeps/lr [--metric eval/ep_return] [--lower-is-better]

Runs that share a config (all but the seed) are one configuration. For each, over its seeds: the final
and the best evaluation of the metric as mean, interquartile mean (IQM) and a 95 % bootstrap interval of
the IQM (percentile bootstrap over runs, resampled within each configuration: rliable's stratified
bootstrap with one task), the wall time and the steps per second. Between every two configurations the
probability of improvement P(X > Y) (Agarwal et al. 2021: the Mann-Whitney statistic over all pairs of
runs, ties counting half) with its bootstrap interval, and a performance profile: the share of runs whose
final score passes each threshold. The table is printed; DIR/report/report.json and profile.png hold it.
"""
from __future__ import annotations

import io
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from lab import safefs
from lab.errors import LabError
from lab.plot import Run, _open, group_by_config, interquartile_mean, run_folders, training_series

BOOTSTRAP_SAMPLES = 2000
LOWER_IS_BETTER = ("fid", "kid", "mse", "loss", "nll", "elbo", "bits", "error")
PREFERRED = ("eval/ep_return", "eval/fid", "eval/mse", "eval/neg_elbo", "eval/accuracy")


@dataclass
class Configuration:
    label: str
    runs: list[Run]
    final: np.ndarray                      # per run, the last evaluation
    best: np.ndarray                       # per run, the best evaluation
    seconds: np.ndarray
    steps_per_s: np.ndarray


def collect(folder: Path) -> list[Run]:
    """The runs of a sweep folder (its manifest's), of a folder of run folders, or one run folder."""
    return [_open(path) for path in run_folders(folder)]


def choose_metric(runs: list[Run], metric: str | None) -> str:
    available = {k for run in runs for row in run.rows for k in row if k.startswith("eval/")}
    if metric is not None:
        if metric not in available:
            raise LabError(f"no run has evaluated {metric!r}; these runs have: {', '.join(sorted(available)) or 'none'}.")
        return metric
    for key in PREFERRED:
        if key in available:
            return key
    if not available:
        raise LabError("these runs have no evaluations yet; nothing to report.")
    return sorted(available)[0]


def configurations(runs: list[Run], metric: str, higher_is_better: bool) -> list[Configuration]:
    groups = group_by_config(runs)
    labels = _labels(groups)
    result = []
    for key, group in groups.items():
        series = [training_series(r.rows, metric)[1] for r in group]
        kept = [(run, values) for run, values in zip(group, series) if len(values)]
        if not kept:
            continue
        best = np.max if higher_is_better else np.min
        elapsed = [training_series(run.rows, "time/elapsed_s") for run, _ in kept]
        seconds = np.array([e[1][-1] if len(e[1]) else np.nan for e in elapsed])
        steps = np.array([e[0][-1] if len(e[0]) else np.nan for e in elapsed])
        result.append(Configuration(labels[key], [r for r, _ in kept], np.array([v[-1] for _, v in kept]),
                                    np.array([best(v) for _, v in kept]), seconds, steps / seconds))
    return result


def _labels(groups: dict[str, list[Run]]) -> dict[str, str]:
    """The config fields in which the groups differ (``lr=0.001 n_steps=5``), or the algorithm and data."""
    configs = {key: {k: v for k, v in runs[0].saved.get("config", {}).items() if k != "seed"}
               for key, runs in groups.items()}
    algos = {key: runs[0].saved.get("algo", "?") for key, runs in groups.items()}
    differing = sorted({f for a, b in itertools.combinations(configs.values(), 2) for f in a.keys() | b.keys()
                        if a.get(f) != b.get(f)})
    multi_algo = len(set(algos.values())) > 1
    return {key: " ".join(([algos[key]] if multi_algo or not differing else [])
                          + [f"{f}={configs[key].get(f)}" for f in differing]) for key in groups}


# ---------------------------------------------------------------- statistics
def iqm_interval(scores: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """(IQM, low, high): the interquartile mean and its 95 % percentile-bootstrap interval over runs."""
    rng = np.random.default_rng(seed)
    resampled = scores[rng.integers(len(scores), size=(BOOTSTRAP_SAMPLES, len(scores)))]
    estimates = interquartile_mean(resampled, axis=1)
    low, high = np.percentile(estimates, [2.5, 97.5])
    return float(interquartile_mean(scores)), float(low), float(high)


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) over all pairs of a run of X and a run of Y, ties counting half (Mann-Whitney U / (n m))."""
    greater = (x[:, None] > y[None, :]).mean()
    ties = (x[:, None] == y[None, :]).mean()
    return float(greater + 0.5 * ties)


def improvement_interval(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """P(X > Y) and its 95 % bootstrap interval, X's and Y's runs resampled apart (stratified)."""
    rng = np.random.default_rng(seed)
    xs = x[rng.integers(len(x), size=(BOOTSTRAP_SAMPLES, len(x)))]
    ys = y[rng.integers(len(y), size=(BOOTSTRAP_SAMPLES, len(y)))]
    estimates = (xs[:, :, None] > ys[:, None, :]).mean((1, 2)) + 0.5 * (xs[:, :, None] == ys[:, None, :]).mean((1, 2))
    low, high = np.percentile(estimates, [2.5, 97.5])
    return probability_of_improvement(x, y), float(low), float(high)


def performance_profile(scores: np.ndarray, thresholds: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """The share of runs whose score passes each threshold (> for higher-is-better, < otherwise)."""
    passed = scores[None, :] > thresholds[:, None] if higher_is_better else scores[None, :] < thresholds[:, None]
    return passed.mean(1)


# ---------------------------------------------------------------- the report
def report(folder: Path, metric: str | None = None, higher_is_better: bool | None = None) -> dict:
    """The report of ``folder`` as a dict (what report.json holds); also writes report.json and profile.png."""
    runs = collect(folder)
    metric = choose_metric(runs, metric)
    if higher_is_better is None:
        higher_is_better = not any(word in metric.lower() for word in LOWER_IS_BETTER)
    configs = configurations(runs, metric, higher_is_better)
    sign = 1.0 if higher_is_better else -1.0
    table = []
    for c in configs:
        iqm, low, high = iqm_interval(c.final)
        best_iqm, best_low, best_high = iqm_interval(c.best)
        table.append({"config": c.label, "seeds": len(c.runs), "final_mean": float(c.final.mean()),
                      "final_iqm": iqm, "final_ci": [low, high], "best_mean": float(c.best.mean()),
                      "best_iqm": best_iqm, "best_ci": [best_low, best_high],
                      "wall_s": float(np.nanmean(c.seconds)), "steps_per_s": float(np.nanmean(c.steps_per_s))})
    pairs = [{"x": a.label, "y": b.label, "p": p, "ci": [lo, hi]}
             for a, b in itertools.permutations(configs, 2)
             for p, lo, hi in [improvement_interval(sign * a.final, sign * b.final)]]
    result = {"metric": metric, "higher_is_better": higher_is_better, "configurations": table,
              "probability_of_improvement": pairs}
    out = Path(folder) / "report"                 # written as run folders are: no link inside is followed
    safefs.write_atomically(out / "report.json", (json.dumps(result, indent=2) + "\n").encode(), Path(folder))
    safefs.write_atomically(out / "profile.png", _draw_profile(configs, metric, higher_is_better), Path(folder))
    result["profile"] = str(out / "profile.png")
    return result


def _draw_profile(configs: list[Configuration], metric: str, higher_is_better: bool) -> bytes:
    """The performance profile as PNG bytes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    everything = np.concatenate([c.final for c in configs])
    thresholds = np.linspace(everything.min(), everything.max(), 200)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rng = np.random.default_rng(0)
    for c in configs:
        line, = ax.plot(thresholds, performance_profile(c.final, thresholds, higher_is_better),
                        label=f"{c.label or 'runs'} ({len(c.runs)} seeds)")
        resampled = c.final[rng.integers(len(c.final), size=(BOOTSTRAP_SAMPLES, len(c.final)))]
        bands = np.stack([performance_profile(r, thresholds, higher_is_better) for r in resampled[:500]])
        ax.fill_between(thresholds, *np.percentile(bands, [2.5, 97.5], axis=0), color=line.get_color(), alpha=0.2)
    ax.set_xlabel(f"final {metric} threshold τ")
    ax.set_ylabel(f"share of runs with score {'>' if higher_is_better else '<'} τ")
    ax.set_title("performance profile (95 % bootstrap bands)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=110)
    plt.close(fig)
    return image.getvalue()


def format_report(result: dict) -> str:
    rows = [("config", "seeds", "final mean", "final IQM [95% CI]", "best IQM [95% CI]", "wall s", "steps/s")]
    for c in result["configurations"]:
        rows.append((c["config"] or "(all runs)", str(c["seeds"]), f"{c['final_mean']:.4g}",
                     f"{c['final_iqm']:.4g} [{c['final_ci'][0]:.4g}, {c['final_ci'][1]:.4g}]",
                     f"{c['best_iqm']:.4g} [{c['best_ci'][0]:.4g}, {c['best_ci'][1]:.4g}]",
                     f"{c['wall_s']:.0f}", f"{c['steps_per_s']:.0f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"{result['metric']} ({'higher' if result['higher_is_better'] else 'lower'} is better)"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    if result["probability_of_improvement"]:
        lines.append("\nprobability of improvement P(row better than column's runs):")
        lines += [f"  P({p['x']} > {p['y']}) = {p['p']:.2f} [{p['ci'][0]:.2f}, {p['ci'][1]:.2f}]"
                  for p in result["probability_of_improvement"]]
    lines.append(f"\nwrote {result['profile']}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    from lab.cli import parse_flags
    command = parse_flags(ReportCommand, argv, "lab report")
    direction = True if command.higher_is_better else (False if command.lower_is_better else None)
    if command.higher_is_better and command.lower_is_better:
        raise LabError("pick one of --higher-is-better and --lower-is-better.")
    print(format_report(report(command.folder, command.metric, direction)))
    return 0


@dataclass(frozen=True)
class ReportCommand:
    """Compare the configurations of a sweep (or of a folder of runs) over their seeds."""
    folder: tyro.conf.Positional[Path]
    """A sweep folder, a folder of run folders, or one run folder."""
    metric: str | None = None
    """The evaluation metric (default: the return, FID, MSE or -ELBO the runs have)."""
    higher_is_better: bool = False
    """The metric is better higher (default: guessed from its name: FID, MSE, loss, NLL are lower)."""
    lower_is_better: bool = False
    """The metric is better lower."""
