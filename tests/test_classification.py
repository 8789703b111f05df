"""Lecture 04: SMS spam data, SpamDataset, the class head's freezing policy, positions, accuracy, saving."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from helpers import classification as cls
from helpers.model import GPTModel, get_config
from helpers.tokenizer import get_tokenizer

P = 50256  # end-of-text, the padding token


@pytest.fixture(scope="module")
def sms():
    return cls.load_sms_spam()


@pytest.fixture(scope="module")
def spam_csvs(tmp_path_factory):
    return cls.prepare_spam_csvs(tmp_path_factory.mktemp("sms"))


def tiny_classifier(trainable="last_block", num_classes=2, seed=0):
    torch.manual_seed(seed)
    return cls.add_classification_head(GPTModel(get_config("tiny")), num_classes, trainable)


def rows(df):
    return sorted(zip(df[cls.LABEL_COLUMN].tolist(), df[cls.TEXT_COLUMN].tolist(), strict=True))


# --------------------------------------------------------------------------- data


def test_the_file_reads_as_the_course_does_or_whole(sms):
    assert len(sms) == 5_572
    assert sms[cls.LABEL_COLUMN].value_counts().to_dict() == {"ham": 4_825, "spam": 747}
    whole = cls.load_sms_spam(all_messages=True)
    assert len(whole) == 5_574
    assert whole[cls.LABEL_COLUMN].value_counts().to_dict() == {"ham": 4_827, "spam": 747}
    # Default quoting merges three lines after an unclosed quote into one message.
    assert sms[cls.TEXT_COLUMN].str.contains("\nham\t").sum() == 1
    assert not whole[cls.TEXT_COLUMN].str.contains("\n").any()


def test_balancing_and_split_sizes_are_the_courses(sms):
    balanced = cls.create_balanced_dataset(sms, seed=123)
    assert len(balanced) == 1_494
    assert balanced[cls.LABEL_COLUMN].value_counts().to_dict() == {"ham": 747, "spam": 747}
    # every spam message kept, the ham ones drawn from the real ham messages without repeats
    assert rows(balanced[balanced.Label == "spam"]) == rows(sms[sms.Label == "spam"])
    assert balanced.index.is_unique and set(balanced.index) <= set(sms.index)

    assert cls.class_names_of(balanced) == ["ham", "spam"]
    encoded = cls.encode_labels(balanced)
    assert encoded[cls.LABEL_COLUMN].tolist() == [0] * 747 + [1] * 747
    train, val, test = cls.random_split(encoded, 0.7, 0.1, seed=123)
    assert (len(train), len(val), len(test)) == (1_045, 149, 300)
    # the three parts are a partition of the balanced set: nothing lost, nothing used twice
    assert rows(pd.concat([train, val, test])) == rows(encoded)
    # shuffled: both classes in every part, roughly half each in training
    assert set(val.Label) == set(test.Label) == {0, 1}
    assert 0.4 < train.Label.mean() < 0.6


def test_balancing_and_split_are_reproducible_by_seed(sms):
    a = cls.random_split(cls.create_balanced_dataset(sms, seed=123), seed=123)
    b = cls.random_split(cls.create_balanced_dataset(sms, seed=123), seed=123)
    c = cls.random_split(cls.create_balanced_dataset(sms, seed=7), seed=7)
    for x, y in zip(a, b, strict=True):
        pd.testing.assert_frame_equal(x, y)
    assert a.train.Text.tolist() != c.train.Text.tolist()


def test_encode_labels_rejects_unknown_classes():
    df = pd.DataFrame({"Label": ["ham", "eggs"], "Text": ["a", "b"]})
    with pytest.raises(ValueError, match="eggs"):
        cls.encode_labels(df, ["ham", "spam"])


def test_random_split_checks_fractions():
    with pytest.raises(ValueError, match="train_frac"):
        cls.random_split(pd.DataFrame({"Label": [0], "Text": ["x"]}), 0.8, 0.3)


def test_csvs_are_written_once_and_idempotently(tmp_path, monkeypatch, sms):
    monkeypatch.setenv("LECTURES_CACHE", str(tmp_path / "cache"))
    paths = cls.prepare_spam_csvs()
    assert paths.train.parent == tmp_path / "cache" / "sms_spam"
    assert [p.name for p in paths] == ["train.csv", "validation.csv", "test.csv"]
    assert not list(paths.train.parent.glob("*.part"))
    assert paths.class_names == ["ham", "spam"] and paths.num_classes == 2
    assert paths.manifest["sizes"] == {"train": 1_045, "validation": 149, "test": 300}

    expected = cls.random_split(cls.encode_labels(cls.create_balanced_dataset(sms)))
    for path, part in zip(paths, expected, strict=True):
        written = pd.read_csv(path, keep_default_na=False)
        assert list(written.columns) == ["Label", "Text"]
        assert written.Label.tolist() == part.Label.tolist() and written.Text.tolist() == part.Text.tolist()

    before = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in paths]
    assert cls.prepare_spam_csvs() == paths
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in paths] == before  # not rewritten

    paths.test.unlink()  # an incomplete set is rebuilt
    cls.prepare_spam_csvs()
    assert len(pd.read_csv(paths.test)) == 300

    other = cls.prepare_spam_csvs(seed=1)  # other settings rewrite the files
    assert other.manifest["settings"]["seed"] == 1
    assert pd.read_csv(other.train).Text.tolist() != expected.train.Text.tolist()


# --------------------------------------------------------------------------- dataset and loaders


def hand_made_csv(tmp_path):
    path = tmp_path / "tiny.csv"
    pd.DataFrame({"Label": [0, 1, 0], "Text": ["Hello world", "Hi", "Hello world Hello world"]}).to_csv(
        path, index=False)
    return path


HELLO, WORLD, HI, SP_HELLO = 15496, 995, 17250, 18435  # GPT-2 ids of "Hello", " world", "Hi", " Hello"


def test_spam_dataset_pads_to_the_longest_message(tmp_path):
    ds = cls.SpamDataset(hand_made_csv(tmp_path), get_tokenizer())
    assert ds.max_length == ds.longest_length == 4 and ds.num_truncated == 0 and len(ds) == 3
    items = [ds[i] for i in range(3)]
    assert [x.tolist() for x, _ in items] == [
        [HELLO, WORLD, P, P],
        [HI, P, P, P],
        [HELLO, WORLD, SP_HELLO, WORLD],
    ]
    assert [y.item() for _, y in items] == [0, 1, 0]
    assert all(x.dtype == y.dtype == torch.long for x, y in items)


def test_spam_dataset_truncates_and_pads_to_max_length(tmp_path):
    ds = cls.SpamDataset(hand_made_csv(tmp_path), get_tokenizer(), max_length=3, pad_token_id=7)
    assert ds.max_length == 3 and ds.longest_length == 4 and ds.num_truncated == 1
    assert [ds[i][0].tolist() for i in range(3)] == [[HELLO, WORLD, 7], [HI, 7, 7], [HELLO, WORLD, SP_HELLO]]


def test_max_length_is_capped_at_the_context_length(tmp_path):
    assert cls.cap_max_length(120, 1024) == 120
    assert cls.cap_max_length(120, 32) == 32
    model = GPTModel(get_config("tiny", context_length=2))
    assert cls.context_length_of(model) == 2 and cls.cap_max_length(120, model) == 2
    with pytest.raises(ValueError, match="positive"):
        cls.cap_max_length(0, 32)
    csv_path = hand_made_csv(tmp_path)
    ds = cls.SpamDataset(csv_path, get_tokenizer(), context_length=2)  # longest (4) capped at 2
    assert ds.max_length == 2 and ds.num_truncated == 1
    assert [ds[i][0].tolist() for i in range(3)] == [[HELLO, WORLD], [HI, P], [HELLO, WORLD]]
    assert cls.SpamDataset(csv_path, get_tokenizer(), max_length=10, context_length=3).max_length == 3


def test_spam_dataset_wants_class_ids(tmp_path):
    path = tmp_path / "names.csv"
    pd.DataFrame({"Label": ["ham"], "Text": ["Hi"]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="encode_labels"):
        cls.SpamDataset(path, get_tokenizer())


def test_real_splits_have_the_courses_lengths_and_loaders(spam_csvs):
    tok = get_tokenizer()
    train = cls.SpamDataset(spam_csvs.train, tok)
    val = cls.SpamDataset(spam_csvs.validation, tok, max_length=train.max_length)
    test = cls.SpamDataset(spam_csvs.test, tok, max_length=train.max_length)
    assert train.max_length == 120  # the course's longest training message
    loaders = cls.create_spam_loaders(train, val, test, batch_size=8)
    assert [len(loader) for loader in loaders] == [130, 19, 38]
    x, y = next(iter(loaders.train))
    assert x.shape == (8, 120) and y.shape == (8,)
    # validation and test keep their order and every message; training is shuffled, reproducibly
    assert torch.equal(next(iter(loaders.validation))[0], torch.stack([val[i][0] for i in range(8)]))
    again = cls.create_spam_loaders(train, val, test, batch_size=8, seed=123)
    assert torch.equal(next(iter(again.train))[0], x)
    assert not torch.equal(x, torch.stack([train[i][0] for i in range(8)]))
    assert sum(b[0].shape[0] for b in loaders.test) == 300


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
    report = cls.trainable_report(model)
    assert set(report["names"]) == expected
    assert report["trainable"] == sum(p.numel() for n, p in model.named_parameters() if n in expected)
    # gradients reach exactly the trainable parameters
    loss = cls.calc_loss_batch(torch.randint(0, 100, (2, 5)), torch.tensor([0, 1]), model, "cpu")
    loss.backward()
    assert {n for n, p in model.named_parameters() if p.grad is not None} == expected


def test_trainable_report_names_the_modules():
    report = cls.trainable_report(tiny_classifier("last_block"))
    assert report["modules"] == ["trf_blocks.1", "final_norm", "out_head"]
    assert "trf_blocks.1, final_norm, out_head" in report["text"]


@pytest.mark.parametrize("bad", ["last", 3, -1, True, 1.0])
def test_freezing_policy_rejects_unknown_choices(bad):
    model = GPTModel(get_config("tiny"))
    head = model.out_head
    with pytest.raises(ValueError, match="trainable"):
        cls.add_classification_head(model, 2, bad)
    assert model.out_head is head  # nothing changed


def test_head_size_comes_from_num_classes():
    model = tiny_classifier("head", num_classes=3)
    assert model(torch.tensor([[1, 2, 3]])).shape == (1, 3, 3)
    with pytest.raises(ValueError, match="num_classes"):
        cls.add_classification_head(GPTModel(get_config("tiny")), 1)


# --------------------------------------------------------------------------- positions and accuracy


class PositionEcho(nn.Module):
    """Logits that say where they come from: class 0 scores the position, class 1 the token id."""

    def forward(self, idx):
        b, t = idx.shape
        positions = torch.arange(t, dtype=torch.float).expand(b, t)
        return torch.stack([positions, idx.float()], dim=-1)


def test_last_and_last_non_pad_positions():
    batch = torch.tensor([[5, 6, P, P], [7, 8, 9, 10], [P, P, P, P], [11, P, 12, P]])
    last = cls.classifier_logits(PositionEcho(), batch, "last")
    assert last.tolist() == [[3, P], [3, 10], [3, P], [3, P]]
    non_pad = cls.classifier_logits(PositionEcho(), batch, "last_non_pad")
    assert non_pad.tolist() == [[1, 6], [3, 10], [0, P], [2, 12]]
    other_pad = cls.classifier_logits(PositionEcho(), torch.tensor([[5, 0, 0]]), "last_non_pad", pad_token_id=0)
    assert other_pad.tolist() == [[0, 5]]
    with pytest.raises(ValueError, match="position"):
        cls.classifier_logits(PositionEcho(), batch, "first")


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
    assert cls.calc_accuracy_loader(loader, model, "cpu") == pytest.approx(7 / 10)
    assert cls.calc_accuracy_loader(loader, model, "cpu", num_batches=1) == pytest.approx(4 / 5)
    assert cls.calc_accuracy_loader(loader, model, "cpu", num_batches=99) == pytest.approx(7 / 10)
    assert model.training  # restored
    assert set(model.calls) == {(False, False)}  # eval mode, no gradients
    # with padding on the right, "last" reads the pad token (even: class 0) and "last_non_pad" the message's
    padded = DataLoader(TensorDataset(torch.tensor([[3, P], [4, P]]), torch.tensor([1, 0])), batch_size=2)
    assert cls.calc_accuracy_loader(padded, model, "cpu", position="last") == pytest.approx(1 / 2)  # P is even
    assert cls.calc_accuracy_loader(padded, model, "cpu", position="last_non_pad") == 1.0
    empty = DataLoader(TensorDataset(inputs[:0], labels[:0]), batch_size=5)
    assert math.isnan(cls.calc_accuracy_loader(empty, model, "cpu"))


def test_classification_loss_is_cross_entropy_at_the_position():
    model = ParityModel()
    inputs, labels = torch.tensor([[2, 3], [2, 4]]), torch.tensor([1, 1])
    # logits at the last token: [0, 1] and [1, 0]
    expected = torch.nn.functional.cross_entropy(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), labels)
    assert cls.calc_loss_batch(inputs, labels, model, "cpu").item() == pytest.approx(expected.item())
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=1)
    per_batch = [torch.nn.functional.cross_entropy(torch.tensor([row]), torch.tensor([1])).item()
                 for row in ([0.0, 1.0], [1.0, 0.0])]
    assert cls.calc_loss_loader(loader, model, "cpu") == pytest.approx(sum(per_batch) / 2)
    assert cls.calc_loss_loader(loader, model, "cpu", num_batches=1) == pytest.approx(per_batch[0])


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
    assert cls.classify_review(text, rigged(tiny_classifier(), 1), tok, "cpu", max_length=20) == "spam"
    assert cls.classify_review(text, rigged(tiny_classifier(), 0), tok, "cpu", max_length=20) == "not spam"
    assert cls.classify_review(text, rigged(tiny_classifier(), 0), tok, "cpu", class_names=("ham", "spam")) == "ham"
    with pytest.raises(ValueError, match="class_names"):
        cls.classify_review(text, tiny_classifier(), tok, "cpu", class_names=("a", "b", "c"))


def test_classify_review_cuts_and_pads_like_the_dataset():
    tok = get_tokenizer()
    model = tiny_classifier().train()
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].tolist()))
    cls.classify_review("Hello world", model, tok, "cpu", max_length=5)
    cls.classify_review("Hello world", model, tok, "cpu", max_length=1)
    cls.classify_review("Hello world", model, tok, "cpu")
    cls.classify_review("Hello world " * 40, model, tok, "cpu", max_length=120)  # context length is 32
    assert seen[:3] == [[[HELLO, WORLD, P, P, P]], [[HELLO]], [[HELLO, WORLD]]]
    assert len(seen[3][0]) == 32 and P not in seen[3][0]
    assert model.training  # mode restored


# --------------------------------------------------------------------------- saving and loading


def test_save_and_load_round_trip(tmp_path):
    model = tiny_classifier("last_block", num_classes=2, seed=3)
    path = cls.save_classifier(tmp_path / "clf" / "spam.pt", model, ["ham", "spam"], max_length=20,
                               position="last_non_pad", test_acc=0.5)
    assert path.is_file() and not list(path.parent.glob("*.part"))
    loaded = cls.load_classifier(path)
    assert loaded.class_names == ["ham", "spam"] and loaded.max_length == 20
    assert loaded.pad_token_id == P and loaded.position == "last_non_pad" and loaded.meta == {"test_acc": 0.5}
    assert loaded.model.out_head.out_features == 2
    original = model.state_dict()
    assert all(torch.equal(original[k], v) for k, v in loaded.model.state_dict().items())
    assert set(cls.trainable_report(loaded.model)["names"]) == set(cls.trainable_report(model)["names"])
    x = torch.randint(0, 1000, (2, 7))
    model.eval()
    loaded.model.eval()
    assert torch.equal(model(x), loaded.model(x))


def test_save_and_load_reject_mismatches(tmp_path):
    model = tiny_classifier()
    with pytest.raises(ValueError, match="class_names"):
        cls.save_classifier(tmp_path / "x.pt", model, ["only one"], max_length=8)
    torch.save({"something": "else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="save_classifier"):
        cls.load_classifier(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        cls.load_classifier(tmp_path / "missing.pt")


def test_train_classifier_simple_records_accuracy_and_examples():
    torch.manual_seed(0)
    model = cls.add_classification_head(GPTModel(get_config("tiny")), 2, trainable="all")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 50257, (24, 6), generator=g)
    y = (x[:, -1] % 2).long()  # a learnable rule: the parity of the last token
    batches = [(x[i:i + 4], y[i:i + 4]) for i in range(0, 24, 4)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = cls.train_classifier_simple(model, batches, batches[:2], optimizer, "cpu", num_epochs=3, eval_freq=4,
                                      eval_iter=6, progress=False, verbose=False)
    assert history.seen_unit == "examples"
    assert history.tokens_seen == [(s + 1) * 4 for s in history.steps]
    assert len(history.extra["train_acc"]) == len(history.extra["val_acc"]) == 3
    assert history.extra["train_acc"][-1] == cls.calc_accuracy_loader(batches, model, "cpu")
    assert history.train_losses[-1] < history.train_losses[0]
