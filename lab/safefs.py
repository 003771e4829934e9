"""Files inside a run folder, opened so that nothing planted in the folder can send a write (or a read)
anywhere else.

Run folders come from shared drives and archives, so what they hold is untrusted. Every path below a
root (the run folder, which is the caller's own path and may itself be a link) is walked one component at
a time with ``O_NOFOLLOW`` from the folder's descriptor, as git refuses to follow links out of a work
tree: a symbolic link anywhere inside is refused, never followed. Only regular files are read or written
(a FIFO would hang, ``/dev/zero`` never ends); a file is changed in place only while it has no other
hard link; reads are bounded; new contents go to an exclusively created temporary file beside the target,
fsynced and renamed over it. Every refusal is one ``LabError`` sentence naming the path.
"""
from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from lab.errors import LabError

MiB = 1 << 20
JSON_LIMIT = 16 * MiB
"""The largest config.json, status.json or --config file read."""
MAX_DEPTH = 64
"""The deepest nesting of lists and tables accepted in a JSON or TOML file."""


class Refused(LabError):
    """A link, a special file, a file with another hard link, or one too large or too deep."""


class WriteFailed(LabError):
    """The disk refused a write (full, read-only, a file-size limit); ``reason`` says why."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"cannot write {path}: {reason}.")
        self.reason = reason


_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_TEMPORARY = ".{}.tmp-"


def _refusal(verb: str, path: Path, error: OSError, dir_fd: int, name: str) -> LabError:
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except OSError:
        mode = None
    if mode is not None and stat.S_ISLNK(mode):
        why = "it is a symbolic link (lab never follows a link inside a run folder)"
    elif error.errno in (errno.ENXIO, errno.ENOTDIR) and mode is not None:
        why = "it is not a regular file or folder"
    else:
        return LabError(f"cannot {verb} {path}: {error.strerror}.")
    return Refused(f"refusing to {verb} {path}: {why}.")


@contextmanager
def directory(path: Path, root: Path | None = None, create: bool = False, verb: str = "write") -> Iterator[int]:
    """A descriptor of the folder ``path``, reached from ``root`` without following a link below it (no
    ``root``: ``path`` is opened as given); ``create`` makes the missing folders on the way."""
    path = Path(path)
    root, parts = (path, ()) if root is None else (Path(root), path.relative_to(root).parts)
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise LabError(f"cannot {verb} in {root}: {error.strerror}.") from None
    try:
        for depth, part in enumerate(parts, start=1):
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                except OSError as error:
                    raise LabError(f"cannot create {root.joinpath(*parts[:depth])}: {error.strerror}.") from None
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as error:
                raise _refusal(verb, root.joinpath(*parts[:depth]), error, fd, part) from None
            os.close(fd)
            fd = inner
        yield fd
    finally:
        os.close(fd)


def _open_fd(dir_fd: int, name: str, flags: int, path: Path, verb: str) -> int:
    """``name`` in the folder ``dir_fd``, never through a link, refused unless it is a regular file (and,
    opened for writing, has no other hard link); a blocking descriptor."""
    try:
        fd = os.open(name, flags | _FLAGS, 0o644, dir_fd=dir_fd)
    except OSError as error:
        raise _refusal(verb, path, error, dir_fd, name) from None
    info = os.fstat(fd)
    why = ("it is not a regular file (a FIFO, a device or a socket)" if not stat.S_ISREG(info.st_mode) else
           "it has another hard link, which would change with it" if flags & (os.O_WRONLY | os.O_RDWR)
           and info.st_nlink > 1 else None)
    if why:
        os.close(fd)
        raise Refused(f"refusing to {verb} {path}: {why}.")
    os.set_blocking(fd, True)
    return fd


@contextmanager
def opened(path: Path, mode: str = "rb", root: Path | None = None) -> Iterator[BinaryIO]:
    """A file of a run folder opened safely: ``rb`` (read), ``ab`` (append, created) or ``r+b`` (in place,
    created)."""
    flags, verb = {"rb": (os.O_RDONLY, "read"), "ab": (os.O_WRONLY | os.O_APPEND | os.O_CREAT, "write"),
                   "r+b": (os.O_RDWR | os.O_CREAT, "write")}[mode]
    with directory(Path(path).parent, root, verb=verb) as dir_fd:
        fd = _open_fd(dir_fd, Path(path).name, flags, Path(path), verb)
    with os.fdopen(fd, mode) as f:
        yield f


def read_bytes(path: Path, root: Path | None = None, limit: int = JSON_LIMIT, missing_ok: bool = False) -> bytes | None:
    """The bytes of ``path``, refused in one sentence beyond ``limit``; None if missing and ``missing_ok``."""
    try:
        with opened(path, "rb", root) as f:
            size = os.fstat(f.fileno()).st_size
            data = f.read(limit + 1) if size <= limit else b""
    except LabError:
        if missing_ok and not os.path.lexists(path):
            return None
        raise
    if size > limit or len(data) > limit:
        raise Refused(f"refusing to read {path}: it holds {max(size, len(data)):,} bytes, more than the "
                       f"{limit:,} a file of its kind may.")
    return data


def depth(value: Any) -> int:
    """How deeply lists and dicts nest in ``value`` (iteratively: any depth is measured safely)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list, tuple)):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def parse(text: bytes | str, path: Path, parser: Callable[[Any], Any] = json.loads) -> Any:
    """``parser(text)`` bounded in depth: a document nested past ``MAX_DEPTH`` is one sentence (the
    parsers' own RecursionError included); the parsers' other errors are left to the caller."""
    try:
        value = parser(text)
    except RecursionError:
        value = None
        deepest = MAX_DEPTH + 1
    else:
        deepest = depth(value)
    if deepest > MAX_DEPTH:
        raise Refused(f"refusing to read {path}: it nests lists or tables deeper than {MAX_DEPTH} levels.")
    return value


