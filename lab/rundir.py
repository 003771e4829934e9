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
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from lab.errors import LabError

SUBFOLDERS = ("checkpoints", "samples", "videos", "plots")
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
    def create(cls, path: Path, config: dict[str, Any]) -> "RunDir":
        """Make the folder (it must not hold a run already) and write config.json."""
        path = Path(path)
        if (path / "config.json").exists():
            raise LabError(f"{path} already holds a run; continue it with `lab resume {path}` or pick another folder.")
        if path.exists() and not path.is_dir():
            raise LabError(f"{path} exists and is not a folder.")
        try:
            path.mkdir(parents=True, exist_ok=True)
            for sub in SUBFOLDERS:
                (path / sub).mkdir(exist_ok=True)
        except OSError as error:
            raise LabError(f"cannot create the run folder {path}: {error.strerror}.") from None
        run = cls(path)
        payload = dict(config)
        payload.update(versions=library_versions(), git_commit=git_commit(),
                       created=dt.datetime.now().isoformat(timespec="seconds"),
                       command=" ".join([Path(sys.argv[0]).name] + sys.argv[1:]))
        run.write_json("config.json", payload)
        return run

    @classmethod
    def open(cls, path: Path) -> "RunDir":
        """An existing run folder; a clear error if it is missing or has no readable config.json."""
        path = Path(path)
        if not path.is_dir():
            raise LabError(f"no run folder at {path}.")
        run = cls(path)
        if not run.config_file.is_file():
            raise LabError(f"{path} is not a run folder: it has no config.json.")
        run.read_config()
        return run

    # ------------------------------------------------------------ files
    def read_config(self) -> dict[str, Any]:
        try:
            return json.loads(self.config_file.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise LabError(f"{self.config_file} is unreadable or corrupt ({type(error).__name__}).") from None

    def write_json(self, name: str, payload: dict[str, Any]) -> None:
        """Write a small JSON file atomically (temporary file + rename)."""
        target = self.path / name
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        os.replace(tmp, target)

    def write_status(self, state: str, step: int, message: str = "") -> None:
        self.write_json("status.json", {"state": state, "step": step, "message": message,
                                        "time": dt.datetime.now().isoformat(timespec="seconds")})

    def status(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / "status.json").read_text())
        except (OSError, json.JSONDecodeError):
            return {}
