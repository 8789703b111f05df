"""LoRA: finetune a large model by training a small low-rank update next to each frozen weight (lecture 06).

A linear layer computes ``h = W0 x`` with a weight ``W0`` of shape (d, k) (``d`` outputs, ``k``
inputs). Full finetuning learns a change ``dW`` of the same shape: ``d * k`` numbers per layer.
Low-Rank Adaptation (Hu et al., 2021, https://arxiv.org/abs/2106.09685) assumes that the change a
task needs has low rank, and writes it as the product of two thin matrices::

    h = W0 x + (alpha / r) * B A x        B: (d, r), starts at zero     A: (r, k), random

Only ``A`` and ``B`` are trained: ``r * (d + k)`` numbers instead of ``d * k`` (for d = k = 1000 and
r = 2: 4,000 instead of 1,000,000). Because ``B`` starts at zero, a freshly wrapped model computes
exactly what the base model computes, and training starts from the pretrained behaviour. After
training, ``(alpha / r) * B A`` can be added into ``W0`` once (:func:`merge_lora`), so inference costs
nothing extra; or the few LoRA weights can be saved alone (:func:`save_lora`), one small file per task.

Layout: our code multiplies row vectors (``x`` has shape (..., k), as in ``nn.Linear``), so we store
the transposes of the paper's matrices: ``LoRALayer.A`` is (k, r) = (in_dim, rank) and
``LoRALayer.B`` is (r, d) = (rank, out_dim), and the update is ``x @ A @ B``.

Typical use, on a GPTModel whose pretrained weights are already loaded::

    apply_lora(model, rank=16, alpha=16)                # freeze everything, wrap every nn.Linear
    print(parameter_report(model)["text"])              # helpers.model: how many train, LoRA among them
    ... train: only the LoRA matrices change ...
    save_lora("spam_lora.pt", model)                    # a few MB instead of the whole model
    merge_lora(model)                                    # plain nn.Linear layers again, for inference

``convention="course"`` (in :func:`apply_lora`, :class:`LinearWithLoRA` and :class:`LoRALayer`) gives
the course's LoRA instead: the update scaled by ``alpha`` alone, and ``A`` drawn as the course's code
draws it. With it, the course's learning rate and the course's seeding, lecture 06 reproduces the
course's numbers (see :class:`LoRALayer`).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn as nn

from .checkpoints import atomic_torch_save, read_torch_file

FORMAT = "llm-lectures-lora/1"

# The Linear layers of helpers.model.GPTModel, by the last part of their module name.
ATTENTION_TARGETS = ("W_query", "W_key", "W_value", "out_proj")
# "paper": scaling alpha / rank, A initialised like nn.Linear's weight (the LoRA paper, peft); "course": the course's code.
CONVENTIONS = ("paper", "course")


def _check_convention(convention: str) -> str:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}.")
    return convention


class LoRALayer(nn.Module):
    """The trainable low-rank update ``x -> (alpha / rank) * x @ A @ B`` of one linear layer (lecture 06).

    * ``A`` (in_dim x rank) is initialised the way ``nn.Linear`` initialises its weight
      (Kaiming-uniform with ``a = sqrt(5)``, i.e. uniform in ``±1 / sqrt(in_dim)``), as Hugging Face
      ``peft`` does for its ``lora_A``.
    * ``B`` (rank x out_dim) starts at zero, so the update is zero until training changes ``B``.
    * ``alpha / rank`` scales the update, as in the LoRA paper and in ``peft``. With this scaling,
      changing the rank does not change how large the update is at a given learning rate, so ``alpha``
      can stay fixed while ``rank`` is tuned.

    Two deliberate differences from the course's code, which multiplies by ``alpha`` alone and calls
    ``kaiming_uniform_`` on the (in_dim x rank) matrix directly (whose fan-in is then ``rank``, so
    its range is ``±1 / sqrt(rank)``). Both only change constant factors: at the start ``B = 0``, so
    the two versions compute the same function, and any trained update of one can be written in the
    other. But they change how fast training moves. With Adam(W), each step changes a weight by
    roughly the learning rate whatever the gradient's size, so the output changes in proportion to
    ``scaling * |A|``: with the course's r = alpha = 16 on a 768-wide layer that is about
    16 * sqrt(768 / 16) ~ 110 times more per step than here (the LoRA paper notes that tuning alpha
    is roughly tuning the learning rate). A learning rate tuned for the course's code is therefore
    too small for this one. We keep the paper's and ``peft``'s convention so that ranks, alphas and
    learning rates can be compared with ``peft`` and the literature.

    ``convention="course"`` computes what the course's ``LoRALayer`` computes, bit for bit: the update
    is ``alpha * x @ A @ B`` (``scaling`` is ``alpha``), and ``A`` is created as an (in_dim x rank)
    float32 tensor on the CPU and filled by ``kaiming_uniform_`` there (so it draws the same random
    numbers from the same generator as the course), then moved to ``device`` and ``dtype``. Its
    ``rank = alpha = 16`` with a learning rate of 5e-5 behaves like ``alpha = 16 * 16`` and a larger
    learning rate here. Lecture 06 explains how to reproduce the course's curves with it.

    ``helpers.model.parameter_report`` counts its parameters as LoRA ones: it looks for the marker
    attribute ``is_lora_update`` (``helpers.model.LORA_MARKER``).
    """

    is_lora_update = True  # the marker helpers.model.parameter_report looks for

    def __init__(self, in_dim: int, out_dim: int, rank: int, alpha: float, device=None, dtype=None,
                 convention: str = "paper"):
        super().__init__()
        if isinstance(rank, bool) or not isinstance(rank, (int, float)) or int(rank) != rank or rank < 1:
            raise ValueError(f"rank must be a positive integer, got {rank!r}.")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha == 0:
            raise ValueError(f"alpha must be a finite number other than 0, got {alpha!r}: the update is scaled by "
                             f"alpha / rank, so alpha = 0 would keep it at zero and LoRA would learn nothing.")
        self.rank, self.alpha, self.convention = int(rank), alpha, _check_convention(convention)
        if convention == "paper":
            # Initialise A in nn.Linear's (out, in) = (rank, in_dim) layout, so that its fan-in is
            # in_dim, then store the transpose that x @ A needs.
            a_linear_layout = torch.empty(self.rank, in_dim, device=device, dtype=dtype)
            nn.init.kaiming_uniform_(a_linear_layout, a=math.sqrt(5))
            a = a_linear_layout.T.contiguous()
        else:
            # The course's code: kaiming_uniform_ on the (in_dim, rank) matrix itself (fan-in: rank),
            # created on the CPU in float32 as torch.empty creates it there.
            a = torch.empty(in_dim, self.rank)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            a = a.to(device=device, dtype=dtype)
        self.A = nn.Parameter(a)
        self.B = nn.Parameter(torch.zeros(self.rank, out_dim, device=device, dtype=dtype))

    @property
    def scaling(self) -> float:
        """What multiplies ``x @ A @ B``: ``alpha / rank`` (the paper's convention) or ``alpha`` (the course's)."""
        return self.alpha / self.rank if self.convention == "paper" else self.alpha

    def delta_weight(self) -> torch.Tensor:
        """The update to add to ``nn.Linear.weight``: ``scaling * (A @ B)^T``, shape (out_dim, in_dim)."""
        return self.scaling * (self.A @ self.B).T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaling * (x @ self.A @ self.B)

    def extra_repr(self) -> str:
        in_dim, out_dim = self.A.shape[0], self.B.shape[1]
        course = ", convention='course'" if self.convention == "course" else ""
        return f"in_dim={in_dim}, out_dim={out_dim}, rank={self.rank}, alpha={self.alpha}{course}"


class LinearWithLoRA(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable :class:`LoRALayer`: ``linear(x) + lora(x)`` (lecture 06).

    The wrapped layer's parameters are frozen here (``requires_grad = False``); the LoRA matrices
    are created on the layer's device and with its dtype. ``weight``, ``bias``, ``in_features`` and
    ``out_features`` read through to the base layer (``weight`` is ``W0``, without the update: use
    :meth:`merge` for the effective weight). ``convention`` goes to :class:`LoRALayer`.
    """

    def __init__(self, linear: nn.Linear, rank: int, alpha: float, convention: str = "paper"):
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"LinearWithLoRA wraps an nn.Linear, got {type(linear).__name__}.")
        self.linear = linear
        self.linear.requires_grad_(False)
        self.lora = LoRALayer(linear.in_features, linear.out_features, rank, alpha,
                              device=linear.weight.device, dtype=linear.weight.dtype, convention=convention)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.lora(x)

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.linear.bias

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    @property
    def out_features(self) -> int:
        return self.linear.out_features

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """A plain ``nn.Linear`` computing the same function: weight ``W0 + scaling * (A @ B)^T``, same bias.

        The new layer is frozen like the base layer it replaces, and ``self`` is left unchanged.
        """
        base = self.linear
        merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                           device=base.weight.device, dtype=base.weight.dtype)
        merged.weight.copy_(base.weight + self.lora.delta_weight().to(base.weight.dtype))
        if base.bias is not None:
            merged.bias.copy_(base.bias)
        return merged.requires_grad_(False)


