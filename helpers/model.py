"""The GPT model of the lectures, readable in one sitting.

Names follow the course: ``GPTModel`` with ``tok_emb``, ``pos_emb``, ``drop_emb``, ``trf_blocks``,
``final_norm`` and ``out_head``; config dicts with ``vocab_size``, ``context_length``, ``emb_dim``,
``n_heads``, ``n_layers``, ``drop_rate`` and ``qkv_bias``.

Every module that the lectures explain has two implementations with the same results (tested),
chosen by the optional config key ``impl``:

* ``"teaching"``: the computation spelled out as the lectures explain it (attention scores, causal
  mask, scaling and softmax; LayerNorm's mean and variance; GELU's tanh formula);
* ``"fast"`` (default): the same maths in PyTorch's fused kernels (``scaled_dot_product_attention``,
  ``layer_norm``, ``gelu``), which are quicker and use less memory.

``set_impl(model, "teaching")`` switches a built model. A :class:`KVCache` passed to ``forward``
lets generation feed one new token at a time.

A second optional key, ``pad_vocab_multiple`` (say 64), gives the token embedding and the output
layer a few extra rows so that their size is a multiple of that number (50,257 -> 50,304), which GPU
matrix kernels handle faster. The extra rows start at zero, are never looked up, and their logits
are cut off in ``forward``, so the model computes exactly the same thing (see :func:`pad_vocab`).
"""

from __future__ import annotations

import contextlib
import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# The course's pretraining config: GPT-2 small's sizes with a shorter context (lectures 01-02).
GPT_CONFIG_124M = {
    "vocab_size": 50257,     # GPT-2's BPE vocabulary
    "context_length": 256,   # shortened from 1024 so that pretraining runs on a laptop
    "emb_dim": 768,          # embedding size
    "n_heads": 12,           # attention heads
    "n_layers": 12,          # transformer blocks
    "drop_rate": 0.1,        # dropout
    "qkv_bias": False,       # bias in the query/key/value projections
}

# The four released GPT-2 models (context 1024, with qkv bias, as OpenAI trained them).
GPT2_SIZES = {
    "124M": {"emb_dim": 768, "n_layers": 12, "n_heads": 12},
    "355M": {"emb_dim": 1024, "n_layers": 24, "n_heads": 16},
    "774M": {"emb_dim": 1280, "n_layers": 36, "n_heads": 20},
    "1558M": {"emb_dim": 1600, "n_layers": 48, "n_heads": 25},
}
GPT2_NAMES = {"gpt2-small": "124M", "gpt2-medium": "355M", "gpt2-large": "774M", "gpt2-xl": "1558M"}
GPT2_BASE = {"vocab_size": 50257, "context_length": 1024, "drop_rate": 0.0, "qkv_bias": True}

# A few thousand times smaller than GPT-2, for tests and the quick profile.
TINY_CONFIG = {
    "vocab_size": 50257, "context_length": 32, "emb_dim": 32, "n_heads": 4,
    "n_layers": 2, "drop_rate": 0.0, "qkv_bias": False,
}


def get_config(name: str, **overrides) -> dict:
    """A fresh config dict by name, with overrides: ``get_config("gpt2-small", drop_rate=0.1)``.

    Lectures 01-03 build their configs with it.

    Names: ``pretrain-124M`` (the course's pretraining config), ``gpt2-small`` / ``-medium`` /
    ``-large`` / ``-xl`` (also ``124M``, ``355M``, ``774M``, ``1558M``) and ``tiny``.
    """
    size = GPT2_NAMES.get(name, name)
    if name == "pretrain-124M":
        cfg = dict(GPT_CONFIG_124M)
    elif size in GPT2_SIZES:
        cfg = {**GPT2_BASE, **GPT2_SIZES[size]}
    elif name == "tiny":
        cfg = dict(TINY_CONFIG)
    else:
        known = ["pretrain-124M", *GPT2_NAMES, *GPT2_SIZES, "tiny"]
        raise KeyError(f"Unknown config {name!r}. Known: {', '.join(known)}.")
    unknown = set(overrides) - set(cfg) - OPTIONAL_KEYS
    if unknown:
        raise KeyError(f"Unknown config keys {sorted(unknown)}; valid keys are {sorted(cfg)}.")
    cfg.update(overrides)
    return cfg


