"""Atomic checkpoint files that load without executing code.

``save`` writes to a hidden temporary file in the same folder, fsyncs it and renames it over the
target, so a crash mid-write leaves the previous checkpoint intact. ``load`` uses
``torch.load(weights_only=True)``: a file that needs arbitrary unpickling is refused.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from lab.errors import LabError

FORMAT = "lab-checkpoint-v1"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(state: dict[str, Any], path: Path, keep_copy_as: Path | None = None) -> None:
    """Write ``state`` to ``path`` atomically; optionally hard-link the same bytes to ``keep_copy_as``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    if keep_copy_as is not None:
        keep_copy_as = Path(keep_copy_as)
        if keep_copy_as.exists():
            keep_copy_as.unlink()
        os.link(path, keep_copy_as)
    _fsync_dir(path.parent)


def load(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by ``save`` onto the CPU, refusing anything that needs code to unpickle."""
    path = Path(path)
    if not path.is_file():
        raise LabError(f"no checkpoint at {path}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LabError(f"refusing to load {path}: it holds objects that need arbitrary code to unpickle "
                       f"({first_line[:160]}).") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise LabError(f"checkpoint {path} is corrupt or truncated ({type(error).__name__}).") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise LabError(f"{path} is not a lab checkpoint (format {FORMAT!r} expected).")
    return state


def remove_stale_temporaries(folder: Path) -> None:
    """Delete temporary files left by a process killed while writing a checkpoint."""
    for tmp in Path(folder).glob(".*.tmp-*"):
        tmp.unlink(missing_ok=True)
