"""The pretraining script, in one process and as two DDP processes under torchrun (gloo on CPU)."""

import json
import os
import subprocess
import sys

import pytest

from helpers import pretrain


def test_single_process_learns(tmp_path):
    summary = pretrain.train(pretrain.parse_args([
        "--config", "tiny", "--epochs", "2", "--batch-size", "4", "--lr", "3e-3", "--eval-freq", "100",
        "--eval-iter", "2", "--device", "cpu"]))
    assert summary["world_size"] == 1 and summary["ranks_agree"]
    steps = summary["steps"]
    assert steps == 2 * (144 // 4)  # 144 windows of 32 tokens in The Verdict's training split
    assert summary["history"]["step"] == [steps]  # evaluated once, at the last step
    assert summary["tokens_seen"] == steps * 4 * 32
    assert summary["history"]["train_loss"][-1] < 10.0  # down from ~10.9 at initialisation


def test_grad_accum_counts_micro_batches():
    summary = pretrain.train(pretrain.parse_args([
        "--config", "tiny", "--epochs", "1", "--batch-size", "2", "--grad-accum", "3", "--max-steps", "5",
        "--eval-freq", "5", "--eval-iter", "1", "--device", "cpu"]))
    assert summary["steps"] == 5 and summary["tokens_seen"] == 5 * 3 * 2 * 32


def test_padded_vocabulary_trains_the_same(tmp_path):
    """``--pad-vocab 64`` changes matrix shapes only: same seed, same losses, and the saved model is padded."""
    common = ["--config", "tiny", "--epochs", "1", "--batch-size", "2", "--max-steps", "4", "--eval-freq", "2",
              "--eval-iter", "2", "--device", "cpu", "--lr", "3e-3"]
    plain = pretrain.train(pretrain.parse_args(common))
    padded = pretrain.train(pretrain.parse_args([*common, "--pad-vocab", "64", "--out", str(tmp_path)]))
    for key in ("train_loss", "val_loss"):
        assert padded["history"][key] == pytest.approx(plain["history"][key], rel=1e-5)
    from helpers.checkpoints import load_checkpoint

    model, _, _ = load_checkpoint(tmp_path / "checkpoint.pt")
    assert model.cfg["pad_vocab_multiple"] == 64 and model.tok_emb.weight.shape[0] == 50304


def test_too_little_data_is_a_clear_error():
    with pytest.raises(ValueError, match="No optimizer step"):
        pretrain.train(pretrain.parse_args(["--config", "tiny", "--batch-size", "100", "--grad-accum", "2",
                                            "--device", "cpu"]))


def test_torchrun_two_processes_agree(tmp_path):
    """Two CPU processes with DDP end with bit-identical weights, and rank 0 saves the run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "helpers.pretrain", "--config", "tiny", "--epochs", "1", "--grad-accum", "2",
           "--eval-freq", "6", "--eval-iter", "2", "--device", "cpu", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert len(summary["parameter_digests"]) == 2 and summary["ranks_agree"]
    assert summary["steps"] == 144 // (2 * 2 * 2)  # windows / (ranks * batch * accumulation)
    assert (tmp_path / "checkpoint.pt").is_file()
