"""Atomic, checksummed checkpoint files that load without executing code.

``save`` refuses a state whose floating-point tensors are not all finite (a diverged model is never
written), stores a SHA-256 checksum of the payload, writes to a hidden temporary file in the same
folder, fsyncs it and renames it over the target (``lab.safefs``: never through a link), so a crash or a
full disk mid-write leaves the previous checkpoint intact. ``load`` checks the archive's declared record
sizes before torch reads a byte (nothing compressed, nothing past the file's end), uses
``torch.load(weights_only=True)`` (a file that needs arbitrary unpickling is refused, and so is the older,
unchecksummed v1 format), verifies the checksum and the checkpoint's layout, and turns every way a file
can be wrong into one ``LabError`` sentence naming the file.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch

from lab import safefs
from lab.errors import LabError

FORMAT = "lab-checkpoint-v2"
_OLD_FORMAT = "lab-checkpoint-v1"
"""Written before checksums and named random streams: refused (what it holds meant something else then:
the toy's task, for one, came from another stream)."""
REQUIRED = {"algo": str, "step": int, "config": dict, "options": dict, "trainer": dict, "runtime": dict}


class NonFiniteState(LabError):
    """A state to be saved (or loaded for use) holds NaN or infinite values."""


def leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every leaf of a nested dict / list / tuple as (dotted path, value), in a fixed order."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from leaves(item, f"{path}[{index}]")
    else:
        yield path, value


def first_non_finite(state: Any) -> str | None:
    """The path of the first floating-point tensor holding a NaN or an infinity, else None."""
    for path, value in leaves(state):
        if (isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel()
                and not bool(torch.isfinite(value).all())):
            return path
    return None


def checksum(state: Any) -> str:
    """SHA-256 over the structure and the raw bytes of every tensor (no copy for contiguous CPU ones)."""
    digest = hashlib.sha256()
    for path, value in leaves(state):
        digest.update(path.encode())
        if isinstance(value, torch.Tensor):
            tensor = value.detach().to("cpu").contiguous()
            digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            if tensor.numel():
                digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()


def save(state: dict[str, Any], path: Path, keep_copy_as: Path | None = None, root: Path | None = None) -> None:
    """Write ``state`` to ``path`` atomically, never through a link below ``root`` (the run folder; default
    the checkpoint's folder); optionally hard-link the same bytes to ``keep_copy_as`` (in the same folder).

    Refuses (``NonFiniteState``) a state whose ``algorithm`` part holds NaN or infinite values.
    """
    path = Path(path)
    bad = first_non_finite(state.get("algorithm"))
    if bad is not None:
        raise NonFiniteState(f"algorithm.{bad} holds NaN or infinite values at step {state.get('step')}")
    payload = {**state, "format": FORMAT}
    payload["checksum"] = checksum(payload)
    try:
        safefs.write_atomically(path, lambda f: torch.save(payload, f), root,
                                link_copy=None if keep_copy_as is None else Path(keep_copy_as).name)
    except RuntimeError:                 # torch's writer on a full disk
        raise LabError(f"cannot write the checkpoint {path}: the write failed (disk full?); "
                       "the previous one is intact.") from None
    except safefs.WriteFailed as error:
        raise LabError(f"cannot write the checkpoint {path}: {error.reason}; the previous one is intact.") from None


def _check_records(f: BinaryIO, path: Path) -> None:
    """Refuse, from the archive's directory alone, a file whose records torch would inflate or read past
    its end: a checkpoint's records are stored, never compressed, and lie inside the file."""
    try:
        records = zipfile.ZipFile(f).infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        raise LabError(f"checkpoint {path} is corrupt or truncated (it is not a checkpoint archive).") from None
    size = os.fstat(f.fileno()).st_size
    for record in records:
        if record.compress_type != zipfile.ZIP_STORED or record.file_size > size:
            raise LabError(f"checkpoint {path} is corrupt: its record {record.filename[:80]!r} declares "
                           f"{record.file_size:,} bytes{' compressed' if record.compress_type else ''} in a "
                           f"file of {size:,} (lab writes every record stored, uncompressed).")
    f.seek(0)


def load(path: Path, root: Path | None = None) -> dict[str, Any]:
    """Load a checkpoint written by ``save`` onto the CPU: never through a link below ``root`` (default: its
    folder), its records' declared sizes checked before anything is read, code-free, checksum verified,
    layout checked."""
    path = Path(path)
    if not os.path.lexists(path):
        raise LabError(f"no checkpoint at {path}.")
    try:
        with safefs.opened(path, "rb", root) as f:
            _check_records(f, path)
            state = torch.load(f, map_location="cpu", weights_only=True)
    except LabError:
        raise
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "GLOBAL" not in str(error):       # not a refused import: damaged bytes
            raise LabError(f"checkpoint {path} is corrupt ({first_line[:160]}).") from None
        raise LabError(f"refusing to load {path}: it holds objects that need arbitrary code to unpickle "
                       f"({first_line[:160]}).") from None
    except MemoryError:
        raise LabError(f"checkpoint {path} is corrupt: it asks for more memory than this machine has.") from None
    except Exception as error:  # an untrusted file can fail torch's reader in any way: one sentence for all
        raise LabError(f"checkpoint {path} is corrupt or truncated ({type(error).__name__}).") from None
    if isinstance(state, dict) and state.get("format") == _OLD_FORMAT:
        raise LabError(f"{path} was written by an older lab ({_OLD_FORMAT}: no checksum, and random streams "
                       "that meant something else); it cannot be evaluated or resumed faithfully: retrain.")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise LabError(f"{path} is not a lab checkpoint (format {FORMAT!r} expected).")
    stored = state.pop("checksum", None)
    if stored != checksum(state):
        raise LabError(f"checkpoint {path} is corrupt: its contents do not match their checksum "
                       "(the file was changed or damaged after it was written).")
    for key, kind in REQUIRED.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise LabError(f"checkpoint {path} is malformed: {key!r} is missing or not a {kind.__name__}.")
    if state["step"] < 0:
        raise LabError(f"checkpoint {path} is malformed: its step is {state['step']}.")
    return state
