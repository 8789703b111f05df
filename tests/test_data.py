import pytest
import torch

from helpers import data, tokenizer


def test_verdict_has_the_expected_size(verdict_text):
    assert len(verdict_text) == 20_479
    assert len(tokenizer.get_tokenizer().encode(verdict_text)) == 5_145


def test_windows_are_shifted_by_one():
    text = "one two three four five six seven eight nine ten eleven twelve"
    ds = data.GPTDatasetV1(text, tokenizer.get_tokenizer(), max_length=4, stride=2)
    ids = tokenizer.get_tokenizer().encode(text)
    assert len(ds) == len(range(0, len(ids) - 4, 2))
    x0, y0 = ds[0]
    x1, _ = ds[1]
    assert x0.tolist() == ids[0:4] and y0.tolist() == ids[1:5] and x1.tolist() == ids[2:6]


def test_too_short_text_is_a_clear_error():
    with pytest.raises(ValueError, match="too few"):
        data.GPTDatasetV1("short", tokenizer.get_tokenizer(), max_length=8, stride=8)


def test_course_loaders(verdict_text):
    train, val = data.train_val_split(verdict_text, 0.9)
    assert train + val == verdict_text and len(train) == int(0.9 * len(verdict_text))
    torch.manual_seed(123)
    train_loader = data.create_dataloader(train, batch_size=2, max_length=256, stride=256, drop_last=True)
    val_loader = data.create_dataloader(val, batch_size=2, max_length=256, stride=256, drop_last=False,
                                        shuffle=False)
    assert (len(train_loader), len(val_loader)) == (9, 1)  # as in the course: 9 train batches, 1 val
    x, y = next(iter(train_loader))
    assert x.shape == y.shape == (2, 256)


def test_train_val_loaders_are_the_course_pair(verdict_text):
    torch.manual_seed(123)
    train_loader, val_loader = data.train_val_loaders(verdict_text, context_length=256, batch_size=2)
    assert (len(train_loader), len(val_loader)) == (9, 1)
    train, val = data.train_val_split(verdict_text, 0.9)
    expected = data.create_dataloader(val, batch_size=2, max_length=256, stride=256, drop_last=False, shuffle=False)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(val_loader, expected, strict=True))
    windows = [tuple(x.tolist()) for batch, _ in train_loader for x in batch]
    all_windows = {tuple(x.tolist()) for x, _ in data.GPTDatasetV1(train, tokenizer.get_tokenizer(), 256, 256)}
    assert len(set(windows)) == len(windows) == 18 and set(windows) <= all_windows  # whole batches of distinct windows
    orders = []
    for _ in range(2):  # the shuffle draws from the global generator: the same seed gives the same order
        torch.manual_seed(5)
        orders.append([x for x, _ in data.train_val_loaders(verdict_text, context_length=256, batch_size=2).train])
    assert all(torch.equal(a, b) for a, b in zip(*orders, strict=True))


def test_split_ratio_validated():
    with pytest.raises(ValueError):
        data.train_val_split("abc", 1.5)


def test_a_loader_without_batches_is_refused(verdict_text):
    """The course pitfall: a batch larger than the split gives a loader that trains for zero steps."""
    _, val = data.train_val_split(verdict_text, 0.9)
    windows = len(data.GPTDatasetV1(val, tokenizer.get_tokenizer(), 256, 256))
    with pytest.raises(ValueError, match=rf"gives {windows} window\(s\) of 256 tokens, fewer than batch_size=8"):
        data.create_dataloader(val, batch_size=8, max_length=256, stride=256, drop_last=True)
    assert len(data.create_dataloader(val, batch_size=8, max_length=256, stride=256, drop_last=False)) == 1
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        data.create_dataloader(val, batch_size=0, max_length=16, stride=16)
    with pytest.raises(ValueError, match="fewer than batch_size=64"):
        data.train_val_loaders(verdict_text, context_length=256, batch_size=64)


def test_the_text_must_be_a_str():
    with pytest.raises(TypeError, match="got bytes"):
        data.GPTDatasetV1(b"some bytes", tokenizer.get_tokenizer(), max_length=2, stride=2)


def test_longest_verbatim_run_finds_whole_words_across_line_breaks():
    text = "He laughed again, and threw back\nhis head  to look up at the sketch."
    assert data.longest_verbatim_run("so he laughed again, and threw back his head to see", text) == \
        "laughed again, and threw back his head to"
    assert data.longest_verbatim_run("the ketch", text) == "the"      # "ketch" is no word of the text
    assert data.longest_verbatim_run("nothing here", text) == ""
    assert data.longest_verbatim_run("", text) == ""
    with pytest.raises(TypeError, match="two strings"):
        data.longest_verbatim_run(["a"], text)
