"""Run folders: ``runs/<algo>-<env-or-data>-<yyyymmdd-hhmmss>-s<seed>/`` and what they hold.

    config.json     algorithm, resolved config, run options, library versions, git commit, command
    status.json     running | finished | stopped | failed, with the step and a message
    metrics.jsonl   one JSON object per logged step (the source of truth)
    metrics.csv     the same, flat
    events.*        TensorBoard events (when tensorboard is installed)
    checkpoints/    last.pt, best.pt, step-N.pt
    samples/ videos/ plots/
"""
from __future__ import annotations

import datetime as dt
import errno
import fcntl
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from lab import safefs
from lab.errors import LabError

SUBFOLDERS = ("checkpoints", "samples", "videos", "plots")
LOCK_FILE = ".lock"
WRITTEN = (LOCK_FILE, "config.json", "status.json", "metrics.jsonl", "metrics.csv",
           *(f"{sub}/last.pt" for sub in SUBFOLDERS))
"""What the folder's writers write in place or replace (a file in each subfolder: the folder checked)."""
_LIBRARIES = ("torch", "numpy", "gymnasium", "ale-py", "scipy", "matplotlib", "tyro")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-") or "run"


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


class RunDir:
    """A run folder on disk. Create with ``RunDir.create``; open an existing one with ``RunDir.open``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock_fd: int | None = None

    # ------------------------------------------------------------ layout
    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------------------ create / open
    @classmethod
    def default_path(cls, runs_dir: Path, algo: str, label: str | None, seed: int) -> Path:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        parts = [algo] + ([_slug(label)] if label else []) + [stamp, f"s{seed}"]
        path = Path(runs_dir) / "-".join(parts)
        suffix = 2
        while path.exists():
            path = Path(runs_dir) / ("-".join(parts) + f"-{suffix}")
            suffix += 1
        return path

    @classmethod
    def create(cls, path: Path, config: dict[str, Any]) -> RunDir:
        """Make the folder (it must not hold a run already), take its lock and write config.json."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise LabError(f"{path} exists and is not a folder.")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise LabError(f"cannot create the run folder {path}: {error.strerror}.") from None
        for sub in SUBFOLDERS:
            safefs.names(path / sub, path, create=True)
        run = cls(path)
        run.lock()
        if os.path.lexists(run.config_file):
            run.unlock()
            raise LabError(f"{path} already holds a run; continue it with `lab resume {path}` (a run that never "
                           "wrote a checkpoint starts over) or pick another folder.")
        payload = dict(config)
        payload.update(versions=library_versions(), git_commit=git_commit(),
                       created=dt.datetime.now().isoformat(timespec="seconds"),
                       command=" ".join([Path(sys.argv[0]).name] + sys.argv[1:]))
        run.write_json("config.json", payload)
        return run

    @classmethod
    def open(cls, path: Path) -> RunDir:
        """An existing run folder; a clear error if it is missing or has no readable config.json."""
        path = Path(path)
        if not path.is_dir():
            raise LabError(f"no run folder at {path}.")
        run = cls(path)
        if not os.path.lexists(run.config_file):
            raise LabError(f"{path} is not a run folder: it has no config.json.")
        run.read_config()
        return run

    # ------------------------------------------------------------ one writer
    def lock(self) -> None:
        """Become the folder's only writer: an OS lock (``flock``) on the folder itself, which no one can
        delete, released when this process ends however it ends; RUN/.lock only names the holder's PID. A
        second writer is refused in one sentence naming that process."""
        if self._lock_fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as error:
            raise LabError(f"cannot lock the run folder {self.path}: {error.strerror}.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise LabError(f"cannot lock the run folder {self.path}: {error.strerror}.") from None
            raise LabError(f"{self.path} is in use by process {self._holder()} (training, resuming or recording "
                           "an evaluation); wait for it to finish or stop it first.") from None
        self._lock_fd = fd
        try:     # what a writer touches is refused now, before anything changes, if a link or special file
            for name in WRITTEN:
                safefs.require_writable(self.path / name, self.path)
            with safefs.opened(self.path / LOCK_FILE, "r+b", self.path) as f:
                f.truncate(0)
                f.write(str(os.getpid()).encode())
        except safefs.Refused:        # a planted link or special file: nothing is written through it
            self.unlock()
            raise
        except (LabError, OSError):
            pass                  # a read-only or full disk: the lock itself still holds

    def _holder(self) -> str:
        try:
            pid = safefs.read_bytes(self.path / LOCK_FILE, self.path, limit=32).decode(errors="replace").strip()
        except LabError:
            pid = ""
        return pid if pid.isdigit() else "another process"

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def is_locked_by_another(self) -> bool:
        """Whether a live process other than this one holds the folder's lock."""
        if self._lock_fd is not None:
            return False
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except OSError:
            return True
        finally:
            os.close(fd)

    # ------------------------------------------------------------ files
    def read_config(self) -> dict[str, Any]:
        """config.json as a dict; one sentence for a file that is unreadable, not JSON or not an object."""
        try:
            payload = safefs.parse(safefs.read_bytes(self.config_file, self.path), self.config_file)
        except ValueError as error:      # not UTF-8, not JSON, or an integer of more than 4,300 digits
            raise LabError(f"{self.config_file} is unreadable or corrupt ({type(error).__name__}).") from None
        if not isinstance(payload, dict):
            raise LabError(f"{self.config_file} is corrupt: it holds a JSON {type(payload).__name__}, not an object.")
        for key in ("config", "options"):
            if key in payload and not isinstance(payload[key], dict):
                raise LabError(f"{self.config_file} is corrupt: its {key!r} entry is not an object.")
        if "algo" in payload and not isinstance(payload["algo"], str):
            raise LabError(f"{self.config_file} is corrupt: its 'algo' entry is not a name.")
        resumed = payload.get("resumed", [])
        if not isinstance(resumed, list) or not all(isinstance(r, dict) and type(r.get("from_step")) is int
                                                    for r in resumed):
            raise LabError(f"{self.config_file} is corrupt: its 'resumed' entry is not a list of resumes.")
        return payload

    def write_json(self, name: str, payload: dict[str, Any]) -> None:
        """Write a small JSON file atomically (temporary file + rename); one sentence if the disk refuses."""
        safefs.write_atomically(self.path / name, (json.dumps(payload, indent=2, default=str) + "\n").encode(),
                                self.path)

    def write_status(self, state: str, step: int, message: str = "") -> None:
        """Best effort: a full or read-only disk must not hide the error that is being reported. When the
        disk is full a new file cannot be made, so the status is then overwritten in place (its block is
        already there), and a run that failed says so rather than "running"."""
        payload = {"state": state, "step": step, "message": message, "pid": os.getpid(),
                   "time": dt.datetime.now().isoformat(timespec="seconds")}
        try:
            self.write_json("status.json", payload)
        except safefs.WriteFailed:
            try:
                with safefs.opened(self.path / "status.json", "r+b", self.path) as f:
                    f.write((json.dumps(payload, indent=2) + "\n").encode())
                    f.truncate()
            except (LabError, OSError):
                pass
        except LabError:
            pass

    def status(self) -> dict[str, Any]:
        """status.json ({} when there is none; state "unreadable" when it cannot be read); a run that says
        "running" while no process holds its lock is reported "dead"."""
        path = self.path / "status.json"
        try:
            status = safefs.parse(safefs.read_bytes(path, self.path, missing_ok=True) or b"{}", path)
        except (LabError, ValueError) as error:
            reason = str(error) if isinstance(error, LabError) else f"{path} is not JSON."
            return {"state": "unreadable", "message": reason}
        if not isinstance(status, dict):
            return {"state": "unreadable", "message": f"{path} is not a JSON object."}
        if status.get("state") == "running" and not self.is_locked_by_another():
            status["state"] = "dead"
            status["message"] = (f"the process training it ended without a word (killed?) near step "
                                 f"{status.get('step')}; continue with `lab resume {self.path}`.")
        return status


def describe_runs(runs_dir: Path | None = None) -> list[tuple[str, str, str, str]]:
    """(folder, algorithm, step, state) of every run folder under ``runs_dir`` ($LAB_RUNS_DIR, else ./runs).
    A run whose status says "running" while no process holds its lock shows as "dead"; a folder whose files
    cannot be read shows as such, and the others are listed all the same."""
    root = Path(runs_dir or os.environ.get("LAB_RUNS_DIR", "runs"))
    rows = []
    for path in sorted(p for p in root.glob("*") if os.path.lexists(p / "config.json")):
        run = RunDir(path)
        try:
            algo = run.read_config().get("algo", "?")
        except LabError:
            algo = "? (unreadable config.json)"
        status = run.status()
        step = status.get("step", "?")
        rows.append((str(path), str(algo), f"step {step if type(step) is int else '?'}",
                     str(status.get("state", "no status"))))
    return rows
