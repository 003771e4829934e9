"""The one loop that drives every learning algorithm.

It owns what is the same everywhere: logging and evaluation cadence, the progress bar, atomic
checkpoints (``last.pt``, ``best.pt``, ``step-N.pt``), exact resume, the NaN/Inf guard, and a
graceful stop on Ctrl-C / SIGTERM that writes a checkpoint first. The algorithm owns its maths.
"""
from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

import torch

from lab import checkpoint
from lab.config import to_dict
from lab.errors import LabError
from lab.logger import MEDIA, Logger, to_float
from lab.protocol import Algorithm
from lab.rundir import RunDir
from lab.runtime import RunOptions, Runtime


class NonFiniteMetric(LabError):
    """A training metric became NaN or infinite."""


@dataclass
class _Window:
    """Running sums of the metrics returned since the last log line.

    Host values are checked for NaN/Inf at every step; values left on an accelerator are summed
    there (no sync) and checked when the window is flushed.
    """
    first_step: int
    sums: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, metrics: dict[str, Any], step: int) -> None:
        for key, value in metrics.items():
            if isinstance(value, MEDIA):
                raise TypeError(f"train_step returned media under {key!r}; return media from evaluate()")
            if isinstance(value, torch.Tensor) and value.device.type != "cpu":
                value = value.detach().float()
            else:
                value = to_float(value)
                if not math.isfinite(value):
                    raise NonFiniteMetric(f"{key} became {value} at step {step}")
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1

    def means(self, last_step: int) -> dict[str, float]:
        means = {key: to_float(total) / self.counts[key] for key, total in self.sums.items()}
        for key, value in means.items():
            if not math.isfinite(value):
                raise NonFiniteMetric(f"{key} became {value} between steps {self.first_step} and {last_step}")
        return means


EvalCallback = Callable[[int, dict[str, Any]], bool]
"""Called after each evaluation with (step, results); returning True stops the run there."""