IMPLS = ("fast", "teaching")
OPTIONAL_KEYS = {"impl", "pad_vocab_multiple"}


def _check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"impl must be 'fast' or 'teaching', got {impl!r}.")
    return impl


class KVCache:
    """Keys and values computed so far, per transformer block, so that generation only feeds new tokens.

    Lecture 02 (faster generation).

    Each block's keys and values live in a buffer of shape (batch, n_heads, max_positions, head_dim),
    allocated at the block's first update (``max_positions``: the model's context length, which
    ``GPTModel.new_kv_cache`` passes). :meth:`update` writes the new positions into the buffer in place
    and returns the filled part, shape (batch, n_heads, tokens_so_far, head_dim), as a view: appending
    one token costs one token's copy, where ``torch.cat`` would copy everything cached at every step.
    Without ``max_positions`` a buffer starts small and doubles when full.
    """

    def __init__(self, n_layers: int, max_positions: int | None = None):
        self.max_positions = max_positions
        self.keys: list[torch.Tensor | None] = [None] * n_layers      # the buffers, filled up to lengths[i]
        self.values: list[torch.Tensor | None] = [None] * n_layers
        self.lengths = [0] * n_layers

    def __len__(self) -> int:
        """Number of positions cached (by the last block, which is updated last)."""
        return self.cached_positions(-1)

    def cached_positions(self, layer: int) -> int:
        return self.lengths[layer]

    def _buffers_for(self, layer: int, k: torch.Tensor, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        buf_k, buf_v = self.keys[layer], self.values[layer]
        if buf_k is not None and end <= buf_k.shape[2]:
            return buf_k, buf_v
        capacity = self.max_positions if self.max_positions and end <= self.max_positions else \
            max(end, 2 * (buf_k.shape[2] if buf_k is not None else 32))
        b, h, _, d = k.shape
        new_k, new_v = (k.new_empty(b, h, capacity, d) for _ in range(2))
        filled = self.lengths[layer]
        if filled:
            new_k[:, :, :filled] = buf_k[:, :, :filled]
            new_v[:, :, :filled] = buf_v[:, :, :filled]
        self.keys[layer], self.values[layer] = new_k, new_v
        return new_k, new_v

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new positions' keys and values to block ``layer``'s; return all of them so far."""
        start = self.lengths[layer]
        end = start + k.shape[2]
        buf_k, buf_v = self._buffers_for(layer, k, end)
        buf_k[:, :, start:end] = k
        buf_v[:, :, start:end] = v
        self.lengths[layer] = end
        return buf_k[:, :, :end], buf_v[:, :, :end]


class MultiHeadAttention(nn.Module):
    """Causal multi-head self-attention. Lecture 01 builds on it; the course teaches it in its chapter 3."""

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False, impl="fast"):
        super().__init__()
        if d_out % num_heads != 0:
            raise ValueError(f"emb_dim ({d_out}) must be divisible by n_heads ({num_heads}).")
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.impl = _check_impl(impl)
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        # True above the diagonal: a token may not look at later tokens.
        mask = torch.triu(torch.ones(context_length, context_length, dtype=torch.bool), diagonal=1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x, kv_cache: KVCache | None = None, layer: int = 0, last_only: bool = False):
        """Attention output (batch, tokens, d_out); with ``last_only``, for the last position only.

        ``last_only`` still computes every position's keys and values (and caches them), but the query,
        and so the output, only of the last position: all that the next-token prediction needs.
        """
        b, num_tokens, _ = x.shape
        # (b, tokens, d_out) -> (b, heads, tokens, head_dim)
        keys, values = (
            proj(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
            for proj in (self.W_key, self.W_value)
        )
        if last_only:
            x = x[:, -1:]
        num_q = x.shape[1]
        queries = self.W_query(x).view(b, num_q, self.num_heads, self.head_dim).transpose(1, 2)
        past = num_tokens - num_q                    # positions before the first query ...
        if kv_cache is not None:
            past += kv_cache.cached_positions(layer)  # ... counting those already cached
            keys, values = kv_cache.update(layer, keys, values)
        if self.impl == "teaching":
            context = self.explicit_attention(queries, keys, values, past)
        else:
            context = self.sdpa_attention(queries, keys, values, past)
        context = context.transpose(1, 2).reshape(b, num_q, self.d_out)
        return self.out_proj(context)

    def explicit_attention(self, queries, keys, values, past: int = 0):
        """Attention spelled out: scores, causal mask, scaling, softmax, dropout, weighted sum."""
        num_q, num_k = queries.shape[2], keys.shape[2]
        attn_scores = queries @ keys.transpose(2, 3)                    # (b, heads, q, k)
        mask = self.mask[past : past + num_q, :num_k]                   # query i sits at position past + i
        attn_scores = attn_scores.masked_fill(mask, -torch.inf)
        attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
        attn_weights = self.dropout(attn_weights)
        return attn_weights @ values                                    # (b, heads, q, head_dim)

    def sdpa_attention(self, queries, keys, values, past: int = 0):
        """The same computation in one fused PyTorch kernel (FlashAttention where available)."""
        num_q, num_k = queries.shape[2], keys.shape[2]
        dropout_p = self.dropout.p if self.training else 0.0
        if past == 0:
            return F.scaled_dot_product_attention(queries, keys, values, dropout_p=dropout_p, is_causal=True)
        if num_q == 1:  # the one query is the last position: it may attend to every key, no mask needed
            return F.scaled_dot_product_attention(queries, keys, values, dropout_p=dropout_p)
        # With a cache, the queries are the last positions: pass the offset mask explicitly
        # (True = may attend, the opposite convention to self.mask).
        allowed = ~self.mask[past : past + num_q, :num_k]
        return F.scaled_dot_product_attention(queries, keys, values, attn_mask=allowed, dropout_p=dropout_p)


class LayerNorm(nn.Module):
    """Normalise each token's vector to mean 0 and variance 1, then scale and shift (learned).

    Lecture 01 (the course's chapter 4).
    """

    def __init__(self, emb_dim, eps=1e-5, impl="fast"):
        super().__init__()
        self.eps = eps
        self.impl = _check_impl(impl)
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        if self.impl == "teaching":
            mean = x.mean(dim=-1, keepdim=True)
            var = x.var(dim=-1, keepdim=True, unbiased=False)  # biased variance, as GPT-2 uses
            norm_x = (x - mean) / torch.sqrt(var + self.eps)
            return self.scale * norm_x + self.shift
        return F.layer_norm(x, (x.shape[-1],), self.scale, self.shift, self.eps)


class GELU(nn.Module):
    """GPT-2's activation: a smooth ReLU, computed with the tanh approximation.

    Lecture 01 (the course's chapter 4).
    """

    def __init__(self, impl="fast"):
        super().__init__()
        self.impl = _check_impl(impl)

    def forward(self, x):
        if self.impl == "teaching":
            return 0.5 * x * (1 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))
        return F.gelu(x, approximate="tanh")


class FeedForward(nn.Module):
    """Two linear layers with a GELU between them, widening to 4 x emb_dim and back.

    Lecture 01 (the course's chapter 4).
    """
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg["emb_dim"], 4 * cfg["emb_dim"]),
            GELU(cfg.get("impl", "fast")),
            nn.Linear(4 * cfg["emb_dim"], cfg["emb_dim"]),
        )

    def forward(self, x):
        return self.layers(x)


class TransformerBlock(nn.Module):
    """LayerNorm -> attention -> dropout -> add; LayerNorm -> feed-forward -> dropout -> add.

    Lecture 01 (the course's chapter 4).
    """

    def __init__(self, cfg):
        super().__init__()
        self.att = MultiHeadAttention(
            d_in=cfg["emb_dim"], d_out=cfg["emb_dim"], context_length=cfg["context_length"],
            num_heads=cfg["n_heads"], dropout=cfg["drop_rate"], qkv_bias=cfg["qkv_bias"],
            impl=cfg.get("impl", "fast"),
        )
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg["emb_dim"], impl=cfg.get("impl", "fast"))
        self.norm2 = LayerNorm(cfg["emb_dim"], impl=cfg.get("impl", "fast"))
        self.drop_shortcut = nn.Dropout(cfg["drop_rate"])

    def forward(self, x, kv_cache: KVCache | None = None, layer: int = 0, last_only: bool = False):
        """The block's output for every position, or with ``last_only`` for the last one (batch, 1, emb_dim)."""
        shortcut = x[:, -1:] if last_only else x
        x = shortcut + self.drop_shortcut(self.att(self.norm1(x), kv_cache, layer, last_only))
        x = x + self.drop_shortcut(self.ff(self.norm2(x)))
        return x


class GPTModel(nn.Module):
    """Token + position embeddings, ``n_layers`` transformer blocks, final LayerNorm, output head.

    Lecture 01 introduces it; every lecture uses it.
    """

    def __init__(self, cfg):
        super().__init__()
        missing = {"vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "drop_rate", "qkv_bias"} - set(cfg)
        if missing:
            raise KeyError(f"Config is missing {sorted(missing)}; start from helpers.model.get_config(...).")
        self.cfg = copy.deepcopy(dict(cfg))
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = nn.Dropout(cfg["drop_rate"])
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = LayerNorm(cfg["emb_dim"], impl=cfg.get("impl", "fast"))
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)
        # Padding is added after the unpadded layers are initialised, so a padded model built from
        # the same seed has the same weights as an unpadded one, plus zero rows.
        pad_vocab(self, cfg.get("pad_vocab_multiple", 1))

    def forward(self, in_idx, kv_cache: KVCache | None = None, last_only: bool = False):
        """Logits of shape (batch, tokens, vocab_size) for token ids of shape (batch, tokens).

        With a ``kv_cache``, ``in_idx`` holds only the tokens after those already cached. With
        ``last_only``, only the last position's logits are computed, shape (batch, 1, vocab_size): the
        last block computes its output, and the final LayerNorm and output head run, for that position
        alone (the same numbers as the full forward's last position; generation needs nothing more).
        """
        past = len(kv_cache) if kv_cache is not None else 0
        x = self.embed(in_idx, past)
        x = self.run_blocks(x, kv_cache=kv_cache, last_only=last_only)
        return self.logits(x)

    def embed(self, in_idx, past: int = 0):
        """Token plus position embeddings (then dropout) for ids at positions ``past``, ``past + 1``, ..."""
        if in_idx.dim() != 2 or in_idx.dtype.is_floating_point or in_idx.dtype == torch.bool:
            raise ValueError(f"GPTModel takes a batch of token ids, an integer tensor of shape (batch, tokens); got a "
                             f"{in_idx.dtype} tensor of shape {tuple(in_idx.shape)}. For one sequence, add the batch "
                             "dimension: ids.unsqueeze(0).")
        _, seq_len = in_idx.shape
        if past + seq_len > self.cfg["context_length"]:
            raise ValueError(
                f"{past + seq_len} tokens exceed the context length of {self.cfg['context_length']}; "
                f"crop the input to its last {self.cfg['context_length']} tokens."
            )
        positions = torch.arange(past, past + seq_len, device=in_idx.device)
        return self.drop_emb(self.tok_emb(in_idx) + self.pos_emb(positions))

    def run_blocks(self, x, start: int = 0, stop: int | None = None, kv_cache: KVCache | None = None,
                   last_only: bool = False):
        """``x`` through transformer blocks ``start`` to ``stop - 1`` (default: to the last one).

        ``last_only`` keeps only the last position of the result; the model's final block then computes
        that position alone. ``helpers.prefix_cache`` runs the frozen blocks once and the rest per step.
        """
        stop = len(self.trf_blocks) if stop is None else stop
        for layer in range(start, stop):
            final = last_only and layer == len(self.trf_blocks) - 1
            x = self.trf_blocks[layer](x, kv_cache, layer, final)
        if last_only and x.shape[1] > 1:
            x = x[:, -1:]
        return x

    def logits(self, x):
        """Final LayerNorm and output head: the scores for each position of ``x`` (batch, tokens, emb_dim)."""
        logits = self.out_head(self.final_norm(x))
        if logits.shape[-1] > self.cfg["vocab_size"]:   # padded vocabulary: drop the padding's scores
            logits = logits[..., : self.cfg["vocab_size"]]
        return logits

    def new_kv_cache(self) -> KVCache:
        """An empty :class:`KVCache` for this model, sized for its context length (lecture 02)."""
        return KVCache(len(self.trf_blocks), self.cfg["context_length"])


def padded_vocab_size(vocab_size: int, multiple: int = 1) -> int:
    """``vocab_size`` rounded up to a multiple of ``multiple`` (50,257 -> 50,304 for 64).

    Lecture 02 (the fast path).
    """
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"pad_vocab_multiple must be a positive integer (e.g. 64, or 1 for no padding), "
                         f"got {multiple!r}.")
    return -(-vocab_size // multiple) * multiple


def _resize_rows(weight: nn.Parameter, rows: int) -> nn.Parameter:
    """The first ``rows`` rows of ``weight``, with zero rows appended where it has fewer."""
    with torch.no_grad():
        kept = weight[:rows]
        extra = weight.new_zeros(rows - kept.shape[0], *weight.shape[1:])
        return nn.Parameter(torch.cat([kept, extra]), requires_grad=weight.requires_grad)


def pad_vocab(model: GPTModel, multiple: int = 64) -> GPTModel:
    """Pad (or, with ``multiple=1``, unpad) the vocabulary of ``tok_emb`` and ``out_head`` in place.

    Lecture 02 (the fast path).

    The token embedding and the output layer get zero rows up to the next multiple of ``multiple``
    (GPT-2: 50,257 -> 50,304 for 64). Nothing changes in what the model computes: no token id
    reaches the extra embedding rows, ``forward`` cuts the extra logits off, so the extra output
    rows get zero gradients and stay zero under AdamW (its weight decay of zero is zero). Only the
    matrix shapes change, which makes the output layer's matrix multiply faster on GPUs.

    A replaced output layer (a classification head) is left alone. Build the optimizer after calling
    this: the two weights are new ``nn.Parameter`` objects.
    """
    vocab = model.cfg["vocab_size"]
    rows = padded_vocab_size(vocab, multiple)
    if rows != model.tok_emb.num_embeddings:
        model.tok_emb.weight = _resize_rows(model.tok_emb.weight, rows)
        model.tok_emb.num_embeddings = rows
    head = model.out_head
    if isinstance(head, nn.Linear) and head.out_features >= vocab and rows != head.out_features:
        head.weight = _resize_rows(head.weight, rows)
        head.out_features = rows
    if multiple == 1:
        model.cfg.pop("pad_vocab_multiple", None)
    else:
        model.cfg["pad_vocab_multiple"] = multiple
    return model


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Run a block in eval mode without gradients, then restore the model's previous mode (lecture 02)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def context_length(model: nn.Module) -> int:
    """How many positions ``model`` can read: its config's ``context_length``, else its position embeddings.

    Lectures 02-06.

    Works for a ``GPTModel``, one wrapped by DDP or ``torch.compile``, and models with ``pos_emb``.
    """
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif hasattr(model, "module") and isinstance(model.module, nn.Module) and not hasattr(model, "pos_emb"):
            model = model.module
        else:
            break
    cfg = getattr(model, "cfg", None)
    if isinstance(cfg, dict) and "context_length" in cfg:
        return int(cfg["context_length"])
    if hasattr(model, "pos_emb"):
        return int(model.pos_emb.weight.shape[0])
    raise TypeError(f"Cannot tell the context length of a {type(model).__name__}: it has no cfg and no pos_emb.")


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """All parameters of ``model`` (or only those that train), padding included (lectures 02-06)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# A module with this attribute set to True is a LoRA update (helpers.lora.LoRALayer sets it): its
# parameters are counted as "lora" below. A marker, so that this module need not import helpers.lora.
LORA_MARKER = "is_lora_update"


def _vocab_padding(model: nn.Module) -> dict[int, int]:
    """Numbers in zero padding rows (:func:`pad_vocab`), by ``id`` of the parameter that holds them."""
    cfg = getattr(model, "cfg", None)
    if not (isinstance(cfg, dict) and "vocab_size" in cfg):
        return {}
    padding = {}
    for name in ("tok_emb", "out_head"):
        weight = getattr(getattr(model, name, None), "weight", None)
        if isinstance(weight, torch.Tensor) and weight.dim() == 2 and weight.shape[0] > cfg["vocab_size"]:
            padding[id(weight)] = (weight.shape[0] - cfg["vocab_size"]) * weight.shape[1]
    return padding


def _module_of(name: str) -> str:
    """The module a parameter belongs to, for reports: ``trf_blocks.11``, ``final_norm``, ``out_head``..."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "trf_blocks" and len(parts) > 2 else parts[0]


def _short(names: list[str], limit: int = 8) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def parameter_report(model: nn.Module) -> dict:
    """How many parameters ``model`` has and how many of them train (lectures 02, 03, 04 and 06).

    * ``total``: every parameter, LoRA matrices included, without the zero rows of a padded
      vocabulary (:func:`pad_vocab`), so padding never changes the counts;
    * ``trainable`` (``requires_grad``), and ``fraction`` = trainable / total;
    * ``lora``: the trainable parameters inside LoRA layers (lecture 06; 0 without LoRA). The rest
      of ``trainable`` belongs to fully trained modules, such as a new classification head;
    * ``with_weight_tying``: for a GPT language model, the count when ``out_head`` shares its matrix
      with ``tok_emb``, as GPT-2 does (163M -> the "124M" of GPT-2 small); ``None`` for a model without
      a vocabulary-sized output layer (a classifier);
    * ``size_mb_float32``: memory for ``total`` parameters at 4 bytes each;
    * ``trainable_names`` and ``trainable_modules`` (``trf_blocks.11``, ``final_norm``, ``out_head``...):
      where the trainable parameters are;
    * ``text``: all of it in one readable line.

    Works on any ``nn.Module``, also on the ``meta`` device (counting needs no memory).
    """
    padding = _vocab_padding(model)
    lora_ids = {id(p) for m in model.modules() if getattr(m, LORA_MARKER, False) for p in m.parameters()}
    total = trainable = lora = 0
    names, modules, fully_trained = [], [], []
    for name, p in model.named_parameters():
        n = p.numel() - padding.get(id(p), 0)
        total += n
        if p.requires_grad:
            trainable += n
            lora += n if id(p) in lora_ids else 0
            names.append(name)
            if _module_of(name) not in modules:
                modules.append(_module_of(name))
            if id(p) not in lora_ids and _module_of(name) not in fully_trained:
                fully_trained.append(_module_of(name))
    fraction = trainable / total if total else 0.0

    tied = None
    cfg, head = getattr(model, "cfg", None), getattr(model, "out_head", None)
    head_weight = getattr(head, "weight", None)
    if isinstance(cfg, dict) and "vocab_size" in cfg and isinstance(head_weight, torch.Tensor) \
            and head_weight.dim() == 2 and head_weight.shape[0] >= cfg["vocab_size"]:
        tied = total - cfg["vocab_size"] * head_weight.shape[1]

    size_mb = total * 4 / 1024**2
    text = f"{total:,} parameters" + (f" ({tied:,} with weight tying)" if tied is not None else "")
    text += f", {size_mb:,.1f} MB in float32; "
    if trainable == total:
        text += "all of them trainable"
    else:
        text += f"trainable: {trainable:,} of {total:,} ({100 * fraction:.2f}%)"
        if lora:
            text += f": LoRA {lora:,}"
            if trainable > lora:
                text += f", fully trained {trainable - lora:,} in {_short(fully_trained)}"
        else:
            text += f" in {_short(modules) or 'nothing'}"
    return {
        "total": total, "trainable": trainable, "fraction": fraction, "lora": lora, "with_weight_tying": tied,
        "size_mb_float32": size_mb, "trainable_names": names, "trainable_modules": modules, "text": text,
    }


def set_impl(model: nn.Module, impl: str) -> nn.Module:
    """Switch attention, LayerNorm and GELU of ``model`` to ``"teaching"`` or ``"fast"`` code, in place.

    Lecture 02 (teaching path and fast path).
    """
    _check_impl(impl)
    for module in model.modules():
        if isinstance(module, (MultiHeadAttention, LayerNorm, GELU)):
            module.impl = impl
    if isinstance(model, GPTModel):
        model.cfg["impl"] = impl
    return model


def flops_per_token(cfg: dict, seq_len: int | None = None) -> float:
    """Approximate training FLOPs per token (forward + backward): 6 N + 12 L d T (PaLM appendix B).

    Lecture 02's benchmark.
    """
    t = seq_len or cfg["context_length"]
    d, n_layers, v = cfg["emb_dim"], cfg["n_layers"], cfg["vocab_size"]
    n_params = n_layers * 12 * d * d + v * d  # blocks + output head (embeddings do no matmuls; padding is not work)
    return 6 * n_params + 12 * n_layers * d * t


__all__ = [
    "GPT_CONFIG_124M", "GPT2_SIZES", "TINY_CONFIG", "get_config", "KVCache", "MultiHeadAttention",
    "LayerNorm", "GELU", "FeedForward", "TransformerBlock", "GPTModel", "count_parameters",
    "parameter_report", "set_impl", "flops_per_token", "pad_vocab", "padded_vocab_size",
]
