"""Lecture 04: the class head's freezing policy, positions, loss and accuracy, classify_review, saving, training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from helpers import classifier as clf
from helpers.model import GPTModel, get_config, parameter_report
from helpers.tokenizer import get_tokenizer

P = 50256  # end-of-text, the padding token
HELLO, WORLD = 15496, 995  # GPT-2 ids of "Hello", " world"


def tiny_classifier(trainable="last_block", num_classes=2, seed=0):
    torch.manual_seed(seed)
    return clf.add_classification_head(GPTModel(get_config("tiny")), num_classes, trainable)


# --------------------------------------------------------------------------- freezing policy

BLOCK_PARAMS = [
    "att.W_query.weight", "att.W_key.weight", "att.W_value.weight", "att.out_proj.weight", "att.out_proj.bias",
    "ff.layers.0.weight", "ff.layers.0.bias", "ff.layers.2.weight", "ff.layers.2.bias",
    "norm1.scale", "norm1.shift", "norm2.scale", "norm2.shift",
]
HEAD = {"out_head.weight", "out_head.bias"}
NORM = {"final_norm.scale", "final_norm.shift"}


def block(i):
    return {f"trf_blocks.{i}.{name}" for name in BLOCK_PARAMS}


@pytest.mark.parametrize("trainable, expected", [
    ("head", HEAD),
    ("last_block", HEAD | NORM | block(1)),
    (0, HEAD | NORM),
    (1, HEAD | NORM | block(1)),
    (2, HEAD | NORM | block(0) | block(1)),
    ("all", HEAD | NORM | block(0) | block(1) | {"tok_emb.weight", "pos_emb.weight"}),
])
def test_freezing_policy(trainable, expected):
    model = tiny_classifier(trainable)
    assert isinstance(model.out_head, nn.Linear)
    assert (model.out_head.in_features, model.out_head.out_features) == (32, 2)
    all_names = {name for name, _ in model.named_parameters()}
    assert expected <= all_names
    report = parameter_report(model)
    assert set(report["trainable_names"]) == expected
    assert report["trainable"] == sum(p.numel() for n, p in model.named_parameters() if n in expected)
    # gradients reach exactly the trainable parameters
    loss = clf.calc_loss_batch(torch.randint(0, 100, (2, 5)), torch.tensor([0, 1]), model, "cpu")
    loss.backward()
    assert {n for n, p in model.named_parameters() if p.grad is not None} == expected


def test_trainable_report_names_the_modules():
    report = parameter_report(tiny_classifier("last_block"))
    assert report["trainable_modules"] == ["trf_blocks.1", "final_norm", "out_head"]
    assert "trf_blocks.1, final_norm, out_head" in report["text"]


@pytest.mark.parametrize("bad", ["last", 3, -1, True, 1.0])
def test_freezing_policy_rejects_unknown_choices(bad):
    model = GPTModel(get_config("tiny"))
    head = model.out_head
    with pytest.raises(ValueError, match="trainable"):
        clf.add_classification_head(model, 2, bad)
    assert model.out_head is head  # nothing changed


def test_head_size_comes_from_num_classes():
    model = tiny_classifier("head", num_classes=3)
    assert model(torch.tensor([[1, 2, 3]])).shape == (1, 3, 3)
    with pytest.raises(ValueError, match="num_classes"):
        clf.add_classification_head(GPTModel(get_config("tiny")), 1)


# --------------------------------------------------------------------------- positions and accuracy


class PositionEcho(nn.Module):
    """Logits that say where they come from: class 0 scores the position, class 1 the token id."""

    def forward(self, idx):
        b, t = idx.shape
        positions = torch.arange(t, dtype=torch.float).expand(b, t)
        return torch.stack([positions, idx.float()], dim=-1)


def test_last_and_last_non_pad_positions():
    batch = torch.tensor([[5, 6, P, P], [7, 8, 9, 10], [P, P, P, P], [11, P, 12, P]])
    last = clf.classifier_logits(PositionEcho(), batch, "last")
    assert last.tolist() == [[3, P], [3, 10], [3, P], [3, P]]
    non_pad = clf.classifier_logits(PositionEcho(), batch, "last_non_pad")
    assert non_pad.tolist() == [[1, 6], [3, 10], [0, P], [2, 12]]
    other_pad = clf.classifier_logits(PositionEcho(), torch.tensor([[5, 0, 0]]), "last_non_pad", pad_token_id=0)
    assert other_pad.tolist() == [[0, 5]]
    with pytest.raises(ValueError, match="position"):
        clf.classifier_logits(PositionEcho(), batch, "first")


class ParityModel(nn.Module):
    """Predicts class (token id % 2) at every position, and records the mode and grad state it ran in."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.calls = []

    def forward(self, idx):
        self.calls.append((self.training, torch.is_grad_enabled()))
        odd = (idx % 2).float()
        return torch.stack([1 - odd, odd], dim=-1) + self.weight


