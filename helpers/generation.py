"""Turning a model's next-token probabilities into text.

``generate_text_simple`` is the plainest decoder: always take the most likely token (greedy).
``generate`` adds temperature scaling, top-k sampling, a stop token and a KV cache.

With the cache, the prompt is run through the model once; after that each step feeds only the one new
token, reusing the keys and values of the earlier positions (see ``helpers.model.KVCache``). Without
it, each step reruns the whole sequence. Both give the same tokens (tested); the cache is just faster.
Either way ``generate`` asks a ``GPTModel`` for the last position's logits only (``last_only=True``):
the next token depends on nothing else, and the output head over 50,257 tokens is the largest single
matrix multiply of a step.
"""

from __future__ import annotations

import inspect
import math
import operator

import torch

from .model import context_length, eval_mode
from .tokenizer import text_to_token_ids, token_ids_to_text


def _is_whole(value) -> bool:
    """An int (NumPy and tensor integers too), but not a bool."""
    if isinstance(value, bool):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def _accepts(model, keyword: str) -> bool:
    """Whether ``model``'s forward takes ``keyword`` (a ``GPTModel``, also compiled, does; a stub may not)."""
    try:
        return keyword in inspect.signature(getattr(model, "_orig_mod", model).forward).parameters
    except (TypeError, ValueError):
        return False


def check_generation_inputs(model, idx, max_new_tokens, context_size) -> None:
    """Refuse, with a message that says what to do, inputs that would fail deep inside the model.

    Lecture 02's decoders call it first: ``idx`` must be a (batch, tokens) tensor of integer token ids
    within the model's vocabulary, with at least one token; ``max_new_tokens`` a whole number >= 0;
    ``context_size`` a whole number >= 1.
    """
    if not isinstance(idx, torch.Tensor):
        raise TypeError(f"idx must be a tensor of token ids, got {type(idx).__name__}: encode the text first, "
                        f"e.g. text_to_token_ids(text, tokenizer).")
    if idx.dim() != 2:
        hint = " Add a batch dimension with idx.unsqueeze(0)." if idx.dim() == 1 else ""
        raise ValueError(f"idx must have shape (batch, tokens), got {tuple(idx.shape)}.{hint}")
    if idx.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"idx must hold integer token ids, got dtype {idx.dtype}; convert with idx.long().")
    if idx.shape[0] == 0 or idx.shape[1] == 0:
        raise ValueError(f"idx has shape {tuple(idx.shape)}: the prompt needs at least one token per row "
                         f"(an empty text encodes to no tokens; start from '<|endoftext|>' if you have none).")
    cfg = getattr(model, "cfg", None)
    vocab = cfg.get("vocab_size") if isinstance(cfg, dict) else None
    if vocab is None and hasattr(model, "tok_emb"):
        vocab = model.tok_emb.num_embeddings
    if vocab is not None:
        low, high = int(idx.min()), int(idx.max())
        if low < 0 or high >= vocab:
            raise ValueError(f"idx holds token id {low if low < 0 else high}, outside the model's vocabulary "
                             f"(0 to {vocab - 1}). Encode text with the model's own tokenizer.")
    if not _is_whole(max_new_tokens) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a whole number >= 0, got {max_new_tokens!r}.")
    if not _is_whole(context_size) or context_size < 1:
        raise ValueError(f"context_size must be a whole number >= 1 (the model's context length), "
                         f"got {context_size!r}.")


def generate_text_simple(model, idx, max_new_tokens, context_size):
    """Greedy decoding: append the most likely next token ``max_new_tokens`` times.

    Lecture 02 (and lecture 03 with GPT-2).

    ``idx`` has shape (batch, tokens). Only the last ``context_size`` tokens are fed to the model.
    """
    check_generation_inputs(model, idx, max_new_tokens, context_size)
    with eval_mode(model):
        for _ in range(max_new_tokens):
            logits = model(idx[:, -context_size:])[:, -1, :]  # the last position predicts the next token
            idx_next = torch.argmax(logits, dim=-1, keepdim=True)
            idx = torch.cat((idx, idx_next), dim=1)
    return idx


def check_sampling(temperature, top_k) -> None:
    """Lecture 02's sampling settings: a finite temperature >= 0 and a whole-number top-k >= 1 (or None)."""
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        raise TypeError(f"temperature must be a number >= 0, got {temperature!r}.") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"temperature must be a finite number >= 0 (0 means greedy), got {temperature!r}.")
    if top_k is not None and (not _is_whole(top_k) or top_k < 1):
        raise ValueError(f"top_k must be a whole number >= 1, or None for no limit, got {top_k!r}.")