# ------------------------------------------------------------------------------- wrapping a model


def _matches(name: str, pattern: str) -> bool:
    """Does module ``name`` match ``pattern``? The full name, a dotted suffix, or a glob.

    ``"out_head"`` matches ``out_head``; ``"W_query"`` matches ``trf_blocks.3.att.W_query``;
    ``"ff.layers.0"`` matches every block's first feed-forward layer; ``"trf_blocks.11.*"`` matches
    everything in the last block of GPT-2 small.
    """
    return name == pattern or name.endswith("." + pattern) or fnmatch.fnmatchcase(name, pattern)


def _as_patterns(value, what: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    patterns = list(value)
    if not all(isinstance(p, str) and p for p in patterns):
        raise TypeError(f"{what} must be a string or a list of non-empty strings, got {value!r}.")
    return patterns


def _short_list(names: Iterable[str], limit: int = 12) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _replace_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)


def apply_lora(model: nn.Module, rank: int, alpha: float, targets: str | Iterable[str] = "all",
               trainable: str | Iterable[str] = (), convention: str = "paper") -> nn.Module:
    """Freeze ``model`` and wrap the selected ``nn.Linear`` layers with LoRA, in place (lecture 06).

    Returns ``model``.

    ``targets`` chooses the layers by module name:

    * ``"all"``: every ``nn.Linear`` (in a GPTModel: the attention projections and the feed-forward
      layers of every block, and ``out_head``), as the course does;
    * ``"attention"``: the attention projections ``W_query``, ``W_key``, ``W_value``, ``out_proj``,
      as the LoRA paper does;
    * a list of patterns, each a full module name, a dotted suffix (``"W_query"``, ``"ff.layers.0"``)
      or a glob (``"trf_blocks.11.*"``). Every pattern must match at least one ``nn.Linear``.

    ``trainable`` names modules to train fully instead (same patterns), for example a new
    classification head: ``apply_lora(model, 16, 16, trainable=["out_head"])``. Their parameters stay
    trainable and they are not wrapped. Everything else (embeddings, LayerNorms, ...) is frozen.

    ``convention="course"`` makes every update the course's (see :class:`LoRALayer`). The layers are
    wrapped in module order, as the course's ``replace_linear_with_lora`` does, so that after the same
    random draws their ``A`` matrices get the same numbers.

    Load pretrained weights *before* calling this: the wrapped model's state-dict keys change
    (``...W_query.weight`` becomes ``...W_query.linear.weight``).
    """
    _check_convention(convention)
    if isinstance(model, nn.Linear):
        raise TypeError("apply_lora works on a model that contains nn.Linear layers; "
                        "wrap a single layer with LinearWithLoRA(linear, rank, alpha) instead.")
    if any(isinstance(m, LinearWithLoRA) for m in model.modules()):
        raise ValueError("This model already has LoRA layers. Call merge_lora(model) first, "
                         "or start again from a model without LoRA.")

    modules = dict(model.named_modules())
    linears = [name for name, m in modules.items() if isinstance(m, nn.Linear)]

    # Modules to keep fully trainable, and every module inside them.
    keep = []
    for pattern in _as_patterns(trainable, "trainable"):
        hits = [name for name in modules if name and _matches(name, pattern)]
        if not hits:
            raise ValueError(f"trainable pattern {pattern!r} matches no module. "
                             f"Top-level modules: {_short_list(n for n, _ in model.named_children())}.")
        keep += hits

    def inside_kept(name: str) -> bool:
        return any(name == k or name.startswith(k + ".") for k in keep)

    if isinstance(targets, str) and targets in ("all", "attention"):
        if targets == "all":
            selected = [name for name in linears if not inside_kept(name)]
        else:
            selected = [name for name in linears if any(_matches(name, t) for t in ATTENTION_TARGETS)]
        if not selected:
            raise ValueError(f"targets={targets!r} found no nn.Linear layers to wrap in "
                             f"{type(model).__name__}. Its nn.Linear layers: {_short_list(linears) or 'none'}.")
    else:
        selected = []
        for pattern in _as_patterns(targets, "targets"):
            hits = [name for name in linears if _matches(name, pattern)]
            if not hits:
                others = [f"{n} ({type(m).__name__})" for n, m in modules.items() if n and _matches(n, pattern)]
                found = f" It matches only modules that are not nn.Linear: {_short_list(others)}." if others else ""
                raise ValueError(f"LoRA target {pattern!r} matches no nn.Linear layer.{found} "
                                 f"Targets are full names, dotted suffixes or globs of these layers: "
                                 f"{_short_list(linears)}.")
            selected += [h for h in hits if h not in selected]
    clash = [name for name in selected if inside_kept(name)]
    if clash:
        raise ValueError(f"{_short_list(clash)} cannot be both a LoRA target and fully trainable; "
                         "remove it from targets or from trainable.")

    model.requires_grad_(False)
    for name in keep:
        modules[name].requires_grad_(True)
    for name in selected:
        _replace_submodule(model, name, LinearWithLoRA(modules[name], rank, alpha, convention))
    return model