def test_accuracy_is_exact_and_restores_the_mode():
    # last tokens 1, 2, 3, 4, 5 | 6, 7, 8, 9, 10 predict classes 1,0,1,0,1 | 0,1,0,1,0
    inputs = torch.tensor([[0, t] for t in range(1, 11)])
    labels = torch.tensor([1, 0, 1, 1, 1, 0, 0, 0, 0, 0])  # first five: 4 right; last five: 3 right
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=5)
    model = ParityModel().train()
    assert clf.calc_accuracy_loader(loader, model, "cpu") == pytest.approx(7 / 10)
    assert clf.calc_accuracy_loader(loader, model, "cpu", num_batches=1) == pytest.approx(4 / 5)
    assert clf.calc_accuracy_loader(loader, model, "cpu", num_batches=99) == pytest.approx(7 / 10)
    assert model.training  # restored
    assert set(model.calls) == {(False, False)}  # eval mode, no gradients
    # with padding on the right, "last" reads the pad token (even: class 0) and "last_non_pad" the message's
    padded = DataLoader(TensorDataset(torch.tensor([[3, P], [4, P]]), torch.tensor([1, 0])), batch_size=2)
    assert clf.calc_accuracy_loader(padded, model, "cpu", position="last") == pytest.approx(1 / 2)  # P is even
    assert clf.calc_accuracy_loader(padded, model, "cpu", position="last_non_pad") == 1.0
    empty = DataLoader(TensorDataset(inputs[:0], labels[:0]), batch_size=5)
    assert math.isnan(clf.calc_accuracy_loader(empty, model, "cpu"))


def test_classification_loss_is_cross_entropy_at_the_position():
    model = ParityModel()
    inputs, labels = torch.tensor([[2, 3], [2, 4]]), torch.tensor([1, 1])
    # logits at the last token: [0, 1] and [1, 0]
    expected = torch.nn.functional.cross_entropy(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), labels)
    assert clf.calc_loss_batch(inputs, labels, model, "cpu").item() == pytest.approx(expected.item())
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=1)
    per_batch = [torch.nn.functional.cross_entropy(torch.tensor([row]), torch.tensor([1])).item()
                 for row in ([0.0, 1.0], [1.0, 0.0])]
    assert clf.calc_loss_loader(loader, model, "cpu") == pytest.approx(sum(per_batch) / 2)
    assert clf.calc_loss_loader(loader, model, "cpu", num_batches=1) == pytest.approx(per_batch[0])
    model.calls.clear()
    clf.calc_loss_loader(loader, model.train(), "cpu")
    assert set(model.calls) == {(True, False)}  # the model's mode is left alone; no gradients


# --------------------------------------------------------------------------- classify_review


def rigged(model, winner):
    """Make the head always pick class ``winner``."""
    with torch.no_grad():
        model.out_head.weight.zero_()
        model.out_head.bias.copy_(torch.tensor([1.0, 0.0] if winner == 0 else [0.0, 1.0]))
    return model


def test_classify_review_names_the_winning_class():
    tok = get_tokenizer()
    text = "You are a winner! Claim your free prize now."
    assert clf.classify_review(text, rigged(tiny_classifier(), 1), tok, "cpu", max_length=20) == "spam"
    assert clf.classify_review(text, rigged(tiny_classifier(), 0), tok, "cpu", max_length=20) == "not spam"
    assert clf.classify_review(text, rigged(tiny_classifier(), 0), tok, "cpu", class_names=("ham", "spam")) == "ham"
    with pytest.raises(ValueError, match="class_names"):
        clf.classify_review(text, tiny_classifier(), tok, "cpu", class_names=("a", "b", "c"))


def test_classify_review_cuts_and_pads_like_the_dataset():
    tok = get_tokenizer()
    model = tiny_classifier().train()
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].tolist()))
    clf.classify_review("Hello world", model, tok, "cpu", max_length=5)
    clf.classify_review("Hello world", model, tok, "cpu", max_length=1)
    clf.classify_review("Hello world", model, tok, "cpu")
    clf.classify_review("Hello world " * 40, model, tok, "cpu", max_length=120)  # context length is 32
    assert seen[:3] == [[[HELLO, WORLD, P, P, P]], [[HELLO]], [[HELLO, WORLD]]]
    assert len(seen[3][0]) == 32 and P not in seen[3][0]
    assert model.training  # mode restored


