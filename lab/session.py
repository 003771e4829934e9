"""Start, resume, evaluate and sample runs: the glue between the CLI, run folders and the trainer."""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lab import checkpoint, registry, safefs
from lab.config import differences, from_dict, to_dict
from lab.errors import LabError
from lab.logger import Logger, to_float
from lab.media import Arrays, Image, Video
from lab.rundir import RunDir
from lab.runtime import RunOptions, Runtime
from lab.trainer import EvalCallback, Trainer


def resolve(config: Any) -> Any:
    """The config an algorithm sees and config.json records: derived defaults written in (``resolved()``)."""
    return config.resolved() if hasattr(config, "resolved") else config


def train(algo: str, config: Any, options: RunOptions) -> tuple[int, Path | None]:
    """Build the algorithm (bad input fails before any folder exists), create the run folder, train.
    Returns the exit status and the run folder (None on ranks other than 0)."""
    with _trainer(algo, config, options, with_folder=True) as trainer:
        status = trainer.fit()
    return status, trainer.run.path if trainer.run else None


def train_in_memory(algo: str, config: Any, options: RunOptions = RunOptions(device="cpu"), *,
                    eval_options: Any = None, stop_when: EvalCallback | None = None) -> Trainer:
    """Train without a run folder (tests, benchmarks, notebooks): the same trainer, cadence and checks
    as ``lab train``, nothing written. ``stop_when(step, results)`` ends the run at an evaluation.

    Returns the trainer: ``.algorithm`` (its envs closed), ``.history`` of evaluations, ``.step``,
    ``.stopped_early``, ``.train_seconds`` and ``.train_cpu_seconds`` (evaluation time excluded).
    """
    with in_memory_trainer(algo, config, options, eval_options=eval_options, stop_when=stop_when) as trainer:
        trainer.fit()
    return trainer


@contextmanager
def in_memory_trainer(algo: str, config: Any, options: RunOptions = RunOptions(device="cpu"), *,
                      eval_options: Any = None, stop_when: EvalCallback | None = None) -> Iterator[Trainer]:
    """The trainer of ``train_in_memory`` before it has trained, for callers that train in pieces with
    ``trainer.fit(until=step)`` (a benchmark alternating with a peer, or timing one phase). On leaving the
    block the algorithm is closed (its envs) and the runtime released; the trainer and its algorithm stay
    readable."""
    with _trainer(algo, config, options, with_folder=False, eval_options=eval_options,
                  stop_when=stop_when) as trainer:
        yield trainer


@contextmanager
def _trainer(algo: str, config: Any, options: RunOptions, *, with_folder: bool, eval_options: Any = None,
             stop_when: EvalCallback | None = None) -> Iterator[Trainer]:
    _, module = registry.get(algo)
    config = resolve(config)
    runtime = Runtime(options)
    algorithm = run = None
    try:
        algorithm = module.Algorithm(config, runtime)
        if with_folder and runtime.is_main:
            path = options.run_dir or RunDir.default_path(options.runs_dir, algo, config.run_label(), options.seed)
            run = RunDir.create(path, {"algo": algo, "config": to_dict(config), "options": to_dict(options)})
        yield Trainer(algo, config, options, runtime, algorithm, run, eval_options=eval_options,
                      on_evaluate=stop_when)
    finally:
        _close(algorithm)
        if run is not None:
            run.unlock()
        runtime.close()


def _close(algorithm: Any) -> None:
    close = getattr(algorithm, "close", None)
    if callable(close):
        close()


