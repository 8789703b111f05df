"""A careful file downloader: several URLs, retries, resume, progress bar, size and SHA-256 checks.

Lectures 01-06 get their data (:mod:`helpers.data`) and lectures 03-06 GPT-2's files
(:mod:`helpers.gpt2_files`) through it; the lectures themselves never call it directly.

Why not pooch? It verifies hashes and writes atomically too, but it has no list of fallback URLs
per file and cannot resume a partial download, and the GPT-2 checkpoints are up to 6 GB. The code
below is short enough to read in one go.

Guarantees:

* The file appears at ``dest`` only when complete and verified (written to ``dest.part`` first,
  then flushed and renamed by :func:`helpers.files.commit_part`, atomic on one file system).
* A partial ``.part`` file is resumed with an HTTP ``Range`` request when the server allows it.
* A file whose size or SHA-256 is wrong is deleted, never returned.
* When every URL fails, :class:`DownloadError` names the file, each URL tried and why it failed,
  and where a manually downloaded copy can be put.
"""

from __future__ import annotations

import hashlib
import http.client
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from .files import atomic_write, commit_part, part_path

CHUNK = 1 << 20
USER_AGENT = "llm-lectures/0.1 (+https://github.com/)"


class DownloadError(RuntimeError):
    """Raised when a file could not be obtained from any source (lectures 01-06 show its message when offline)."""


class IntegrityError(ValueError):
    """Raised when a file's size or SHA-256 is not what was expected (the data of lectures 01-06)."""


def sha256sum(path: str | Path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks; lectures 01-06 trust their data files by it."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: str | Path, sha256: str | None = None, size: int | None = None) -> None:
    """Raise :class:`IntegrityError` unless ``path`` has the given size and SHA-256 (lectures 01-06's data)."""
    path = Path(path)
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise IntegrityError(f"{path.name}: {actual_size:,} bytes, expected {size:,} (truncated or wrong file)")
    if sha256 is not None:
        actual = sha256sum(path)
        if actual != sha256.lower():
            raise IntegrityError(f"{path.name}: SHA-256 {actual}, expected {sha256} (corrupt or wrong file)")


def is_valid(path: str | Path, sha256: str | None = None, size: int | None = None) -> bool:
    """Whether ``path`` exists with the given size and SHA-256: :func:`verify_file` as a yes or no (lectures 01-06)."""
    try:
        verify_file(path, sha256, size)
    except (OSError, IntegrityError):
        return False
    return True


def copy_verified(src: str | Path, dest: str | Path, sha256: str | None = None, size: int | None = None) -> Path:
    """Copy ``src`` to ``dest`` atomically after checking it; raise IntegrityError if it does not match.

    Lectures 01-06 copy files from the ``LECTURES_MIRROR`` folder into the cache with it.
    """
    verify_file(src, sha256, size)
    dest = Path(dest)
    with open(src, "rb") as source, atomic_write(dest, "wb") as target:
        shutil.copyfileobj(source, target, CHUNK)
    return dest


def _fetch_once(url: str, part: Path, timeout: float, progress: bool, desc: str) -> None:
    """Download ``url`` into ``part``, resuming from its current size if the server allows."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # range not satisfiable: the partial file is stale
            part.unlink()
            raise
        raise
    with response:
        if offset and response.status != 206:  # server ignored the range: start again
            offset = 0
        total = response.headers.get("Content-Length")
        total = int(total) + offset if total is not None else None
        mode = "ab" if offset else "wb"
        with open(part, mode) as f, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=desc, disable=not progress, leave=False,
        ) as bar:
            received = offset
            for block in iter(lambda: response.read(CHUNK), b""):
                f.write(block)
                received += len(block)
                bar.update(len(block))
        if total is not None and received < total:
            raise OSError(f"connection closed after {received:,} of {total:,} bytes")


def download(
    urls: str | Sequence[str],
    dest: str | Path,
    sha256: str | None = None,
    size: int | None = None,
    *,
    retries: int = 3,
    timeout: float = 30.0,
    backoff: float = 1.0,
    progress: bool = True,
) -> Path:
    """Download the first URL that works to ``dest`` and verify it; return ``dest`` (lectures 01-06's files).

    ``urls`` are tried in order (canonical first, then backups), each up to ``retries`` times with
    exponential backoff; an interrupted transfer resumes where it stopped. A complete file that fails
    the size or SHA-256 check is deleted and the next attempt starts from zero.
    """
    urls = [urls] if isinstance(urls, str) else list(urls)
    dest = Path(dest)
    if dest.exists() and is_valid(dest, sha256, size):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    failures: list[str] = []
    for url in urls:
        for attempt in range(1, retries + 1):
            try:
                _fetch_once(url, part, timeout, progress, desc=dest.name)
                verify_file(part, sha256, size)
            except IntegrityError as err:
                part.unlink(missing_ok=True)
                failures.append(f"{url} (attempt {attempt}): {err}")
            except (OSError, http.client.HTTPException) as err:  # URLError, HTTPError, timeouts, IncompleteRead
                failures.append(f"{url} (attempt {attempt}): {err}")
                if isinstance(err, urllib.error.HTTPError) and err.code in (403, 404, 410):
                    break  # retrying will not make a missing file appear
            else:
                return commit_part(part, dest)
            if attempt < retries:
                time.sleep(backoff * 2 ** (attempt - 1))
    raise DownloadError(
        f"Could not download {dest.name}. Tried:\n  - "
        + "\n  - ".join(failures)
        + f"\nIf you are offline, download it elsewhere and put it at {dest}"
        + (f" (SHA-256 {sha256})" if sha256 else "")
        + ", or put a copy in the folder named by LECTURES_MIRROR."
    )
