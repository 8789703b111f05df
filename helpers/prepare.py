"""Prepare a corpus once, train on it many times: text files become GPT-2 token shards on disk.

Lecture 02 trains on *The Verdict*, 5,145 tokens that fit in memory a thousand times over; real
pretraining reads billions of tokens. This script tokenizes any amount of text once, in parallel,
into the folder of shards that :mod:`helpers.shards` reads and ``python -m helpers.pretrain --data``
trains on::

    python -m helpers.prepare books --out data/books                 # the registry's five Gutenberg books
    python -m helpers.prepare ~/gutenberg --strip-gutenberg --out data/gutenberg   # a folder's *.txt files
    python -m helpers.prepare 'texts/**/*.txt' big-dump.txt --out data/mix          # globs and single files

What it does, and the rules it follows:

- **Documents.** Every file is a document; registry books (``books`` or a name such as ``book-alice``,
  fetched through :func:`helpers.data.fetch`) and, with ``--strip-gutenberg``, all files lose
  Project Gutenberg's licence header and footer (:func:`helpers.data.strip_gutenberg`). A file larger
  than ``--doc-mb`` (default 4 MB) is cut into documents of about that size: each ends at the first
  blank line after its ``--doc-mb`` bytes (failing that, the first line break in the next MB, failing
  that the next character), so that a single large file still has documents to split. In the shards
  every document is followed by the end-of-text token 50256.
- **Split by document.** ``round(--val-fraction x documents)`` documents (at least one, and at least
  one left for training) are drawn at random, seeded by ``--seed``, for validation; the rest train.
  No document is in both, so the validation loss measures text the model never saw.
- **Exactly tiktoken's ids.** A document's ids are those of ``tiktoken``'s ``encode_ordinary`` on the
  whole document (``<|endoftext|>`` written in a text is ordinary text, not the special token). Long
  documents are tokenized in pieces of about ``--piece-kb``, cut only where GPT-2's pre-tokenizer
  splits the text anyway (before a space between two ASCII letters, or after a single line break
  between two visible characters), which gives the same ids; a piece without such a place in 1 MB is
  cut at the next character and counted as a ``forced_cuts`` in the manifest (zero for prose).
- **Parallel, streaming.** The pieces are tokenized by a pool of ``--workers`` processes (default:
  every core) while the main process writes each shard in order, with a progress bar. At most a few
  pieces per worker are in flight, so memory does not grow with the corpus.
- **Interruptible.** Each shard is written atomically (:mod:`helpers.files`) and recorded with its
  token count, size and SHA-256 in ``manifest.json`` as soon as it is complete. Run the same command
  again after a crash or Ctrl-C: it checks the recorded shards and writes only those missing or
  damaged. The sources' SHA-256 and the settings identify the preparation; other inputs or settings
  in the same folder need ``--overwrite``.

The manifest also records the tokenizer (name, vocabulary size, end-of-text id), the format version,
each source's size and SHA-256 and how many documents it gave, and the token counts of both splits.
"""

from __future__ import annotations

import argparse
import codecs
import glob
import hashlib
import json
import multiprocessing
import os
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import data
from .files import WriteError, atomic_write, atomic_write_json, atomic_write_text, explain_write_error
from .shards import DTYPE, FORMAT, FORMAT_VERSION, MANIFEST, SPLITS, shard_file
from .tokenizer import END_OF_TEXT_ID, get_tokenizer

MB = 1_000_000
READ_BLOCK = 1 << 20        # bytes read at a time while hashing and checking the sources
SEARCH_LIMIT = 1 << 20      # how far to look for a place to end a document or cut a piece

# Places where GPT-2's pre-tokenizer (tiktoken's r50k regex) splits the text whatever follows, so that
# tokenizing the two sides separately gives the ids of the whole: before " x" after a letter (``" ?\p{L}+"``
# starts a new piece at the space), or after a single "\n" between two non-space characters (the "\n" is a
# piece of its own either way). Candidates next to non-ASCII bytes are checked by decoding (see _is_safe).
SAFE_CUT = re.compile(rb"(?<=[A-Za-z])(?= [A-Za-z])|(?<=[!-~\x80-\xbf]\n)(?=[!-~\xc2-\xf4])")
BLANK_LINE = re.compile(rb"\n\r?\n")


class PrepareError(ValueError):
    """A corpus cannot be prepared as asked (no files, not UTF-8, other settings in the folder); lecture 02's "where next"."""