def write_atomically(path: Path, write: Callable[[BinaryIO], None] | bytes, root: Path | None = None,
                     link_copy: str | None = None) -> None:
    """Replace ``path`` with what ``write(f)`` writes (or the bytes given): an exclusive temporary file
    beside it, fsynced and renamed over it, so a kill leaves the old or the new file whole. A target that is
    a link or a special file is refused, not replaced. ``link_copy``: a name in the same folder that gets a
    hard link to the new file."""
    path = Path(path)
    with directory(path.parent, root, create=True) as dir_fd:
        for name in (path.name, link_copy):
            if name is not None:
                _regular_or_missing(dir_fd, name, path.parent / name)
        tmp = f"{_TEMPORARY.format(path.name)}{os.getpid()}"
        try:
            os.unlink(tmp, dir_fd=dir_fd)               # left by a killed process that had this PID
        except FileNotFoundError:
            pass
        except OSError as error:
            raise WriteFailed(path, error.strerror) from None
        try:
            fd = _open_fd(dir_fd, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, path.parent / tmp, "write")
            with os.fdopen(fd, "wb") as f:
                f.write(write) if isinstance(write, bytes) else write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            if link_copy is not None:
                _unlink(dir_fd, link_copy)
                os.link(path.name, link_copy, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            os.fsync(dir_fd)
        except OSError as error:
            raise WriteFailed(path, error.strerror or "the write failed (disk full?)") from None
        finally:
            _unlink(dir_fd, tmp)


def lexists(path: Path, root: Path | None = None) -> bool:
    """Whether ``path`` exists (a link counts), its folder reached safely (a link on the way is refused)."""
    path = Path(path)
    with directory(path.parent, root, verb="read") as dir_fd:
        try:
            os.stat(path.name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
    return True


def require_writable(path: Path, root: Path | None = None) -> None:
    """Refuse now, before anything is written, a target that a later write would refuse (a link or a
    special file at ``path`` or on the way to it); a missing one is fine."""
    path = Path(path)
    if not os.path.lexists(path.parent):
        return
    with directory(path.parent, root) as dir_fd:
        _regular_or_missing(dir_fd, path.name, path)


def _regular_or_missing(dir_fd: int, name: str, path: Path) -> None:
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise Refused(f"refusing to write {path}: it is a symbolic link (lab never follows a link inside a "
                       "run folder).")
    if not stat.S_ISREG(mode):
        raise Refused(f"refusing to write {path}: it is not a regular file (a FIFO, a device or a socket).")


def _unlink(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def create_new(path: Path, data: bytes, root: Path | None = None) -> None:
    """Write ``data`` to a file that must not exist yet (created exclusively: nothing is overwritten)."""
    path = Path(path)
    with directory(path.parent, root, create=True) as dir_fd:
        fd = _open_fd(dir_fd, path.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, path, "write")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except OSError as error:
            _unlink(dir_fd, path.name)
            raise WriteFailed(path, error.strerror) from None


def names(folder: Path, root: Path | None = None, create: bool = False) -> list[str]:
    """The entries of ``folder`` (reached safely; empty if it is missing and not ``create``d)."""
    try:
        with directory(folder, root, create=create) as dir_fd:
            return os.listdir(dir_fd)
    except LabError:
        if not create and not os.path.lexists(folder):
            return []
        raise


def remove_temporaries(folder: Path, root: Path | None = None) -> None:
    """Delete the temporary files that processes killed mid-write left in ``folder`` (the lock holder's
    job: no other writer is alive)."""
    with directory(folder, root) as dir_fd:
        for name in os.listdir(dir_fd):
            if name.startswith(".") and ".tmp-" in name:
                _unlink(dir_fd, name)
