"""`lab sweep`: many runs of one algorithm, a grid of config values times seeds, each an ordinary run folder
under one sweep folder, run by a pool of worker processes and continued by running the same command again.

    lab sweep ppo --env-id CartPole-v1 --seeds 0-4 --grid lr=3e-4,1e-3 --workers 2 --sweep-dir runs/sweeps/lr
    lab report runs/sweeps/lr

Each run is `lab train ALGO FLAGS --FIELD VALUE ... --seed S --run-dir SWEEP/<name>` in a process of its own,
so it has every guarantee of `lab train` (exact resume, atomic checkpoints, the lock). ``SWEEP/sweep.json``,
the manifest, records the command, the grid, the seeds and each run's flags and last outcome; the run
folders' own status is the truth it is read from. Every run's flags are parsed and its config resolved
before anything is created, so one bad value refuses the whole sweep. Running the same command again skips
finished runs, continues interrupted ones exactly (`lab resume`), and reports failed ones, which it retries
only with ``--retry-failed``. Ctrl-C or SIGTERM stops every run at a checkpoint (each run also gets SIGTERM
if the sweep process dies, on Linux); a run killed on its own is reported failed and the others go on.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path

from lab import safefs
from lab.errors import LabError
from lab.launchers import LocalLauncher, RayLauncher
from lab.progress import Progress
from lab.rundir import RunDir

MANIFEST = "sweep.json"
SWEEP_FLAGS = {"--seeds", "--grid", "--workers", "--sweep-dir", "--launcher", "--ray-address", "--retry-failed"}
ASSIGNED = {"seed", "run_dir", "runs_dir"}        # fields the sweep sets for each run itself


@dataclass
class Sweep:
    """What `lab sweep` was asked to run."""
    algo: str
    flags: list[str]                               # `lab train ALGO` flags shared by every run
    grid: list[tuple[str, list[str]]]              # (field, values) in the order given
    seeds: list[int]
    sweep_dir: Path
    workers: int = 1
    launcher: str = "local"
    retry_failed: bool = False
    ray_address: str | None = None

    def identity(self) -> dict:
        """What makes two sweeps the same sweep (the manifest must match it to be continued)."""
        return {"algo": self.algo, "flags": self.flags, "grid": [[f, v] for f, v in self.grid], "seeds": self.seeds}


@dataclass
class PlannedRun:
    name: str
    seed: int
    values: dict[str, str]
    path: Path
    train_args: list[str]                          # `lab` arguments that start it


@dataclass
class Outcome:
    name: str
    state: str                                     # finished | failed | stopped | skipped-failed | busy
    exit_code: int | None = None
    seconds: float = 0.0
    message: str = ""


# ---------------------------------------------------------------- parsing
def parse_seeds(text: str) -> list[int]:
    """``0-9``, ``0,3,7`` or ``5`` (ranges inclusive)."""
    seeds: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise LabError(f"--seeds takes seeds like 0-9 or 0,3,7; got {text!r}.")
        low, high = int(match[1]), int(match[2] if match[2] is not None else match[1])
        if high < low:
            raise LabError(f"--seeds range {part.strip()!r} runs backwards; write {high}-{low}.")
        seeds += range(low, high + 1)
    if len(set(seeds)) != len(seeds):
        raise LabError(f"--seeds {text!r} names a seed twice.")
    return seeds


def parse_grid(entry: str) -> tuple[str, list[str]]:
    """``FIELD=V1,V2`` (a value with spaces is a tuple: ``hidden=64 64,256 256``)."""
    name, sep, values = entry.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not name or not values.strip():
        raise LabError(f"--grid takes FIELD=VALUE,VALUE; got {entry!r}.")
    parts = [v.strip() for v in values.split(",")]
    if any(not v for v in parts) or len(set(parts)) != len(parts):
        raise LabError(f"--grid {entry!r} has an empty or repeated value.")
    return name, parts


def parse_args(argv: list[str]) -> Sweep:
    """`lab sweep ALGO [train flags] [sweep flags]`; the sweep flags are taken out, the rest are train flags."""
    if not argv or argv[0].startswith("-"):
        raise LabError("usage: lab sweep ALGO [lab train flags] --seeds 0-4 [--grid FIELD=V1,V2 ...] "
                       "[--workers N] [--sweep-dir DIR] [--retry-failed]")
    algo, rest = argv[0], argv[1:]
    flags, grid, values = [], [], {}
    i = 0
    while i < len(rest):
        arg = rest[i]
        name, eq, inline = arg.partition("=")
        if name not in SWEEP_FLAGS:
            flags.append(arg)
            i += 1
            continue
        if name == "--retry-failed":
            values[name] = True
            i += 1
            continue
        if eq:
            value, i = inline, i + 1
        elif i + 1 < len(rest) and not rest[i + 1].startswith("--"):
            value, i = rest[i + 1], i + 2
        else:
            raise LabError(f"{name} needs a value.")
        if name == "--grid":
            grid.append(parse_grid(value))
        else:
            values[name] = value
    return _build(algo, flags, grid, values)


def _build(algo: str, flags: list[str], grid: list[tuple[str, list[str]]], values: dict) -> Sweep:
    if "--seeds" not in values:
        raise LabError("lab sweep needs --seeds (for example --seeds 0-4).")
    try:
        workers = int(values.get("--workers", 1))
    except ValueError:
        raise LabError(f"--workers takes a whole number; got {values['--workers']!r}.") from None
    sweep_dir = values.get("--sweep-dir")
    return new_sweep(algo, flags, grid, parse_seeds(values["--seeds"]), workers,
                     None if sweep_dir is None else Path(sweep_dir), values.get("--launcher", "local"),
                     bool(values.get("--retry-failed")), values.get("--ray-address"))


def new_sweep(algo: str, flags: list[str], grid: list[tuple[str, list[str]]], seeds: list[int], workers: int = 1,
              sweep_dir: Path | None = None, launcher: str = "local", retry_failed: bool = False,
              ray_address: str | None = None) -> Sweep:
    """A checked ``Sweep``; without ``sweep_dir``, runs/sweeps/ALGO-<hash of the sweep> (the same command
    finds the same folder again)."""
    for flag in flags:
        if flag.split("=")[0].lstrip("-").replace("-", "_") in ASSIGNED:
            raise LabError(f"lab sweep sets {flag.split('=')[0]} for each run itself; use --seeds and --sweep-dir.")
    names = [name for name, _ in grid]
    if len(set(names)) != len(names):
        raise LabError(f"--grid names {sorted(n for n in names if names.count(n) > 1)[0]!r} twice.")
    if workers < 1:
        raise LabError(f"--workers must be at least 1, got {workers}.")
    if launcher not in ("local", "ray"):
        raise LabError(f"--launcher takes local or ray; got {launcher!r}.")
    if ray_address is not None and launcher != "ray":
        raise LabError("--ray-address goes with --launcher ray.")
    if not seeds or any(not isinstance(s, int) or s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise LabError(f"seeds must be distinct whole numbers >= 0; got {seeds!r}.")
    sweep = Sweep(algo, list(flags), list(grid), list(seeds), Path("."), workers, launcher, retry_failed, ray_address)
    if sweep_dir is None:
        digest = hashlib.blake2b(json.dumps(sweep.identity()).encode(), digest_size=4).hexdigest()
        sweep_dir = Path(os.environ.get("LAB_RUNS_DIR", "runs")) / "sweeps" / f"{algo}-{digest}"
    sweep.sweep_dir = Path(sweep_dir)
    return sweep


def command_line(sweep: Sweep) -> str:
    """The `lab sweep` command that runs (and continues) ``sweep``."""
    parts = ["lab", "sweep", sweep.algo, *sweep.flags, "--seeds", ",".join(map(str, sweep.seeds))]
    for name, values in sweep.grid:
        parts += ["--grid", f"{name}={','.join(values)}"]
    parts += ["--workers", str(sweep.workers), "--sweep-dir", str(sweep.sweep_dir), "--launcher", sweep.launcher]
    if sweep.ray_address:
        parts += ["--ray-address", sweep.ray_address]
    return " ".join(f"'{p}'" if " " in p else p for p in parts)


# ---------------------------------------------------------------- planning
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+]+", "_", text).strip("_")


def plan(sweep: Sweep) -> list[PlannedRun]:
    """Every run of the sweep, its flags parsed and its config resolved as `lab train` would (nothing created)."""
    from lab import registry
    from lab.cli import parse_train
    from lab.runtime import RunOptions
    from lab.session import resolve

    _, module = registry.get(sweep.algo)
    known = {f.name for f in dataclasses.fields(module.Config)} | {f.name for f in dataclasses.fields(RunOptions)}
    for name, _ in sweep.grid:
        if name not in known or name in ASSIGNED:
            import difflib
            close = difflib.get_close_matches(name, sorted(known - ASSIGNED), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise LabError(f"--grid field {name!r} is not a field of lab train {sweep.algo}.{hint}")
    runs = []
    for combination in itertools.product(*[[(name, v) for v in values] for name, values in sweep.grid]):
        values = dict(combination)
        for seed in sweep.seeds:
            name = "-".join([_slug(f"{k}={v}") for k, v in values.items()] + [f"s{seed}"])
            path = sweep.sweep_dir / name
            flags = list(sweep.flags)
            for key, value in values.items():
                flags += [f"--{key.replace('_', '-')}", *value.split()]
            flags += ["--seed", str(seed), "--run-dir", str(path)]
            try:
                resolve(parse_train(sweep.algo, flags).algo)
            except LabError as error:
                raise LabError(f"run {name} of the sweep is refused, so no run starts: {error}") from None
            runs.append(PlannedRun(name, seed, values, path, ["train", sweep.algo, *flags]))
    return runs


# ---------------------------------------------------------------- the manifest
def read_manifest(folder: Path) -> dict:
    """FOLDER/sweep.json, read as every run-folder file is (no link followed, size and depth bounded)."""
    path = Path(folder) / MANIFEST
    try:
        manifest = safefs.parse(safefs.read_bytes(path, Path(folder)), path)
    except ValueError as error:                        # not UTF-8 or not JSON
        raise LabError(f"{path} is unreadable or corrupt ({type(error).__name__}).") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("runs"), dict):
        raise LabError(f"{path} is corrupt: it is not a sweep manifest.")
    return manifest


def open_manifest(sweep: Sweep) -> dict:
    """The sweep folder's manifest: a new one, or the existing one if it describes this very sweep."""
    path = sweep.sweep_dir / MANIFEST
    if sweep.sweep_dir.exists() and not sweep.sweep_dir.is_dir():
        raise LabError(f"{sweep.sweep_dir} exists and is not a folder.")
    if not os.path.lexists(path):
        if sweep.sweep_dir.is_dir() and any(p.name != ".lock" for p in sweep.sweep_dir.iterdir()):
            raise LabError(f"{sweep.sweep_dir} is not empty and holds no {MANIFEST}; pick another --sweep-dir.")
        return {"format": 1, **sweep.identity(), "command": command_line(sweep), "runs": {}}
    manifest = read_manifest(sweep.sweep_dir)
    for key, value in sweep.identity().items():
        if manifest.get(key) != value:
            raise LabError(f"{sweep.sweep_dir} holds another sweep: its {key} is {manifest.get(key)!r}, this "
                           f"command's is {value!r}; pick another --sweep-dir or repeat that sweep's command.")
    return manifest