@dataclass(frozen=True)
class Source:
    """One input file: where it is, its size and SHA-256, and whether Gutenberg's boilerplate is dropped (lecture 02)."""

    name: str
    path: str
    bytes: int
    sha256: str
    strip_gutenberg: bool
    documents: list[tuple[int, int]] = field(default_factory=list, compare=False)  # byte ranges


@dataclass(frozen=True)
class Piece:
    """Bytes ``start``..``end`` of a document (``doc_start``..``doc_end`` of ``path``): one worker's task (lecture 02).

    An end that is not the document's own is moved to the next safe place (see :func:`safe_cut`) by
    the worker that reads it, and by its neighbour, so that pieces meet exactly.
    """

    path: str
    start: int
    end: int
    doc_start: int
    doc_end: int
    strip_gutenberg: bool

    @property
    def ends_document(self) -> bool:
        return self.end == self.doc_end


@dataclass
class Shard:
    """One shard to write: its split, index, file name and the pieces whose ids it holds, in order (lecture 02)."""

    split: str
    index: int
    pieces: list[Piece] = field(default_factory=list)
    text_bytes: int = 0

    @property
    def file(self) -> str:
        return shard_file(self.split, self.index)


# ------------------------------------------------------------------------------------------ sources


def find_sources(inputs: Iterable[str], pattern: str = "*.txt", strip_gutenberg: bool = False,
                 progress: bool = True) -> list[tuple[str, Path, bool]]:
    """``(name, path, strip_gutenberg)`` of every file the inputs name, in order, each once (lecture 02's corpora).

    An input is a file, a folder (its ``pattern`` files, recursively, sorted), a glob (``**`` allowed)
    or a name of the data registry (``books`` for all Gutenberg books); an existing path wins over a
    registry name. Registry books always lose Project Gutenberg's header and footer.
    """
    found, seen = [], set()

    def add(name: str, path: Path, strip: bool) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append((name, path, strip))

    for item in inputs:
        path = Path(item).expanduser()
        if path.is_file():
            add(item, path, strip_gutenberg)
        elif path.is_dir():
            files = sorted(p for p in path.rglob(pattern) if p.is_file())
            if not files:
                raise PrepareError(f"The folder {item} holds no files matching {pattern!r} (see --pattern).")
            for file in files:
                add(str(file), file, strip_gutenberg)
        elif item == "books" or item in data.REGISTRY:
            for name in data.GUTENBERG_BOOKS if item == "books" else [item]:
                add(name, data.fetch(name, progress=progress), strip_gutenberg or name in data.GUTENBERG_BOOKS)
        elif glob.has_magic(item):
            files = sorted(Path(p) for p in glob.glob(os.path.expanduser(item), recursive=True) if Path(p).is_file())
            if not files:
                raise PrepareError(f"No file matches {item!r}.")
            for file in files:
                add(str(file), file, strip_gutenberg)
        else:
            raise PrepareError(f"{item!r} is no file, folder, glob or name of the data registry (known names: "
                               f"books, {', '.join(sorted(data.REGISTRY))}).")
    if not found:
        raise PrepareError("No input files given.")
    return found


def _char_start(buffer: bytes, index: int) -> int:
    """The first index >= ``index`` where a UTF-8 character starts (not a continuation byte)."""
    while index < len(buffer) and 0x80 <= buffer[index] < 0xC0:
        index += 1
    return index


def find_documents(path: str | Path, size: int, doc_bytes: int) -> list[tuple[int, int]]:
    """The byte ranges of the documents in a file: all of it, or pieces of about ``doc_bytes`` (lecture 02).

    Each document but the last ends at the first blank line after its ``doc_bytes`` bytes; without
    one in the next MB, at the first line break there, else at the next character. Without a blank
    line between there and the end of the file, the document runs to the end.
    """
    cuts = [0]
    with open(path, "rb") as handle:
        while size - cuts[-1] > doc_bytes:
            target = cuts[-1] + doc_bytes
            handle.seek(target)
            window = handle.read(SEARCH_LIMIT)
            blank = BLANK_LINE.search(window)
            if blank is None and target + len(window) >= size:
                break  # no blank line before the end: the rest belongs to this document
            newline = window.find(b"\n")
            cut = target + (blank.end() if blank else newline + 1 if newline >= 0 else _char_start(window, 0))
            if cut >= size:
                break
            cuts.append(cut)
    return list(zip(cuts, [*cuts[1:], size], strict=True))


