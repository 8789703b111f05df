"""A careful file downloader: several URLs, retries, resume, deadlines, progress bar, size and content checks.

Lectures 01-06 get their data (:mod:`helpers.data`) and lectures 03-06 GPT-2's files
(:mod:`helpers.gpt2_files`) through it; the lectures themselves never call it directly.

Why not pooch? It verifies hashes and writes atomically too, but it has no list of fallback URLs
per file and cannot resume a partial download, and the GPT-2 checkpoints are up to 6 GB. The code
below is short enough to read in one go.

Guarantees:

* The file appears at ``dest`` only when complete and verified: it is written to ``dest.part``,
  checked there (size, SHA-256 and, where the caller gives one, a content ``check``), and only then
  flushed and renamed by :func:`helpers.files.commit_part` (atomic on one file system).
* A file that fails a check is deleted, never returned, and the next attempt starts from zero; a
  cached ``dest`` that fails them is deleted and downloaded again.
* A partial ``.part`` file is resumed with an HTTP ``Range`` request when the server allows it (also
  after the process was killed mid-download).
* Nothing waits forever or fills the disk: besides the per-read ``timeout``, each transfer has a
  ``deadline`` (by default scaled to the expected size), and a body longer than the expected size
  (or ``max_bytes``) is cut off there. A server that is too slow, or that announces or sends the
  wrong number of bytes, is not asked again: the next URL is tried.
* A local failure (disk full, no permission) stops at once with :class:`helpers.files.WriteError`,
  which says so: another URL would not help.
* Two processes (two notebooks, say) never write the same ``.part``: a download holds a lock on its
  folder (:func:`folder_lock`), and the second one waits, then finds the file done.
* When every URL fails, :class:`DownloadError` names the file, each URL tried and why it failed,
  and where a manually downloaded copy can be put.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from tqdm.auto import tqdm

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; downloads there are not guarded against a second process
    fcntl = None

from .files import WriteError, atomic_write, commit_part, explain_write_error, part_path, read_error

CHUNK = 1 << 20
USER_AGENT = "llm-lectures/0.1 (+https://github.com/)"
MIN_RATE = 50_000  # bytes per second: the slowest connection a default deadline still waits for
BASE_DEADLINE = 60.0  # seconds every default deadline starts with (connecting, a slow start)
UNKNOWN_SIZE = 100_000_000  # what a default deadline assumes when neither size nor max_bytes is known

Check = Callable[[Path], "str | None"]  # what is wrong with a file, or None when it is fine


class DownloadError(RuntimeError):
    """Raised when a file could not be obtained from any source (lectures 01-06 show its message when offline).

    ``failures`` lists each URL tried and why it failed, one line each (repeated attempts that failed
    the same way share a line); ``offline`` is True when no server name could even be looked up.
    """

    def __init__(self, message: str, failures: Sequence[str] = (), offline: bool = False):
        super().__init__(message)
        self.failures = list(failures)
        self.offline = offline


OFFLINE_HINT = "This machine seems to be offline: no server name could be looked up."


class IntegrityError(ValueError):
    """Raised when a file's size, SHA-256 or content is not what was expected (the data of lectures 01-06)."""


class _NextURL(Exception):
    """This URL will not give us the file (too slow, wrong length): asking it again would not help."""

    def __init__(self, message: str, keep_part: bool = False):
        super().__init__(message)
        self.keep_part = keep_part  # True when the bytes received so far are good (a slow server)


def default_deadline(expected_bytes: int | None) -> float:
    """Seconds one transfer may take: 60 s plus the time ``expected_bytes`` need at 50 kB/s (lectures 01-06).

    About 70 s for lecture 04's half-megabyte SMS data, 2.8 hours for GPT-2 124M's 500 MB.
    """
    return BASE_DEADLINE + (expected_bytes if expected_bytes is not None else UNKNOWN_SIZE) / MIN_RATE


