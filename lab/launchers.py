"""Where the runs of a sweep execute: ``LocalLauncher`` (a pool of processes on this machine) or
``RayLauncher`` (one Ray task per run, on a local Ray instance or a cluster).

A launcher takes ``(name, lab arguments)`` jobs, starts each as ``python -m lab ARGUMENTS`` in a process of
its own (so every run keeps all of `lab train`'s guarantees), at most ``workers`` at once, and calls
``on_done(name, exit_code, seconds)`` as each one ends. On SIGINT or SIGTERM it starts nothing more and asks
the runs to stop (SIGTERM: each checkpoints and exits); ``stopping`` then names the signal.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lab import safefs
from lab.errors import LabError


def _die_with_parent() -> None:
    """In the child: SIGTERM (stop at a checkpoint) when its parent dies, however it dies (Linux)."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)     # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start_run(args: list[str], log_path: Path, threads: int) -> subprocess.Popen:
    """``python -m lab ARGS`` with its output appended to ``log_path`` (SWEEP/logs/NAME.log, opened without
    following a link below the sweep folder) and ``threads`` torch threads."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}
    with safefs.opened(log_path, "ab", log_path.parent.parent) as log:
        return subprocess.Popen([sys.executable, "-m", "lab", *args], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, preexec_fn=_die_with_parent)


class _Pool:
    """The loop both launchers share: start, poll, stop on a signal."""

    def __init__(self, workers: int, log_dir: Path):
        self.workers, self.log_dir = workers, log_dir
        self.stopping: str | None = None
        self.running: dict[str, tuple[object, float]] = {}

    def run(self, jobs: list[tuple[str, list[str]]], on_done) -> None:
        pending = list(jobs)
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while pending or self.running:
                while pending and len(self.running) < self.workers and self.stopping is None:
                    name, args = pending.pop(0)
                    self.running[name] = (self.start(args, self.log_dir / f"{name}.log"), time.monotonic())
                for name, exit_code in self.finished():
                    _, started = self.running.pop(name)
                    on_done(name, exit_code, time.monotonic() - started)
                if self.stopping is not None:
                    pending.clear()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop(self, signum, frame) -> None:
        if self.stopping is None:
            self.stopping = signal.Signals(signum).name
            for handle, _ in self.running.values():
                self.stop(handle)


class LocalLauncher(_Pool):
    """A pool of ``workers`` processes on this machine, each with cores / workers torch threads."""

    def __init__(self, workers: int, log_dir: Path):
        super().__init__(workers, log_dir)
        self.threads = max(1, (os.cpu_count() or 1) // workers)

    def start(self, args: list[str], log_path: Path) -> subprocess.Popen:
        return start_run(args, log_path, self.threads)

    def finished(self) -> list[tuple[str, int]]:
        time.sleep(0.1)
        return [(name, process.returncode) for name, (process, _) in self.running.items() if process.poll() is not None]

    def stop(self, process: subprocess.Popen) -> None:
        process.send_signal(signal.SIGTERM)


def _check_reachable(address: str) -> None:
    """Refuse, in seconds, an address no Ray head answers at (Ray itself retries for minutes)."""
    import re
    import socket
    if address == "auto":
        return
    match = re.fullmatch(r"(?:ray://)?\[?([^\]]+?)\]?:(\d+)", address)
    if not match:
        raise LabError(f"--ray-address takes HOST:PORT, ray://HOST:PORT or auto; got {address!r}.")
    try:
        socket.create_connection((match[1], int(match[2])), timeout=5).close()
    except OSError as error:
        raise LabError(f"cannot reach a Ray cluster at {address}: {error.strerror or error}.") from None


def _ray_task(args: list[str], log_path: str, threads: int) -> int:
    """One run inside a Ray worker; a cancelled task (KeyboardInterrupt) stops its run at a checkpoint."""
    process = start_run(args, Path(log_path), threads)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGTERM)
        return process.wait()


class RayLauncher(_Pool):
    """One Ray task per run (``num_cpus`` = its torch threads, one GPU for a ``--device cuda`` run), at most
    ``workers`` in flight, on ``ray.init(address)`` (None: a local instance of this machine's cores). The
    sweep folder must be on a path every node sees, and the lab installed on every node."""

    def __init__(self, workers: int, log_dir: Path, address: str | None, threads: int = 1):
        super().__init__(workers, log_dir)
        try:
            import ray
        except ModuleNotFoundError:
            raise LabError("--launcher ray needs Ray: pip install -e '.[dist]' (or pip install ray).") from None
        self.ray, self.threads = ray, threads
        if address is not None:
            _check_reachable(address)
        try:
            if not ray.is_initialized():
                ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise LabError(f"cannot reach a Ray cluster at {address or 'a new local instance'}: "
                           f"{str(error).splitlines()[0]}") from None
        self.task = ray.remote(_ray_task)
        self.handles: dict[object, str] = {}

    def start(self, args: list[str], log_path: Path):
        gpus = 1 if any(a in ("cuda", "--device=cuda") for a in args) else 0
        ref = self.task.options(num_cpus=self.threads, num_gpus=gpus).remote(args, str(log_path), self.threads)
        return ref

    def finished(self) -> list[tuple[str, int]]:
        refs = {handle: name for name, (handle, _) in self.running.items()}
        if not refs:
            return []
        ready, _ = self.ray.wait(list(refs), num_returns=len(refs), timeout=0.2)
        done = []
        for ref in ready:
            try:
                done.append((refs[ref], int(self.ray.get(ref))))
            except self.ray.exceptions.RayError:          # the worker died or the task was cancelled
                done.append((refs[ref], -signal.SIGKILL))
        return done

    def stop(self, ref) -> None:
        self.ray.cancel(ref)                              # KeyboardInterrupt in the task: SIGTERM to its run
