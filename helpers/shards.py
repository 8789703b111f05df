"""Token shards on disk, and context windows read from them without loading them (lecture 02's "where next").

``python -m helpers.prepare`` (see :mod:`helpers.prepare`) tokenizes a corpus once into a folder of
shards; training then reads windows straight from the disk, however large the corpus::

    data/books/
        manifest.json        # what is in the folder: sources, settings, shards, token counts
        train-00000.bin      # GPT-2 token ids, uint16 little-endian, one after another
        train-00001.bin
        val-00000.bin

Each split (``train``, ``val``) is one long stream of token ids: its shards read in order, every
document followed by the end-of-text token 50256, as GPT-2 was pretrained. A shard is a raw array
(``np.fromfile(path, "<u2")`` reads it), so any tool can read it; the manifest says how many tokens
each holds and their SHA-256.

:class:`TokenShards` memory-maps one split's shards: the operating system reads the pages a window
touches, on demand, and can drop them again, so the memory training needs does not grow with the
corpus. :class:`TokenWindows` turns the stream into ``(input, target)`` windows, as
``GPTDatasetV1`` does for a text in memory (lecture 01); windows may cross document boundaries, as in
GPT-2's pretraining. :class:`RandomWindows` picks a fixed number of windows per epoch at random
(seeded by seed and epoch, so every rerun and every resumed run sees the same ones), each process of a
DDP run its own share. :func:`create_shard_dataloader` puts them together the way
``create_dataloader`` does for a text, and :func:`pretraining_loaders` makes the pair that
``python -m helpers.pretrain --data FOLDER`` trains on.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .files import describe_read_error

FORMAT = "llm-lectures-token-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DTYPE = np.dtype("<u2")  # GPT-2's 50,257 ids fit into 16 bits
SPLITS = ("train", "val")


def shard_file(split: str, index: int) -> str:
    """The file name of shard ``index`` of ``split``: ``train-00000.bin`` (lecture 02's prepared corpora)."""
    return f"{split}-{index:05d}.bin"


def read_manifest(folder: str | Path, complete: bool = True) -> dict:
    """The manifest of a prepared folder, checked: the right format and, with ``complete``, finished.

    Lecture 02's larger corpora are read through it. Raises ValueError with what to do when the folder
    was not prepared, was prepared by another version, or its preparation did not finish.
    """
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{folder} holds no {MANIFEST}: it is not a prepared corpus. Prepare one with "
                         f"`python -m helpers.prepare TEXT_FILES... --out {folder}`.") from None
    except (OSError, ValueError) as err:
        raise ValueError(describe_read_error(path, err, "a corpus manifest (JSON)")) from None
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a version-{FORMAT_VERSION} {FORMAT} manifest (format "
                         f"{manifest.get('format')!r}, version {manifest.get('version')!r}): prepare the corpus again.")
    if complete and not manifest.get("complete"):
        done = sum(shard["sha256"] is not None for shard in manifest["shards"])
        raise ValueError(f"The preparation of {folder} did not finish ({done} of {len(manifest['shards'])} shards "
                         f"written). Run the same `python -m helpers.prepare` command again: it keeps the "
                         f"finished shards and writes the rest.")
    return manifest


