"""Writing files so that a crash, a full disk or a power cut never leaves a broken one behind.

Every writer in the library goes through :func:`atomic_write` (or one of its short forms): the data goes
to ``<name>.part`` beside the target, is flushed and ``fsync``-ed to the disk, and only then renamed onto
the target with :func:`os.replace` (atomic on one file system); the folder is ``fsync``-ed too, so the
rename itself survives a power cut. A reader therefore sees the old file or the complete new one, never
half of one. When writing fails, the ``.part`` file is removed and the error says what went wrong in
words (disk full, no permission, read-only file system) and names the path.

Not lecture material: lectures 02-06 save checkpoints, runs and data through it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

PART_SUFFIX = ".part"


def part_path(path: str | Path) -> Path:
    """Where the bytes of ``path`` are written before the rename: ``<name>.part`` in the same folder."""
    path = Path(path)
    return path.with_name(path.name + PART_SUFFIX)


_CAUSES = {
    errno.ENOSPC: "the disk is full: free some space (or point LECTURES_CACHE at a larger disk) and try again",
    errno.EDQUOT: "the disk quota is used up: free some space and try again",
    errno.EACCES: "no permission to write there: choose a folder you can write to",
    errno.EPERM: "the operation is not permitted there: choose a folder you can write to",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "a part of the path is a file, not a folder",
    errno.EISDIR: "the path is a folder, not a file",
    errno.ENAMETOOLONG: "the file name is too long",
}


def _errno_of(err: BaseException) -> int | None:
    """The errno of an OSError, also when a library wrapped it (torch reports a full disk as RuntimeError)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno is not None:
            return err.errno
        text = str(err).lower()
        if "no space left" in text or "file write failed" in text or "enforce fail at inline_container" in text:
            return errno.ENOSPC
        err = err.__cause__ or err.__context__
    return None


class WriteError(OSError):
    """Writing ``path`` failed; the message names the path and the likely cause."""


def explain_write_error(path: str | Path, err: BaseException) -> WriteError:
    """A :class:`WriteError` that says which file could not be written and why, in plain words."""
    code = _errno_of(err)
    cause = _CAUSES.get(code, "see the error below")
    if code == errno.ENOSPC and isinstance(err, RuntimeError):
        cause += " (PyTorch reports a full disk as 'enforce fail at inline_container.cc')"
    first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
    out = WriteError(f"Could not write {path}: {cause}. ({type(err).__name__}: {first_line})")
    out.errno = code  # set after construction, so that the message stays free of "[Errno n]"
    return out


def fsync_dir(folder: str | Path) -> None:
    """Flush a folder's entries to disk, so a rename in it survives a power cut (no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open folders; its renames are journalled by NTFS
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | Path) -> None:
    """Flush a file that was written elsewhere (another library, another process) to the disk."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def commit_part(part: str | Path, path: str | Path) -> Path:
    """Make a finished ``part`` file the file at ``path``: fsync it, rename it, fsync the folder."""
    part, path = Path(part), Path(path)
    fsync_file(part)
    os.replace(part, path)
    fsync_dir(path.parent)
    return path


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open ``path`` for writing so that it appears only when the block finishes without an error.

    ``with atomic_write(path, "w") as f: f.write(...)``. The folder is created when missing. On an
    error the partial file is deleted and a :class:`WriteError` names the path and the likely cause.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes whole files: mode must be 'w' or 'wb', got {mode!r}.")
    path = Path(path)
    part = part_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
        with open(part, mode, encoding=encoding if "b" not in mode else None) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(part, path)
        fsync_dir(path.parent)
    except BaseException as err:
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)
        if isinstance(err, (OSError, RuntimeError)) and not isinstance(err, WriteError) and _errno_of(err):
            raise explain_write_error(path, err) from err
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically. Returns the path."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically. Returns the path."""
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return Path(path)


def atomic_write_json(path: str | Path, obj, indent: int | None = 1) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (values JSON cannot hold become strings)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=str, ensure_ascii=False))


def atomic_save(path: str | Path, save: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``save(file)`` on a binary file that becomes ``path`` only when it returns (e.g. ``torch.save``)."""
    with atomic_write(path, "wb") as handle:
        save(handle)
    return Path(path)


def describe_read_error(path: str | Path, err: BaseException, what: str = "the file") -> str:
    """Words for a failed read: missing, empty, unreadable, or probably truncated."""
    path = Path(path)
    if not path.exists():
        return f"{path} does not exist (expected {what} there)."
    if path.is_dir():
        return f"{path} is a folder, not {what}."
    try:
        size = path.stat().st_size
    except OSError:
        size = None
    if size == 0:
        return (f"{path} is empty (0 bytes), so it is not {what}: it was probably cut off while being "
                f"written. Delete it and create it again.")
    if isinstance(err, PermissionError):
        return f"No permission to read {path}."
    first_line = str(err).splitlines()[0] if str(err) else ""
    return (f"{path} ({size:,} bytes) could not be read as {what} ({type(err).__name__}: {first_line}). "
            f"Is it truncated, or a file of another kind?")


class ReadError(OSError):
    """Reading ``path`` failed; the message names the path and the likely cause (missing, empty, damaged)."""


def read_error(path: str | Path, err: BaseException, what: str = "the file") -> ReadError:
    """A :class:`ReadError` carrying :func:`describe_read_error`'s words, to raise ``from err``."""
    out = ReadError(describe_read_error(path, err, what))
    out.errno = getattr(err, "errno", None)
    return out


def read_json(path: str | Path, what: str = "a JSON file"):
    """The JSON value in ``path``; a missing, empty, unreadable or malformed file raises :class:`ReadError`."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise read_error(path, err, what) from err
