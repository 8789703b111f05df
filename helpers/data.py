"""The lecture data: one registry, one fetch function, and the pretraining dataset and loaders (lectures 01-02).

``fetch(name)`` looks for a file in this order and returns the first verified copy:

1. the cache (``LECTURES_CACHE``/data),
2. the mirror folder (``LECTURES_MIRROR``), copied into the cache,
3. the network: the canonical URL, then the backups (see :mod:`helpers.download`).

A file is only ever used after it passed the registry's checks, and it is checked the same way
wherever it comes from (a cached copy that fails is replaced; a download that fails is deleted and
the next URL tried): the lecture files have a pinned SHA-256 and size (the SMS data's is checked on
the file inside the zip, before the zip is accepted); the Project Gutenberg books, which could not be
pinned, get a content check known in advance (:func:`gutenberg_problem`).

Run ``python -m helpers prefetch`` before class to download everything the series needs.
"""

from __future__ import annotations

import re
import shutil
import warnings
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset

from . import runtime
from .download import (
    CHUNK,
    OFFLINE_HINT,
    DownloadError,
    IntegrityError,
    copy_verified,
    download,
    folder_lock,
    verify_file,
)
from .files import atomic_write, commit_part, describe_read_error, explain_write_error, part_path, read_error
from .tokenizer import get_tokenizer


@dataclass(frozen=True)
class DataFile:
    """A file the lectures use (lectures 01-05), with where to get it and how to recognise it."""

    name: str
    filename: str
    urls: tuple[str, ...]
    sha256: str | None  # None: not pinned (then ``check`` must say what a good copy looks like)
    size: int | None
    description: str
    license: str
    zip_member: str | None = None  # set when the URLs serve a zip archive holding the file
    check: Callable[[Path], str | None] | None = None  # what is wrong with a copy's content, or None
    max_bytes: int | None = None  # the most bytes a download may have (the zip's, for a zipped file)


REGISTRY: dict[str, DataFile] = {
    f.name: f
    for f in (
        DataFile(
            name="the-verdict",
            filename="the-verdict.txt",
            urls=(
                "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch02/01_main-chapter-code/the-verdict.txt",
            ),
            sha256="b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f",
            size=20_479,
            description='Edith Wharton, "The Verdict" (1908): the pretraining text of lectures 01-02',
            license="public domain",
        ),
        DataFile(
            name="sms-spam",
            filename="SMSSpamCollection",
            urls=(
                "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",
                "https://f001.backblazeb2.com/file/LLMs-from-scratch/sms%2Bspam%2Bcollection.zip",
            ),
            sha256="7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d",
            size=477_907,
            description="UCI SMS Spam Collection: 5,574 messages labelled ham or spam (lecture 04)",
            license="CC BY 4.0",
            zip_member="SMSSpamCollection",
            max_bytes=2_000_000,  # the zip (about 200 kB: the file above, deflated, and a readme)
        ),
        DataFile(
            name="instruction-data",
            filename="instruction-data.json",
            urls=(
                "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/01_main-chapter-code/instruction-data.json",
            ),
            sha256="7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944",
            size=203_524,
            description="1,100 Alpaca-style instruction/response pairs (lecture 05)",
            license="see the LLMs-from-scratch repository",
        ),
    )
}

# The files the lectures themselves use (what `python -m helpers prefetch` downloads).
LECTURE_DATA = tuple(REGISTRY)

