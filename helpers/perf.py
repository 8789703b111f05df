"""The fast path: the same training and generation, with PyTorch's quicker kernels.

The lectures' code is written to be read. This module collects the switches that make it fast without
changing what it computes (each is tested against the teaching path within float tolerance):

* fused kernels for attention, LayerNorm and GELU (``helpers.model.set_impl(model, "fast")``);
* a fused AdamW step (one kernel over all parameters instead of a Python loop over tensors);
* on CUDA: bf16 autocast and TF32 matrix multiplies (tensor cores), pinned host memory, and the
  vocabulary padded to a multiple of 64 (``helpers.model.pad_vocab``: zero rows, the same logits);
* optionally ``torch.compile``.

``FastPath.for_device(device)`` picks sensible defaults; ``FastPath.teaching()`` switches everything off.
The optimizer is built by ``helpers.training.make_optimizer(model, lr, weight_decay, options)``.

Settings never leak: TF32 is a process-wide switch in PyTorch, so it is only changed inside
``with precision(options):`` (the training loop and the benchmarks use it) and restored afterwards;
``prepare_model`` changes the model, nothing global.

Lectures 02 and 04-06 build their optimizers with it; lecture 06 measures memory with ``PeakMemory``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import inspect
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace

import psutil
import torch

from .model import pad_vocab, set_impl


def fused_adamw_supported(device: str | torch.device) -> bool:
    """Whether PyTorch has a fused AdamW for ``device``: CUDA, and from PyTorch 2.4 the CPU and MPS.

    Lecture 02's optimizer (``helpers.training.make_optimizer``) falls back to ``foreach`` without it.
    """
    device = torch.device(device)
    if "fused" not in inspect.signature(torch.optim.AdamW).parameters:
        return False
    if device.type == "cuda":
        return True
    major, minor = (int(p) for p in torch.__version__.split(".")[:2])
    return (major, minor) >= (2, 4) and device.type in ("cpu", "mps")


@dataclass(frozen=True)
class FastPath:
    """Which speed-ups to use. Every field can be changed with ``dataclasses.replace``.

    Lectures 02 and 04-06 build their optimizers with ``FastPath.for_device(device)``.
    """

    impl: str = "fast"                   # "fast": fused attention/LayerNorm/GELU; "teaching": spelled out
    optimizer: str = "fused"             # "fused", "foreach" or "for-loop" AdamW implementation
    autocast_dtype: str | None = None    # "bfloat16" or "float16" to run matmuls in lower precision
    tf32: bool = False                   # allow TF32 matmuls on NVIDIA GPUs (Ampere and newer)
    compile: bool = False                # torch.compile the model
    pin_memory: bool = False             # page-locked host memory for faster host-to-GPU copies
    pad_vocab_multiple: int = 1          # pad the vocabulary to a multiple of this (1: no padding)

    @classmethod
    def teaching(cls) -> FastPath:
        """The readable path the lectures explain: no fused kernels, a for-loop AdamW, float32."""
        return cls(impl="teaching", optimizer="for-loop")

    @classmethod
    def for_device(cls, device: str | torch.device) -> FastPath:
        """Sensible defaults: fused kernels everywhere; bf16 autocast, TF32, pinned memory and a
        vocabulary padded to a multiple of 64 on CUDA (on a CPU the padding measured no faster)."""
        device = torch.device(device)
        options = cls(optimizer="fused" if fused_adamw_supported(device) else "foreach")
        if device.type == "cuda":
            bf16 = torch.cuda.is_bf16_supported()
            options = replace(options, autocast_dtype="bfloat16" if bf16 else None, tf32=True, pin_memory=True,
                              pad_vocab_multiple=64)
        return options

    def as_dict(self) -> dict:
        """The fields as a plain dict (for JSON and checkpoints)."""
        return asdict(self)


def prepare_model(model: torch.nn.Module, options: FastPath) -> torch.nn.Module:
    """Switch the model's kernels, pad its vocabulary (and compile it if asked). Returns the model to use.

    Call it before building the optimizer: padding replaces the embedding and output weights. It
    changes only the model; TF32 is switched on by :func:`precision` around the code that trains.
    Lecture 02's script (``python -m helpers.pretrain``) and the benchmarks use it.
    """
    set_impl(model, options.impl)
    if hasattr(model, "tok_emb"):
        pad_vocab(model, options.pad_vocab_multiple)
    if options.compile:
        model = torch.compile(model)
    return model


@contextlib.contextmanager
def precision(options: FastPath | None) -> Iterator[None]:
    """Inside the block, float32 matrix multiplies use TF32 exactly when ``options.tf32`` says so.

    TF32 (NVIDIA GPUs from Ampere on) keeps float32's range but rounds the inputs of matrix multiplies
    to 10 bits of mantissa, which lets tensor cores run them several times faster. PyTorch's switches
    for it are global to the process, so this sets them for the block only and puts the previous
    values back afterwards, also after an error: ``torch.set_float32_matmul_precision`` ("high" allows
    TF32, "highest" does not) and ``torch.backends.cudnn.allow_tf32`` (convolutions). ``options=None``
    changes nothing. On a CPU the switches exist but change nothing. ``helpers.training.train_loop(...,
    options=...)`` (lecture 02) and the benchmarks run inside it.
    """
    if options is None:
        yield
        return
    saved = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    try:
        torch.set_float32_matmul_precision("high" if options.tf32 else "highest")
        torch.backends.cudnn.allow_tf32 = bool(options.tf32)
        yield
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cudnn.allow_tf32 = saved[1]


def autocast(device: str | torch.device, options: FastPath | None = None):
    """A context manager running the forward pass in ``options.autocast_dtype`` (no-op when None).

    ``helpers.training.train_step`` (lecture 02's loop) wraps each forward pass in it.
    """
    if options is None or options.autocast_dtype is None:
        return contextlib.nullcontext()
    device = torch.device(device)
    return torch.autocast(device.type, dtype=getattr(torch, options.autocast_dtype))


def release_freed_memory() -> bool:
    """Collect garbage and return freed heap memory to the operating system (glibc's ``malloc_trim``).

    Returns True when ``malloc_trim`` ran (Linux with glibc), False elsewhere, where it does nothing.
    :class:`PeakMemory` (lecture 06) calls it first.
    """
    gc.collect()
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):  # no glibc: macOS, musl, Windows
        return False
    trim(0)
    return True


class PeakMemory:
    """Measure the peak memory of a block of code: ``with PeakMemory(device) as peak: ...; peak.mb``.

    On CUDA it reads PyTorch's allocator statistics (tensors only). Elsewhere it samples the process's
    resident memory (RSS) every ``interval`` seconds in a background thread and reports the peak above
    the level at the start, so it includes everything the process allocated (tensors, gradients,
    optimizer state) but may miss a spike shorter than the interval. Memory that the process freed
    earlier but the C allocator kept would be handed out again without raising RSS, so on Linux the
    block starts by asking glibc to give such memory back (``malloc_trim``); without that, a second
    measurement in the same process (lecture 06 measures three strategies in a row) can read near zero.
    Lecture 06 teaches it.
    """

    def __init__(self, device: str | torch.device = "cpu", interval: float = 0.02):
        self.device = torch.device(device)
        self.interval = interval
        self.mb = 0.0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        release_freed_memory()
        process = psutil.Process()
        self._start = process.memory_info().rss
        self._peak = self._start
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self._peak = max(self._peak, process.memory_info().rss)
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self._start) / 2**20
            return
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, psutil.Process().memory_info().rss)
        self.mb = (self._peak - self._start) / 2**20
