"""Frozen-prefix caching (lecture 04): when it applies, and that it changes nothing but the time."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from helpers import classifier as clf
from helpers.lora import apply_lora
from helpers.model import GPTModel, get_config
from helpers.prefix_cache import (
    ActivationStore,
    PrefixCachedModel,
    cache_frozen_prefix,
    frozen_prefix_depth,
)
from helpers.tokenizer import get_tokenizer

P = 50256


def classifier(trainable="last_block", n_layers=3, seed=0, **cfg):
    torch.manual_seed(seed)
    model = GPTModel(get_config("tiny", n_layers=n_layers, **cfg))
    return clf.add_classification_head(model, 2, trainable)


def messages(n=20, length=10, seed=1):
    """Token ids padded on the right with P (some rows repeated), and labels from the last real token."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 5000, (n, length), generator=g)
    for i in range(n):
        ids[i, length - i % 4:] = P if i % 4 else ids[i, length - 1]
    ids[5] = ids[1]                       # a message that occurs twice
    labels = (ids[:, 0] % 2).long()
    return TensorDataset(ids, labels)


def loaders(train, val, seed=123):
    return (DataLoader(train, batch_size=4, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(seed)),
            DataLoader(val, batch_size=4))


# --------------------------------------------------------------------------- when it applies


@pytest.mark.parametrize("trainable, depth", [("last_block", 2), (1, 2), (2, 1), (3, 0), ("head", 3), (0, 3),
                                              ("all", 0)])
def test_depth_follows_the_freezing_policy(trainable, depth):
    assert frozen_prefix_depth(classifier(trainable)) == depth


def test_nothing_to_cache_with_dropout_or_lora(capsys):
    assert frozen_prefix_depth(classifier(drop_rate=0.1)) == 0     # dropout draws new noise every step
    lora = apply_lora(classifier("head"), rank=2, alpha=2)
    assert frozen_prefix_depth(lora) == 0                          # trainable matrices in block 0
    assert cache_frozen_prefix(lora) is lora
    assert "block 0 trains (LoRA)" in capsys.readouterr().out
    everything = classifier("all")
    assert cache_frozen_prefix(everything) is everything
    assert "the embeddings train" in capsys.readouterr().out
    with pytest.raises(ValueError, match="Cannot cache 3 blocks"):
        PrefixCachedModel(classifier("last_block"), depth=3)
    with pytest.raises(ValueError, match="position"):
        cache_frozen_prefix(classifier(), position="first")


def test_bytes_per_example_is_tokens_times_emb_dim_times_4():
    with torch.device("meta"):
        model = clf.add_classification_head(GPTModel(get_config("gpt2-small")), 2, "last_block")
    wrapped = cache_frozen_prefix(model, verbose=False)
    assert wrapped.depth == 11
    assert wrapped.bytes_per_example(120) == 120 * 768 * 4 == 368_640


# --------------------------------------------------------------------------- exactly the same numbers


@pytest.mark.parametrize("position", ["last", "last_non_pad"])
@pytest.mark.parametrize("trainable", ["last_block", 2, "head"])
def test_same_loss_and_gradients_as_the_plain_model(position, trainable):
    plain = classifier(trainable).train()
    wrapped = cache_frozen_prefix(copy.deepcopy(plain), position, verbose=False)
    x, y = messages()[:8]
    for _ in range(2):                                             # computing, then reading the cache
        losses = [clf.calc_loss_batch(x, y, m, "cpu", position=position) for m in (plain, wrapped)]
        for m, loss in zip((plain, wrapped.module), losses, strict=True):
            m.zero_grad()
            loss.backward()
        torch.testing.assert_close(losses[1], losses[0], atol=1e-6, rtol=1e-5)
        grads = [{n: p.grad for n, p in m.named_parameters() if p.requires_grad} for m in (plain, wrapped.module)]
        assert grads[0].keys() == grads[1].keys() and grads[0]
        for name in grads[0]:
            torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5, msg=name)
    assert wrapped.misses == 7 and wrapped.hits == 9                # 7 distinct rows; row 5 repeats row 1


