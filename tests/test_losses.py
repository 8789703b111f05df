"""Lectures 01, 02 and 04: the one loop that averages over a loader, and the loss over a loader."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from helpers.losses import calc_loss_batch, calc_loss_loader, mean_over_loader


def batches(sizes):
    """Batches of the given sizes; input i holds the value i, target i holds i % 2."""
    out, start = [], 0
    for size in sizes:
        x = torch.arange(start, start + size).float().unsqueeze(1)
        out.append((x, (x.squeeze(1) % 2).long()))
        start += size
    return out


def test_batch_weights_give_the_mean_of_batch_means():
    data = batches([4, 4, 1])
    mean_of_means = mean_over_loader(data, lambda x, y: (x.mean().item(), 1))
    assert mean_of_means == pytest.approx((1.5 + 5.5 + 8.0) / 3)   # the short last batch counts fully
    assert mean_over_loader(data, lambda x, y: (x.mean().item(), 1), num_batches=2) == pytest.approx(3.5)
    assert mean_over_loader(data, lambda x, y: (x.mean().item(), 1), num_batches=99) == mean_of_means


def test_example_weights_give_the_mean_over_examples():
    data = batches([4, 4, 1])
    per_example = mean_over_loader(data, lambda x, y: (x.sum().item(), len(x)))
    assert per_example == pytest.approx(sum(range(9)) / 9)
    assert mean_over_loader(data, lambda x, y: (x.sum().item(), len(x)), num_batches=1) == pytest.approx(1.5)


def test_nothing_to_average_is_nan_and_no_batch_is_read_beyond_num_batches():
    assert math.isnan(mean_over_loader([], lambda x, y: (1.0, 1)))
    assert math.isnan(mean_over_loader(batches([2]), lambda x, y: (1.0, 1), num_batches=0))
    read = []

    def endless():
        while True:
            read.append(1)
            yield torch.zeros(1), torch.zeros(1)

    assert mean_over_loader(endless(), lambda x, y: (2.0, 1), num_batches=3) == 2.0
    assert len(read) == 3


def test_runs_without_gradients_and_accepts_tensors():
    weight = torch.nn.Parameter(torch.ones(1))
    grad_enabled = []

    def batch_fn(x, y):
        grad_enabled.append(torch.is_grad_enabled())
        return (weight * x).sum(), len(x)

    assert mean_over_loader(batches([2, 2]), batch_fn) == pytest.approx(1.5)
    assert grad_enabled == [False, False] and torch.is_grad_enabled()


class Recorder(torch.nn.Module):
    """A tiny language model that records the mode and gradient state it ran in."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(10, 10)
        self.calls = []

    def forward(self, idx):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return self.emb(idx)


def test_calc_loss_loader_is_the_mean_of_batch_losses_without_gradients():
    torch.manual_seed(0)
    model = Recorder().train()
    x, y = torch.randint(0, 10, (5, 3)), torch.randint(0, 10, (5, 3))
    loader = DataLoader(TensorDataset(x, y), batch_size=2)  # batches of 2, 2, 1
    expected = [F.cross_entropy(model.emb(x[i:i + 2]).flatten(0, 1), y[i:i + 2].flatten()).item() for i in (0, 2, 4)]
    assert calc_loss_loader(loader, model, "cpu") == pytest.approx(sum(expected) / 3)
    assert calc_loss_loader(loader, model, "cpu", num_batches=2) == pytest.approx(sum(expected[:2]) / 2)
    assert calc_loss_batch(x[:2], y[:2], model, "cpu").item() == pytest.approx(expected[0])
    assert set(model.calls[:-1]) == {(True, False)}  # the mode is left alone; no gradients
    assert model.calls[-1] == (True, True)            # calc_loss_batch is what training differentiates
    assert math.isnan(calc_loss_loader(DataLoader(TensorDataset(x[:0], y[:0])), model, "cpu"))