def load_run(path: Path, which: str = "last", lock: bool = False) -> tuple[RunDir, dict, Any, Any, RunOptions, dict | None]:
    """Open a run folder and its checkpoint: (run, saved config.json, module, config, options, checkpoint).

    The checkpoint is None only for ``which="last"`` when the run never wrote one (a resume starts it
    over). ``lock=True`` makes this process the folder's only writer first.
    """
    run = RunDir.open(path)
    if lock:
        run.lock()
    saved = run.read_config()
    if "algo" not in saved or "config" not in saved:
        raise LabError(f"{run.config_file} is missing the algorithm or its config; is {path} a lab run?")
    _, module = registry.get(saved["algo"])
    config = _config_from(module.Config, saved["config"], run.config_file)
    options = _config_from(RunOptions, saved.get("options", {}), run.config_file)
    ckpt_path = {"last": run.last_checkpoint, "best": run.best_checkpoint}.get(which, Path(which).resolve())
    root = run.path if which in ("last", "best") else None     # a path the user named may be a link
    if which == "best" and not safefs.lexists(ckpt_path, root):
        ckpt_path = run.last_checkpoint
    if not safefs.lexists(ckpt_path, root):
        if which == "last" and lock:
            return run, saved, module, config, options, None
        raise LabError(f"{path} has no checkpoint yet ({ckpt_path.name} is missing); nothing to load.")
    state = checkpoint.load(ckpt_path, root)
    if state["algo"] != saved["algo"]:
        raise LabError(f"{ckpt_path} belongs to {state['algo']!r} but {run.config_file} says {saved['algo']!r}.")
    saved_in_ckpt = _config_from(module.Config, state["config"], ckpt_path)
    changed = [d for d in differences(saved_in_ckpt, config) if not d.startswith("--total-steps ")]
    if changed:
        raise LabError(f"{run.config_file} and {ckpt_path.name} disagree ({'; '.join(changed)}); "
                       "a run's hyperparameters cannot change midway: start a new run instead.")
    return run, saved, module, config, options, state


def _config_from(cls: type, data: dict, source: Path) -> Any:
    """A config dataclass from saved values; a wrongly typed value is one sentence naming the file."""
    try:
        return from_dict(cls, data)
    except LabError as error:
        raise LabError(f"{source}: {error}") from None
    except (TypeError, ValueError, AttributeError) as error:
        raise LabError(f"{source} holds a {cls.__name__} with wrongly typed values ({error}).") from None


def _load_algorithm_state(algorithm: Any, state: dict, ckpt_name: str, for_use: bool) -> None:
    """Restore an algorithm's state; a checkpoint whose contents do not fit it is one sentence."""
    if not isinstance(state.get("algorithm"), dict):
        raise LabError(f"checkpoint {ckpt_name} is malformed: it holds no algorithm state.")
    bad = checkpoint.first_non_finite(state["algorithm"]) if for_use else None
    if bad is not None:
        raise LabError(f"checkpoint {ckpt_name} holds NaN or infinite weights ({bad}); "
                       "it cannot be evaluated or sampled from.")
    try:
        algorithm.load_state_dict(state["algorithm"])
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as error:
        detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise LabError(f"checkpoint {ckpt_name} does not fit this algorithm and config ({detail}).") from None