class TokenShards:
    """One split of a prepared folder as a single stream of token ids, memory-mapped shard by shard.

    ``len(shards)`` is the number of tokens; ``shards.read(start, n)`` returns ``n`` ids from ``start``
    as a uint16 array, also across a shard boundary. The files are opened on first use, in the
    process that reads them, so the object pickles as a few paths (DataLoader workers, DDP). Lecture
    02's "where next" trains on corpora that do not fit in memory with it.
    """

    def __init__(self, folder: str | Path, split: str = "train"):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
        self.folder, self.split = Path(folder), split
        manifest = read_manifest(self.folder)
        self.vocab_size = manifest["tokenizer"]["vocab_size"]
        shards = [s for s in manifest["shards"] if s["split"] == split and s["tokens"] > 0]
        self.files = [self.folder / s["file"] for s in shards]
        self.starts = np.cumsum([0] + [s["tokens"] for s in shards]).tolist()  # token offset of each shard
        for path, shard in zip(self.files, shards, strict=True):
            size = path.stat().st_size if path.is_file() else None
            if size != shard["tokens"] * DTYPE.itemsize:
                raise ValueError(f"{path} should hold {shard['tokens']:,} tokens ({shard['tokens'] * 2:,} bytes) but "
                                 f"{'is missing' if size is None else f'has {size:,} bytes'}: run "
                                 f"`python -m helpers.prepare` again on this folder to redo it.")
        self._maps: list[np.memmap] | None = None

    def __len__(self) -> int:
        return self.starts[-1]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": None}  # never pickle the mapped data itself

    def _arrays(self) -> list[np.memmap]:
        if self._maps is None:
            self._maps = [np.memmap(path, dtype=DTYPE, mode="r") for path in self.files]
        return self._maps

    def read(self, start: int, count: int) -> np.ndarray:
        """``count`` token ids from position ``start`` of the stream (a copy, uint16)."""
        if start < 0 or count < 0 or start + count > len(self):
            raise IndexError(f"tokens {start}..{start + count} are outside the {len(self):,} tokens of {self.split}.")
        maps, parts = self._arrays(), []
        shard = bisect.bisect_right(self.starts, start) - 1
        while count > 0:
            offset = start - self.starts[shard]
            piece = maps[shard][offset : offset + count]
            parts.append(piece)
            start, count, shard = start + len(piece), count - len(piece), shard + 1
        return parts[0].copy() if len(parts) == 1 else np.concatenate(parts)


class TokenWindows(Dataset):
    """``(input, target)`` windows of ``context_length`` tokens from a split, one every ``stride`` tokens.

    Like lecture 01's ``GPTDatasetV1``, but over shards on disk: window ``i`` starts at token
    ``i * stride``; the target is the input shifted by one. Both come as int64 tensors. With
    ``stride=1`` every token position starts a window, which is what :class:`RandomWindows` samples from.
    """

    def __init__(self, tokens: TokenShards, context_length: int, stride: int | None = None):
        stride = context_length if stride is None else stride
        if context_length < 1 or stride < 1:
            raise ValueError(f"context_length and stride must be positive, got {context_length} and {stride}.")
        if len(tokens) <= context_length:
            raise ValueError(f"The {tokens.split} split of {tokens.folder} has {len(tokens):,} tokens, too few for "
                             f"one window of {context_length} plus its shifted target. Prepare more text, give "
                             f"`python -m helpers.prepare` a larger --val-fraction, or use a shorter context.")
        self.tokens, self.context_length, self.stride = tokens, context_length, stride

    def __len__(self) -> int:
        return (len(self.tokens) - self.context_length - 1) // self.stride + 1

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} of {len(self)}")
        ids = torch.from_numpy(self.tokens.read(index * self.stride, self.context_length + 1).astype(np.int64))
        return ids[:-1], ids[1:]


class RandomWindows(Sampler[int]):
    """``num_samples`` random window indices per epoch, the same for a given seed and epoch; a DDP rank's share.

    The indices of an epoch are drawn from ``np.random.default_rng([seed, epoch, block])``, block by
    block of :attr:`BLOCK` indices (so a huge epoch needs no huge list), independently of any global
    generator, so reruns and resumed runs see exactly the same windows. With several
    processes, rank ``r`` of ``world_size`` takes every ``world_size``-th index of the epoch's draw
    starting at ``r``: together the processes see the windows one process would see. Call
    :meth:`set_epoch` before each epoch (lecture 02's ``train_loop`` does it, as for PyTorch's
    ``DistributedSampler``).
    """

    BLOCK = 1 << 16  # indices drawn at a time, each block from its own generator (seed, epoch, block)

    def __init__(self, num_windows: int, num_samples: int, seed: int = 123, rank: int = 0, world_size: int = 1):
        if num_windows < 1 or num_samples < world_size or not 0 <= rank < world_size:
            raise ValueError(f"Need num_windows >= 1, num_samples >= world_size and 0 <= rank < world_size; got "
                             f"{num_windows}, {num_samples}, rank {rank} of {world_size}.")
        self.num_windows, self.num_samples, self.seed = num_windows, num_samples, seed
        self.rank, self.world_size, self.epoch = rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the windows of ``epoch`` next."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples // self.world_size

    def __iter__(self) -> Iterator[int]:
        total = len(self) * self.world_size
        for block, first in enumerate(range(0, total, self.BLOCK)):  # a block at a time: memory stays flat
            rng = np.random.default_rng([self.seed, self.epoch, block])
            drawn = rng.integers(0, self.num_windows, size=min(self.BLOCK, total - first))
            yield from drawn[(self.rank - first) % self.world_size :: self.world_size].tolist()


