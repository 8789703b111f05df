"""The language-modelling loss: cross entropy of the next token, over a batch and over a loader (lectures 01-02).

:func:`mean_over_loader` is the one loop that averages a per-batch number over the first batches of a
loader; the language-modelling loss here, and lecture 04's classification loss and accuracy
(``helpers.classifier``), all go through it.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F


def mean_over_loader(data_loader: Iterable, batch_fn: Callable, num_batches: int | None = None) -> float:
    """``sum(amount) / sum(weight)`` over the first ``num_batches`` batches (default: all) of ``data_loader``.

    ``batch_fn(input_batch, target_batch)`` returns ``(amount, weight)`` for one batch. What the weight
    is decides what the mean means:

    * a loss returns ``(batch mean, 1)``: the result is the mean of the batch means, as the course's
      ``calc_loss_loader`` computes it (a smaller last batch counts as much as a full one);
    * the accuracy returns ``(number right, batch size)``: the result is right / seen over all the
      examples, as the course's ``calc_accuracy_loader`` computes it.

    Runs without gradients: the result is a plain float, so a graph would only cost memory (the course
    wraps its calls in ``torch.no_grad()``; here that happens inside). The model's train/eval mode is
    not touched. Returns ``nan`` when there is nothing to average (an empty loader, ``num_batches=0``),
    as the course does for an empty loader, rather than dividing by zero; a loader that gives no batch at all
    also warns why (the classic pitfall: a batch larger than the data set with ``drop_last=True``).
    Lectures 01, 02 and 04 use it.
    """
    total, weight = 0.0, 0
    with torch.no_grad():
        for input_batch, target_batch in itertools.islice(data_loader, num_batches):
            amount, count = batch_fn(input_batch, target_batch)
            total += float(amount)
            weight += count
    if not weight and num_batches != 0:
        dataset = getattr(data_loader, "dataset", None)
        size = len(dataset) if hasattr(dataset, "__len__") else None
        if size == 0:
            why = "its data set is empty"
        elif size is not None and getattr(data_loader, "drop_last", False):
            why = (f"its data set holds {size} examples, fewer than batch_size={data_loader.batch_size}, and "
                   "drop_last=True drops the incomplete batch: use a smaller batch_size or drop_last=False")
        else:
            why = "it is empty"
        warnings.warn(f"The loader gave no batches ({why}), so the mean is nan.", stacklevel=3)
    return total / weight if weight else float("nan")


def calc_loss_batch(input_batch, target_batch, model, device):
    """Mean cross entropy of ``model``'s next-token predictions for one batch (lecture 01).

    Logits (batch, tokens, vocab) and targets (batch, tokens) are flattened so that every position
    of every sequence counts as one classification over the vocabulary.
    """
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)
    return F.cross_entropy(logits.flatten(0, 1), target_batch.flatten())


def calc_loss_loader(data_loader, model, device, num_batches=None, loss_fn=None):
    """Average :func:`calc_loss_batch` over the first ``num_batches`` batches (default: all) (lecture 01).

    The mean of the batch losses, computed by :func:`mean_over_loader`: without gradients, in whatever
    mode the model is in (``evaluate_model`` switches to eval mode). Returns ``nan`` for an empty
    loader, as the course does. ``loss_fn(input_batch, target_batch, model, device)`` replaces
    :func:`calc_loss_batch`.
    """
    loss_fn = loss_fn or calc_loss_batch
    return mean_over_loader(data_loader, lambda x, y: (loss_fn(x, y, model, device).item(), 1), num_batches)


def perplexity(loss: float | torch.Tensor) -> float:
    """exp(cross entropy): the number of tokens the model is, in effect, choosing among (lecture 01)."""
    return math.exp(float(loss))
