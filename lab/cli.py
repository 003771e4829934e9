"""The `lab` command: every algorithm's config dataclass becomes the flags of a sub-command,
so the help text, the saved config and the code can never disagree.

    lab train ALGO [--field value ...]     train; writes runs/<algo>-<data>-<time>-s<seed>/
    lab resume RUN_DIR [--total-steps N]   continue a run exactly where it stopped
    lab eval RUN_DIR [options]             evaluate a checkpoint (best.pt, else last.pt)
    lab sample RUN_DIR [options]           draw samples from a generative run
    lab solve [options]                    solve a tabular MDP exactly
    lab export RUN_DIR [--format F]        the trained networks as safetensors (or a diffusers folder)
    lab plot RUN_DIR [RUN_DIR ...]         learning curves (mean ± std over seeds) as PNG
    lab sweep ALGO [flags] --seeds 0-4 --grid FIELD=V1,V2   many runs (grid x seeds) in parallel, resumable
    lab report DIR                          a sweep's (or a folder of runs') results: IQM, intervals, P(improvement)
    lab tune ALGO [flags] --trials N --trial-steps N --study NAME   Optuna search; lab tune show NAME
    lab list [algorithms|envs|datasets|runs]  what is available here; the runs and their state
    lab bench NAME [args]                  run a benchmark from bench/
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import io
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Generic, Literal, TypeVar

import tyro

from lab import registry
from lab.errors import LabError
from lab.runtime import RunOptions

C = TypeVar("C")
_TYRO = (tyro.conf.OmitArgPrefixes,)
Device = Literal["auto", "cpu", "cuda", "mps"] | None

LISTINGS = {
    "algorithms": "lab.registry:describe",
    "envs": "envs:describe",
    "datasets": "generative.data:describe",
    "runs": "lab.rundir:describe_runs",
}
DELEGATED = {"solve": "rl.mdp.cli:main", "sweep": "lab.sweeps:main", "report": "lab.report:main",
             "tune": "lab.tune:main"}


@dataclass(frozen=True)
class TrainCommand(Generic[C]):
    algo: C
    run: RunOptions = RunOptions()
    preset: str | None = None
    """Start from this preset (lab/presets/ALGO.toml; by default the one matching the env or data fills
    only the fields left unset). Precedence: field defaults < --preset < --config < flags."""
    config: Path | None = None
    """Start from this JSON / TOML file of fields, or a run's config.json (rerun it, e.g. with another --seed)."""


@dataclass(frozen=True)
class ResumeCommand:
    """Continue a run from its last checkpoint, exactly where it stopped."""
    run_dir: tyro.conf.Positional[Path]
    """The run folder to continue."""
    total_steps: int | None = None
    """Train until this step instead of the saved total."""
    device: Device = None
    """Train on this device instead of the saved one."""


@dataclass(frozen=True)
class ExportCommand:
    """Write a run's trained networks in a portable format, with config.json and a model card."""
    run_dir: tyro.conf.Positional[Path]
    """The run folder."""
    format: Literal["safetensors", "diffusers"] = "safetensors"
    """safetensors: every network's weights; diffusers: a DDPM run as a DDPMPipeline folder."""
    checkpoint: str = "best"
    """best, last or a checkpoint path."""
    out: Path | None = None
    """Folder to write (default: RUN_DIR/export-FORMAT)."""


@dataclass(frozen=True)
class PlotCommand:
    """Draw learning curves of one or more runs (aggregated over runs of the same config) as a PNG; `lab eval`
    results as points."""
    run_dirs: tyro.conf.Positional[tuple[Path, ...]]
    """Run folders to plot (a sweep folder, or a folder of runs, stands for its runs)."""
    metric: tuple[str, ...] = ()
    """Metric keys to draw (default: the usual return / loss / FID keys the runs have)."""
    out: Path | None = None
    """Where to write the PNG (default: RUN_DIR/plots/curves.png, or runs/curves-<time>.png for several runs)."""
    aggregate: Literal["mean-std", "mean-ci", "iqm-ci"] = "mean-std"
    """Across seeds: mean ± std, mean with a 95% bootstrap interval, or the interquartile mean with one (rliable)."""


def parse_flags(command: type[C], args: list[str], prog: str, **tyro_options) -> C:
    """``tyro.cli`` whose refusal of a flag (an unknown flag, a value that is not one of the choices) is the
    lab's one line ``lab: error: ...`` instead of tyro's box; help and every other output are tyro's."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            parsed = tyro.cli(command, args=args, prog=prog, **tyro_options)
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise LabError(_one_line(captured.getvalue(), prog)) from None
        raise
    sys.stderr.write(captured.getvalue())
    return parsed


def _one_line(box: str, prog: str) -> str:
    """tyro's error box (a title, the message, a hint to run --help) as one sentence."""
    lines = [line.strip(" │╭╮╰╯─-") for line in box.splitlines()[1:]]
    message = " ".join(line for line in lines if line and not line.startswith("For full helptext"))
    return f"{' '.join(message.split())} (`{prog} --help` lists the flags)"


