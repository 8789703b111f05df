"""Finetuning GPT for classification (lecture 04, compared with LoRA in lecture 06): the model side.

1. :func:`add_classification_head` swaps the 50,257-way output layer for a ``num_classes``-way one
   and, with :func:`set_trainable`, freezes what should not train.
2. The model still returns one output vector per token. :func:`classifier_logits` keeps one of them
   per message: the last token's (which, thanks to causal attention, is the only one that has seen
   the whole message) or the last real token's before the padding.
3. :func:`calc_loss_batch`, :func:`calc_loss_loader` and :func:`calc_accuracy_loader` measure the
   classifier, :func:`train_classifier_simple` trains it, :func:`classify_review` labels any new
   text, and :func:`save_classifier` / :func:`load_classifier` keep the result.

The data side (the SMS Spam Collection, ``SpamDataset``, the loaders) is in :mod:`helpers.spam_data`;
``helpers.model.parameter_report`` tells how many parameters train.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoints import atomic_torch_save, read_torch_file
from .losses import mean_over_loader
from .model import GPTModel, context_length, eval_mode
from .spam_data import cap_max_length
from .tokenizer import END_OF_TEXT_ID
from .training import train_loop

POSITIONS = ("last", "last_non_pad")
TRAINABLE_CHOICES = ("head", "last_block", "all")  # or an int: the number of last blocks to train
FORMAT = "llm-lectures-classifier/1"

# --------------------------------------------------------------------------- the head and what trains


def _blocks_to_train(trainable, n_layers: int) -> int | None:
    """How many of the last blocks train; None means everything (``"all"``)."""
    if trainable == "all":
        return None
    if trainable == "head":
        return -1  # not even final_norm
    if trainable == "last_block":
        return 1
    if isinstance(trainable, int) and not isinstance(trainable, bool) and 0 <= trainable <= n_layers:
        return trainable
    raise ValueError(
        f"trainable must be 'head', 'last_block', 'all' or a number of last blocks from 0 to {n_layers}; "
        f"got {trainable!r}."
    )


def set_trainable(model: GPTModel, trainable="last_block") -> GPTModel:
    """Freeze ``model`` except the part named by ``trainable`` (lectures 04 and 06):

    * ``"head"``: only ``out_head``;
    * ``"last_block"`` (the course): ``out_head``, the last transformer block and ``final_norm``;
    * an int ``k``: ``out_head``, the last ``k`` blocks and ``final_norm`` (``k=0``: head and norm);
    * ``"all"``: every parameter, embeddings included.
    """
    k = _blocks_to_train(trainable, len(model.trf_blocks))
    for param in model.parameters():
        param.requires_grad = k is None
    if k is None:
        return model
    for param in model.out_head.parameters():
        param.requires_grad = True
    if k >= 0:
        for param in model.final_norm.parameters():
            param.requires_grad = True
        for block in list(model.trf_blocks)[len(model.trf_blocks) - k:]:
            for param in block.parameters():
                param.requires_grad = True
    return model


def add_classification_head(model: GPTModel, num_classes: int, trainable="last_block") -> GPTModel:
    """Turn a language model into a classifier, in place, and return it (lectures 04 and 06).

    ``model.out_head`` (``emb_dim`` -> 50,257 token scores) is replaced by a new, randomly initialised
    ``nn.Linear(emb_dim, num_classes)`` on the same device and dtype; then :func:`set_trainable`
    freezes everything except ``trainable``. The rest of the network keeps its pretrained weights.
    Seed (``runtime.set_seed``) first for a reproducible head.
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int of at least 2, got {num_classes!r}.")
    if not (hasattr(model, "trf_blocks") and isinstance(getattr(model, "out_head", None), nn.Linear)):
        raise TypeError(f"add_classification_head needs a GPTModel (with trf_blocks and an out_head Linear layer), "
                        f"got a {type(model).__name__}.")
    _blocks_to_train(trainable, len(model.trf_blocks))  # check before changing the model
    old = model.out_head.weight
    model.out_head = nn.Linear(old.shape[1], num_classes, device=old.device, dtype=old.dtype)
    return set_trainable(model, trainable)


# --------------------------------------------------------------------------- reading the prediction


