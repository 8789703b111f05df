"""The memory-mapped dataset over prepared shards: the stream, windows, random windows per epoch and rank, loaders."""

import json
import pickle

import numpy as np
import pytest
import torch
from test_prepare import FAST, make_corpus

from helpers import prepare, shards


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small prepared corpus with many shards, so that windows cross shard boundaries."""
    folder = tmp_path_factory.mktemp("shards")
    prepare.prepare([str(make_corpus(folder / "text"))], folder / "out", shard_mb=0.004, piece_kb=1,
                    val_fraction=0.2, **FAST)
    return folder / "out"


def whole(folder, split) -> np.ndarray:
    manifest = shards.read_manifest(folder)
    return np.concatenate([np.fromfile(folder / s["file"], dtype="<u2") for s in manifest["shards"]
                           if s["split"] == split])


def test_the_stream_reads_across_shard_boundaries(corpus):
    tokens, expected = shards.TokenShards(corpus, "train"), whole(corpus, "train")
    assert len(tokens) == len(expected) and len(tokens.files) > 5
    for boundary in tokens.starts[1:-1]:
        assert np.array_equal(tokens.read(boundary - 3, 7), expected[boundary - 3 : boundary + 4])
    assert np.array_equal(tokens.read(0, len(expected)), expected)
    with pytest.raises(IndexError):
        tokens.read(len(expected) - 2, 3)


def test_strided_windows_are_the_shifted_slices(corpus):
    expected = whole(corpus, "val").astype(np.int64)
    windows = shards.TokenWindows(shards.TokenShards(corpus, "val"), context_length=16, stride=10)
    assert len(windows) == len(range(0, len(expected) - 16, 10))  # as GPTDatasetV1 counts them
    for i in (0, 1, len(windows) - 1):
        x, y = windows[i]
        assert x.dtype == torch.int64 and x.tolist() == expected[i * 10 : i * 10 + 16].tolist()
        assert y.tolist() == expected[i * 10 + 1 : i * 10 + 17].tolist()
    last = windows[len(windows) - 1][1]
    assert (len(windows) - 1) * 10 + 17 <= len(expected) and len(last) == 16


def test_random_windows_depend_on_seed_and_epoch_only():
    def draw(seed, epoch, rank=0, world=1):
        sampler = shards.RandomWindows(10_000, 60, seed=seed, rank=rank, world_size=world)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert draw(1, 0) == draw(1, 0) and len(draw(1, 0)) == 60
    assert draw(1, 0) != draw(2, 0) and draw(1, 0) != draw(1, 1)
    assert all(0 <= i < 10_000 for i in draw(1, 3))
    # two ranks share one process's windows between them, without overlap
    ranks = [draw(1, 0, rank, 2) for rank in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 30
    assert [i for pair in zip(*ranks, strict=True) for i in pair] == draw(1, 0)


def test_random_windows_come_in_blocks_that_ranks_share_the_same_way(monkeypatch):
    """Drawn block by block (bounded memory): three ranks still split one process's windows, across blocks."""
    monkeypatch.setattr(shards.RandomWindows, "BLOCK", 7)
    one = list(shards.RandomWindows(1000, 50, seed=3))
    assert len(one) == 50 and len(set(one)) > 40
    ranks = [list(shards.RandomWindows(1000, 50, seed=3, rank=r, world_size=3)) for r in range(3)]
    assert [len(r) for r in ranks] == [16, 16, 16]
    assert [i for triple in zip(*ranks, strict=True) for i in triple] == one[:48]


def test_strided_shares_split_the_windows_among_ranks():
    shares = [list(shards.StridedShare(11, rank, 3)) for rank in range(3)]
    assert sorted(sum(shares, [])) == list(range(11))
    even = [list(shards.StridedShare(11, rank, 3, drop_last=True)) for rank in range(3)]
    assert [len(s) for s in even] == [3, 3, 3]


def test_a_loader_like_create_dataloader(corpus):
    loader = shards.create_shard_dataloader(corpus, "train", batch_size=4, max_length=16, windows_per_epoch=40, seed=5)
    batches = list(loader)
    assert len(loader) == len(batches) == 10
    x, y = batches[0]
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])  # the target is the input shifted by one
    again = shards.create_shard_dataloader(corpus, "train", batch_size=4, max_length=16, windows_per_epoch=40, seed=5)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))  # a rerun sees the same windows
    val = shards.create_shard_dataloader(corpus, "val", batch_size=4, max_length=16, drop_last=False)
    assert sum(len(x) for x, _ in val) == len(shards.TokenWindows(shards.TokenShards(corpus, "val"), 16))


def test_the_pretraining_loaders(corpus):
    train, val = shards.pretraining_loaders(corpus, context_length=16, batch_size=2, rank=1, world_size=2, seed=3)
    tokens = shards.read_manifest(corpus)["tokens"]
    assert len(train.sampler) == (tokens["train"] // 16) // 2  # one split's worth of windows, half per rank
    assert len(val.dataset) == len(range(0, tokens["val"] - 16, 16))


def test_the_dataset_pickles_as_paths_and_works_in_loader_workers(corpus):
    tokens = shards.TokenShards(corpus, "train")
    tokens.read(0, 10)  # maps the files
    assert len(pickle.dumps(tokens)) < 5_000
    loader = shards.create_shard_dataloader(corpus, "train", batch_size=4, max_length=16, windows_per_epoch=16,
                                            num_workers=2)
    in_workers = [x for x, _ in loader]
    loader.num_workers = 0
    assert all(torch.equal(a, b) for a, b in zip(in_workers, [x for x, _ in loader], strict=True))


def test_clear_errors_for_folders_that_are_not_ready(corpus, tmp_path):
    with pytest.raises(ValueError, match="holds no manifest.json: it is not a prepared corpus"):
        shards.TokenShards(tmp_path)
    manifest = json.loads((corpus / shards.MANIFEST).read_text())
    (tmp_path / shards.MANIFEST).write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(ValueError, match="did not finish .* Run the same `python -m helpers.prepare` command again"):
        shards.TokenShards(tmp_path)
    (tmp_path / shards.MANIFEST).write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(ValueError, match="not a version-1"):
        shards.TokenShards(tmp_path)
    (tmp_path / shards.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="train-00000.bin should hold .* is missing"):
        shards.TokenShards(tmp_path)
    with pytest.raises(ValueError, match="too few for one window"):
        shards.TokenWindows(shards.TokenShards(corpus, "val"), context_length=10**6)
