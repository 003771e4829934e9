"""Where the runs of a sweep execute. ``LocalLauncher``: a pool of worker processes on this machine.

A launcher takes ``(name, lab arguments)`` jobs, starts each as ``python -m lab ARGUMENTS`` in a process of
its own (so every run keeps all of `lab train`'s guarantees) and calls ``on_done(name, exit_code, seconds)``
as each one ends. On SIGINT or SIGTERM it starts nothing more and sends SIGTERM to the runs, which
checkpoint and stop; ``stopping`` then names the signal.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _die_with_parent() -> None:
    """In the child: SIGTERM (stop at a checkpoint) when the sweep process dies, however it dies (Linux)."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)     # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class LocalLauncher:
    """A pool of ``workers`` processes on this machine, each with cores / workers torch threads."""

    def __init__(self, workers: int, log_dir: Path):
        self.workers, self.log_dir = workers, log_dir
        self.threads = max(1, (os.cpu_count() or 1) // workers)
        self.stopping: str | None = None
        self.running: dict[str, tuple[subprocess.Popen, float]] = {}

    def run(self, jobs: list[tuple[str, list[str]]], on_done) -> None:
        """Run ``(name, lab arguments)`` jobs, at most ``workers`` at once; ``on_done(name, exit_code, s)``."""
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(self.threads))}
        pending = list(jobs)
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while pending or self.running:
                while pending and len(self.running) < self.workers and self.stopping is None:
                    name, args = pending.pop(0)
                    log = open(self.log_dir / f"{name}.log", "ab")
                    process = subprocess.Popen([sys.executable, "-m", "lab", *args], stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, env=env, preexec_fn=_die_with_parent)
                    log.close()
                    self.running[name] = (process, time.monotonic())
                for name, (process, started) in list(self.running.items()):
                    if process.poll() is not None:
                        del self.running[name]
                        on_done(name, process.returncode, time.monotonic() - started)
                if self.stopping is not None:
                    pending.clear()
                time.sleep(0.1)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop(self, signum, frame) -> None:
        if self.stopping is None:
            self.stopping = signal.Signals(signum).name
            for process, _ in self.running.values():
                process.send_signal(signal.SIGTERM)           # each run checkpoints and stops