def next_step(run: PlannedRun, retry_failed: bool) -> tuple[str, list[str] | None]:
    """(what the run's folder says, the `lab` arguments that take it further, or None to leave it)."""
    if not (run.path / "config.json").is_file():
        return "new", run.train_args
    folder = RunDir(run.path)
    if folder.is_locked_by_another():
        return "busy", None
    state = folder.status().get("state", "no status")
    if state == "finished":
        return state, None
    if state == "failed" and not retry_failed:
        return state, None
    return state, ["resume", str(run.path)]


# ---------------------------------------------------------------- running
def run_sweep(sweep: Sweep, echo=print) -> tuple[list[Outcome], str | None]:
    """Validate, then run or continue every run of ``sweep``; returns one outcome per run and the signal
    that stopped the sweep (None if none did)."""
    runs = plan(sweep)
    manifest = open_manifest(sweep)
    log_dir = sweep.sweep_dir / "logs"
    launcher = (LocalLauncher(sweep.workers, log_dir) if sweep.launcher == "local"    # Ray may refuse here,
                else RayLauncher(sweep.workers, log_dir, sweep.ray_address))          # before anything is made
    sweep.sweep_dir.mkdir(parents=True, exist_ok=True)
    folder = RunDir(sweep.sweep_dir)
    folder.lock()                                   # one `lab sweep` per sweep folder at a time
    try:
        return _run(sweep, runs, manifest, folder, launcher, echo)
    finally:
        folder.unlock()


