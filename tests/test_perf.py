"""The fast path computes what the teaching path computes (within float tolerance)."""

import copy
import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from helpers import model as M
from helpers.losses import calc_loss_batch
from helpers.perf import FastPath, autocast, precision, prepare_model
from helpers.training import make_optimizer


def _train_steps(model, options, batches, steps=3):
    model = prepare_model(model, options)
    optimizer = make_optimizer(model, lr=1e-3, weight_decay=0.1, options=options)
    losses = []
    for x, y in batches[:steps]:
        optimizer.zero_grad()
        with autocast("cpu", options):
            loss = calc_loss_batch(x, y, model, "cpu")
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return model, losses


def test_defaults():
    assert FastPath.teaching().impl == "teaching" and FastPath.teaching().optimizer == "for-loop"
    cpu = FastPath.for_device("cpu")
    assert cpu.impl == "fast" and cpu.autocast_dtype is None and not cpu.tf32


@pytest.mark.parametrize("optimizer", ["fused", "foreach"])
def test_fast_training_matches_teaching(optimizer):
    torch.manual_seed(0)
    # No qkv bias: the key bias has an analytically zero gradient (softmax ignores a constant shift),
    # and Adam turns the rounding noise in it into full-size steps of either sign.
    base = M.GPTModel(M.get_config("tiny"))
    batches = [(torch.randint(0, 50257, (2, 16)), torch.randint(0, 50257, (2, 16))) for _ in range(3)]
    teach, teach_losses = _train_steps(copy.deepcopy(base), FastPath.teaching(), batches)
    fast, fast_losses = _train_steps(copy.deepcopy(base), replace(FastPath.for_device("cpu"), optimizer=optimizer), batches)
    assert teach_losses == pytest.approx(fast_losses, rel=1e-5)
    for (name, a), b in zip(teach.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


def test_bf16_autocast_stays_close():
    torch.manual_seed(0)
    model = M.GPTModel(M.get_config("tiny")).eval()
    x = torch.randint(0, 50257, (2, 16))
    ref = model(x)
    with autocast("cpu", replace(FastPath(), autocast_dtype="bfloat16")):
        low = model(x).float()
    assert (low - ref).abs().max() < 0.1  # bf16 keeps ~3 significant digits
    assert torch.equal(low.argmax(-1), ref.argmax(-1)) or (low.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9


def test_unknown_optimizer():
    with pytest.raises(ValueError, match="fused"):
        make_optimizer(M.GPTModel(M.get_config("tiny")), 1e-3, 0.0, replace(FastPath(), optimizer="lion"))


def test_benchmark_runs_quick(tmp_path):
    """``python -m benchmarks --quick`` runs end to end and writes its JSON."""
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--steps", "2", "--warmup", "1",
                           "--device", "cpu", "--pad-vocab", "64", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    kinds = {(r["kind"], r["path"]) for r in results}
    assert {("train", "teaching"), ("train", "fast"), ("generate", "fast"), ("eval", "teaching")} <= kinds
    assert all(r["tokens_per_s"] > 0 and r["peak_memory_mb"] > 0 for r in results)
    assert "speed-up" in proc.stdout
    padded = [r for r in results if r.get("pad_vocab")]
    assert len(padded) == 1 and padded[0]["options"]["pad_vocab_multiple"] == 64
    assert "x vs fast" in proc.stdout


def _tf32_flags():
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.get_float32_matmul_precision())


@pytest.mark.parametrize("start", [False, True])
def test_precision_is_scoped_and_restored(start):
    """TF32 is a process-wide switch: ``precision`` sets it for its block only, and puts it back after errors too."""
    torch.set_float32_matmul_precision("high" if start else "highest")
    torch.backends.cudnn.allow_tf32 = start
    before = _tf32_flags()
    assert before[:2] == (start, start)
    try:
        with precision(replace(FastPath(), tf32=True)):
            assert _tf32_flags()[:2] == (True, True) and _tf32_flags()[2] == "high"
        assert _tf32_flags() == before
        with precision(FastPath.teaching()):
            assert _tf32_flags()[:2] == (False, False) and _tf32_flags()[2] == "highest"
        assert _tf32_flags() == before
        with pytest.raises(RuntimeError, match="boom"), precision(replace(FastPath(), tf32=True)):
            raise RuntimeError("boom")
        assert _tf32_flags() == before
        with precision(None):  # no options: nothing changes
            assert _tf32_flags() == before
    finally:
        torch.set_float32_matmul_precision("highest")  # PyTorch's defaults
        torch.backends.cudnn.allow_tf32 = True


def test_prepare_model_and_the_training_loop_leave_tf32_alone():
    from helpers.training import train_loop

    before = _tf32_flags()
    options = replace(FastPath.for_device("cpu"), tf32=True)
    model = prepare_model(M.GPTModel(M.get_config("tiny", vocab_size=256)), options)
    assert _tf32_flags() == before
    seen = []

    def loss_fn(x, y, m, device):
        seen.append(_tf32_flags()[0])
        return calc_loss_batch(x, y, m, device)

    batches = [(torch.randint(0, 256, (2, 8)), torch.randint(0, 256, (2, 8))) for _ in range(2)]
    train_loop(model, batches, batches, make_optimizer(model, 1e-3, 0.0, options), "cpu", 1, 1, 1, loss_fn=loss_fn,
               options=options, progress=False, verbose=False)
    assert seen == [True, True] and _tf32_flags() == before


def test_a_benchmark_measurement_is_a_typed_record():
    from benchmarks.__main__ import Measurement, Spec, measure

    spec = Spec(kind="train", name="train, tiny", path="fast", device="cpu", config="tiny",
                overrides={"vocab_size": 256}, steps=1, warmup=0)
    before = _tf32_flags()
    result = measure(spec)
    assert isinstance(result, Measurement) and result.spec == spec and result.tokens_per_s > 0
    assert result.seconds > 0 and result.achieved_tflops > 0 and result.mfu is None
    assert Measurement.from_dict(json.loads(json.dumps(result.as_dict()))) == result
    assert _tf32_flags() == before
    with pytest.raises(ValueError, match="kind"):
        Spec(kind="inference", name="x", path="fast", device="cpu", config="tiny")


def test_peak_memory_sees_a_large_allocation():
    from helpers.perf import PeakMemory

    with PeakMemory("cpu", interval=0.005) as small:
        torch.zeros(10)
    import mmap

    # Fresh pages straight from the kernel: the C allocator could otherwise hand back memory that an
    # earlier test freed and that is still resident, which RSS cannot see as new.
    with PeakMemory("cpu", interval=0.005) as big:
        block = mmap.mmap(-1, 64 * 2**20)
        block.write(b"x" * (64 * 2**20))  # touch every page so it becomes resident
    block.close()  # still mapped when the block ends, so a busy machine cannot make the sampler miss it
    assert big.mb > 50 and big.mb > small.mb


def test_peak_memory_returns_freed_memory_first(monkeypatch):
    """On Linux the CPU measurement starts by handing freed heap memory back (malloc_trim), so that
    memory an earlier block freed is not reused unseen."""
    import sys

    import helpers.perf as perf

    if sys.platform.startswith("linux"):
        assert perf.release_freed_memory() is True
    calls = []
    monkeypatch.setattr(perf, "release_freed_memory", lambda: calls.append(1) or True)
    with perf.PeakMemory("cpu"):
        pass
    assert calls == [1]