# Public-domain books from Project Gutenberg: a larger pretraining corpus than The Verdict
# (helpers.pretrain --corpus books). Their checksums could not be pinned when this registry was
# written (no network), and Project Gutenberg edits its files now and then; so every copy, cached or
# downloaded, must pass gutenberg_problem() instead: plain UTF-8 text of a plausible size, with the
# START and END lines that frame every Project Gutenberg book (an error page fails, and so does a
# body cut short). That is weaker than a hash: a complete book that someone edited would pass.
BOOK_MIN_BYTES = 50_000  # the shortest book here, Alice, is about 170 kB
BOOK_MAX_BYTES = 20_000_000
GUTENBERG_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG EBOOK.*$", re.M | re.I)
GUTENBERG_END = re.compile(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG EBOOK", re.M | re.I)


def gutenberg_problem(path: str | Path) -> str | None:
    """What is wrong with a copy of a Project Gutenberg book, or None when it looks like one.

    Lecture 02's larger corpus is made of such books. The checks, all known before any download:
    a size between :data:`BOOK_MIN_BYTES` and :data:`BOOK_MAX_BYTES`, not an HTML page, UTF-8 text,
    and a ``*** START OF THE PROJECT GUTENBERG EBOOK`` line followed by an ``*** END OF ...`` line.
    """
    size = Path(path).stat().st_size
    if not BOOK_MIN_BYTES <= size <= BOOK_MAX_BYTES:
        return (f"{size:,} bytes, but a book here has between {BOOK_MIN_BYTES:,} and {BOOK_MAX_BYTES:,} "
                f"(an error page, or a download cut short?)")
    raw = Path(path).read_bytes()
    head = raw[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<") or b"<html" in head:
        return "an HTML page, not the plain-text book"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"not UTF-8 text (undecodable byte at offset {err.start:,})"
    start = GUTENBERG_START.search(text)
    if start is None:
        return "no '*** START OF THE PROJECT GUTENBERG EBOOK' line: not a Project Gutenberg text"
    end = GUTENBERG_END.search(text, start.end())
    if end is None:
        return "no '*** END OF THE PROJECT GUTENBERG EBOOK' line after the start: the text was cut short"
    return None


GUTENBERG_BOOKS = {
    "book-pride-and-prejudice": (1342, "Jane Austen, Pride and Prejudice (1813)"),
    "book-frankenstein": (84, "Mary Shelley, Frankenstein (1818)"),
    "book-alice": (11, "Lewis Carroll, Alice's Adventures in Wonderland (1865)"),
    "book-sherlock-holmes": (1661, "Arthur Conan Doyle, The Adventures of Sherlock Holmes (1892)"),
    "book-moby-dick": (2701, "Herman Melville, Moby Dick (1851)"),
}
for _name, (_number, _title) in GUTENBERG_BOOKS.items():
    REGISTRY[_name] = DataFile(
        name=_name,
        filename=f"pg{_number}.txt",
        urls=(
            f"https://www.gutenberg.org/cache/epub/{_number}/pg{_number}.txt",
            f"https://www.gutenberg.org/ebooks/{_number}.txt.utf-8",
        ),
        sha256=None,
        size=None,
        description=f"{_title}, from Project Gutenberg",
        license="public domain in the USA (Project Gutenberg licence)",
        check=gutenberg_problem,
        max_bytes=BOOK_MAX_BYTES,
    )


def data_dir() -> Path:
    """The cache folder for the lectures' data files, ``LECTURES_CACHE/data`` (lectures 01-06)."""
    path = runtime.cache_dir() / "data"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise explain_write_error(path, err) from err
    return path


MAX_EXTRACT_BYTES = 1 << 30  # what safe_extract unpacks at most, in all, unless told otherwise


def safe_extract(archive: str | Path, target: str | Path, members: list[str] | None = None, *,
                 sizes: Mapping[str, int] | None = None, max_bytes: int = MAX_EXTRACT_BYTES) -> list[Path]:
    """Extract ``members`` (default: all) of a zip into ``target``, checking names and sizes first.

    Lecture 04's SMS spam data arrives as a zip archive. Before anything is written, every member
    is checked: a name that would land outside ``target`` (absolute, or with ``..``: the "zip slip"
    attack), a member that is not there, a declared size other than ``sizes[name]``, or declared
    sizes adding up to more than ``max_bytes`` (a zip bomb) are refused. While writing, each member
    is cut off, and refused, where it would pass its declared size. Each file is written atomically,
    so a refused or damaged member leaves nothing behind.

    Raises :class:`helpers.download.IntegrityError` (a ValueError) for all of these and for a file
    that is not a zip archive or is damaged.
    """
    archive, target, sizes = Path(archive), Path(target).resolve(), dict(sizes or {})
    try:
        zf = zipfile.ZipFile(archive)
    except OSError as err:
        raise read_error(archive, err, "a zip archive") from err
    except (zipfile.BadZipFile, ValueError, EOFError, OverflowError) as err:
        raise IntegrityError(f"{archive.name} is not a zip archive, or a damaged one (an error page, or "
                             f"a download cut short?): {err}") from err
    with zf:
        infos = {info.filename: info for info in zf.infolist()}
        names = members if members is not None else [n for n, info in infos.items() if not info.is_dir()]
        plan, total = [], 0
        for name in names:
            out = (target / name).resolve()
            if target != out and target not in out.parents:
                raise IntegrityError(f"Refusing to extract {name!r} from {archive}: it would land outside {target}.")
            info = infos.get(name)
            if info is None:
                raise IntegrityError(f"{archive.name} holds no {name!r} (it holds: {', '.join(sorted(infos)) or 'nothing'}).")
            expected = sizes.get(name)
            if expected is not None and info.file_size != expected:
                raise IntegrityError(f"{name!r} in {archive.name} would unpack to {info.file_size:,} bytes, "
                                     f"expected {expected:,}: refused before writing anything.")
            total += info.file_size
            if total > max_bytes:
                raise IntegrityError(f"{archive.name} would unpack to more than {max_bytes:,} bytes (a zip bomb?): "
                                     f"refused before writing anything.")
            plan.append((name, out, info.file_size))
        return [_extract_member(zf, archive, name, out, limit) for name, out, limit in plan]


def _extract_member(zf: zipfile.ZipFile, archive: Path, name: str, out: Path, limit: int) -> Path:
    """Write one member to ``out`` atomically, stopping where it would pass ``limit`` bytes."""
    try:
        with zf.open(name) as src, atomic_write(out, "wb") as dst:
            written = 0
            while block := src.read(CHUNK):
                written += len(block)
                if written > limit:
                    raise IntegrityError(f"{name!r} in {archive.name} unpacks to more than the {limit:,} bytes "
                                         f"it declares: stopped there, nothing kept.")
                dst.write(block)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as err:
        # a bad CRC, a broken deflate stream, an unknown compression method, a password
        raise IntegrityError(f"{name!r} in {archive.name} could not be unpacked ({type(err).__name__}: {err}): "
                             f"the archive is damaged or of a kind we cannot read.") from err
    return out


def _problem(entry: DataFile, path: Path) -> str | None:
    """What is wrong with a copy of ``entry`` at ``path`` (size, SHA-256, content), or None."""
    try:
        verify_file(path, entry.sha256, entry.size, entry.check)
    except IntegrityError as err:
        return str(err)
    except OSError as err:
        return describe_read_error(path, err, entry.filename)
    return None


def _from_mirror(entry: DataFile, dest: Path) -> Path | None:
    mirror = runtime.mirror_dir()
    if mirror is None:
        return None
    candidate = mirror / entry.filename
    if not candidate.is_file():
        return None
    problem = _problem(entry, candidate)
    if problem is not None:
        warnings.warn(f"Ignoring {candidate}: it does not match what {entry.filename} must be ({problem}).",
                      stacklevel=3)
        return None
    return copy_verified(candidate, dest, entry.sha256, entry.size, entry.check)


def _member_check(entry: DataFile, staging: Path):
    """A download check for a zipped entry: its member, unpacked into ``staging``, must pass the entry's checks."""

    def check(archive: Path) -> str | None:
        shutil.rmtree(staging, ignore_errors=True)
        sizes = {entry.zip_member: entry.size} if entry.size is not None else None
        try:
            (member,) = safe_extract(archive, staging, [entry.zip_member], sizes=sizes)
            verify_file(member, entry.sha256, entry.size, entry.check)
        except IntegrityError as err:
            shutil.rmtree(staging, ignore_errors=True)
            return str(err)
        return None

    return check


def _from_network(entry: DataFile, dest: Path, progress: bool) -> Path:
    if entry.zip_member is None:
        return download(entry.urls, dest, entry.sha256, entry.size, check=entry.check,
                        max_bytes=entry.max_bytes, progress=progress)
    archive = dest.with_name(dest.name + ".zip")
    staging = dest.with_name(dest.name + ".unzipped")
    try:
        # Each URL's archive is accepted only once the member inside it passed the entry's checks
        # (the check leaves it unpacked in ``staging``); a broken archive moves on to the next URL.
        download(entry.urls, archive, check=_member_check(entry, staging), max_bytes=entry.max_bytes,
                 progress=progress)
        try:
            commit_part(staging / entry.zip_member, dest)
        except OSError as err:
            raise explain_write_error(dest, err) from err
    finally:  # the zip is small: no partial copy of it is kept for resuming
        for leftover in (archive, part_path(archive)):
            leftover.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def fetch(name: str, progress: bool = True) -> Path:
    """Return the path of a verified copy of the lecture file ``name`` (see :data:`REGISTRY`); lectures 01-05.

    A cached copy that fails the entry's checks is deleted and fetched again (mirror, then network).
    """
    if name not in REGISTRY:
        raise KeyError(f"Unknown data file {name!r}. Known: {', '.join(sorted(REGISTRY))}.")
    entry = REGISTRY[name]
    dest = data_dir() / entry.filename
    if dest.is_file() and _problem(entry, dest) is None:
        return dest
    with folder_lock(dest.parent, entry.filename):  # one process at a time fetches into the cache
        return _fetch_locked(entry, dest, progress)


def _fetch_locked(entry: DataFile, dest: Path, progress: bool) -> Path:
    if dest.is_file() and _problem(entry, dest) is None:
        return dest  # another process fetched it while we waited
    for stale in (dest, dest.with_name(dest.name + ".sha256")):  # .sha256: written by earlier versions
        try:
            stale.unlink(missing_ok=True)  # a damaged cached copy is never used or kept
        except OSError as err:
            raise explain_write_error(stale, err) from err
    found = _from_mirror(entry, dest)
    if found is not None:
        return found
    try:
        return _from_network(entry, dest, progress)
    except DownloadError as err:
        raise DownloadError(_offline_message(entry, dest, err), err.failures, err.offline) from None


def _offline_message(entry: DataFile, dest: Path, err: DownloadError) -> str:
    """What failed, and the one thing to do about it: where to put a copy fetched by other means."""
    if entry.zip_member is not None:
        how = (f"download {entry.urls[0]} elsewhere, take {entry.zip_member} out of the zip, and copy it into "
               f"{dest.parent}")
    else:
        how = f"download {entry.urls[0]} elsewhere and save it as {dest}"
    return (f"Could not get {entry.filename} ({entry.description}). Tried:\n  - " + "\n  - ".join(err.failures)
            + (f"\n{OFFLINE_HINT}" if err.offline else "")
            + f"\nConnect and rerun; or {how} (or into a folder named by LECTURES_MIRROR), then rerun."
            + (f" Its SHA-256 must be {entry.sha256}." if entry.sha256 else ""))


def read_text(name: str) -> str:
    """The text of the lecture file ``name``, e.g. ``read_text("the-verdict")`` in lectures 01-03."""
    return fetch(name).read_text(encoding="utf-8")


def strip_gutenberg(text: str) -> str:
    """The book itself: drop Project Gutenberg's licence header and footer when they are present.

    Lecture 02's larger corpus (``python -m helpers.pretrain --corpus books``) is made of such books.
    """
    start = GUTENBERG_START.search(text)
    end = GUTENBERG_END.search(text)
    body = text[start.end() if start else 0 : end.start() if end else len(text)]
    return body.strip().replace("\r\n", "\n")


def read_corpus(names: list[str] | tuple[str, ...]) -> str:
    """Several texts joined into one corpus, separated by ``<|endoftext|>`` (Gutenberg boilerplate removed).

    Lecture 02 pretrains on such a corpus when more text than *The Verdict* is wanted.
    """
    texts = [strip_gutenberg(read_text(name)) if name in GUTENBERG_BOOKS else read_text(name) for name in names]
    return "<|endoftext|>".join(texts)


# --------------------------------------------------------------------------- pretraining data


class GPTDatasetV1(Dataset):
    """Input/target pairs from a text: windows of ``max_length`` tokens, every ``stride`` tokens (lecture 01).

    The target is the input shifted by one token: at every position the model learns to predict
    the next token.
    """

    def __init__(self, txt: str, tokenizer, max_length: int, stride: int):
        if not isinstance(txt, str):
            raise TypeError(f"GPTDatasetV1 needs the text as a str, got {type(txt).__name__}.")
        if max_length < 1 or stride < 1:
            raise ValueError(f"max_length and stride must be positive, got {max_length} and {stride}.")
        token_ids = tokenizer.encode(txt, allowed_special={"<|endoftext|>"})
        if len(token_ids) <= max_length:
            raise ValueError(
                f"The text has {len(token_ids)} tokens, too few for one window of max_length={max_length} "
                f"plus its shifted target. Use a longer text or a smaller max_length."
            )
        ids = torch.tensor(token_ids)
        starts = range(0, len(token_ids) - max_length, stride)
        self.input_ids = [ids[i : i + max_length] for i in starts]
        self.target_ids = [ids[i + 1 : i + max_length + 1] for i in starts]

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, idx):
        return self.input_ids[idx], self.target_ids[idx]


def create_dataloader(
    txt: str,
    batch_size: int = 4,
    max_length: int = 256,
    stride: int = 128,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    tokenizer=None,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over :class:`GPTDatasetV1` windows of ``txt`` (the course's ``create_dataloader_v1``).

    Lecture 01 teaches it and lecture 02 pretrains with it; :func:`train_val_loaders` makes the usual pair.
    A loader that would have no batch at all (``drop_last`` with fewer windows than ``batch_size``) is
    refused with a ValueError that says how many windows there are.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    dataset = GPTDatasetV1(txt, tokenizer or get_tokenizer(), max_length, stride)
    if drop_last and len(dataset) < batch_size:
        raise ValueError(
            f"The text gives {len(dataset)} window(s) of {max_length} tokens, fewer than batch_size={batch_size}: "
            f"with drop_last=True the loader would have no batches at all. Use a smaller batch_size or "
            f"max_length, a longer text, or drop_last=False."
        )
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
        num_workers=num_workers, pin_memory=pin_memory,
    )


create_dataloader_v1 = create_dataloader  # the course's name


def train_val_split(text: str, train_ratio: float = 0.9) -> tuple[str, str]:
    """Split a text by characters: the first ``train_ratio`` for training, the rest for validation (lecture 01)."""
    if not 0.0 < train_ratio < 1.0:
        raise ValueError(f"train_ratio must be between 0 and 1, got {train_ratio}.")
    split_idx = int(train_ratio * len(text))
    return text[:split_idx], text[split_idx:]


def longest_verbatim_run(generated: str, text: str) -> str:
    """The longest run of consecutive words of ``generated`` that occurs word for word in ``text`` (lecture 02).

    Lecture 02 uses it to prove overfitting by code: a model that memorised its training text generates
    long runs of it. Words are split on whitespace, and a run counts when its words, joined by single
    spaces, occur as whole words in ``text`` with its whitespace also made single spaces. Returns ``""`` when no word
    of ``generated`` occurs in ``text``.
    """
    if not isinstance(generated, str) or not isinstance(text, str):
        raise TypeError("longest_verbatim_run takes two strings: the generated text and the text to search.")
    haystack = f" {' '.join(text.split())} "   # spaces at both ends: a run must match whole words
    words = generated.split()
    best: tuple[int, int] = (0, 0)
    for start in range(len(words)):
        end = start + (best[1] - best[0]) + 1   # only a longer run than the best so far matters
        while end <= len(words) and f" {' '.join(words[start:end])} " in haystack:
            best, end = (start, end), end + 1
    return " ".join(words[best[0]:best[1]])


class TextLoaders(NamedTuple):
    """The training and validation loaders of a text, in that order (lectures 01-03)."""

    train: DataLoader
    val: DataLoader


def train_val_loaders(text: str, context_length: int, batch_size: int = 2, train_ratio: float = 0.9,
                      tokenizer=None) -> TextLoaders:
    """The course's two loaders over a text, as lectures 01-03 build them: ``train, val = train_val_loaders(...)``.

    The text is split by :func:`train_val_split`; both parts are cut into windows of ``context_length``
    tokens that do not overlap (``stride = context_length``). The training loader shuffles and drops
    a last incomplete batch, so every step sees ``batch_size`` windows; the validation loader keeps
    the order and every window. For *The Verdict* with context 256 and batch size 2 that is 9
    training batches and 1 validation batch, as in the course. Shuffling draws from PyTorch's global
    generator when the loader is iterated: seed it first for a repeatable order.
    """
    train_text, val_text = train_val_split(text, train_ratio)
    tokenizer = tokenizer or get_tokenizer()
    return TextLoaders(
        create_dataloader(train_text, batch_size=batch_size, max_length=context_length, stride=context_length,
                          shuffle=True, drop_last=True, tokenizer=tokenizer),
        create_dataloader(val_text, batch_size=batch_size, max_length=context_length, stride=context_length,
                          shuffle=False, drop_last=False, tokenizer=tokenizer),
    )