_held_locks: dict[str, int] = {}  # folder -> how many times this process holds its lock
_held_guard = threading.RLock()


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str = "a file") -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` while downloading into it (lectures 01-06's caches).

    A second process that wants the lock says that it waits, and waits; the kernel frees the lock
    when its holder ends, even by SIGKILL. The same process may take it again (nested calls), so
    threads of one process are not kept apart by it. A no-op where the platform has no ``fcntl``
    (Windows).
    """
    key = os.path.realpath(folder)
    with _held_guard:
        if fcntl is None or _held_locks.get(key):
            _held_locks[key] = _held_locks.get(key, 0) + 1
            fd = None
        else:
            fd = os.open(key, os.O_RDONLY)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    print(f"Waiting for another process that is downloading into {key} ({what})...", file=sys.stderr)
                    fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
            _held_locks[key] = 1
    try:
        yield
    finally:
        with _held_guard:
            _held_locks[key] -= 1
            if not _held_locks[key]:
                del _held_locks[key]
            if fd is not None:
                os.close(fd)  # closing the descriptor releases the lock


def one_line(err: BaseException, limit: int = 240) -> str:
    """An error in one line: its type, its first line and, for a list of tries, the last one.

    ``python -m helpers prefetch`` (before lecture 01) and lectures 03-06 report failures this way.
    """
    lines = [line.strip() for line in str(err).strip().splitlines()]
    tries = [line[2:] for line in lines if line.startswith("- ")]
    text = lines[0] if lines else ""
    if tries:
        text += f" ... {tries[-1]}"
    return f"{type(err).__name__}: {text}"[:limit]


def sha256sum(path: str | Path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks; lectures 01-06 trust their data files by it."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: str | Path, sha256: str | None = None, size: int | None = None,
                check: Check | None = None) -> None:
    """Raise :class:`IntegrityError` unless ``path`` has the given size and SHA-256 and passes ``check``.

    ``check(path)`` returns what is wrong with the file's content, or None. Lectures 01-06's data
    files are checked this way before they are used.
    """
    path = Path(path)
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise IntegrityError(f"{path.name}: {actual_size:,} bytes, expected {size:,} (truncated or wrong file)")
    if sha256 is not None:
        actual = sha256sum(path)
        if actual != sha256.lower():
            raise IntegrityError(f"{path.name}: SHA-256 {actual}, expected {sha256} (corrupt or wrong file)")
    problem = check(path) if check is not None else None
    if problem is not None:
        raise IntegrityError(f"{path.name}: {problem}")


def is_valid(path: str | Path, sha256: str | None = None, size: int | None = None,
             check: Check | None = None) -> bool:
    """Whether ``path`` exists and passes :func:`verify_file`, as a yes or no (lectures 01-06)."""
    try:
        verify_file(path, sha256, size, check)
    except (OSError, IntegrityError):
        return False
    return True


def copy_verified(src: str | Path, dest: str | Path, sha256: str | None = None, size: int | None = None,
                  check: Check | None = None) -> Path:
    """Copy ``src`` to ``dest`` atomically; the copy is verified before it takes ``dest``'s name.

    Lectures 01-06 copy files from the ``LECTURES_MIRROR`` folder into the cache with it. Raises
    :class:`IntegrityError` (and leaves no file behind) when the copy fails a check.
    """
    src, dest = Path(src), Path(dest)
    try:
        verify_file(src, None, size)  # cheap: no point copying a file of the wrong size
        source = open(src, "rb")
    except OSError as err:
        raise read_error(src, err, "the file to copy") from err
    with source, atomic_write(dest, "wb") as target:
        shutil.copyfileobj(source, target, CHUNK)
        target.flush()
        verify_file(target.name, sha256, size, check)  # the bytes that landed, before the rename
    return dest


def _remove(path: Path) -> None:
    """Delete a file we will not use; a failure to delete is a write error that names the path."""
    try:
        path.unlink(missing_ok=True)
    except OSError as err:
        raise explain_write_error(path, err) from err


def _header_int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _range_start(response) -> int | None:
    """Where a 206 answer's ``Content-Range: bytes START-END/TOTAL`` starts."""
    value = response.headers.get("Content-Range", "")
    return _header_int(value.removeprefix("bytes ").split("-")[0].strip() or None)


def _name_lookup_failed(err: BaseException) -> bool:
    """Whether ``err`` is urllib's way of saying that a server name could not be looked up (no network)."""
    return isinstance(err, urllib.error.URLError) and isinstance(getattr(err, "reason", None), socket.gaierror)


def _merge(tries: list[tuple[str, int, str]]) -> list[str]:
    """One line per URL and reason: ``url (attempts 1-3): reason``."""
    lines: list[tuple[str, list[int], str]] = []
    for url, attempt, reason in tries:
        if lines and lines[-1][0] == url and lines[-1][2] == reason:
            lines[-1][1].append(attempt)
        else:
            lines.append((url, [attempt], reason))
    out = []
    for url, attempts, reason in lines:
        which = "" if attempts == [0] else (f" (attempt {attempts[0]})" if len(attempts) == 1
                                            else f" (attempts {attempts[0]}-{attempts[-1]})")
        out.append(f"{url}{which}: {reason}")
    return out


def _write_all(handle, part: Path, block: bytes) -> None:
    view = memoryview(block)
    try:
        while view:
            view = view[handle.write(view):]
    except OSError as err:
        raise explain_write_error(part, err) from err


def _fetch_once(url: str, part: Path, *, size: int | None, limit: int | None, timeout: float, deadline: float,
                progress: bool, desc: str) -> None:
    """Download ``url`` into ``part``, resuming from its current size if the server allows.

    ``size`` is the exact size when known, ``limit`` the most bytes accepted. Raises :class:`_NextURL`
    for what retrying this URL would not mend, OSError for what it might (a dropped connection).
    """
    offset = part.stat().st_size if part.exists() else 0
    if limit is not None and offset > limit:  # a stale part, longer than the file can be
        _remove(part)
        offset = 0
    if size is not None and offset == size:
        return  # complete already (the last run stopped before the rename): only the checks are left
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    started = time.monotonic()
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=min(timeout, deadline))
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # range not satisfiable: the partial file is stale
            _remove(part)
        raise
    except ValueError as err:  # urllib's word for a malformed or unsupported URL
        raise _NextURL(f"not a URL we can download from ({err})") from err
    with response:
        if offset and (response.status != 206 or _range_start(response) != offset):
            offset = 0  # the server ignored the range (or answered another one): start again
        length = _header_int(response.headers.get("Content-Length"))
        total = length + offset if length is not None else None
        if total is not None and ((size is not None and total != size) or (limit is not None and total > limit)):
            _remove(part)
            expected = f"{size:,} bytes" if size is not None else f"at most {limit:,} bytes"
            raise _NextURL(f"the server announces {total:,} bytes, expected {expected} (an error page or another file?)")
        read = getattr(response, "read1", response.read)  # read1: whatever has arrived, so deadlines are kept
        received = offset
        try:
            handle = open(part, "ab" if offset else "wb", buffering=0)
        except OSError as err:
            raise explain_write_error(part, err) from err
        with handle, tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=desc, disable=not progress, leave=False) as bar:
            while block := read(CHUNK):
                if limit is not None and received + len(block) > limit:
                    handle.close()
                    _remove(part)
                    raise _NextURL(f"the server sent more than the expected {limit:,} bytes (another file?)")
                _write_all(handle, part, block)
                received += len(block)
                bar.update(len(block))
                if time.monotonic() - started > deadline:
                    raise _NextURL(f"not finished after {deadline:g} s ({received:,} bytes so far): the server is "
                                   f"too slow (the deadline is download()'s `deadline` argument)", keep_part=True)
    expected = total if total is not None else size
    if expected is not None and received < expected:
        raise OSError(f"connection closed after {received:,} of {expected:,} bytes")


def download(
    urls: str | Sequence[str],
    dest: str | Path,
    sha256: str | None = None,
    size: int | None = None,
    *,
    check: Check | None = None,
    max_bytes: int | None = None,
    deadline: float | None = None,
    retries: int = 3,
    timeout: float = 30.0,
    backoff: float = 1.0,
    progress: bool = True,
) -> Path:
    """Download the first URL that works to ``dest`` and verify it; return ``dest`` (lectures 01-06's files).

    ``urls`` are tried in order (canonical first, then backups), each up to ``retries`` times with
    exponential backoff; an interrupted transfer resumes where it stopped. Before a file is
    accepted it must have ``size`` bytes and the SHA-256 ``sha256`` (each when given) and pass
    ``check`` (a function of the path returning what is wrong, or None); a file that fails is deleted
    and the next attempt starts from zero. A ``dest`` already there is returned only when it passes
    the same checks, else it is replaced.

    ``max_bytes`` caps the size when ``size`` is unknown. ``deadline`` is how many seconds one
    transfer may take (default: :func:`default_deadline` of the expected size); a transfer can
    overrun it by at most one read ``timeout``. A URL that misses its deadline, or announces or
    sends the wrong number of bytes, or answers with a client error (404 and friends), is not tried
    again: the next URL is.
    """
    urls = [urls] if isinstance(urls, str) else list(urls)
    if not urls:
        raise ValueError("download() needs at least one URL.")
    if retries < 1 or timeout <= 0 or (deadline is not None and deadline <= 0):
        raise ValueError(f"Need retries >= 1, timeout > 0 and deadline > 0; got retries={retries}, "
                         f"timeout={timeout}, deadline={deadline}.")
    dest = Path(dest)
    limit = size if size is not None else max_bytes
    deadline = default_deadline(limit) if deadline is None else deadline
    if dest.is_file() and is_valid(dest, sha256, size, check):
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise explain_write_error(dest.parent, err) from err
    with folder_lock(dest.parent, dest.name):
        return _download_locked(urls, dest, sha256, size, check, limit, deadline, retries, timeout, backoff,
                                progress)


def _download_locked(urls, dest, sha256, size, check, limit, deadline, retries, timeout, backoff, progress) -> Path:
    """:func:`download`'s work, done while holding the lock on ``dest``'s folder."""
    if dest.exists():
        if is_valid(dest, sha256, size, check):
            return dest  # another process finished it while we waited
        _remove(dest)  # a damaged cached copy is replaced, never trusted
    part = part_path(dest)
    tries: list[tuple[str, int, str]] = []  # (url, attempt, why it failed); attempt 0: not retried
    offline = True
    for url in urls:
        for attempt in range(1, retries + 1):
            try:
                _fetch_once(url, part, size=size, limit=limit, timeout=timeout, deadline=deadline,
                            progress=progress, desc=dest.name)
                verify_file(part, sha256, size, check)
            except WriteError:
                raise  # our disk, not the network: another URL would not help
            except _NextURL as err:
                if not err.keep_part:
                    _remove(part)
                tries.append((url, 0, str(err)))
                offline = False
                break
            except IntegrityError as err:
                _remove(part)
                tries.append((url, attempt, str(err)))
                offline = False
            except (OSError, http.client.HTTPException) as err:  # URLError, HTTPError, timeouts, IncompleteRead
                tries.append((url, attempt, str(err)))
                offline = offline and _name_lookup_failed(err)
                if isinstance(err, urllib.error.HTTPError) and err.code < 500 and err.code not in (408, 416, 429):
                    break  # retrying will not make a missing file appear (nor a refused redirect succeed)
            else:
                try:
                    return commit_part(part, dest)
                except OSError as err:
                    raise explain_write_error(dest, err) from err
            if attempt < retries:
                time.sleep(backoff * 2 ** (attempt - 1))
    failures = _merge(tries)
    raise DownloadError(
        f"Could not download {dest.name}. Tried:\n  - "
        + "\n  - ".join(failures)
        + (f"\n{OFFLINE_HINT}" if offline else "")
        + f"\nTo go on without it, download it elsewhere and put it at {dest}"
        + (f" (SHA-256 {sha256})" if sha256 else "")
        + ", or put a copy in the folder named by LECTURES_MIRROR.",
        failures,
        offline,
    )