@pytest.mark.parametrize("position", ["last", "last_non_pad"])
def test_training_gives_the_same_history_and_weights(position):
    data = messages(24)
    train, val = torch.utils.data.Subset(data, range(16)), torch.utils.data.Subset(data, range(16, 24))
    runs = []
    for cached in (False, True):
        model = classifier("last_block")
        run_model = cache_frozen_prefix(model, position, verbose=False) if cached else model
        train_loader, val_loader = loaders(train, val)
        optimizer = torch.optim.AdamW(run_model.parameters(), lr=1e-3)
        history = clf.train_classifier_simple(run_model, train_loader, val_loader, optimizer, "cpu", num_epochs=3,
                                              eval_freq=2, eval_iter=2, position=position, progress=False,
                                              verbose=False)
        test_acc = clf.calc_accuracy_loader(val_loader, run_model, "cpu", position=position)
        test_loss = clf.calc_loss_loader(val_loader, run_model, "cpu", position=position)
        runs.append((history, test_acc, test_loss, model, run_model))
    (plain, plain_acc, plain_loss, plain_model, _), (cached, acc, loss, model, wrapped) = runs
    assert isinstance(wrapped, PrefixCachedModel) and wrapped.module is model
    assert cached.steps == plain.steps and cached.tokens_seen == plain.tokens_seen
    assert cached.train_losses == pytest.approx(plain.train_losses, rel=1e-5, abs=1e-6)
    assert cached.val_losses == pytest.approx(plain.val_losses, rel=1e-5, abs=1e-6)
    assert cached.extra == plain.extra                              # accuracies: the same counts
    assert (acc, loss) == (plain_acc, pytest.approx(plain_loss, rel=1e-5, abs=1e-6))
    for (name, p), q in zip(model.named_parameters(), plain_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5, msg=name)
    assert wrapped.misses == len(set(map(tuple, data.tensors[0].tolist())))   # each message once ...
    assert wrapped.hits > 4 * wrapped.misses                          # ... then read back


def test_each_message_runs_through_the_frozen_blocks_once():
    model = classifier("last_block")
    calls = []
    model.trf_blocks[0].register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    wrapped = cache_frozen_prefix(model, verbose=False)
    x, _ = messages()[:8]
    wrapped(x)
    wrapped(x[:4])
    wrapped(x.flip(0))
    assert calls == [7]                                              # 8 rows, one of them twice
    assert "7 examples of 10 tokens x 32 = 1,280 bytes each" in wrapped.summary()


# --------------------------------------------------------------------------- memory, and staying right


def test_activations_go_to_disk_beyond_the_ram_limit(tmp_path):
    store = ActivationStore((3, 2), max_ram_bytes=2 * 3 * 2 * 4, folder=tmp_path, chunk_rows=2)
    rows = torch.arange(7 * 6, dtype=torch.float32).view(7, 3, 2)
    assert list(store.append(rows[:3])) == [0, 1, 2] and list(store.append(rows[3:])) == [3, 4, 5, 6]
    assert store.ram_bytes == 48 and store.disk_bytes == 3 * 48     # one chunk in RAM, three in files
    assert len(list(tmp_path.glob("activations-*/chunk-*.bin"))) == 3
    assert torch.equal(store.get([6, 0, 3, 3]), rows[[6, 0, 3, 3]])
    store.close()
    assert not list(tmp_path.iterdir()) and len(store) == 0
    with pytest.raises(ValueError, match="do not fit"):
        ActivationStore((3, 2)).append(torch.zeros(1, 2, 3))


def test_disk_cache_gives_the_same_logits(tmp_path):
    model = classifier("last_block").eval()
    wrapped = cache_frozen_prefix(model, "last_non_pad", max_ram_bytes=0, folder=tmp_path, verbose=False)
    x, _ = messages()[:8]
    expected = model(x)
    for _ in range(2):
        torch.testing.assert_close(wrapped(x), expected, atol=1e-6, rtol=1e-5)
    assert wrapped.store.ram_bytes == 0 and wrapped.store.disk_bytes > 0
    assert "0 MiB in RAM" in wrapped.summary()


def test_new_frozen_weights_clear_the_cache_and_unfreezing_is_refused():
    model = classifier("last_block").eval()
    wrapped = cache_frozen_prefix(model, verbose=False)
    x, _ = messages()[:4]
    wrapped(x)
    with torch.no_grad():
        model.trf_blocks[0].ff.layers[0].weight.mul_(2.0)           # e.g. other weights loaded in place
    torch.testing.assert_close(wrapped(x), model(x)[:, -1:], atol=1e-6, rtol=1e-5)
    assert wrapped.misses == 8
    model.trf_blocks[1].requires_grad_(True)
    with pytest.raises(RuntimeError, match="no longer fixed"):
        wrapped(x)


def test_other_lengths_run_uncached_and_classify_review_works():
    model = classifier("last_block").eval()
    wrapped = cache_frozen_prefix(model, verbose=False)
    x, _ = messages()[:4]
    wrapped(x)
    short = x[:, :6]
    torch.testing.assert_close(wrapped(short), model(short)[:, -1:], atol=1e-6, rtol=1e-5)
    assert wrapped.misses == 4 and len(wrapped.store) == 4
    tok = get_tokenizer()
    text = "Win a free prize now"
    assert clf.classify_review(text, wrapped, tok, "cpu", max_length=10) == \
        clf.classify_review(text, model, tok, "cpu", max_length=10)
