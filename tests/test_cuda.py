"""What changes on an NVIDIA GPU: the same numbers as on the CPU, and the fast path's GPU-only switches.

Skipped where no CUDA device is present (CI and most laptops). Run on a GPU machine with
``python -m pytest tests/test_cuda.py``. Nothing here needs the tokenizer or any download.
"""

from __future__ import annotations

import copy

import pytest
import torch

from helpers import classifier as clf
from helpers import runtime
from helpers.checkpoints import load_checkpoint, save_checkpoint
from helpers.generation import generate
from helpers.losses import calc_loss_batch
from helpers.model import GPTModel, context_length, get_config, set_impl
from helpers.perf import FastPath, precision, prepare_model
from helpers.prefix_cache import cache_frozen_prefix
from helpers.training import make_optimizer, train_step

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (CUDA)")

CUDA = torch.device("cuda")


def tiny(seed=0, **overrides):
    torch.manual_seed(seed)
    return GPTModel(get_config("tiny", **overrides))


def tokens(rows=2, length=16, seed=1, vocab=50257):
    return torch.randint(0, vocab, (rows, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True)
def no_tf32():
    """Plain float32 on the GPU (no TF32) unless a test asks for the fast path's switches."""
    with precision(FastPath(tf32=False)):
        yield


def test_get_device_prefers_cuda(monkeypatch):
    monkeypatch.delenv(runtime.DEVICE_ENV, raising=False)
    assert runtime.get_device().type == "cuda"


@pytest.mark.parametrize("impl", ["fast", "teaching"])
def test_logits_on_the_gpu_equal_the_cpus(impl):
    model = set_impl(tiny(drop_rate=0.0), impl).eval()
    x = tokens()
    with torch.no_grad():
        on_cpu = model(x)
        on_gpu = copy.deepcopy(model).to(CUDA)(x.to(CUDA)).cpu()
    torch.testing.assert_close(on_gpu, on_cpu, atol=1e-4, rtol=1e-4)


def test_kv_cache_on_the_gpu_gives_the_tokens_of_a_full_rerun():
    model = tiny(drop_rate=0.0).to(CUDA).eval()
    prompt = tokens(rows=1, length=5).to(CUDA)
    ctx = context_length(model)
    cached = generate(model, prompt, 25, ctx, use_cache=True)
    rerun = generate(model, prompt, 25, ctx, use_cache=False)
    assert cached.device.type == "cuda"
    assert torch.equal(cached, rerun)


def test_the_fast_paths_gpu_switches_train_and_are_put_back():
    options = FastPath.for_device(CUDA)
    assert options.tf32 and options.pad_vocab_multiple == 64 and options.optimizer == "fused"
    if torch.cuda.is_bf16_supported():
        assert options.autocast_dtype == "bfloat16"
    model = prepare_model(tiny().to(CUDA), options)
    assert model.out_head.weight.shape[0] % 64 == 0                   # 50,257 rows padded to 50,304
    optimizer = make_optimizer(model, lr=1e-3, weight_decay=0.1, options=options)
    x = tokens(rows=4, length=16).to(CUDA)
    batch = [(x[:, :-1], x[:, 1:])]
    before = torch.get_float32_matmul_precision()
    with precision(options):
        assert torch.get_float32_matmul_precision() == "high"         # TF32 inside the block ...
        losses = [train_step(model, optimizer, batch, CUDA, options=options).item() for _ in range(30)]
    assert torch.get_float32_matmul_precision() == before             # ... and the old setting after it
    assert losses[-1] < losses[0] - 1.0                               # one batch, 30 steps: it learns it
    with torch.no_grad():
        logits = model(x)
    assert logits.shape[-1] == 50257                                  # the padding's extra logits are cut off


def test_a_checkpoint_saved_on_the_gpu_loads_on_the_cpu(tmp_path):
    model = tiny().to(CUDA)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = tokens().to(CUDA)
    train_step(model, optimizer, [(x[:, :-1], x[:, 1:])], CUDA)
    path = save_checkpoint(tmp_path / "gpu.pth", model, optimizer, step=1)
    loaded, _, meta = load_checkpoint(path)                           # map_location="cpu" by default
    assert meta["step"] == 1
    for name, tensor in loaded.state_dict().items():
        assert tensor.device.type == "cpu"
        torch.testing.assert_close(tensor, model.state_dict()[name].cpu(), atol=0, rtol=0, msg=name)


def test_frozen_prefix_cache_on_the_gpu_gives_the_same_loss_and_gradients():
    torch.manual_seed(0)
    plain = clf.add_classification_head(GPTModel(get_config("tiny", n_layers=3)), 2, "last_block").to(CUDA).train()
    wrapped = cache_frozen_prefix(copy.deepcopy(plain), "last", verbose=False)
    x = tokens(rows=8, length=10, vocab=5000).to(CUDA)
    y = (x[:, 0] % 2).long()
    for _ in range(2):                                                # computing, then reading the cache
        losses = [clf.calc_loss_batch(x, y, m, CUDA) for m in (plain, wrapped)]
        for m, loss in zip((plain, wrapped.module), losses, strict=True):
            m.zero_grad()
            loss.backward()
        torch.testing.assert_close(losses[1], losses[0], atol=1e-5, rtol=1e-5)
        for (name, p), q in zip(plain.named_parameters(), wrapped.module.parameters(), strict=True):
            if p.requires_grad:
                torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_lecture02_loss_function_runs_on_gpu_batches_from_the_cpu():
    model = tiny().to(CUDA)
    x = tokens()                                                      # loaders give CPU tensors
    loss = calc_loss_batch(x[:, :-1], x[:, 1:], model, CUDA)
    assert loss.device.type == "cuda" and torch.isfinite(loss)
