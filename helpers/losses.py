"""The language-modelling loss: cross entropy of the next token, over a batch and over a loader."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def calc_loss_batch(input_batch, target_batch, model, device):
    """Mean cross entropy of ``model``'s next-token predictions for one batch.

    Logits (batch, tokens, vocab) and targets (batch, tokens) are flattened so that every position
    of every sequence counts as one classification over the vocabulary.
    """
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)
    return F.cross_entropy(logits.flatten(0, 1), target_batch.flatten())


def calc_loss_loader(data_loader, model, device, num_batches=None, loss_fn=None):
    """Average :func:`calc_loss_batch` over the first ``num_batches`` batches (default: all).

    Returns ``nan`` for an empty loader, as the course does, rather than dividing by zero.
    ``loss_fn`` replaces :func:`calc_loss_batch` (the classification lecture passes its own).
    """
    loss_fn = loss_fn or calc_loss_batch
    if len(data_loader) == 0:
        return float("nan")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total = 0.0
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i >= num_batches:
            break
        total += loss_fn(input_batch, target_batch, model, device).item()
    return total / num_batches


def perplexity(loss: float | torch.Tensor) -> float:
    """exp(cross entropy): the number of tokens the model is, in effect, choosing among."""
    return math.exp(float(loss))