def read_source(name: str, path: Path, strip_gutenberg: bool, doc_bytes: int, bar=None) -> Source:
    """Hash a source and check that it is UTF-8, reading it once in blocks; then find its documents (lecture 02)."""
    digest, decoder, done = hashlib.sha256(), codecs.getincrementaldecoder("utf-8")(), 0
    try:
        with open(path, "rb") as handle:
            while block := handle.read(READ_BLOCK):
                digest.update(block)
                pending = len(decoder.getstate()[0])
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as err:
                    offset = done - pending + err.start
                    raise PrepareError(
                        f"{name} is not UTF-8 text: the byte 0x{err.object[err.start]:02x} at offset {offset:,} "
                        f"cannot be decoded ({err.reason}). Convert the file to UTF-8 (for example "
                        f"`iconv -f latin1 -t utf-8`) or leave it out.") from None
                done += len(block)
                if bar is not None:
                    bar.update(len(block))
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                raise PrepareError(f"{name} is not UTF-8 text: it ends in the middle of a character.") from None
    except OSError as err:
        raise PrepareError(f"Could not read {name}: {err}") from None
    documents = [(0, done)] if strip_gutenberg else find_documents(path, done, doc_bytes)
    return Source(name, str(path), done, digest.hexdigest(), strip_gutenberg, documents)


def choose_validation(num_documents: int, val_fraction: float, seed: int) -> np.ndarray:
    """Which documents are for validation (a boolean mask): a seeded random choice (lecture 02's split by document).

    ``round(val_fraction * num_documents)`` of them, but at least one, and at least one left for training.
    """
    is_val = np.zeros(num_documents, dtype=bool)
    if val_fraction == 0:
        return is_val
    if num_documents < 2:
        raise PrepareError(f"The inputs make {num_documents} document(s): too few to split into training and "
                           f"validation by document. Give more files, a smaller --doc-mb, or --val-fraction 0.")
    count = min(num_documents - 1, max(1, round(val_fraction * num_documents)))
    is_val[np.random.default_rng(seed).choice(num_documents, size=count, replace=False)] = True
    return is_val


def plan_shards(sources: list[Source], is_val: np.ndarray, shard_bytes: int, piece_bytes: int) -> list[Shard]:
    """Group the documents of each split, in order, into shards of about ``shard_bytes`` of text, cut into pieces.

    Lecture 02's corpora. A document may continue in the next shard (cut at a safe place, like
    pieces); a Gutenberg book is never cut (its boilerplate is found in the whole text).
    """
    shards: list[Shard] = []
    for split in SPLITS:
        current, count = None, 0
        documents = ((source, start, end) for source in sources for start, end in source.documents)
        for (source, doc_start, doc_end), val in zip(documents, is_val, strict=True):
            if val != (split == "val"):
                continue
            pos = doc_start
            while True:
                if current is None or current.text_bytes >= shard_bytes:
                    current, count = Shard(split, count), count + 1
                    shards.append(current)
                room = shard_bytes - current.text_bytes
                stop = doc_end if source.strip_gutenberg or doc_end - pos <= room else pos + room
                step = max(stop - pos, 1) if source.strip_gutenberg else piece_bytes
                for start in range(pos, max(stop, pos + 1), step):
                    end = min(start + step, stop)
                    current.pieces.append(Piece(source.path, start, end, doc_start, doc_end, source.strip_gutenberg))
                current.text_bytes += stop - pos
                if stop == doc_end:
                    break
                pos = stop
    return shards


# ------------------------------------------------------------------------------------------ tokenizing


def _is_safe(window: bytes, i: int) -> bool:
    """Whether a SAFE_CUT candidate at ``window[i]`` is one: the characters around a "\\n" must not be spaces."""
    if window[i] == 0x20:  # before " x" after a letter: ASCII only, always safe
        return True
    lead = i - 2
    while lead > 0 and 0x80 <= window[lead] < 0xC0:
        lead -= 1
    for char in (window[lead : i - 1], window[i : _char_start(window, i + 1)]):
        text = char.decode("utf-8", "replace")
        if text.isspace() or "\ufffd" in text:
            return False
    return True