def replace_linear_with_lora(model: nn.Module, rank: int, alpha: float, convention: str = "paper") -> nn.Module:
    """The course's name: freeze ``model`` and wrap every ``nn.Linear`` (``apply_lora(..., "all")``; lecture 06).

    ``convention="course"`` gives the course's LoRA layers (see :class:`LoRALayer`).
    """
    return apply_lora(model, rank, alpha, targets="all", convention=convention)


def lora_layers(model: nn.Module) -> dict[str, LinearWithLoRA]:
    """The wrapped layers of ``model`` by module name (lecture 06)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LinearWithLoRA)}


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its base weight, in place: plain ``nn.Linear`` layers again (lecture 06).

    The merged model computes the same outputs (up to float rounding) without the extra matrix
    products. Returns ``model``. Save the LoRA weights first if you want to keep them separately.
    """
    if isinstance(model, LinearWithLoRA):
        raise TypeError("merge_lora works on a model containing LoRA layers; call layer.merge() on a single layer.")
    for name, layer in lora_layers(model).items():
        _replace_submodule(model, name, layer.merge())
    return model


# ------------------------------------------------------------------------------- counting


def lora_parameter_count(d: int, k: int, r: int) -> int:
    """Trainable numbers of a rank-``r`` LoRA update of a (d x k) weight: ``r * (d + k)`` (vs ``d * k``).

    Lecture 06 counts with it; ``helpers.model.parameter_report`` counts a whole wrapped model.
    """
    return r * (d + k)