def _load(target: str):
    module, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as error:
        if error.name and module.startswith(error.name):
            raise LabError(f"{module} is not part of this install yet.") from None
        raise


# ---------------------------------------------------------------- sub-commands
def cmd_train(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print("usage: lab train ALGO [--flag value ...]   (lab train ALGO --help lists the flags)\n\nalgorithms:")
        _print_rows(registry.describe())
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    name, rest = argv[0], argv[1:]
    parsed = parse_train(name, rest)
    from lab.session import train
    status, path = train(name, parsed.algo, parsed.run)
    if path is not None:
        print(f"run folder: {path}")
    return status


def parse_train(name: str, flags: list[str]) -> TrainCommand:
    """The config and run options that `lab train NAME FLAGS` would train with (nothing is created)."""
    spec, module = registry.get(name)
    from lab.presets import base_config
    preset, config_file = _early_flag(flags, "--preset"), _early_flag(flags, "--config")
    config, options = base_config(name, module, preset, None if config_file is None else Path(config_file))
    default = TrainCommand(algo=config, run=options, preset=preset,
                           config=None if config_file is None else Path(config_file))
    return parse_flags(TrainCommand[module.Config], flags, f"lab train {name}", default=default,
                       description=(module.Config.__doc__ or spec.summary), config=_TYRO)


def _early_flag(argv: list[str], flag: str) -> str | None:
    """The value of ``flag`` (``--flag V`` or ``--flag=V``), read before the other flags are parsed."""
    for i, arg in enumerate(argv):
        if arg == flag:
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise LabError(f"{flag} needs a value.")
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def cmd_resume(argv: list[str]) -> int:
    allowed = {"--total-steps", "--total_steps", "--device", "-h", "--help"}
    extra = [a.split("=")[0] for a in argv if a.startswith(("--", "-h")) and a.split("=")[0] not in allowed]
    if extra:
        raise LabError(f"lab resume takes only --total-steps and --device; a run's other settings are fixed "
                       f"in its config.json (got {extra[0]}). Start a new run to change them.")
    args = parse_flags(ResumeCommand, argv, "lab resume")
    from lab.session import resume
    return resume(args.run_dir, args.total_steps, args.device)


def _run_dir_argument(argv: list[str]) -> Path | None:
    for arg in argv:
        if not arg.startswith("-") and (Path(arg) / "config.json").is_file():
            return Path(arg)
    for arg in argv:
        if not arg.startswith("-"):
            return Path(arg)
    return None


def _algorithm_of(argv: list[str], verb: str) -> str | None:
    """The algorithm whose options ``lab eval|sample`` takes: the run folder's, or under --help an
    algorithm named instead of a run folder (``lab eval --help dqn``); None for --help alone."""
    run_dir = _run_dir_argument(argv)
    if any(a in ("-h", "--help") for a in argv) and not (run_dir and (run_dir / "config.json").is_file()):
        if run_dir is None:
            return None
        registry.get(str(run_dir))          # an unknown name is one line naming the known ones
        return str(run_dir)
    if run_dir is None:
        raise LabError(f"lab {verb} needs a run folder: lab {verb} RUN_DIR [options].")
    from lab.rundir import RunDir
    return RunDir.open(run_dir).read_config().get("algo", "?")


def _algorithms_with(options_attr: str) -> list[str]:
    return [name for name in registry.ALGORITHMS if hasattr(registry.get(name)[1], options_attr)]


def _run_command(argv: list[str], verb: str, options_attr: str, doc: str):
    """Parse ``lab eval|sample RUN_DIR [--checkpoint] [--device] [--json] [algorithm options]``."""
    algo = _algorithm_of(argv, verb)
    options_cls = None if algo is None else getattr(registry.get(algo)[1], options_attr, None)
    fields = [
        ("run_dir", tyro.conf.Positional[Annotated[Path, tyro.conf.arg(metavar="RUN_DIR", help="The run folder.")]],
         field()),
        ("checkpoint", Annotated[str, tyro.conf.arg(help="best, last or a checkpoint's path.")],
         field(default="best")),
        ("device", Annotated[Device, tyro.conf.arg(help="Run on this device instead of the saved one.")],
         field(default=None)),
        ("json", Annotated[bool, tyro.conf.arg(help="Print the results as JSON.")], field(default=False)),
    ]
    description = doc
    if options_cls is not None:
        fields.append((algo.replace("-", "_"), options_cls, field(default_factory=options_cls)))
    else:
        description = (f"{doc}\n\nEach algorithm adds its own options: lab {verb} --help ALGO lists them, for ALGO "
                       f"one of {', '.join(_algorithms_with(options_attr))}.")
    command = dataclasses.make_dataclass(f"{verb.title()}Command", fields, frozen=True)
    args = parse_flags(command, argv, f"lab {verb}", description=description, config=_TYRO)
    return args, None if options_cls is None else getattr(args, algo.replace("-", "_"))


def cmd_eval(argv: list[str]) -> int:
    args, options = _run_command(argv, "eval", "EvalOptions", "Evaluate a run's checkpoint; results join its metrics.")
    from lab.session import ResultsNotRecorded, evaluate, scalars
    try:
        result = evaluate(args.run_dir, options, args.checkpoint, args.device)
    except ResultsNotRecorded as error:     # the numbers were computed: show them before the error line
        _print_eval({"step": error.step, "metrics": scalars(error.results), "files": []}, args)
        raise
    _print_eval(result, args)
    return 0


def _print_eval(result: dict, args) -> None:
    from lab.session import dump_json, format_table
    if args.json:
        print(dump_json(result))
    else:
        print(f"{args.run_dir} at step {result['step']}:")
        print(format_table(result["metrics"]))
        for path in result["files"]:
            print(f"wrote {path}")


def cmd_sample(argv: list[str]) -> int:
    args, options = _run_command(argv, "sample", "SampleOptions", "Draw samples from a generative run.")
    from lab.session import dump_json, sample
    files = sample(args.run_dir, options, args.checkpoint, args.device)
    print(dump_json({"files": files}) if args.json else "\n".join(f"wrote {p}" for p in files))
    return 0


def cmd_export(argv: list[str]) -> int:
    args = parse_flags(ExportCommand, argv, "lab export")
    from lab.export import export
    print(f"wrote {export(args.run_dir, args.format, args.checkpoint, args.out)}")
    return 0


def cmd_plot(argv: list[str]) -> int:
    args = parse_flags(PlotCommand, argv, "lab plot")
    if not args.run_dirs:
        raise LabError("lab plot needs at least one run folder.")
    from lab.plot import plot_runs
    print(f"wrote {plot_runs(list(args.run_dirs), list(args.metric) or None, args.out, args.aggregate)}")
    return 0


def cmd_list(argv: list[str]) -> int:
    what = argv[0] if argv else None
    if what in ("-h", "--help"):
        print("usage: lab list [algorithms|envs|datasets|runs]   (runs: the folders under ./runs, or $LAB_RUNS_DIR)")
        return 0
    if what is not None and what not in LISTINGS:
        raise LabError(f"lab list takes one of {', '.join(LISTINGS)}; got {what!r}.")
    for name, target in LISTINGS.items():
        if what in (None, name):
            print(f"{name}:")
            try:
                _print_rows(_load(target)())
            except LabError as error:
                print(f"  ({error})")
    return 0


def cmd_bench(argv: list[str]) -> int:
    bench_dir = Path(__file__).resolve().parent.parent / "bench"
    names = sorted(p.stem.replace("_", "-") for p in bench_dir.glob("*.py") if not p.stem.startswith("_"))
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: lab bench NAME [args]   benchmarks: " + (", ".join(names) or "none yet"))
        return 0 if argv else 2
    if argv[0] not in names:
        raise LabError(f"unknown benchmark {argv[0]!r}; known: {', '.join(names) or 'none yet'}.")
    if str(bench_dir.parent) not in sys.path:      # benchmarks import each other as bench.<name>
        sys.path.insert(0, str(bench_dir.parent))
    path = bench_dir / (argv[0].replace("-", "_") + ".py")
    spec = importlib.util.spec_from_file_location(f"bench.{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module.main(argv[1:]) or 0


def _print_rows(rows) -> None:
    rows = [tuple(str(c) for c in row) for row in rows]
    if not rows:
        print("  (none)")
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])


COMMANDS = {
    "train": cmd_train, "resume": cmd_resume, "eval": cmd_eval, "sample": cmd_sample,
    "plot": cmd_plot, "list": cmd_list, "bench": cmd_bench, "export": cmd_export,
}


def dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip().split("\n\n", 1)[1] if argv else __doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command in DELEGATED:
        return _load(DELEGATED[command])(rest) or 0
    if command not in COMMANDS:
        known = ", ".join(list(COMMANDS) + list(DELEGATED))
        raise LabError(f"unknown command {command!r}; commands: {known}.")
    return COMMANDS[command](rest)


def main(argv: list[str] | None = None) -> None:
    try:
        status = dispatch(sys.argv[1:] if argv is None else list(argv))
    except LabError as error:
        print(f"lab: error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("lab: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:                 # `lab list runs | head`: the reader left; nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    sys.exit(status)