def safe_cut(handle, pos: int, doc_start: int, doc_end: int) -> tuple[int, bool]:
    """The first place at or after ``pos`` where a document's tokens may be cut, and whether the cut was forced.

    Lecture 02's prepared corpora are tokenized in pieces that meet there (see :data:`SAFE_CUT`). Looks
    up to :data:`SEARCH_LIMIT` bytes ahead; without a safe place there, cuts at the next character
    (forced); never goes past the document's end.
    """
    if pos >= doc_end:
        return doc_end, False
    lo, size = max(pos - 8, doc_start), 4096  # a character before pos may need 4 bytes
    while True:
        hi = min(doc_end, pos + size)
        handle.seek(lo)
        window = handle.read(hi - lo)
        match = SAFE_CUT.search(window, pos - lo)
        while match is not None:
            if _is_safe(window, match.start()):
                return lo + match.start(), False
            match = SAFE_CUT.search(window, match.start() + 1)
        if hi == doc_end:
            return doc_end, False
        if size >= SEARCH_LIMIT:
            return lo + _char_start(window, pos - lo), True
        size *= 16


_TOKENIZER = None


def _start_worker(ignore_interrupts: bool = True) -> None:
    """Load the tokenizer in a worker process (inherited when the pool forks); Ctrl-C is the parent's to handle."""
    global _TOKENIZER
    if ignore_interrupts:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _TOKENIZER = get_tokenizer()


def encode_piece(piece: Piece) -> tuple[np.ndarray, int]:
    """The token ids of one piece (uint16, with the end-of-text id when it ends its document) and its forced cuts.

    Runs in the worker processes of :func:`prepare` (lecture 02's corpora). The ids are tiktoken's
    ``encode_ordinary`` ids (``encode_to_numpy`` with no special tokens allowed or checked is the same
    encoding, returned as an array).
    """
    with open(piece.path, "rb") as handle:
        start, _ = (piece.start, False) if piece.start == piece.doc_start else \
            safe_cut(handle, piece.start, piece.doc_start, piece.doc_end)
        end, forced = (piece.end, False) if piece.ends_document else \
            safe_cut(handle, piece.end, piece.doc_start, piece.doc_end)
        handle.seek(start)
        raw = handle.read(max(end - start, 0))
    text = raw.decode("utf-8")
    if piece.strip_gutenberg:
        text = data.strip_gutenberg(text)
    if hasattr(_TOKENIZER, "encode_to_numpy"):  # tiktoken >= 0.7: the ids as an array, without a Python list
        ids = _TOKENIZER.encode_to_numpy(text, allowed_special=set(), disallowed_special=()).astype(DTYPE)
    else:
        ids = np.array(_TOKENIZER.encode_ordinary(text), dtype=DTYPE)
    if piece.ends_document:
        ids = np.append(ids, np.array([END_OF_TEXT_ID], dtype=DTYPE))
    return ids, int(forced)


@contextmanager
def encoder(workers: int) -> Iterator[Callable[[list[Piece]], Iterator[tuple[np.ndarray, int]]]]:
    """A function that encodes pieces in order, with ``workers`` processes (1: in this process); lecture 02.

    At most ``2 * workers + 2`` pieces are in flight, so results never pile up in memory.
    """
    if workers == 1:
        _start_worker(ignore_interrupts=False)
        yield lambda pieces: map(encode_piece, pieces)
        return
    with multiprocessing.Pool(workers, initializer=_start_worker) as pool:
        def run(pieces: list[Piece]) -> Iterator[tuple[np.ndarray, int]]:
            todo, pending = iter(pieces), deque()
            for piece in todo:
                pending.append(pool.apply_async(encode_piece, (piece,)))
                if len(pending) >= 2 * workers + 2:
                    break
            while pending:
                result = pending.popleft().get()
                piece = next(todo, None)
                if piece is not None:
                    pending.append(pool.apply_async(encode_piece, (piece,)))
                yield result
        yield run


# ------------------------------------------------------------------------------------------ the manifest


def _plan_id(settings: dict, sources: list[Source]) -> str:
    """What the shards depend on: the format, the settings and the sources' contents (not their paths)."""
    key = {"version": FORMAT_VERSION, "settings": settings,
           "sources": [(s.sha256, s.bytes, s.strip_gutenberg) for s in sources]}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _shard_is_intact(folder: Path, record: dict) -> bool:
    path = folder / record["file"]
    try:
        return path.stat().st_size == record["bytes"] and _file_sha256(path) == record["sha256"]
    except OSError:
        return False