# ------------------------------------------------------------------------------- saving and loading


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """What finetuning changed: every LoRA ``A`` and ``B``, and every other parameter that trains (lecture 06).

    Keys are the model's own parameter names (``trf_blocks.0.att.W_query.lora.A``, ``out_head.weight``
    for a fully trained head, ...); the frozen base weights are left out.
    """
    lora_ids = {id(p) for m in model.modules() if isinstance(m, LoRALayer) for p in m.parameters()}
    state = {name: p.detach() for name, p in model.named_parameters() if id(p) in lora_ids or p.requires_grad}
    if not state:
        raise ValueError("The model has no LoRA layers and no trainable parameters; call apply_lora(model, ...) first.")
    return state


def _layer_settings(model: nn.Module) -> dict[str, dict]:
    return {name: {"rank": m.lora.rank, "alpha": m.lora.alpha, "convention": m.lora.convention}
            for name, m in lora_layers(model).items()}


def save_lora(path: str | Path, model: nn.Module) -> Path:
    """Save only the LoRA weights (and fully trained modules) of ``model``, atomically (lecture 06).

    The file also records each layer's rank and alpha, which :func:`load_lora` checks. It is written
    through ``helpers.files`` (a complete file or none); the folder is created when missing.
    """
    payload = {
        "format": FORMAT,
        "state": {name: t.cpu().clone() for name, t in lora_state_dict(model).items()},
        "layers": _layer_settings(model),
    }
    return atomic_torch_save(payload, path)


@torch.no_grad()
def load_lora(path: str | Path, model: nn.Module) -> nn.Module:
    """Load weights saved by :func:`save_lora` into ``model``, prepared with the same ``apply_lora`` call.

    Lecture 06 teaches it. Checks that the file and the model hold the same LoRA layers, with the same
    rank, alpha and shapes, before changing anything. Returns ``model``.
    """
    payload = read_torch_file(path, FORMAT, "LoRA weights", "helpers.lora.save_lora")

    expected = lora_state_dict(model)
    saved = payload["state"]
    missing, unexpected = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit this model. Missing in the file: {_short_list(missing) or 'none'}. "
            f"Unexpected in the file: {_short_list(unexpected) or 'none'}. "
            "Prepare the model with the same apply_lora(...) call (targets, trainable) used before saving."
        )
    for name, settings in _layer_settings(model).items():
        saved_settings = payload["layers"].get(name)
        if saved_settings is not None:
            saved_settings = {"convention": "paper", **saved_settings}  # files from before the option
        if saved_settings != settings:
            raise ValueError(f"{path}: layer {name} was saved with {saved_settings}, "
                             f"but the model has {settings}. Use the same rank and alpha (and convention).")
    wrong = [f"{n} {tuple(saved[n].shape)} vs {tuple(t.shape)}" for n, t in expected.items() if saved[n].shape != t.shape]
    if wrong:
        raise ValueError(f"{path}: shapes differ between file and model: {_short_list(wrong, 4)}.")

    params = dict(model.named_parameters())
    for name, tensor in saved.items():
        params[name].copy_(tensor)
    return model


__all__ = [
    "ATTENTION_TARGETS", "CONVENTIONS", "LoRALayer", "LinearWithLoRA", "apply_lora", "replace_linear_with_lora",
    "lora_layers", "merge_lora", "lora_parameter_count", "lora_state_dict",
    "save_lora", "load_lora",
]
