"""The lecture data: one registry, one fetch function, and the pretraining dataset and loaders (lectures 01-02).

``fetch(name)`` looks for a file in this order and returns the first verified copy:

1. the cache (``LECTURES_CACHE``/data),
2. the mirror folder (``LECTURES_MIRROR``), copied into the cache,
3. the network: the canonical URL, then the backups (see :mod:`helpers.download`).

A file is only ever used after its SHA-256 matched the registry.

Run ``python -m helpers prefetch`` before class to download everything the series needs.
"""

from __future__ import annotations

import re
import shutil
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset

from . import runtime
from .download import DownloadError, copy_verified, download, is_valid, sha256sum, verify_file
from .files import atomic_write, atomic_write_text, commit_part
from .tokenizer import get_tokenizer


@dataclass(frozen=True)
class DataFile:
    """A file the lectures use (lectures 01-05), with where to get it and how to recognise it."""

    name: str
    filename: str
    urls: tuple[str, ...]
    sha256: str | None  # None: not pinned; the hash of the first download is recorded and enforced
    size: int | None
    description: str
    license: str
    zip_member: str | None = None  # set when the URLs serve a zip archive holding the file


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
# written (no network), so the first download's SHA-256 is recorded beside the file and enforced
# from then on.
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
    )


def data_dir() -> Path:
    """The cache folder for the lectures' data files, ``LECTURES_CACHE/data`` (lectures 01-06)."""
    path = runtime.cache_dir() / "data"
    path.mkdir(parents=True, exist_ok=True)
    return path


def safe_extract(archive: str | Path, target: str | Path, members: list[str] | None = None) -> list[Path]:
    """Extract ``members`` (default: all) of a zip into ``target``, refusing any path outside it.

    Lecture 04's SMS spam data arrives as a zip archive. Each file is written atomically.

    Raises ValueError for absolute paths or ``..`` components (the "zip slip" attack) before
    anything is written.
    """
    target = Path(target).resolve()
    written = []
    with zipfile.ZipFile(archive) as zf:
        names = members if members is not None else [i.filename for i in zf.infolist() if not i.is_dir()]
        for name in names:
            out = (target / name).resolve()
            if target != out and target not in out.parents:
                raise ValueError(f"Refusing to extract {name!r} from {archive}: it would land outside {target}.")
        for name in names:
            out = (target / name).resolve()
            with zf.open(name) as src, atomic_write(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            written.append(out)
    return written


def _recorded_sha256(entry: DataFile, dest: Path) -> str | None:
    """The pinned SHA-256, or for an unpinned file the one recorded at its first download."""
    if entry.sha256 is not None:
        return entry.sha256
    sidecar = dest.with_name(dest.name + ".sha256")
    return sidecar.read_text().strip() if sidecar.is_file() else None


def _record_sha256(entry: DataFile, path: Path) -> None:
    if entry.sha256 is None:
        atomic_write_text(path.with_name(path.name + ".sha256"), sha256sum(path) + "\n")


def _from_mirror(entry: DataFile, dest: Path) -> Path | None:
    mirror = runtime.mirror_dir()
    if mirror is None:
        return None
    candidate = mirror / entry.filename
    if not candidate.is_file():
        return None
    if not is_valid(candidate, entry.sha256, entry.size):
        warnings.warn(f"Ignoring {candidate}: it does not match the expected SHA-256 of {entry.filename}.", stacklevel=3)
        return None
    path = copy_verified(candidate, dest, entry.sha256, entry.size)
    _record_sha256(entry, path)
    return path


def _from_network(entry: DataFile, dest: Path, progress: bool) -> Path:
    if entry.zip_member is None:
        return download(entry.urls, dest, entry.sha256, entry.size, progress=progress)
    archive = dest.with_name(dest.name + ".zip")
    staging = dest.with_name(dest.name + ".unzipped")
    download(entry.urls, archive, progress=progress)  # the zip's hash is not pinned; its member's is
    try:
        (extracted,) = safe_extract(archive, staging, [entry.zip_member])
        verify_file(extracted, entry.sha256, entry.size)
        commit_part(extracted, dest)
    finally:
        archive.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def fetch(name: str, progress: bool = True) -> Path:
    """Return the path of a verified copy of the lecture file ``name`` (see :data:`REGISTRY`); lectures 01-05."""
    if name not in REGISTRY:
        raise KeyError(f"Unknown data file {name!r}. Known: {', '.join(sorted(REGISTRY))}.")
    entry = REGISTRY[name]
    dest = data_dir() / entry.filename
    if dest.is_file() and is_valid(dest, _recorded_sha256(entry, dest), entry.size):
        return dest
    dest.unlink(missing_ok=True)  # a corrupt cached copy is never used or kept
    found = _from_mirror(entry, dest)
    if found is not None:
        return found
    try:
        path = _from_network(entry, dest, progress)
        _record_sha256(entry, path)
        return path
    except DownloadError as err:
        raise DownloadError(
            f"{err}\nFor {entry.description}: copy {entry.filename} into {dest.parent} "
            f"or into the folder named by LECTURES_MIRROR, then rerun."
        ) from None


def read_text(name: str) -> str:
    """The text of the lecture file ``name``, e.g. ``read_text("the-verdict")`` in lectures 01-03."""
    return fetch(name).read_text(encoding="utf-8")


def strip_gutenberg(text: str) -> str:
    """The book itself: drop Project Gutenberg's licence header and footer when they are present.

    Lecture 02's larger corpus (``python -m helpers.pretrain --corpus books``) is made of such books.
    """
    start = re.search(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG EBOOK.*$", text, re.M | re.I)
    end = re.search(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG EBOOK", text, re.M | re.I)
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
    """
    dataset = GPTDatasetV1(txt, tokenizer or get_tokenizer(), max_length, stride)
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