class StridedShare(Sampler[int]):
    """Window indices 0, 1, 2, ... in order; with several processes, rank ``r`` takes ``r``, ``r + world``, ...

    A pass over a split without holding a list of its windows (PyTorch's samplers keep one, which
    grows with the corpus). ``drop_last`` gives every rank the same count. Lecture 02's "where next".
    """

    def __init__(self, num_windows: int, rank: int = 0, world_size: int = 1, drop_last: bool = False):
        self.num_windows, self.rank, self.world_size = num_windows, rank, world_size
        self.end = num_windows - num_windows % world_size if drop_last else num_windows

    def __len__(self) -> int:
        return len(range(self.rank, self.end, self.world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.end, self.world_size))


def create_shard_dataloader(folder: str | Path, split: str = "train", batch_size: int = 4, max_length: int = 256,
                            stride: int | None = None, windows_per_epoch: int | None = None, seed: int = 123,
                            rank: int = 0, world_size: int = 1, drop_last: bool = True, num_workers: int = 0,
                            pin_memory: bool = False) -> DataLoader:
    """A DataLoader of ``(input, target)`` batches from a prepared folder, as ``create_dataloader`` makes from a text.

    Lecture 02's "where next": swap ``create_dataloader(text, batch_size, max_length, stride, ...)`` for
    ``create_shard_dataloader(folder, "train", batch_size, max_length, ...)``. Two ways through a split:

    - ``windows_per_epoch=N``: N windows per epoch starting at random tokens (:class:`RandomWindows`,
      seeded by ``seed`` and the epoch), the usual way to pretrain on a large corpus;
    - otherwise a pass in order, one window every ``stride`` tokens (default ``max_length``:
      windows that do not overlap), for evaluation or one clean epoch.

    ``rank`` and ``world_size`` give each DDP process its own share of the windows.
    """
    tokens = TokenShards(folder, split)
    if windows_per_epoch is not None:
        dataset = TokenWindows(tokens, max_length, stride=1)
        sampler = RandomWindows(len(dataset), windows_per_epoch, seed, rank, world_size)
    else:
        dataset = TokenWindows(tokens, max_length, stride)
        sampler = StridedShare(len(dataset), rank, world_size, drop_last)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                      num_workers=num_workers, pin_memory=pin_memory)


def pretraining_loaders(folder: str | Path, context_length: int, batch_size: int, rank: int = 0, world_size: int = 1,
                        seed: int = 123, windows_per_epoch: int | None = None,
                        pin_memory: bool = False) -> tuple[DataLoader, DataLoader]:
    """The loaders of ``python -m helpers.pretrain --data FOLDER`` (lecture 02's training, on a prepared corpus).

    Training: ``windows_per_epoch`` random windows per epoch (default: as many as non-overlapping
    windows fit into the training split, so that an epoch sees about as many tokens as the split
    holds), each process its share. Validation: the validation split in order, windows that do not
    overlap, the same loader on every process (the evaluation shares its batches out itself).
    """
    train_tokens = TokenShards(folder, "train")
    if windows_per_epoch is None:
        windows_per_epoch = max(world_size, len(train_tokens) // context_length)
    train = create_shard_dataloader(folder, "train", batch_size, context_length, windows_per_epoch=windows_per_epoch,
                                    seed=seed, rank=rank, world_size=world_size, pin_memory=pin_memory)
    val = create_shard_dataloader(folder, "val", batch_size, context_length, drop_last=False, pin_memory=pin_memory)
    return train, val
