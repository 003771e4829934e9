import contextlib
import io
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    """One fresh cache (the digits classifier that scores samples) for the whole run, shared by the xdist
    workers, which inherit the variable, and removed at the end: the suite never writes into ~/.cache/lab."""
    if not hasattr(config, "workerinput"):
        config._lab_cache = tempfile.mkdtemp(prefix="lab-test-cache-")
        os.environ["LAB_CACHE"] = config._lab_cache


def pytest_unconfigure(config):
    cache = getattr(config, "_lab_cache", None)
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)


def run_lab(*args, cwd=None) -> subprocess.CompletedProcess:
    """Run `lab ARGS` in this process (fast: torch is imported once); returns exit status and output."""
    from lab.cli import main

    out, err = io.StringIO(), io.StringIO()
    old_cwd = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main([str(a) for a in args])
                status = 0
            except SystemExit as exit_:
                status = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        os.chdir(old_cwd)
    return subprocess.CompletedProcess(["lab", *map(str, args)], status, out.getvalue(), err.getvalue())


def lab_subprocess_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture
def lab():
    return run_lab


@contextlib.contextmanager
def no_hang(seconds: int = 20):
    """Fail (TimeoutError) instead of blocking forever: for readers that a FIFO would hang."""
    import signal

    def hung(signum, frame):
        raise TimeoutError(f"still blocked after {seconds} s")
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