def resume(path: Path, total_steps: int | None = None, device: str | None = None) -> int:
    """Continue a run from checkpoints/last.pt, exactly where it left off (from the start if it has none)."""
    run, saved, module, config, options, state = load_run(path, "last", lock=_is_main_process())
    try:
        if total_steps is not None:
            config = dataclasses.replace(config, total_steps=total_steps)
        if device is not None:
            options = dataclasses.replace(options, device=device)
        step = state["step"] if state is not None else 0
        if step >= config.total_steps:
            raise LabError(f"{path} is already at step {step} of {config.total_steps}; "
                           f"pass --total-steps larger than {step} to train further.")
        runtime = Runtime(options)
        try:
            algorithm = module.Algorithm(config, runtime)
            if state is not None:
                _load_algorithm_state(algorithm, state, str(run.last_checkpoint), for_use=False)
                runtime.load_state_dict(state["runtime"])
            if runtime.is_main:
                safefs.remove_temporaries(run.checkpoints, run.path)
                dropped = Logger(run, progress=False, tensorboard=False).truncate_after(step)
                if config.total_steps != saved["config"].get("total_steps"):
                    saved["config"]["total_steps"] = config.total_steps
                saved.setdefault("resumed", []).append({"from_step": step, "total_steps": config.total_steps})
                run.write_json("config.json", saved)
                if state is None:
                    print(f"{path} never wrote a checkpoint: starting it over from step 0")
                elif dropped:
                    print(f"dropped {dropped} metric rows logged after step {step} (that work is redone now)")
            trainer = Trainer(saved["algo"], config, options, runtime, algorithm,
                              run if runtime.is_main else None, start_step=step,
                              trainer_state=state["trainer"] if state is not None else None)
            return trainer.fit()
        finally:
            _close(locals().get("algorithm"))
            runtime.close()
    finally:
        run.unlock()


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _restore(run_path: Path, which: str, device: str | None):
    run, saved, module, config, options, state = load_run(run_path, which)
    options = dataclasses.replace(options, device=device or options.device, compile=False)
    runtime = Runtime(options)
    algorithm = module.Algorithm(config, runtime, training=False)   # networks only: no optimizer, buffer or envs
    _load_algorithm_state(algorithm, state, which if which not in ("best", "last") else f"{which}.pt", for_use=True)
    return run, saved, module, runtime, algorithm, state["step"]


class ResultsNotRecorded(LabError):
    """Evaluation or sampling worked, but its results could not be written into the run folder."""

    def __init__(self, message: str, step: int, results: dict[str, Any]):
        super().__init__(message)
        self.step, self.results = step, results


def _call_on_checkpoint(run_path: Path, method: str, options: Any, which: str, device: str | None
                        ) -> tuple[int, dict[str, Any], list[Path]]:
    """Restore a checkpoint, call ``algorithm.<method>(options)`` with the training RNG untouched, and
    record what it returns in the run folder (as its only writer): (step, results, media files written).
    Raises ``ResultsNotRecorded`` (carrying the results) when the folder cannot take them."""
    run, saved, module, runtime, algorithm, step = _restore(run_path, which, device)
    try:
        if not hasattr(algorithm, method):
            raise LabError(f"{saved['algo']} runs do not generate samples; `lab sample` takes a generative run.")
        with runtime.isolated_rng():
            results = getattr(algorithm, method)(options)   # evaluate's during_training defaults to False
    finally:
        _close(algorithm)
        runtime.close()
    try:
        run.lock()
        logger = Logger(run, progress=False, tensorboard=False)
        try:
            written = logger.log(step, results, source=f"{method}-command")
        finally:
            logger.close()
    except LabError as error:
        raise ResultsNotRecorded(f"the results were not recorded in {run.path}: {error}", step, results) from None
    finally:
        run.unlock()
    return step, results, written


def scalars(results: dict[str, Any]) -> dict[str, float]:
    return {k: to_float(v) for k, v in results.items() if not isinstance(v, (Image, Video, Arrays))}


def evaluate(run_path: Path, options: Any = None, which: str = "best", device: str | None = None) -> dict[str, Any]:
    """Evaluate a run's checkpoint; the results are appended to its metrics and media written."""
    step, results, written = _call_on_checkpoint(run_path, "evaluate", options, which, device)
    return {"step": step, "metrics": scalars(results), "files": [str(p) for p in written]}


def sample(run_path: Path, options: Any = None, which: str = "best", device: str | None = None) -> list[str]:
    """Draw samples from a generative run; returns the files written under its samples/."""
    _, _, written = _call_on_checkpoint(run_path, "sample", options, which, device)
    return [str(p) for p in written]


def format_table(metrics: dict[str, float]) -> str:
    width = max((len(k) for k in metrics), default=0)
    return "\n".join(f"{k:<{width}}  {v:.6g}" for k, v in metrics.items())


def dump_json(payload: Any) -> str:
    return json.dumps(payload, indent=2, default=str)
