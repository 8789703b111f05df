"""A vocabulary padded to a multiple of 64 changes the matrix shapes, never the results."""

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from helpers import model as M
from helpers.checkpoints import load_checkpoint, save_checkpoint
from helpers.classifier import add_classification_head
from helpers.generation import generate
from helpers.losses import calc_loss_batch
from helpers.perf import FastPath, prepare_model
from helpers.training import make_optimizer
from helpers.weights import load_weights_into_gpt, params_from_model

VOCAB, PADDED = 50257, 50304


def _pair(**overrides):
    """The same tiny model built from the same seed, without and with padding."""
    torch.manual_seed(0)
    plain = M.GPTModel(M.get_config("tiny", **overrides))
    torch.manual_seed(0)
    padded = M.GPTModel(M.get_config("tiny", pad_vocab_multiple=64, **overrides))
    return plain, padded


def test_padded_size():
    assert M.padded_vocab_size(VOCAB, 64) == PADDED
    assert M.padded_vocab_size(VOCAB, 1) == VOCAB
    assert M.padded_vocab_size(128, 64) == 128


@pytest.mark.parametrize("bad", [0, -64, 2.5, "64", True])
def test_bad_multiple_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="pad_vocab_multiple must be a positive integer"):
        M.GPTModel(M.get_config("tiny", pad_vocab_multiple=bad))


def test_same_seed_same_weights_plus_zero_rows():
    plain, padded = _pair()
    assert padded.tok_emb.weight.shape == (PADDED, 32) and padded.out_head.weight.shape == (PADDED, 32)
    assert padded.tok_emb.num_embeddings == PADDED and padded.out_head.out_features == PADDED
    for (name, a), b in zip(plain.state_dict().items(), padded.state_dict().values(), strict=True):
        assert torch.equal(a, b[: a.shape[0]]), name
        assert not b[a.shape[0]:].any(), name


def test_same_logits_and_shape():
    plain, padded = _pair()
    x = torch.randint(0, VOCAB, (2, 16))
    plain.eval(), padded.eval()
    with torch.no_grad():
        a, b = plain(x), padded(x)
    assert b.shape == (2, 16, VOCAB)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_same_generation_with_and_without_cache():
    plain, padded = _pair()
    prompt = torch.randint(0, VOCAB, (1, 4))
    for use_cache in (False, True):
        a = generate(plain.eval(), prompt, 12, 32, use_cache=use_cache)
        b = generate(padded.eval(), prompt, 12, 32, use_cache=use_cache)
        assert torch.equal(a, b)


def test_training_gives_the_same_losses_and_padding_stays_zero():
    plain, padded = _pair(drop_rate=0.0)
    batches = [(torch.randint(0, VOCAB, (2, 16)), torch.randint(0, VOCAB, (2, 16))) for _ in range(4)]
    losses = {}
    for name, model in (("plain", plain), ("padded", padded)):
        optimizer = make_optimizer(model, lr=1e-3, weight_decay=0.1, options=FastPath.for_device("cpu"))
        losses[name] = []
        for x, y in batches:
            optimizer.zero_grad()
            loss = calc_loss_batch(x, y, model, "cpu")
            loss.backward()
            optimizer.step()
            losses[name].append(loss.item())
    assert losses["padded"] == pytest.approx(losses["plain"], rel=1e-5)
    assert not padded.out_head.weight[VOCAB:].any() and not padded.tok_emb.weight[VOCAB:].any()
    assert padded.out_head.weight.grad[VOCAB:].abs().sum() == 0
    torch.testing.assert_close(plain.out_head.weight, padded.out_head.weight[:VOCAB], atol=1e-5, rtol=1e-4)


def test_pad_and_unpad_a_built_model():
    plain, _ = _pair()
    model = M.pad_vocab(copy.deepcopy(plain), 64)
    assert model.cfg["pad_vocab_multiple"] == 64 and model.tok_emb.weight.shape[0] == PADDED
    M.pad_vocab(model, 1)
    assert "pad_vocab_multiple" not in model.cfg
    for (name, a), b in zip(plain.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_parameter_report_leaves_the_padding_out():
    plain, padded = _pair()
    assert M.parameter_report(padded) == M.parameter_report(plain)


def test_openai_layout_round_trip_ignores_the_padding():
    plain, padded = _pair(qkv_bias=True)
    settings_a, params_a = params_from_model(plain)
    settings_b, params_b = params_from_model(padded)
    assert settings_a == settings_b
    assert params_b["wte"].shape == (VOCAB, 32) and params_b["out_head"]["w"].shape == (VOCAB, 32)
    np.testing.assert_array_equal(params_a["wte"], params_b["wte"])
    # Loading GPT-2-shaped weights into a padded model fills the real rows and zeroes the padding.
    torch.manual_seed(1)
    target = M.GPTModel(M.get_config("tiny", qkv_bias=True, pad_vocab_multiple=64))
    load_weights_into_gpt(target, params_a)
    assert not target.tok_emb.weight[VOCAB:].any() and not target.out_head.weight[VOCAB:].any()
    x = torch.randint(0, VOCAB, (1, 8))
    torch.testing.assert_close(target.eval()(x), plain.eval()(x), atol=1e-5, rtol=1e-5)


def test_loading_a_checkpoint_of_another_vocabulary_still_fails():
    _, params = params_from_model(M.GPTModel(M.get_config("tiny", vocab_size=1000)))
    with pytest.raises(ValueError, match="Shape mismatch for tok_emb"):
        load_weights_into_gpt(M.GPTModel(M.get_config("tiny", pad_vocab_multiple=64)), params)


def test_checkpoint_round_trip(tmp_path):
    _, padded = _pair()
    path = save_checkpoint(tmp_path / "padded.pt", padded)
    restored, _, _ = load_checkpoint(path)
    assert restored.cfg["pad_vocab_multiple"] == 64
    for (name, a), b in zip(padded.state_dict().items(), restored.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_classification_head_on_a_padded_model():
    _, padded = _pair()
    add_classification_head(padded, 2)
    assert padded.tok_emb.weight.shape[0] == PADDED
    assert padded(torch.randint(0, VOCAB, (3, 7))).shape == (3, 7, 2)


def test_fast_path_pads_on_cuda_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert FastPath.for_device("cuda").pad_vocab_multiple == 64
    assert FastPath.for_device("cpu").pad_vocab_multiple == 1
    plain, _ = _pair()
    model = prepare_model(copy.deepcopy(plain), replace(FastPath(), pad_vocab_multiple=64))
    assert model.out_head.weight.shape[0] == PADDED
    model = prepare_model(model, FastPath.teaching())
    assert model.out_head.weight.shape[0] == VOCAB
