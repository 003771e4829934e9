"""`lab tune show STUDY`: the best trials as a table, parameter importances, the optimization history as
a PNG, and the best trial's config as a file that `lab train ALGO --config FILE` reruns."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

from lab.errors import LabError


def show(argv: list[str]) -> int:
    from lab.tune import Tuning, _optuna, _params, default_storage, open_study
    if not argv or argv[0].startswith("-") or len(argv) not in (1, 3) or (len(argv) == 3 and argv[1] != "--storage"):
        raise LabError("usage: lab tune show STUDY [--storage URL]")
    name, storage = argv[0], argv[2] if len(argv) == 3 else default_storage(argv[0])
    top = 10
    if storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///"):]).is_file():
        raise LabError(f"no study {name!r}: {storage[len('sqlite:///'):]} does not exist (--storage names another).")
    optuna = _optuna()
    study = open_study(optuna, Tuning("", [], 1, 1, name, storage), "maximize", create=False)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    counts = {s.name.lower(): sum(t.state == s for t in study.trials) for s in optuna.trial.TrialState}
    print(f"study {name} ({storage}): " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    if not done:
        raise LabError(f"study {name!r} has no complete trial yet.")
    best_first = sorted(done, key=lambda t: t.value, reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE)
    for t in best_first[:top]:
        print(f"  trial {t.number:>4}  {t.value:>12.5g}  {_params(t.params)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")         # its notes on small studies are not errors
            importances = optuna.importance.get_param_importances(study)
        print("importances: " + ", ".join(f"{k} {v:.2f}" for k, v in importances.items()))
    except (RuntimeError, ValueError, ImportError) as error:
        print(f"importances: not available ({str(error).splitlines()[0]})")
    out = Path(storage[len("sqlite:///"):]).parent if storage.startswith("sqlite:///") else Path("runs") / "tune"
    out.mkdir(parents=True, exist_ok=True)
    best = study.best_trial
    config_file = out / f"{name}-best.json"
    config_file.write_text(json.dumps({"algo": best.user_attrs.get("algo"), "config": best.user_attrs["config"],
                                       "options": best.user_attrs["options"], "trial": best.number,
                                       "value": best.value}, indent=2) + "\n")
    print(f"best trial {best.number}: {best.value:.5g}; rerun it with lab train ALGO --config {config_file}")
    print(f"wrote {_history(optuna, study, out / f'{name}-history.png')}")
    return 0


def _history(optuna, study, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")             # optuna marks its matplotlib plots experimental
        ax = optuna.visualization.matplotlib.plot_optimization_history(study)
    ax.figure.set_size_inches(8, 5)
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=110)
    plt.close(ax.figure)
    return path
