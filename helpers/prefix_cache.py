"""Frozen-prefix caching: what frozen layers compute for an example never changes, so compute it once.

Lecture 04 explains it; lecture 06 measures it.

In lecture 04's default finetuning ("last block") the embeddings and the first 11 of GPT-2's 12 blocks
are frozen, and GPT-2 uses no dropout. For a given message those layers therefore produce exactly the same
activations in every epoch; only the last block, the final LayerNorm and the new head change.
:func:`cache_frozen_prefix` wraps the model so that the frozen bottom (the *prefix*) runs once per
distinct message; every later step reads its stored output and runs only the layers above it.

* **Exact.** The wrapper changes where the prefix's output comes from, not what is computed: losses,
  gradients and accuracies are those of the plain model, to float rounding (tested). The loaders are not
  touched (the cache is keyed by each row's token ids, not by its place in a batch), so the batches and
  their order stay the same.
* **Last position only.** With ``position="last"`` the classifier reads the last position alone. The
  last block must still compute keys and values at every position (its weights train), but its query,
  feed-forward, the final LayerNorm and the head run for one position (``GPTModel.run_blocks(...,
  last_only=True)``): the same numbers for the only output the loss reads.
* **Memory.** A cached example takes ``tokens x emb_dim x 4`` bytes in float32: a message padded to 120
  tokens, 120 x 768 x 4 = 368,640 bytes (0.35 MiB) with GPT-2 small, so 385 MB for lecture 04's 1,045
  training messages. Up to ``max_ram_bytes`` (default 1 GiB) stays in RAM; beyond that, rows go to
  memory-mapped scratch files in a temporary folder, deleted with the cache.
* **When it applies** (:func:`frozen_prefix_depth`): the token and position embeddings and the first k
  blocks have no trainable parameter, and every dropout among them has p = 0 (active dropout draws new
  noise every step, so its output is not fixed). Training all layers, or LoRA (which puts trainable
  matrices in every block), leaves nothing to cache: :func:`cache_frozen_prefix` returns the model itself.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn

from . import runtime
from .classifier import POSITIONS
from .model import LORA_MARKER

DEFAULT_MAX_RAM_BYTES = 1 << 30      # 1 GiB of cached activations in RAM, the rest on disk
_MODEL_PARTS = ("tok_emb", "pos_emb", "drop_emb", "trf_blocks", "embed", "run_blocks", "logits")


def _trains(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def _draws_noise(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Dropout) and m.p > 0 for m in module.modules())


def _why_nothing_to_cache(model: nn.Module) -> str | None:
    """Why not even the first block can be cached, or None when it can."""
    if not all(hasattr(model, part) for part in _MODEL_PARTS):
        return f"a {type(model).__name__} is not a helpers.model.GPTModel"
    if _trains(model.tok_emb) or _trains(model.pos_emb):
        return "the embeddings train"
    if _draws_noise(model.drop_emb):
        return f"the embedding dropout (p = {model.drop_emb.p}) changes the output at every step"
    first = model.trf_blocks[0]
    if _trains(first):
        return "block 0 trains" + (" (LoRA)" if any(getattr(m, LORA_MARKER, False) for m in first.modules())
                                   else "")
    if _draws_noise(first):
        return "dropout in block 0 changes its output at every step"
    return None


def frozen_prefix_depth(model: nn.Module) -> int:
    """How many of the first transformer blocks, with the embeddings below them, are frozen and deterministic.

    Lectures 04 and 06. Their output for a given input never changes while training, so it can be cached:
    ``n_layers - 1`` for lecture 04's "last block", ``n_layers`` when only the head (and norm) train, 0
    when nothing can be cached (the embeddings or block 0 train, LoRA is applied, or dropout is active).
    """
    if _why_nothing_to_cache(model) is not None:
        return 0
    depth = 0
    for block in model.trf_blocks:
        if _trains(block) or _draws_noise(block):
            break
        depth += 1
    return depth


class ActivationStore:
    """Equal-shape rows (one example's activations each), in RAM up to a size, then in files on disk.

    Lecture 04's prefix cache keeps its activations here. Rows are written in chunks of ``chunk_rows``:
    a chunk lives in RAM while the RAM chunks stay within ``max_ram_bytes``; later chunks are
    memory-mapped files (``torch.from_file``) in a temporary folder under ``folder`` (default:
    ``LECTURES_CACHE/prefix_cache``; not ``/tmp``, which is often in RAM), removed by :meth:`close`
    or when the store is garbage-collected. The operating system keeps recently read file pages in
    memory as long as it has memory to spare, and drops them when it does not.
    """

    def __init__(self, row_shape: Sequence[int], dtype: torch.dtype = torch.float32,
                 max_ram_bytes: int = DEFAULT_MAX_RAM_BYTES, folder: str | Path | None = None,
                 chunk_rows: int = 32):
        self.row_shape = tuple(int(n) for n in row_shape)
        self.dtype = dtype
        self.row_bytes = math.prod(self.row_shape) * torch.empty((), dtype=dtype).element_size()
        self.max_ram_bytes = max_ram_bytes
        self.chunk_rows = chunk_rows
        self.folder = folder
        self.ram_bytes = 0
        self.disk_bytes = 0
        self._chunks: list[torch.Tensor] = []
        self._count = 0
        self._tmp: tempfile.TemporaryDirectory | None = None

    def __len__(self) -> int:
        return self._count

    def _new_chunk(self) -> torch.Tensor:
        shape, nbytes = (self.chunk_rows, *self.row_shape), self.chunk_rows * self.row_bytes
        if self.ram_bytes + nbytes <= self.max_ram_bytes:
            self.ram_bytes += nbytes
            return torch.empty(shape, dtype=self.dtype)
        if self._tmp is None:
            parent = Path(self.folder) if self.folder is not None else runtime.cache_dir() / "prefix_cache"
            parent.mkdir(parents=True, exist_ok=True)
            self._tmp = tempfile.TemporaryDirectory(prefix="activations-", dir=parent, ignore_cleanup_errors=True)
        # A scratch file, never read back after a crash: it needs no atomic write (helpers.files).
        path = Path(self._tmp.name) / f"chunk-{len(self._chunks):06d}.bin"
        self.disk_bytes += nbytes
        return torch.from_file(str(path), shared=True, size=math.prod(shape), dtype=self.dtype).view(shape)

    def append(self, rows: torch.Tensor) -> range:
        """Store ``rows`` (n, *row_shape) and return their indices."""
        if tuple(rows.shape[1:]) != self.row_shape:
            raise ValueError(f"rows of shape {tuple(rows.shape[1:])} do not fit a store of {self.row_shape}.")
        rows = rows.detach().to("cpu", self.dtype)
        first = self._count
        written = 0
        while written < rows.shape[0]:
            chunk, offset = divmod(self._count, self.chunk_rows)
            if chunk == len(self._chunks):
                self._chunks.append(self._new_chunk())
            n = min(self.chunk_rows - offset, rows.shape[0] - written)
            self._chunks[chunk][offset : offset + n] = rows[written : written + n]
            written += n
            self._count += n
        return range(first, self._count)

    def get(self, indices: Sequence[int]) -> torch.Tensor:
        """The rows at ``indices``, stacked into a new (len(indices), *row_shape) tensor."""
        return torch.stack([self._chunks[i // self.chunk_rows][i % self.chunk_rows] for i in indices])

    def close(self) -> None:
        """Forget every row and delete the scratch files."""
        self._chunks.clear()
        self._count = self.ram_bytes = self.disk_bytes = 0
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class PrefixCachedModel(nn.Module):
    """A ``GPTModel`` whose frozen prefix (embeddings and first ``depth`` blocks) runs once per input (lecture 04).

    Call it like the model: ``wrapped(token_ids)`` gives the same logits (to float rounding), from the
    cached output of the prefix plus the blocks above it. With ``last_only`` (what
    :func:`cache_frozen_prefix` sets for ``position="last"``) it returns the last position's logits only,
    shape (batch, 1, classes), which is all that ``helpers.classifier.classifier_logits`` reads for that
    position. ``wrapped.module`` is the model: build the optimizer and save the classifier from it (the
    wrapper holds the same parameters, so ``make_optimizer(wrapped, ...)`` works too).

    Inputs are keyed by their token ids, so any loader (training, validation, test), in any order,
    reuses what is cached. The rows of the first batch fix the cached length; a batch of another length
    runs the prefix without caching. Each call checks that the prefix is still frozen (else it raises)
    and that its weights were not changed in place (else the cache is cleared).
    """

    def __init__(self, model: nn.Module, depth: int | None = None, last_only: bool = False,
                 max_ram_bytes: int = DEFAULT_MAX_RAM_BYTES, folder: str | Path | None = None):
        super().__init__()
        possible = frozen_prefix_depth(model)
        depth = possible if depth is None else depth
        if not 1 <= depth <= possible:
            reason = _why_nothing_to_cache(model) or f"only the first {possible} blocks are frozen and deterministic"
            raise ValueError(f"Cannot cache {depth} blocks of this model: {reason}.")
        self.module = model
        self.depth = depth
        self.last_only = last_only
        self.max_ram_bytes = max_ram_bytes
        self.folder = folder
        self.store: ActivationStore | None = None
        self._rows: dict[bytes, int] = {}
        self._weights = self._weights_fingerprint()
        self.hits = self.misses = 0

    def _prefix_modules(self) -> list[nn.Module]:
        m = self.module
        return [m.tok_emb, m.pos_emb, m.drop_emb, *list(m.trf_blocks)[: self.depth]]

    def _weights_fingerprint(self) -> tuple:
        """Which tensors the prefix's weights are, and how often each was changed in place."""
        return tuple((id(p), p._version) for m in self._prefix_modules() for p in m.parameters())

    def _check(self) -> None:
        if frozen_prefix_depth(self.module) < self.depth:
            raise RuntimeError("Part of the cached prefix now trains or uses dropout, so its output is no longer "
                               "fixed; wrap the model again: cache_frozen_prefix(model).")
        weights = self._weights_fingerprint()
        if weights != self._weights:      # new weights loaded into the frozen layers: what was cached is stale
            self.clear()
            self._weights = weights

    def clear(self) -> None:
        """Forget everything cached (and delete the scratch files)."""
        if self.store is not None:
            self.store.close()
        self.store, self._rows = None, {}

    def bytes_per_example(self, tokens: int) -> int:
        """Bytes one cached example of ``tokens`` positions takes: ``tokens x emb_dim x 4`` in float32."""
        return tokens * self.module.tok_emb.embedding_dim * self.module.tok_emb.weight.element_size()

    def _run_prefix(self, in_idx: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module.run_blocks(self.module.embed(in_idx), 0, self.depth)

    def prefix_output(self, in_idx: torch.Tensor) -> torch.Tensor:
        """The prefix's output for ``in_idx`` (batch, tokens, emb_dim): from the cache, computing what is missing."""
        if self.store is not None and tuple(in_idx.shape[1:]) != (self.store.row_shape[0],):
            return self._run_prefix(in_idx)                       # another length: not cached
        keys = [row.tobytes() for row in in_idx.detach().to("cpu", torch.int64).numpy()]
        missing = {}
        for i, key in enumerate(keys):
            if key not in self._rows and key not in missing:
                missing[key] = i
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        if missing:
            computed = self._run_prefix(in_idx[list(missing.values())])
            if self.store is None:
                self.store = ActivationStore(computed.shape[1:], computed.dtype, self.max_ram_bytes, self.folder)
            for key, row in zip(missing, self.store.append(computed), strict=True):
                self._rows[key] = row
        return self.store.get([self._rows[key] for key in keys]).to(in_idx.device)

    def forward(self, in_idx: torch.Tensor) -> torch.Tensor:
        self._check()
        x = self.module.run_blocks(self.prefix_output(in_idx), start=self.depth, last_only=self.last_only)
        return self.module.logits(x)

    def summary(self) -> str:
        """One line: what is cached, how much of it, where."""
        n = len(self.module.trf_blocks)
        text = (f"frozen prefix cached: embeddings + blocks 0-{self.depth - 1} ({self.depth} of {n})"
                f"{', last position only above it' if self.last_only else ''}")
        if self.store is None:
            return text + "; nothing cached yet"
        store = self.store
        return (text + f"; {len(self._rows):,} examples of {store.row_shape[0]} tokens x {store.row_shape[1]} "
                f"= {store.row_bytes:,} bytes each, {store.ram_bytes / 2**20:,.0f} MiB in RAM, "
                f"{store.disk_bytes / 2**20:,.0f} MiB on disk")


def cache_frozen_prefix(model: nn.Module, position: str = "last", *, max_ram_bytes: int = DEFAULT_MAX_RAM_BYTES,
                        folder: str | Path | None = None, verbose: bool = True) -> nn.Module:
    """``model`` with its frozen prefix cached (a :class:`PrefixCachedModel`), or ``model`` itself when
    nothing can be cached (lectures 04 and 06).

    ``position`` is the classifier's (``helpers.classifier.POSITIONS``): with ``"last"`` the wrapper
    computes the layers above the prefix for the last position only, beyond the keys and values the last
    block needs. ``verbose`` prints one line saying what is cached or why nothing is.
    """
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {POSITIONS}, got {position!r}.")
    depth = frozen_prefix_depth(model)
    if depth == 0:
        if verbose:
            print(f"frozen prefix: nothing to cache ({_why_nothing_to_cache(model) or 'block 0 trains'})")
        return model
    wrapped = PrefixCachedModel(model, depth, last_only=position == "last", max_ram_bytes=max_ram_bytes,
                                folder=folder)
    if verbose:
        print(wrapped.summary())
    return wrapped


__all__ = ["DEFAULT_MAX_RAM_BYTES", "frozen_prefix_depth", "ActivationStore", "PrefixCachedModel",
           "cache_frozen_prefix"]