def classifier_logits(model: nn.Module, input_batch: torch.Tensor, position: str = "last",
                      pad_token_id: int = END_OF_TEXT_ID) -> torch.Tensor:
    """Class scores (batch, num_classes): the model's output at one position per message (lecture 04).

    * ``"last"`` (the course): the last position, padding or not. Causal attention lets only this
      position see every token of the sequence.
    * ``"last_non_pad"``: each row's last token that is not ``pad_token_id`` (the message's own last
      token). Padding sits on the right, and GPT-2's tokenizer only emits the end-of-text id for the
      special string, so a message never ends in it. A row of padding only reads position 0.
    """
    logits = model(input_batch)  # (batch, tokens, num_classes)
    if position == "last":
        return logits[:, -1, :]
    if position == "last_non_pad":
        positions = torch.arange(input_batch.shape[1], device=input_batch.device)
        last = torch.where(input_batch != pad_token_id, positions, -1).max(dim=1).values.clamp(min=0)
        return logits[torch.arange(input_batch.shape[0], device=logits.device), last.to(logits.device)]
    raise ValueError(f"position must be one of {POSITIONS}, got {position!r}.")


def calc_loss_batch(input_batch, target_batch, model, device, position: str = "last",
                    pad_token_id: int = END_OF_TEXT_ID):
    """Cross entropy between the class scores at ``position`` and the true class ids of one batch (lecture 04)."""
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = classifier_logits(model, input_batch, position, pad_token_id)
    _check_class_ids(target_batch, logits.shape[-1])
    return F.cross_entropy(logits, target_batch)


def _check_class_ids(target_batch: torch.Tensor, num_classes: int) -> None:
    if target_batch.dtype.is_floating_point or target_batch.dtype == torch.bool or target_batch.dtype.is_complex:
        raise TypeError(f"The targets must be class ids (integers 0 to {num_classes - 1}), got a {target_batch.dtype} "
                        "tensor; convert the labels with encode_labels (or .long()).")
    if target_batch.numel() and bool(((target_batch < 0) | (target_batch >= num_classes)).any()):
        wrong = sorted({int(t) for t in target_batch.flatten().tolist() if not 0 <= t < num_classes})
        raise ValueError(f"The targets hold class id(s) {wrong[:5]}, but the head scores {num_classes} classes "
                         f"(ids 0 to {num_classes - 1}): the labels and add_classification_head(model, num_classes) "
                         "disagree.")


def calc_loss_loader(data_loader, model, device, num_batches=None, position: str = "last",
                     pad_token_id: int = END_OF_TEXT_ID) -> float:
    """The mean of :func:`calc_loss_batch` over the first ``num_batches`` batches (default: all; lecture 04).

    Like lecture 01's language-modelling ``calc_loss_loader`` it goes through
    ``helpers.losses.mean_over_loader``: the mean of the batch means, without gradients, in whatever
    mode the model is in (``evaluate_model`` switches to eval mode). Returns ``nan`` for an empty loader.
    """
    def loss_and_one(input_batch, target_batch):
        return calc_loss_batch(input_batch, target_batch, model, device, position, pad_token_id).item(), 1

    return mean_over_loader(data_loader, loss_and_one, num_batches)


def calc_accuracy_loader(data_loader, model, device, num_batches=None, position: str = "last",
                         pad_token_id: int = END_OF_TEXT_ID) -> float:
    """The fraction of messages whose highest-scoring class is the true one (lecture 04).

    Over the first ``num_batches`` batches (default: all), counted per message (right / seen, through
    ``helpers.losses.mean_over_loader``). Runs in eval mode without gradients and restores the
    model's previous mode. Returns ``nan`` for an empty loader.
    """
    def right_and_seen(input_batch, target_batch):
        predicted = classifier_logits(model, input_batch.to(device), position, pad_token_id).argmax(dim=-1)
        return (predicted == target_batch.to(device)).sum().item(), predicted.shape[0]

    with eval_mode(model):
        return mean_over_loader(data_loader, right_and_seen, num_batches)


def classify_review(text: str, model, tokenizer, device, max_length: int | None = None,
                    pad_token_id: int = END_OF_TEXT_ID, class_names: Sequence[str] = ("not spam", "spam"),
                    position: str = "last") -> str:
    """The class name the model picks for ``text`` (any text, not only reviews: the course's name; lecture 04).

    The text is prepared like the dataset: cut to ``min(max_length, context length)`` tokens, then
    padded up to that length. Without ``max_length`` it is only cut to the context length. Pass the
    training set's ``max_length``: the model learnt to read the class at that position.
    """
    if not isinstance(text, str):
        raise TypeError(f"classify_review classifies a text (a str), got a {type(text).__name__}: {text!r:.80}.")
    ids = tokenizer.encode(text)
    limit = context_length(model) if max_length is None else cap_max_length(max_length, model)
    ids = ids[:limit]
    if max_length is not None:
        ids = ids + [pad_token_id] * (limit - len(ids))
    if not ids:
        raise ValueError("The text is empty: there is no token to classify.")
    with eval_mode(model):
        logits = classifier_logits(model, torch.tensor([ids], device=device), position, pad_token_id)
    if logits.shape[-1] != len(class_names):
        raise ValueError(f"The model scores {logits.shape[-1]} classes but {len(class_names)} class_names were "
                         f"given: {list(class_names)}.")
    return class_names[int(logits.argmax(dim=-1).item())]


