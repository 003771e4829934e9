"""`lab tune`: hyperparameter search with Optuna, on RL Zoo's conventions.

    lab tune ppo --env-id Acrobot-v1 --trials 30 --trial-steps 50000 --study acrobot --workers 2
    lab tune show acrobot                  # top trials, importances, history PNG, the best config
    lab train ppo --config runs/tune/acrobot-best.json

Each trial trains the algorithm (the shared `lab train` flags, plus values drawn from its search space in
``lab/spaces/ALGO.toml``, where each range names its source) for ``--trial-steps`` steps in memory,
reports each of its ``--evaluations`` evaluations to Optuna, and stops as "pruned" when the pruner says so.
The study lives in an Optuna storage: by default an SQLite file runs/tune/STUDY.db (nothing to start);
any storage URL (PostgreSQL, MySQL) lets several `lab tune` processes on several machines share one
study. ``--trials`` is the study's total: running the command again runs only the trials still missing
(those of a process that died on this machine are marked failed and redone). On SQLite the processes
take trials under a file lock, so the total is exact; over a server storage it can overshoot by up to
one trial per extra process.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import socket
import subprocess
import sys
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lab import safefs
from lab.errors import LabError

SPACES = Path(__file__).parent / "spaces"
TUNE_FLAGS = {"--trials", "--trial-steps", "--study", "--storage", "--sampler", "--pruner", "--workers",
              "--evaluations", "--space"}
FIELD_KEYS = {"float", "int", "choices", "log", "one_minus", "source"}


@dataclass
class Space:
    """A search space: the metric to optimize and, per config field, a range or a list of choices."""
    metric: str
    direction: str                                    # maximize | minimize
    fields: dict[str, dict]


@dataclass
class Tuning:
    algo: str
    flags: list[str]
    trials: int
    trial_steps: int
    study: str
    storage: str
    sampler: str = "tpe"
    pruner: str = "median"
    workers: int = 1
    evaluations: int = 10
    space_file: Path | None = None


def default_storage(study: str) -> str:
    """runs/tune/STUDY.db ($LAB_RUNS_DIR/tune/ when set): an SQLite file, nothing to start."""
    return f"sqlite:///{Path(os.environ.get('LAB_RUNS_DIR', 'runs')) / 'tune' / study}.db"


def _optuna():
    try:
        import optuna
    except ModuleNotFoundError:
        raise LabError("lab tune needs Optuna: pip install -e '.[tune]' (or pip install optuna).") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# ---------------------------------------------------------------- the search space
def read_space(path: Path, config_fields: set[str]) -> Space:
    """A search-space file, every entry checked: known fields, non-empty ranges and choices."""
    path = Path(path)
    if not path.exists():
        raise LabError(f"cannot read the search space {path}: there is no such file.")
    try:      # the user's own path, read as --config is: a link followed, a FIFO or device refused, size bounded
        data = safefs.parse(safefs.read_bytes(path.resolve()).decode(), path, tomllib.loads)
    except ValueError as error:                       # not UTF-8 or not TOML
        raise LabError(f"the search space {path} is not valid TOML ({type(error).__name__}).") from None
    objective, fields = data.get("objective", {}), data.get("fields", {})
    if not isinstance(objective, dict) or objective.get("direction") not in ("maximize", "minimize") \
            or not isinstance(objective.get("metric"), str):
        raise LabError(f"{path} needs [objective] with metric = \"eval/...\" and direction = \"maximize\" or \"minimize\".")
    if not isinstance(fields, dict) or not fields:
        raise LabError(f"{path} has no [fields.NAME] entries to search.")
    for name, spec in fields.items():
        where = f"{path}: fields.{name}"
        if name not in config_fields:
            raise LabError(f"{where} is not a config field (known: {', '.join(sorted(config_fields))}).")
        if not isinstance(spec, dict) or set(spec) - FIELD_KEYS:
            raise LabError(f"{where} takes only {', '.join(sorted(FIELD_KEYS))}.")
        kinds = [k for k in ("float", "int", "choices") if k in spec]
        if len(kinds) != 1:
            raise LabError(f"{where} needs exactly one of float = [low, high], int = [low, high] or choices = [...].")
        value = spec[kinds[0]]
        if kinds[0] == "choices" and (not isinstance(value, list) or not value):
            raise LabError(f"{where} has an empty list of choices.")
        if kinds[0] != "choices" and not (isinstance(value, list) and len(value) == 2 and value[0] < value[1]
                                          and (not spec.get("log") or value[0] > 0)):
            raise LabError(f"{where} needs low < high (and low > 0 on a log scale); got {value!r}.")
    return Space(objective["metric"], objective["direction"], fields)


def suggest(trial, name: str, spec: dict):
    if "choices" in spec:
        choice = trial.suggest_categorical(name, [json.dumps(c) if isinstance(c, list) else c for c in spec["choices"]])
        return json.loads(choice) if isinstance(choice, str) and choice.startswith("[") else choice
    low, high = spec.get("float") or spec["int"]
    suggest_number = trial.suggest_float if "float" in spec else trial.suggest_int
    if spec.get("one_minus"):                         # RL Zoo's one_minus_gamma: 1 - x on a log scale
        return 1.0 - suggest_number(f"one_minus_{name}", low, high, log=bool(spec.get("log")))
    return suggest_number(name, low, high, log=bool(spec.get("log")))


# ---------------------------------------------------------------- parsing
def parse_args(argv: list[str]) -> Tuning:
    if not argv or argv[0].startswith("-"):
        raise LabError("usage: lab tune ALGO [lab train flags] --trials N --trial-steps N --study NAME "
                       "[--storage URL] [--sampler tpe|random|cmaes] [--pruner median|halving|none] [--workers N]")
    algo, rest, flags, values = argv[0], argv[1:], [], {}
    i = 0
    while i < len(rest):
        name, eq, inline = rest[i].partition("=")
        if name not in TUNE_FLAGS:
            flags.append(rest[i])
            i += 1
            continue
        if eq:
            values[name], i = inline, i + 1
        elif i + 1 < len(rest):
            values[name], i = rest[i + 1], i + 2
        else:
            raise LabError(f"{name} needs a value.")
    for required in ("--trials", "--trial-steps", "--study"):
        if required not in values:
            raise LabError(f"lab tune needs {required}.")
    if any(f.split("=")[0] in ("--total-steps", "--total_steps") for f in flags):
        raise LabError("lab tune sets each trial's length with --trial-steps, not --total-steps.")
    numbers = {}
    for flag, low in (("--trials", 1), ("--trial-steps", 1), ("--workers", 1), ("--evaluations", 1)):
        try:
            numbers[flag] = int(values.get(flag, 1 if flag == "--workers" else 10))
        except ValueError:
            raise LabError(f"{flag} takes a whole number; got {values[flag]!r}.") from None
        if numbers[flag] < low:
            raise LabError(f"{flag} must be at least {low}, got {numbers[flag]}.")
    sampler, pruner = values.get("--sampler", "tpe"), values.get("--pruner", "median")
    if sampler not in ("tpe", "random", "cmaes"):
        raise LabError(f"--sampler takes tpe, random or cmaes; got {sampler!r}.")
    if pruner not in ("median", "halving", "none"):
        raise LabError(f"--pruner takes median, halving or none; got {pruner!r}.")
    study = values["--study"]
    storage = values.get("--storage") or default_storage(study)
    return Tuning(algo, flags, numbers["--trials"], numbers["--trial-steps"], study, storage, sampler, pruner,
                  numbers["--workers"], numbers["--evaluations"], Path(values["--space"]) if "--space" in values else None)


# ---------------------------------------------------------------- the study
def open_study(optuna, tuning: Tuning, direction: str, create: bool = True):
    # unseeded: processes that share a study must not draw the same values (a study is not bit-reproducible)
    sampler = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
               "cmaes": optuna.samplers.CmaEsSampler}[tuning.sampler]()
    pruner = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=tuning.evaluations // 3),
              "halving": optuna.pruners.SuccessiveHalvingPruner, "none": optuna.pruners.NopPruner}[tuning.pruner]()
    try:
        if not create:
            return optuna.load_study(study_name=tuning.study, storage=tuning.storage, sampler=sampler, pruner=pruner)
        return optuna.create_study(study_name=tuning.study, storage=tuning.storage, sampler=sampler, pruner=pruner,
                                   direction=direction, load_if_exists=True)
    except KeyError:
        raise LabError(f"no study {tuning.study!r} in {tuning.storage}.") from None
    except (ImportError, ValueError, RuntimeError) as error:
        raise LabError(f"cannot open the study {tuning.study!r} at {tuning.storage}: {str(error).splitlines()[0]}") from None
    except Exception as error:                        # SQLAlchemy's errors for a malformed or unreachable URL
        if type(error).__module__.startswith("sqlalchemy"):
            raise LabError(f"cannot open the storage {tuning.storage}: {str(error).splitlines()[0]}") from None
        raise


@contextmanager
def trial_lock(tuning: Tuning):
    """Exclusive between the processes of this machine working on an SQLite study (a no-op elsewhere)."""
    if not tuning.storage.startswith("sqlite:///"):
        yield
        return
    database = Path(tuning.storage[len("sqlite:///"):])
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{database}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def next_trial(optuna, study, total: int):
    """Ask for a trial while the study has fewer than ``total`` (complete, pruned or running) ones; the
    running trials of a dead process of this machine are marked failed first. None when none is missing."""
    state = optuna.trial.TrialState
    here = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(state.RUNNING,)):
        pid, host = trial.user_attrs.get("pid"), trial.user_attrs.get("host")
        if host == here and pid is not None and not _alive(pid):
            study.tell(trial.number, state=state.FAIL)
    counted = study.get_trials(deepcopy=False, states=(state.COMPLETE, state.PRUNED, state.RUNNING))
    if len(counted) >= total:
        return None
    trial = study.ask()
    trial.set_user_attr("pid", os.getpid())
    trial.set_user_attr("host", here)
    return trial


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


# ---------------------------------------------------------------- trials
def run_trial(optuna, trial, tuning: Tuning, module, base: dict, options, space: Space) -> float:
    """Train one trial in memory; its evaluations go to the pruner. Returns the last value of the metric."""
    from lab.config import from_dict, to_dict
    from lab.session import resolve, train_in_memory

    values = {name: suggest(trial, name, spec) for name, spec in space.fields.items()}
    try:
        config = resolve(from_dict(module.Config, {**base, **values, "total_steps": tuning.trial_steps}))
    except (LabError, TypeError, ValueError) as error:
        trial.set_user_attr("refused", str(error))    # a combination the algorithm refuses: pruned, not failed
        raise optuna.TrialPruned() from None
    options = dataclasses.replace(options, eval_every=max(1, tuning.trial_steps // tuning.evaluations))
    trial.set_user_attr("algo", tuning.algo)
    trial.set_user_attr("config", to_dict(config))
    trial.set_user_attr("options", to_dict(options))

    def report(step: int, results: dict) -> bool:
        if space.metric in results:
            trial.report(float(results[space.metric]), step)
            return trial.should_prune()
        return False

    trainer = train_in_memory(tuning.algo, config, options, stop_when=report)
    if trainer.stopped_early:
        raise optuna.TrialPruned()
    scored = [results[space.metric] for _, results in trainer.history if space.metric in results]
    if not scored:
        raise LabError(f"trial {trial.number} never reported {space.metric}; the search space's objective "
                       "must be a metric the algorithm evaluates.")
    return float(scored[-1])


def prepare(tuning: Tuning):
    """Everything checked before a trial runs: Optuna, the search space, the flags, the storage."""
    from lab import registry
    from lab.cli import parse_train

    optuna = _optuna()
    _, module = registry.get(tuning.algo)
    space_file = tuning.space_file or SPACES / f"{tuning.algo}.toml"
    if not space_file.is_file() and tuning.space_file is None:
        raise LabError(f"no search space for {tuning.algo} in {SPACES}; write one and pass --space FILE.")
    space = read_space(space_file, {f.name for f in dataclasses.fields(module.Config)})
    parsed = parse_train(tuning.algo, tuning.flags)
    with trial_lock(tuning):                         # two processes creating one SQLite file would collide
        study = open_study(optuna, tuning, space.direction)
    return optuna, module, space, parsed, study


def work(tuning: Tuning, echo=print) -> None:
    """One process's share: take and run trials until the study has ``tuning.trials``."""
    from lab.config import to_dict

    optuna, module, space, parsed, study = prepare(tuning)
    base = to_dict(parsed.algo)
    while True:
        with trial_lock(tuning):
            trial = next_trial(optuna, study, tuning.trials)
        if trial is None:
            return
        try:
            value = run_trial(optuna, trial, tuning, module, base, parsed.run, space)
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            echo(f"trial {trial.number}: pruned {trial.user_attrs.get('refused', '')}".rstrip())
            continue
        except BaseException:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        study.tell(trial, value)
        echo(f"trial {trial.number}: {space.metric} {value:.4g} ({_params(trial.params)})")


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def tune(tuning: Tuning) -> int:
    """Run ``tuning.workers`` processes on the study (this one alone when there is one)."""
    if tuning.workers == 1:
        work(tuning)
        return 0
    argv = [tuning.algo, *tuning.flags, "--trials", str(tuning.trials), "--trial-steps", str(tuning.trial_steps),
            "--study", tuning.study, "--storage", tuning.storage, "--sampler", tuning.sampler,
            "--pruner", tuning.pruner, "--evaluations", str(tuning.evaluations), "--workers", "1"]
    if tuning.space_file is not None:
        argv += ["--space", str(tuning.space_file)]
    threads = str(max(1, (os.cpu_count() or 1) // tuning.workers))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)}
    prepare(tuning)                                  # bad input is refused once, before any process starts
    processes = [subprocess.Popen([sys.executable, "-m", "lab", "tune", *argv], env=env) for _ in range(tuning.workers)]
    codes = [p.wait() for p in processes]
    return max(codes, key=abs)


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv and argv[0] == "show":
        from lab.tune_show import show
        return show(argv[1:])
    return tune(parse_args(argv))