def _previous_records(folder: Path, plan_id: str, overwrite: bool) -> dict[str, dict]:
    """The finished shards of an earlier run of the same preparation in ``folder``, by file name."""
    path = folder / MANIFEST
    if not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        same = old.get("format") == FORMAT and old.get("plan_id") == plan_id
    except (OSError, ValueError):
        old, same = {}, False
    if not same and not overwrite:
        raise PrepareError(f"{folder} already holds a corpus prepared from other inputs or settings. Choose "
                           f"another --out folder, or pass --overwrite to replace it.")
    if not same:
        for record in old.get("shards", []):
            if re.fullmatch(r"(train|val)-\d{5}\.bin", str(record.get("file"))):
                (folder / record["file"]).unlink(missing_ok=True)
        return {}
    return {r["file"]: r for r in old["shards"] if r.get("sha256") is not None}


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise explain_write_error(folder, err) from err
    atomic_write_text(folder / f".write-test-{os.getpid()}", "").unlink()


# ------------------------------------------------------------------------------------------ preparing


def prepare(inputs: Iterable[str], out: str | Path, *, val_fraction: float = 0.1, seed: int = 123,
            doc_mb: float = 4.0, shard_mb: float = 64.0, piece_kb: int = 256, workers: int | None = None,
            pattern: str = "*.txt", strip_gutenberg: bool = False, overwrite: bool = False,
            progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Tokenize the texts ``inputs`` name into shards in ``out`` and return the manifest (see the module's docstring).

    Lecture 02's "where next": ``python -m helpers.prepare`` runs it. Safe to run again after an
    interruption: finished shards that are intact are kept.
    """
    if not 0 <= val_fraction < 1:
        raise PrepareError(f"val_fraction must be at least 0 and below 1, got {val_fraction}.")
    if min(doc_mb, shard_mb) <= 0 or piece_kb < 1:
        raise PrepareError(f"doc_mb, shard_mb and piece_kb must be positive, got {doc_mb}, {shard_mb}, {piece_kb}.")
    workers = workers or os.cpu_count() or 1
    out = Path(out)
    _check_writable(out)
    found = find_sources(inputs, pattern, strip_gutenberg, progress)
    tokenizer = get_tokenizer()  # loaded before the pool starts, so forked workers inherit it
    start = time.perf_counter()
    with encoder(workers) as encode:
        total = sum(path.stat().st_size for _, path, _ in found)
        with tqdm(total=total, unit="B", unit_scale=True, desc="checking sources", disable=not progress) as bar:
            sources = [read_source(name, path, strip, int(doc_mb * MB), bar) for name, path, strip in found]
        settings = {"val_fraction": val_fraction, "seed": seed, "doc_bytes": int(doc_mb * MB),
                    "shard_bytes": int(shard_mb * MB), "piece_bytes": piece_kb * 1024}
        is_val = choose_validation(sum(len(s.documents) for s in sources), val_fraction, seed)
        shards = plan_shards(sources, is_val, settings["shard_bytes"], settings["piece_bytes"])
        plan_id = _plan_id(settings, sources)
        previous = _previous_records(out, plan_id, overwrite)
        records = []
        for shard in shards:
            old = previous.get(shard.file)
            kept = old is not None and _shard_is_intact(out, old)
            if old is not None and not kept:
                log(f"{shard.file} is missing or damaged: writing it again")
            records.append(old if kept else {"file": shard.file, "split": shard.split, "text_bytes": shard.text_bytes,
                                             "tokens": None, "bytes": None, "sha256": None, "forced_cuts": None})
        manifest = {
            "format": FORMAT, "version": FORMAT_VERSION, "complete": False, "plan_id": plan_id,
            "tokenizer": {"name": tokenizer.name, "vocab_size": tokenizer.n_vocab, "end_of_text": END_OF_TEXT_ID},
            "dtype": "uint16, little-endian", "settings": settings,
            "sources": [{**{k: v for k, v in asdict(s).items() if k != "documents"},
                         "documents": len(s.documents)} for s in sources],
            "documents": {"train": int((~is_val).sum()), "val": int(is_val.sum())},
            "validation_documents": np.flatnonzero(is_val).tolist(),  # indices, counting all sources' documents
            "shards": records,
        }
        todo = [(i, shard) for i, (shard, record) in enumerate(zip(shards, records, strict=True))
                if record["sha256"] is None]
        if len(todo) < len(shards):
            log(f"{len(shards) - len(todo)} of {len(shards)} shards already written and intact: keeping them")
        atomic_write_json(out / MANIFEST, manifest, indent=1)
        todo_bytes = sum(shard.text_bytes for _, shard in todo)
        with tqdm(total=todo_bytes, unit="B", unit_scale=True, desc=f"tokenizing ({workers} processes)",
                  disable=not progress) as bar:
            results = encode([piece for _, shard in todo for piece in shard.pieces])
            for done, (index, shard) in enumerate(todo, 1):
                records[index] = _write_shard(out, shard, results, bar)
                if done < len(todo):  # after the last one, the complete manifest follows at once
                    atomic_write_json(out / MANIFEST, manifest, indent=1)
    manifest["tokens"] = {split: sum(r["tokens"] for r in records if r["split"] == split) for split in SPLITS}
    manifest["complete"] = True
    atomic_write_json(out / MANIFEST, manifest, indent=1)
    seconds = time.perf_counter() - start
    disk = sum(r["bytes"] for r in records)
    log(f"{sum(manifest['documents'].values())} documents ({manifest['documents']['val']} for validation), "
        f"{manifest['tokens']['train']:,} training and {manifest['tokens']['val']:,} validation tokens in "
        f"{len(records)} shards ({disk / MB:,.1f} MB) in {out}; {len(todo)} shards written in {seconds:.1f} s "
        f"({todo_bytes / MB / max(seconds, 1e-9):.2f} MB of text per second)")
    return manifest


def _write_shard(folder: Path, shard: Shard, results: Iterator[tuple[np.ndarray, int]], bar) -> dict:
    """Write one shard from the next results, atomically; return its manifest record."""
    digest, tokens, forced = hashlib.sha256(), 0, 0
    with atomic_write(folder / shard.file, "wb") as handle:
        for piece in shard.pieces:
            ids, cuts = next(results)
            raw = ids.tobytes()
            handle.write(raw)
            digest.update(raw)
            tokens, forced = tokens + len(ids), forced + cuts
            bar.update(piece.end - piece.start)
    return {"file": shard.file, "split": shard.split, "text_bytes": shard.text_bytes, "tokens": tokens,
            "bytes": tokens * DTYPE.itemsize, "sha256": digest.hexdigest(), "forced_cuts": forced}


# ------------------------------------------------------------------------------------------ command line


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m helpers.prepare`` (lecture 02's "where next")."""
    p = argparse.ArgumentParser(prog="python -m helpers.prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="text files, folders, globs, or data-registry names ('books', 'book-alice', ...)")
    p.add_argument("--out", type=Path, required=True, help="the folder for the shards and manifest.json")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of documents for validation (default 0.1)")
    p.add_argument("--seed", type=int, default=123, help="seed of the choice of validation documents")
    p.add_argument("--doc-mb", type=_positive(float), default=4.0,
                   help="cut files larger than this into documents of about this size, at blank lines (default 4)")
    p.add_argument("--shard-mb", type=_positive(float), default=64.0,
                   help="MB of text per shard (a shard file is about half of that; default 64)")
    p.add_argument("--piece-kb", type=_positive(int), default=256, help="KiB of text per worker task (default 256)")
    p.add_argument("--workers", type=_positive(int), default=None, help="tokenizing processes (default: all cores)")
    p.add_argument("--pattern", default="*.txt", help="which files of a folder to read (default '*.txt')")
    p.add_argument("--strip-gutenberg", action="store_true",
                   help="drop Project Gutenberg's header and footer from every file (always done for registry books)")
    p.add_argument("--overwrite", action="store_true", help="replace a corpus prepared from other inputs or settings")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show progress bars")
    return p


def main(argv=None) -> int:
    """``python -m helpers.prepare``: prepare a corpus; errors come as one clear line (lecture 02's "where next")."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.val_fraction < 1:
        parser.error(f"--val-fraction must be at least 0 and below 1, got {args.val_fraction}")
    try:
        prepare(args.inputs, args.out, val_fraction=args.val_fraction, seed=args.seed, doc_mb=args.doc_mb,
                shard_mb=args.shard_mb, piece_kb=args.piece_kb, workers=args.workers, pattern=args.pattern,
                strip_gutenberg=args.strip_gutenberg, overwrite=args.overwrite, progress=args.progress)
    except (PrepareError, WriteError, data.DownloadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: the finished shards are kept; run the same command again to continue.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