class Trainer:
    """Runs ``algorithm.train_step`` from ``start_step`` until ``config.total_steps``.

    With ``run=None`` it writes nothing (rank > 0 of a torchrun job, tests and benchmarks): cadence,
    evaluation in isolated RNG, the NaN guard and ``step_size`` accounting are the same as for a run
    folder. ``eval_options`` is what ``evaluate`` gets during training (None: the algorithm's own
    training-time evaluation); ``on_evaluate`` sees every evaluation and may stop the run early.
    After ``fit``, ``history`` holds each evaluation as ``(step, results)``, ``train_seconds`` the
    wall-clock time spent training and ``train_cpu_seconds`` this process's CPU time spent training, both
    with evaluation excluded. ``fit(until=N)`` trains in pieces (a benchmark that alternates with a peer or
    times a phase): it pauses at step N, and the next ``fit`` goes on from there.
    """

    def __init__(self, name: str, config: Any, options: RunOptions, runtime: Runtime, algorithm: Algorithm,
                 run: RunDir | None = None, start_step: int = 0, trainer_state: dict | None = None,
                 eval_options: Any = None, on_evaluate: EvalCallback | None = None):
        self.name, self.config, self.options = name, config, options
        self.runtime, self.algorithm, self.run = runtime, algorithm, run
        self.step = start_step
        state = trainer_state or {}
        self.best: float | None = state.get("best")
        self.elapsed: float = state.get("elapsed", 0.0)
        self.eval_seconds: float = state.get("eval_seconds", 0.0)
        self.cpu_elapsed: float = state.get("cpu_elapsed", 0.0)
        self.eval_cpu_seconds: float = state.get("eval_cpu_seconds", 0.0)
        self.total_steps: int = config.total_steps
        self.eval_options, self.on_evaluate = eval_options, on_evaluate
        self.history: list[tuple[int, dict[str, Any]]] = []
        self.stopped_early = False
        self.skipped_evaluations = 0
        self._signal: str | None = None

    @property
    def train_seconds(self) -> float:
        """Wall-clock seconds of training so far, evaluation time excluded (a benchmark's clock)."""
        return self.elapsed - self.eval_seconds

    @property
    def train_cpu_seconds(self) -> float:
        """This process's CPU seconds of training so far, evaluation excluded (the fairer clock on a shared machine)."""
        return self.cpu_elapsed - self.eval_cpu_seconds

    # ------------------------------------------------------------ the loop
    def fit(self, until: int | None = None) -> int:
        """Train to the end (exit status 0) or until a stop signal (checkpoint written, status 128 + signum).

        ``until`` pauses before the end, at the first step >= ``until``: the metrics so far are logged, but
        there is no end-of-run evaluation or checkpoint and the run's status stays "running"; calling
        ``fit`` again goes on (the clocks stop in between). The pause changes nothing in training.
        """
        end = self.total_steps if until is None else min(until, self.total_steps)
        log_every, eval_every, checkpoint_every = self.options.cadence(self.total_steps)
        headline = (getattr(self.algorithm, "best_metric", None) or (None,))[0]
        logger = Logger(self.run if self.runtime.is_main else None, self.total_steps, self.step,
                        progress=self.runtime.is_main, headline=headline)
        self._warn_if_learning_never_starts(logger)
        if self.run is not None:
            self.run.write_status("running", self.step)
            if self.step == 0:
                logger.hparams({"algo": self.name, "config": to_dict(self.config), "options": to_dict(self.options)})
        previous_handlers = self._install_signal_handlers()
        step = self.step
        window = _Window(step)
        window_clock = time.perf_counter()
        started = time.perf_counter() - self.elapsed
        cpu_started = time.process_time() - self.cpu_elapsed
        try:
            while step < end:
                metrics = self.algorithm.train_step(step)
                previous, step = step, step + self.algorithm.step_size
                window.add(metrics, step)
                logger.advance(step)

                def at(every: int) -> bool:
                    return step // every > previous // every or step >= self.total_steps

                stopping = self._signal is not None
                if self.runtime.distributed:
                    # all ranks must agree on when to stop; agree at log boundaries only (a collective)
                    stopping = at(log_every) and self.runtime.any_rank(stopping)
                if at(log_every) or at(checkpoint_every) or stopping or step >= end:
                    now = time.perf_counter()
                    scalars = window.means(step)
                    scalars["time/sps"] = (step - window.first_step) / max(now - window_clock, 1e-9)
                    scalars["time/elapsed_s"] = now - started
                    logger.log(step, scalars)
                    window, window_clock = _Window(step), now
                if (at(eval_every) and not stopping
                        and self._evaluation_affordable(step, time.perf_counter() - started, logger)):
                    eval_started, eval_cpu_started = time.perf_counter(), time.process_time()
                    stopping = self._evaluate(step, logger)
                    self.eval_seconds += time.perf_counter() - eval_started
                    self.eval_cpu_seconds += time.process_time() - eval_cpu_started
                    self.stopped_early = stopping
                if at(checkpoint_every) or stopping:
                    self.elapsed = time.perf_counter() - started
                    self.cpu_elapsed = time.process_time() - cpu_started
                    self._save(step, self.run.last_checkpoint if self.run else None)
                    if self.run is not None and not stopping:
                        self.run.write_status("running", step)     # `lab list runs` shows how far it got
                if stopping:
                    break
        except (NonFiniteMetric, checkpoint.NonFiniteState) as error:
            self._fail(logger, step, f"{error}; stopped without saving it. "
                                     f"{self._last_good_hint()}")
        except LabError as error:
            self._fail(logger, step, str(error))
        except BaseException as error:
            if self.run is not None:
                self.run.write_status("failed", step, f"{type(error).__name__}: {error}")
            logger.close()
            raise
        finally:
            self._restore_signal_handlers(previous_handlers)
        self.elapsed = time.perf_counter() - started
        self.cpu_elapsed = time.process_time() - cpu_started
        self.step = step
        logger.close()
        if self._signal is not None and step < self.total_steps:
            if self.run is not None:
                message = (f"stopped by {self._signal} at step {step}; checkpoint written. "
                           f"Continue with: lab resume {self.run.path}")
                self.run.write_status("stopped", step, message)
                logger.message(message)
            return 128 + (signal.SIGTERM if self._signal == "SIGTERM" else signal.SIGINT)
        if self.run is not None and (step >= self.total_steps or self.stopped_early):
            self.run.write_status("finished", step)
        return 0

    def _fail(self, logger: Logger, step: int, message: str) -> None:
        if self.run is not None:
            self.run.write_status("failed", step, message)
        logger.close()
        raise LabError(message)

    def _last_good_hint(self) -> str:
        if self.run is None or not self.run.last_checkpoint.exists():
            return "No checkpoint had been written yet."
        saved = checkpoint.load(self.run.last_checkpoint, self.run.path)["step"]
        return f"The last good checkpoint (step {saved}) is {self.run.last_checkpoint}."

    def _warn_if_learning_never_starts(self, logger: Logger) -> None:
        learning_from = getattr(self.algorithm, "learning_from", None)
        if learning_from is not None and learning_from >= self.total_steps:
            logger.message(f"warning: learning starts at step {learning_from:,} and the run ends at step "
                           f"{self.total_steps:,}, so this run never learns; raise --total-steps or lower "
                           "--learning-starts.")

    # ------------------------------------------------------------ evaluation and checkpoints
    def _evaluation_affordable(self, step: int, elapsed: float, logger: Logger) -> bool:
        """With the automatic cadence (``--eval-every 0``) an evaluation before the last step is skipped
        while evaluating has taken longer than training so far (short runs of slow games); the evaluation
        at the end always runs. The processes of a torchrun job agree (a collective: one that can afford
        it is enough)."""
        if self.options.eval_every or step >= self.total_steps:
            return True
        affordable = self.eval_seconds <= elapsed - self.eval_seconds
        if self.runtime.distributed:
            affordable = self.runtime.any_rank(affordable)
        if not affordable:
            if not self.skipped_evaluations:
                logger.message(f"evaluating takes longer than training: evaluations are skipped from step "
                               f"{step:,} while that lasts (the last step is always evaluated; --eval-every "
                               "sets a fixed cadence).")
            self.skipped_evaluations += 1
        return affordable

    def _evaluate(self, step: int, logger: Logger) -> bool:
        """Evaluate on rank 0 (RNG isolated), record the results, keep best.pt; True to stop the run."""
        stop = False
        if self.runtime.is_main:
            with self.runtime.isolated_rng():
                results = self.algorithm.evaluate(self.eval_options, during_training=True)
            logger.log(step, results)
            self.history.append((step, results))
            key, mode = getattr(self.algorithm, "best_metric", None) or (None, None)
            if key in results:
                value = to_float(results[key])
                if math.isfinite(value) and (self.best is None or (value > self.best if mode == "max" else value < self.best)):
                    self.best = value
                    if self.run is not None:
                        self._save(step, self.run.best_checkpoint, collective=False)
            stop = bool(self.on_evaluate(step, results)) if self.on_evaluate is not None else False
        self.runtime.barrier()
        return self.runtime.any_rank(stop) if self.runtime.distributed else stop

    def state(self, step: int, collective: bool = True) -> dict[str, Any]:
        """The checkpoint: it describes itself (algorithm, config, options) and holds all resume state."""
        return {
            "format": checkpoint.FORMAT,
            "algo": self.name,
            "step": step,
            "config": to_dict(self.config),
            "options": to_dict(self.options),
            "trainer": {"best": self.best, "elapsed": self.elapsed, "eval_seconds": self.eval_seconds,
                        "cpu_elapsed": self.cpu_elapsed, "eval_cpu_seconds": self.eval_cpu_seconds},
            "runtime": self.runtime.state_dict(gather=collective),
            "algorithm": self.algorithm.state_dict() if self.runtime.is_main else None,
        }

    def _save(self, step: int, path, collective: bool = True) -> None:
        if path is None and not self.runtime.distributed:
            return                              # headless: nothing to write, no rank to join
        state = self.state(step, collective)   # every rank joins the RNG gather
        if self.runtime.is_main and path is not None:
            keep = (self.run.checkpoints / f"step-{step}.pt"
                    if self.options.keep_checkpoints and path == self.run.last_checkpoint else None)
            checkpoint.save(state, path, keep_copy_as=keep, root=self.run.path)
        if collective:
            self.runtime.barrier()

    # ------------------------------------------------------------ signals
    def _install_signal_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum, frame):
            if self._signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._signal = signal.Signals(signum).name

        return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    @staticmethod
    def _restore_signal_handlers(previous: dict) -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)