def apply_temperature_and_top_k(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None):
    """The distribution ``generate`` samples from, for a (batch, vocab) tensor of logits.

    Lecture 02 (decoding strategies).

    Returns probabilities. ``top_k`` keeps only the k largest logits (the rest get probability 0);
    ``temperature`` divides the logits before softmax: below 1 sharpens, above 1 flattens. With
    temperature 0 the result is one-hot on the argmax (greedy).
    """
    check_sampling(temperature, top_k)
    if top_k is not None:
        kth_largest = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_largest, -torch.inf)
    if temperature == 0.0:
        return torch.nn.functional.one_hot(logits.argmax(dim=-1), logits.shape[-1]).to(logits.dtype)
    return torch.softmax(logits / temperature, dim=-1)


def generate(model, idx, max_new_tokens, context_size, temperature=0.0, top_k=None, eos_id=None,
             use_cache=True, generator: torch.Generator | None = None):
    """Generate up to ``max_new_tokens`` tokens after ``idx`` (batch, tokens); returns prompt + new ids.

    Lecture 02 teaches it; lectures 03, 05 and 06 use it.

    - ``temperature=0.0`` is greedy decoding; above 0 the next token is sampled.
    - ``top_k`` samples only among the k most likely tokens.
    - ``eos_id`` stops once every sequence in the batch has produced it. The stop token is kept in
      the output (the course's listing drops it; ``token_ids_to_text`` shows it as
      ``<|endoftext|>``), and a sequence that finished early is padded with ``eos_id`` while the
      others go on, so that everything after a row's first ``eos_id`` is ``eos_id``.
    - ``use_cache`` feeds one new token per step through a KV cache (same tokens, much faster).
      Once the sequence is longer than ``context_size`` the model must see a sliding window, which
      changes every position, so the cache is dropped and each step reruns the last ``context_size``
      tokens, exactly as without a cache.
    - A model in bfloat16 (``model.to(torch.bfloat16)``) generates too; the cache takes the model's dtype.
      On a CPU at batch 1, reading every weight once per token is what takes the time, so half the bytes
      make generation markedly faster (``python -m benchmarks generation``; numbers in the README); the
      tokens can differ from float32's wherever two candidates' logits nearly tie.
    """
    check_generation_inputs(model, idx, max_new_tokens, context_size)
    check_sampling(temperature, top_k)
    if eos_id is not None and not _is_whole(eos_id):
        raise TypeError(f"eos_id must be a token id (an int) or None, got {eos_id!r}.")
    finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    if max_new_tokens <= 0:
        return idx
    last = {"last_only": True} if _accepts(model, "last_only") else {}  # only the logits we read
    with eval_mode(model):
        cache = model.new_kv_cache() if use_cache and hasattr(model, "new_kv_cache") else None
        if cache is not None and idx.shape[1] <= context_size:
            logits = model(idx, kv_cache=cache, **last)[:, -1, :]
        else:
            cache = None
            logits = model(idx[:, -context_size:], **last)[:, -1, :]
        for step in range(max_new_tokens):
            if temperature == 0.0:                                  # greedy (top-k cannot change the argmax)
                idx_next = torch.argmax(logits, dim=-1, keepdim=True)
            else:
                probs = apply_temperature_and_top_k(logits, temperature, top_k)
                idx_next = torch.multinomial(probs, num_samples=1, generator=generator)
            if eos_id is not None:
                idx_next = idx_next.masked_fill(finished.unsqueeze(-1), eos_id)  # finished rows: pad
                finished |= idx_next.squeeze(-1) == eos_id
            idx = torch.cat((idx, idx_next), dim=1)
            if step == max_new_tokens - 1 or (eos_id is not None and bool(finished.all())):
                break
            if cache is not None and idx.shape[1] <= context_size:
                logits = model(idx_next, kv_cache=cache, **last)[:, -1, :]   # one new position
            else:
                cache = None
                logits = model(idx[:, -context_size:], **last)[:, -1, :]     # the whole (cropped) window
    return idx


def generate_and_print_sample(model, tokenizer, device, start_context, max_new_tokens=50, quiet=False):
    """Print (unless ``quiet``) and return a greedy continuation of ``start_context`` on one line.

    Lecture 02 prints one after every epoch.
    """
    context_size = context_length(model)
    encoded = text_to_token_ids(start_context, tokenizer).to(device)
    token_ids = generate(model, encoded, max_new_tokens, context_size)
    text = token_ids_to_text(token_ids.cpu(), tokenizer).replace("\n", " ")
    if not quiet:
        print(text)
    return text