def _run(sweep: Sweep, runs: list[PlannedRun], manifest: dict, folder: RunDir, launcher,
         echo) -> tuple[list[Outcome], str | None]:
    by_name = {run.name: run for run in runs}
    outcomes: dict[str, Outcome] = {}
    jobs = []
    for run in runs:
        state, args = next_step(run, sweep.retry_failed)
        manifest["runs"].setdefault(run.name, {"seed": run.seed, "values": run.values, "args": run.train_args,
                                              "attempts": []})
        if args is None:
            outcomes[run.name] = Outcome(run.name, {"failed": "skipped-failed"}.get(state, state))
        else:
            jobs.append((run.name, args))
    skipped = {o.state for o in outcomes.values()}
    echo(f"sweep {sweep.sweep_dir}: {len(runs)} runs, {len(jobs)} to run"
         + (f" ({', '.join(f'{sum(o.state == s for o in outcomes.values())} {s}' for s in sorted(skipped))})"
            if outcomes else "") + f", {sweep.workers} at a time")
    folder.write_json(MANIFEST, manifest)
    log_dir = launcher.log_dir
    log_dir.mkdir(exist_ok=True)
    progress = Progress(total=len(runs), what="sweep", unit="run", initial=len(outcomes))

    def done(name: str, exit_code: int, seconds: float) -> None:
        state = RunDir(by_name[name].path).status().get("state", "failed") if exit_code >= 0 else "failed"
        if exit_code != 0 and state in ("running", "dead", "finished"):
            state = "failed"
        message = f"killed by {signal.Signals(-exit_code).name}" if exit_code < 0 else ""
        outcomes[name] = Outcome(name, state, exit_code, seconds, message)
        manifest["runs"][name]["attempts"].append({"exit_code": exit_code, "state": state, "seconds": round(seconds, 1)})
        folder.write_json(MANIFEST, manifest)
        progress.update(1)
        detail = message or (f"exit {exit_code}, see {log_dir / (name + '.log')}" if exit_code else "")
        progress.write(f"{name}: {state} in {seconds:.0f} s" + (f" ({detail})" if detail else ""))

    try:
        launcher.run(jobs, done)
    finally:
        progress.close()
    if launcher.stopping:
        echo(f"sweep stopped by {launcher.stopping}: every run checkpointed; run the same command to continue.")
    return [outcomes.get(run.name, Outcome(run.name, "not started")) for run in runs], launcher.stopping