# --------------------------------------------------------------------------- training


def train_classifier_simple(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
                            position: str = "last", pad_token_id: int = END_OF_TEXT_ID, **kwargs):
    """The course's classifier training (lectures 04 and 06): lecture 02's ``train_loop`` with the
    classification loss.

    It counts examples instead of tokens and, after each epoch, records the training and validation
    accuracy over ``eval_iter`` batches in ``history.extra["train_acc"]`` / ``["val_acc"]``. Extra
    keyword arguments (``progress``, ``verbose``, ``live_plot``, ``config``) go to ``train_loop``.
    Returns the :class:`helpers.history.History`.
    """
    verbose = kwargs.get("verbose", True)
    options = {"position": position, "pad_token_id": pad_token_id}

    def record_accuracy(epoch, history):
        for name, loader in (("train_acc", train_loader), ("val_acc", val_loader)):
            accuracy = calc_accuracy_loader(loader, model, device, num_batches=eval_iter, **options)
            history.extra.setdefault(name, []).append(accuracy)
        if verbose:
            print(f"Training accuracy: {history.extra['train_acc'][-1] * 100:.2f}% | "
                  f"Validation accuracy: {history.extra['val_acc'][-1] * 100:.2f}%")

    return train_loop(
        model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
        loss_fn=partial(calc_loss_batch, **options), eval_loss_fn=partial(calc_loss_loader, **options),
        count_fn=lambda input_batch, target_batch: input_batch.shape[0], seen_unit="examples",
        on_epoch_end=record_accuracy, **kwargs,
    )


# --------------------------------------------------------------------------- saving and loading


class LoadedClassifier(NamedTuple):
    """What :func:`load_classifier` returns (lecture 04): the model and how to feed it."""

    model: GPTModel
    class_names: list[str]
    max_length: int
    pad_token_id: int
    position: str
    meta: dict


def save_classifier(path: str | Path, model: GPTModel, class_names: Sequence[str], max_length: int,
                    pad_token_id: int = END_OF_TEXT_ID, position: str = "last", **meta) -> Path:
    """Save a finetuned classifier atomically: weights, config, ``num_classes`` and how to feed it (lecture 04).

    ``meta`` holds anything else worth keeping (accuracies, epochs...): plain numbers, strings, lists
    and dicts, so that the file loads with ``weights_only=True``. The file is written through
    ``helpers.files`` (``atomic_torch_save``): complete or not there.
    """
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        raise ValueError("The model has no .cfg; save_classifier needs a helpers.model.GPTModel.")
    num_classes = model.out_head.out_features
    if num_classes != len(class_names):
        raise ValueError(f"The head has {num_classes} outputs but {len(class_names)} class_names were given.")
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {POSITIONS}, got {position!r}.")
    return atomic_torch_save({
        "format": FORMAT, "cfg": dict(cfg), "num_classes": num_classes, "class_names": list(class_names),
        "max_length": int(max_length), "pad_token_id": int(pad_token_id), "position": position,
        "trainable": [name for name, p in model.named_parameters() if p.requires_grad],
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "meta": meta,
    }, path)


def load_classifier(path: str | Path, map_location="cpu") -> LoadedClassifier:
    """Rebuild a classifier saved by :func:`save_classifier` (lecture 04): a ``GPTModel`` from the saved
    config, a ``num_classes`` head, the saved weights and which parameters were trainable.

    Returns ``(model, class_names, max_length, pad_token_id, position, meta)`` as a named tuple.
    """
    saved = read_torch_file(path, FORMAT, "a saved classifier", "helpers.classifier.save_classifier",
                            map_location)
    model = add_classification_head(GPTModel(saved["cfg"]), saved["num_classes"], trainable="all")
    model.load_state_dict(saved["model_state"])
    trainable = set(saved["trainable"])
    for name, param in model.named_parameters():
        param.requires_grad = name in trainable
    return LoadedClassifier(model, saved["class_names"], saved["max_length"], saved["pad_token_id"],
                            saved["position"], saved["meta"])


__all__ = [
    "POSITIONS", "TRAINABLE_CHOICES", "set_trainable", "add_classification_head", "classifier_logits",
    "calc_loss_batch", "calc_loss_loader", "calc_accuracy_loader", "classify_review", "train_classifier_simple",
    "LoadedClassifier", "save_classifier", "load_classifier",
]
