"""Start, resume, evaluate and sample runs: the glue between the CLI, run folders and the trainer."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from lab import checkpoint, registry
from lab.config import differences, from_dict, to_dict
from lab.errors import LabError
from lab.logger import Logger, to_float
from lab.media import Arrays, Image, Video
from lab.rundir import RunDir
from lab.runtime import RunOptions, Runtime
from lab.trainer import EvalCallback, Trainer


def run_label(config: Any) -> str | None:
    """The env or data set a run is about, for its folder name."""
    for name in ("env_id", "env", "data", "dataset"):
        value = getattr(config, name, None)
        if isinstance(value, str) and value:
            return value
    return None


def train(algo: str, config: Any, options: RunOptions) -> tuple[int, Path | None]:
    """Build the algorithm (bad input fails before any folder exists), create the run folder, train."""
    _, module = registry.get(algo)
    runtime = Runtime(options)
    try:
        algorithm = module.Algorithm(config, runtime)
        run = None
        if runtime.is_main:
            path = options.run_dir or RunDir.default_path(options.runs_dir, algo, run_label(config), options.seed)
            run = RunDir.create(path, {"algo": algo, "config": to_dict(config), "options": to_dict(options)})
        status = Trainer(algo, config, options, runtime, algorithm, run).fit()
        return status, run.path if run else None
    finally:
        _close(locals().get("algorithm"))
        runtime.close()


def train_in_memory(algo: str, config: Any, options: RunOptions = RunOptions(device="cpu"), *,
                    eval_options: Any = None, stop_when: EvalCallback | None = None) -> Trainer:
    """Train without a run folder (tests, benchmarks, notebooks): the same trainer, cadence and checks
    as ``lab train``, nothing written. ``stop_when(step, results)`` ends the run at an evaluation.

    Returns the trainer: ``.algorithm`` (its envs closed), ``.history`` of evaluations, ``.step``,
    ``.stopped_early`` and ``.train_seconds`` (evaluation time excluded).
    """
    _, module = registry.get(algo)
    runtime = Runtime(options)
    algorithm = None
    try:
        algorithm = module.Algorithm(config, runtime)
        trainer = Trainer(algo, config, options, runtime, algorithm, None,
                          eval_options=eval_options, on_evaluate=stop_when)
        trainer.fit()
        return trainer
    finally:
        _close(algorithm)
        runtime.close()


def _close(algorithm: Any) -> None:
    close = getattr(algorithm, "close", None)
    if callable(close):
        close()


def load_run(path: Path, which: str = "last") -> tuple[RunDir, dict, Any, Any, RunOptions, dict]:
    """Open a run folder and its checkpoint: (run, saved config.json, module, config, options, checkpoint)."""
    run = RunDir.open(path)
    saved = run.read_config()
    if "algo" not in saved or "config" not in saved:
        raise LabError(f"{run.config_file} is missing the algorithm or its config; is {path} a lab run?")
    _, module = registry.get(saved["algo"])
    config = from_dict(module.Config, saved["config"])
    options = from_dict(RunOptions, saved.get("options", {}))
    ckpt_path = {"last": run.last_checkpoint, "best": run.best_checkpoint}.get(which, Path(which))
    if which == "best" and not ckpt_path.exists():
        ckpt_path = run.last_checkpoint
    if not ckpt_path.exists():
        raise LabError(f"{path} has no checkpoint yet ({ckpt_path.name} is missing); nothing to load.")
    state = checkpoint.load(ckpt_path)
    if state["algo"] != saved["algo"]:
        raise LabError(f"{ckpt_path} belongs to {state['algo']!r} but {run.config_file} says {saved['algo']!r}.")
    saved_in_ckpt = from_dict(module.Config, state["config"])
    changed = [d for d in differences(saved_in_ckpt, config) if not d.startswith("--total-steps ")]
    if changed:
        raise LabError(f"{run.config_file} and {ckpt_path.name} disagree ({'; '.join(changed)}); "
                       "a run's hyperparameters cannot change midway: start a new run instead.")
    return run, saved, module, config, options, state


def resume(path: Path, total_steps: int | None = None, device: str | None = None) -> int:
    """Continue a run from checkpoints/last.pt, exactly where it left off."""
    run, saved, module, config, options, state = load_run(path, "last")
    if total_steps is not None:
        config = dataclasses.replace(config, total_steps=total_steps)
    if device is not None:
        options = dataclasses.replace(options, device=device)
    step = state["step"]
    if step >= config.total_steps:
        raise LabError(f"{path} is already at step {step} of {config.total_steps}; "
                       f"pass --total-steps larger than {step} to train further.")
    runtime = Runtime(options)
    try:
        algorithm = module.Algorithm(config, runtime)
        algorithm.load_state_dict(state["algorithm"])
        runtime.load_state_dict(state["runtime"])
        if runtime.is_main:
            checkpoint.remove_stale_temporaries(run.checkpoints)
            dropped = Logger(run, progress=False).truncate_after(step)
            if config.total_steps != saved["config"].get("total_steps"):
                saved["config"]["total_steps"] = config.total_steps
            saved.setdefault("resumed", []).append({"from_step": step, "total_steps": config.total_steps})
            run.write_json("config.json", saved)
            if dropped:
                print(f"dropped {dropped} metric rows logged after step {step} (that work is redone now)")
        trainer = Trainer(saved["algo"], config, options, runtime, algorithm,
                          run if runtime.is_main else None, start_step=step, trainer_state=state["trainer"])
        return trainer.fit()
    finally:
        _close(locals().get("algorithm"))
        runtime.close()


def _restore(run_path: Path, which: str, device: str | None):
    run, saved, module, config, options, state = load_run(run_path, which)
    options = dataclasses.replace(options, device=device or options.device, compile=False)
    runtime = Runtime(options)
    algorithm = module.Algorithm(config, runtime)
    algorithm.load_state_dict(state["algorithm"])
    return run, saved, module, runtime, algorithm, state["step"]


def _call_on_checkpoint(run_path: Path, method: str, options: Any, which: str, device: str | None
                        ) -> tuple[int, dict[str, Any], list[Path]]:
    """Restore a checkpoint, call ``algorithm.<method>(options)`` with the training RNG untouched, and
    record what it returns in the run folder: (step, results, media files written)."""
    run, saved, module, runtime, algorithm, step = _restore(run_path, which, device)
    try:
        if not hasattr(algorithm, method):
            raise LabError(f"{saved['algo']} runs do not generate samples; `lab sample` takes a generative run.")
        with runtime.isolated_rng():
            results = getattr(algorithm, method)(options)
        logger = Logger(run, progress=False)
        written = logger.log(step, results, source=f"{method}-command")
        logger.close()
        return step, results, written
    finally:
        _close(algorithm)


def evaluate(run_path: Path, options: Any = None, which: str = "best", device: str | None = None) -> dict[str, Any]:
    """Evaluate a run's checkpoint; the results are appended to its metrics and media written."""
    step, results, written = _call_on_checkpoint(run_path, "evaluate", options, which, device)
    scalars = {k: to_float(v) for k, v in results.items() if not isinstance(v, (Image, Video, Arrays))}
    return {"step": step, "metrics": scalars, "files": [str(p) for p in written]}


def sample(run_path: Path, options: Any = None, which: str = "best", device: str | None = None) -> list[str]:
    """Draw samples from a generative run; returns the files written under its samples/."""
    _, _, written = _call_on_checkpoint(run_path, "sample", options, which, device)
    return [str(p) for p in written]


def format_table(metrics: dict[str, float]) -> str:
    width = max((len(k) for k in metrics), default=0)
    return "\n".join(f"{k:<{width}}  {v:.6g}" for k, v in metrics.items())


def dump_json(payload: Any) -> str:
    return json.dumps(payload, indent=2, default=str)