def exit_status(outcomes: list[Outcome], stopped_by: str | None) -> int:
    """0 when every run finished, 128 + the signal when the sweep was stopped, else 1."""
    if stopped_by is not None:
        return 128 + signal.Signals[stopped_by]
    return 0 if all(o.state == "finished" for o in outcomes) else 1


def sweep(algo: str, *, seeds, grid: dict | None = None, workers: int = 1, sweep_dir: str | Path | None = None,
          retry_failed: bool = False, launcher: str = "local", ray_address: str | None = None,
          **fields) -> list[Outcome]:
    """`lab sweep` from Python: ``grid`` maps fields to lists of values, ``fields`` are shared config fields
    and run options (as for ``lab.train``). Returns one ``Outcome`` per run (``.name``, ``.state``)."""
    flags = [token for name, value in fields.items() for token in _flag(name, value)]
    grid_entries = [(name.replace("-", "_"), [_flag_value(v) for v in values]) for name, values in (grid or {}).items()]
    outcomes, _ = run_sweep(new_sweep(algo, flags, grid_entries, list(seeds), workers,
                                      None if sweep_dir is None else Path(sweep_dir), launcher, retry_failed,
                                      ray_address))
    return outcomes


def _flag(name: str, value) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [flag if value else "--no-" + name.replace("_", "-")]
    if isinstance(value, (tuple, list)):
        return [flag, *map(str, value)]
    return [flag, str(value)]


def _flag_value(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    sweep = parse_args(argv)
    outcomes, stopped_by = run_sweep(sweep)
    counts = {s: sum(o.state == s for o in outcomes) for s in dict.fromkeys(o.state for o in outcomes)}
    print(f"sweep {sweep.sweep_dir}: " + ", ".join(f"{n} {s}" for s, n in counts.items())
          + f"; lab report {sweep.sweep_dir} compares them.")
    return exit_status(outcomes, stopped_by)
