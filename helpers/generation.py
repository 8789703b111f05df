"""Turning a model's next-token probabilities into text.

``generate_text_simple`` is the plainest decoder: always take the most likely token (greedy).
``generate`` adds temperature scaling, top-k sampling, a stop token and a KV cache.

With the cache, the prompt is run through the model once; after that each step feeds only the one new
token, reusing the keys and values of the earlier positions (see ``helpers.model.KVCache``). Without
it, each step reruns the whole sequence. Both give the same tokens (tested); the cache is just faster.
"""

from __future__ import annotations

import torch

from .model import context_length, eval_mode
from .tokenizer import text_to_token_ids, token_ids_to_text


def generate_text_simple(model, idx, max_new_tokens, context_size):
    """Greedy decoding: append the most likely next token ``max_new_tokens`` times.

    Lecture 02 (and lecture 03 with GPT-2).

    ``idx`` has shape (batch, tokens). Only the last ``context_size`` tokens are fed to the model.
    """
    with eval_mode(model):
        for _ in range(max_new_tokens):
            logits = model(idx[:, -context_size:])[:, -1, :]  # the last position predicts the next token
            idx_next = torch.argmax(logits, dim=-1, keepdim=True)
            idx = torch.cat((idx, idx_next), dim=1)
    return idx


def apply_temperature_and_top_k(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None):
    """The distribution ``generate`` samples from, for a (batch, vocab) tensor of logits.

    Lecture 02 (decoding strategies).

    Returns probabilities. ``top_k`` keeps only the k largest logits (the rest get probability 0);
    ``temperature`` divides the logits before softmax: below 1 sharpens, above 1 flattens. With
    temperature 0 the result is one-hot on the argmax (greedy).
    """
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}.")
        kth_largest = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_largest, -torch.inf)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}.")
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
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}.")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1 (or None for no limit), got {top_k}.")
    finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    if max_new_tokens <= 0:
        return idx
    with eval_mode(model):
        cache = model.new_kv_cache() if use_cache and hasattr(model, "new_kv_cache") else None
        if cache is not None and idx.shape[1] <= context_size:
            logits = model(idx, kv_cache=cache)[:, -1, :]
        else:
            cache = None
            logits = model(idx[:, -context_size:])[:, -1, :]
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
            if step == max_new_tokens - 1 or bool(finished.all()):
                break
            if cache is not None and idx.shape[1] <= context_size:
                logits = model(idx_next, kv_cache=cache)[:, -1, :]   # one new position
            else:
                cache = None
                logits = model(idx[:, -context_size:])[:, -1, :]     # the whole (cropped) window
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