# --------------------------------------------------------------------------- saving and loading


def test_save_and_load_round_trip(tmp_path):
    model = tiny_classifier("last_block", num_classes=2, seed=3)
    path = clf.save_classifier(tmp_path / "clf" / "spam.pt", model, ["ham", "spam"], max_length=20,
                               position="last_non_pad", test_acc=0.5)
    assert path.is_file() and not list(path.parent.glob("*.part"))
    loaded = clf.load_classifier(path)
    assert loaded.class_names == ["ham", "spam"] and loaded.max_length == 20
    assert loaded.pad_token_id == P and loaded.position == "last_non_pad" and loaded.meta == {"test_acc": 0.5}
    assert loaded.model.out_head.out_features == 2
    original = model.state_dict()
    assert all(torch.equal(original[k], v) for k, v in loaded.model.state_dict().items())
    assert set(parameter_report(loaded.model)["trainable_names"]) == set(parameter_report(model)["trainable_names"])
    x = torch.randint(0, 1000, (2, 7))
    model.eval()
    loaded.model.eval()
    assert torch.equal(model(x), loaded.model(x))


def test_save_and_load_reject_mismatches(tmp_path):
    model = tiny_classifier()
    with pytest.raises(ValueError, match="class_names"):
        clf.save_classifier(tmp_path / "x.pt", model, ["only one"], max_length=8)
    torch.save({"something": "else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="save_classifier"):
        clf.load_classifier(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        clf.load_classifier(tmp_path / "missing.pt")


def test_train_classifier_simple_records_accuracy_and_examples():
    torch.manual_seed(0)
    model = clf.add_classification_head(GPTModel(get_config("tiny")), 2, trainable="all")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 50257, (24, 6), generator=g)
    y = (x[:, -1] % 2).long()  # a learnable rule: the parity of the last token
    batches = [(x[i:i + 4], y[i:i + 4]) for i in range(0, 24, 4)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = clf.train_classifier_simple(model, batches, batches[:2], optimizer, "cpu", num_epochs=3, eval_freq=4,
                                      eval_iter=6, progress=False, verbose=False)
    assert history.seen_unit == "examples"
    assert history.tokens_seen == [(s + 1) * 4 for s in history.steps]
    assert len(history.extra["train_acc"]) == len(history.extra["val_acc"]) == 3
    assert history.extra["train_acc"][-1] == clf.calc_accuracy_loader(batches, model, "cpu")
    assert history.train_losses[-1] < history.train_losses[0]


# --------------------------------------------------------------------------- bad input: a message, not a traceback


def _loader(targets):
    inputs = torch.randint(0, 50, (len(targets), 6))
    return DataLoader(TensorDataset(inputs, torch.as_tensor(targets)), batch_size=len(targets))


@pytest.mark.parametrize("targets, error, message", [
    ([0, 1, 2, 3], ValueError, r"class id\(s\) \[2, 3\], but the head scores 2 classes"),
    ([0, -1], ValueError, r"class id\(s\) \[-1\]"),
    ([0.0, 1.0], TypeError, "must be class ids .*float32"),
    ([True, False], TypeError, "must be class ids"),
])
def test_classification_loss_explains_labels_that_do_not_fit_the_head(targets, error, message):
    model = tiny_classifier()
    with pytest.raises(error, match=message):
        clf.calc_loss_loader(_loader(targets), model, "cpu")


def test_bad_classification_inputs_get_a_message():
    model = tiny_classifier()
    with pytest.raises(TypeError, match="classifies a text"):
        clf.classify_review(None, model, get_tokenizer(), "cpu")
    with pytest.raises(TypeError, match="needs a GPTModel"):
        clf.add_classification_head(nn.Linear(4, 4), 2)
    with pytest.raises(ValueError, match="add the batch dimension"):
        clf.classifier_logits(model, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="integer tensor"):
        model(torch.zeros(1, 5))


def test_an_empty_loader_warns_why_the_mean_is_nan():
    empty = DataLoader(TensorDataset(torch.zeros(3, 6, dtype=torch.long), torch.zeros(3, dtype=torch.long)),
                       batch_size=8, drop_last=True)
    with pytest.warns(UserWarning, match="gave no batches .its data set holds 3 examples, fewer than batch_size=8, and drop_last=True"):
        assert math.isnan(clf.calc_accuracy_loader(empty, tiny_classifier(), "cpu"))
