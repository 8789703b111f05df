"""Lecture 04: the SMS Spam Collection, balancing and splitting, SpamDataset and the loaders."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from helpers import spam_data as sd
from helpers.model import GPTModel, context_length, get_config
from helpers.tokenizer import get_tokenizer

P = 50256  # end-of-text, the padding token


@pytest.fixture(scope="module")
def sms():
    return sd.load_sms_spam()


@pytest.fixture(scope="module")
def spam_csvs(tmp_path_factory):
    return sd.prepare_spam_csvs(tmp_path_factory.mktemp("sms"))


def rows(df):
    return sorted(zip(df[sd.LABEL_COLUMN].tolist(), df[sd.TEXT_COLUMN].tolist(), strict=True))


# --------------------------------------------------------------------------- data


def test_the_file_reads_as_the_course_does_or_whole(sms):
    assert len(sms) == 5_572
    assert sms[sd.LABEL_COLUMN].value_counts().to_dict() == {"ham": 4_825, "spam": 747}
    whole = sd.load_sms_spam(all_messages=True)
    assert len(whole) == 5_574
    assert whole[sd.LABEL_COLUMN].value_counts().to_dict() == {"ham": 4_827, "spam": 747}
    # Default quoting merges three lines after an unclosed quote into one message.
    assert sms[sd.TEXT_COLUMN].str.contains("\nham\t").sum() == 1
    assert not whole[sd.TEXT_COLUMN].str.contains("\n").any()


def test_balancing_and_split_sizes_are_the_courses(sms):
    balanced = sd.create_balanced_dataset(sms, seed=123)
    assert len(balanced) == 1_494
    assert balanced[sd.LABEL_COLUMN].value_counts().to_dict() == {"ham": 747, "spam": 747}
    # every spam message kept, the ham ones drawn from the real ham messages without repeats
    assert rows(balanced[balanced.Label == "spam"]) == rows(sms[sms.Label == "spam"])
    assert balanced.index.is_unique and set(balanced.index) <= set(sms.index)

    assert sd.class_names_of(balanced) == ["ham", "spam"]
    encoded = sd.encode_labels(balanced)
    assert encoded[sd.LABEL_COLUMN].tolist() == [0] * 747 + [1] * 747
    train, val, test = sd.random_split(encoded, 0.7, 0.1, seed=123)
    assert (len(train), len(val), len(test)) == (1_045, 149, 300)
    # the three parts are a partition of the balanced set: nothing lost, nothing used twice
    assert rows(pd.concat([train, val, test])) == rows(encoded)
    # shuffled: both classes in every part, roughly half each in training
    assert set(val.Label) == set(test.Label) == {0, 1}
    assert 0.4 < train.Label.mean() < 0.6


def test_balancing_and_split_are_reproducible_by_seed(sms):
    a = sd.random_split(sd.create_balanced_dataset(sms, seed=123), seed=123)
    b = sd.random_split(sd.create_balanced_dataset(sms, seed=123), seed=123)
    c = sd.random_split(sd.create_balanced_dataset(sms, seed=7), seed=7)
    for x, y in zip(a, b, strict=True):
        pd.testing.assert_frame_equal(x, y)
    assert a.train.Text.tolist() != c.train.Text.tolist()


def test_encode_labels_rejects_unknown_classes():
    df = pd.DataFrame({"Label": ["ham", "eggs"], "Text": ["a", "b"]})
    with pytest.raises(ValueError, match="eggs"):
        sd.encode_labels(df, ["ham", "spam"])


def test_random_split_checks_fractions():
    with pytest.raises(ValueError, match="train_frac"):
        sd.random_split(pd.DataFrame({"Label": [0], "Text": ["x"]}), 0.8, 0.3)


def test_csvs_are_written_once_and_idempotently(tmp_path, monkeypatch, sms):
    monkeypatch.setenv("LECTURES_CACHE", str(tmp_path / "cache"))
    paths = sd.prepare_spam_csvs()
    assert paths.train.parent == tmp_path / "cache" / "sms_spam"
    assert [p.name for p in paths] == ["train.csv", "validation.csv", "test.csv"]
    assert not list(paths.train.parent.glob("*.part"))
    assert paths.class_names == ["ham", "spam"] and paths.num_classes == 2
    assert paths.manifest["sizes"] == {"train": 1_045, "validation": 149, "test": 300}

    expected = sd.random_split(sd.encode_labels(sd.create_balanced_dataset(sms)))
    for path, part in zip(paths, expected, strict=True):
        written = pd.read_csv(path, keep_default_na=False)
        assert list(written.columns) == ["Label", "Text"]
        assert written.Label.tolist() == part.Label.tolist() and written.Text.tolist() == part.Text.tolist()

    before = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in paths]
    assert sd.prepare_spam_csvs() == paths
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in paths] == before  # not rewritten

    paths.test.unlink()  # an incomplete set is rebuilt
    sd.prepare_spam_csvs()
    assert len(pd.read_csv(paths.test)) == 300

    other = sd.prepare_spam_csvs(seed=1)  # other settings rewrite the files
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
    ds = sd.SpamDataset(hand_made_csv(tmp_path), get_tokenizer())
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
    ds = sd.SpamDataset(hand_made_csv(tmp_path), get_tokenizer(), max_length=3, pad_token_id=7)
    assert ds.max_length == 3 and ds.longest_length == 4 and ds.num_truncated == 1
    assert [ds[i][0].tolist() for i in range(3)] == [[HELLO, WORLD, 7], [HI, 7, 7], [HELLO, WORLD, SP_HELLO]]


def test_max_length_is_capped_at_the_context_length(tmp_path):
    assert sd.cap_max_length(120, 1024) == 120
    assert sd.cap_max_length(120, 32) == 32
    model = GPTModel(get_config("tiny", context_length=2))
    assert context_length(model) == 2 and sd.cap_max_length(120, model) == 2
    with pytest.raises(ValueError, match="positive"):
        sd.cap_max_length(0, 32)
    csv_path = hand_made_csv(tmp_path)
    ds = sd.SpamDataset(csv_path, get_tokenizer(), context_length=2)  # longest (4) capped at 2
    assert ds.max_length == 2 and ds.num_truncated == 1
    assert [ds[i][0].tolist() for i in range(3)] == [[HELLO, WORLD], [HI, P], [HELLO, WORLD]]
    assert sd.SpamDataset(csv_path, get_tokenizer(), max_length=10, context_length=3).max_length == 3


def test_spam_dataset_wants_class_ids(tmp_path):
    path = tmp_path / "names.csv"
    pd.DataFrame({"Label": ["ham"], "Text": ["Hi"]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="encode_labels"):
        sd.SpamDataset(path, get_tokenizer())


def test_real_splits_have_the_courses_lengths_and_loaders(spam_csvs):
    tok = get_tokenizer()
    train = sd.SpamDataset(spam_csvs.train, tok)
    val = sd.SpamDataset(spam_csvs.validation, tok, max_length=train.max_length)
    test = sd.SpamDataset(spam_csvs.test, tok, max_length=train.max_length)
    assert train.max_length == 120  # the course's longest training message
    loaders = sd.create_spam_loaders(train, val, test, batch_size=8)
    assert [len(loader) for loader in loaders] == [130, 19, 38]
    torch.manual_seed(123)
    x, y = next(iter(loaders.train))
    assert x.shape == (8, 120) and y.shape == (8,)
    # validation and test keep their order and every message; training is shuffled, reproducibly:
    # by default from the global generator (as the course: the seed sets the order) ...
    assert torch.equal(next(iter(loaders.validation))[0], torch.stack([val[i][0] for i in range(8)]))
    torch.manual_seed(123)
    assert torch.equal(next(iter(loaders.train))[0], x)
    assert not torch.equal(x, torch.stack([train[i][0] for i in range(8)]))
    # ... or, with a seed, from the loader's own generator, whatever the global one holds
    own = next(iter(sd.create_spam_loaders(train, val, test, batch_size=8, seed=123).train))[0]
    torch.manual_seed(0)
    assert torch.equal(next(iter(sd.create_spam_loaders(train, val, test, batch_size=8, seed=123).train))[0], own)
    assert sum(b[0].shape[0] for b in loaders.test) == 300


def test_build_spam_datasets_uses_the_training_length_everywhere(spam_csvs):
    tok = get_tokenizer()
    built = sd.build_spam_datasets(spam_csvs, tok)
    assert [len(ds) for ds in built] == [1_045, 149, 300]
    assert built.train.max_length == built.validation.max_length == built.test.max_length == 120
    by_hand = sd.SpamDataset(spam_csvs.validation, tok, max_length=120)
    assert built.validation.encoded_texts == by_hand.encoded_texts and built.validation.labels == by_hand.labels
    capped = sd.build_spam_datasets(spam_csvs, tok, context_length=64)
    assert capped.train.max_length == capped.validation.max_length == capped.test.max_length == 64
    assert sd.build_spam_datasets(spam_csvs, tok, max_length=30, pad_token_id=0).test[0][0].shape == (30,)


def test_loaders_can_train_on_the_first_messages_only(tmp_path):
    ds = sd.SpamDataset(hand_made_csv(tmp_path), get_tokenizer())
    loaders = sd.create_spam_loaders(ds, ds, ds, batch_size=1, train_examples=2)
    assert [len(loader) for loader in loaders] == [2, 3, 3]
    seen = sorted(x[0].tolist() for x, _ in loaders.train)
    assert seen == sorted([ds[0][0].tolist(), ds[1][0].tolist()])
    for bad in (0, 4):
        with pytest.raises(ValueError, match="train_examples"):
            sd.create_spam_loaders(ds, ds, ds, train_examples=bad)
