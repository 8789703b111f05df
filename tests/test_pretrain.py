"""The pretraining script, in one process and as two DDP processes under torchrun (gloo on CPU)."""

import json
import os
import subprocess
import sys

import pytest
from test_prepare import FAST, make_corpus

from helpers import data, prepare, pretrain, runtime
from helpers.checkpoints import load_checkpoint
from helpers.history import History
from helpers.model import GPTModel, get_config
from helpers.perf import FastPath
from helpers.tokenizer import get_tokenizer
from helpers.training import make_optimizer, train_model_simple

QUIET = ["--device", "cpu", "--no-progress"]


def test_single_process_learns(tmp_path):
    history = pretrain.train(pretrain.parse_args([
        "--config", "tiny", "--epochs", "2", "--batch-size", "4", "--lr", "3e-3", "--eval-freq", "100",
        "--eval-iter", "2", "--out", str(tmp_path), *QUIET]))
    steps = history.total_steps
    assert steps == 2 * (144 // 4)  # 144 windows of 32 tokens in The Verdict's training split
    assert history.steps == [0]  # evaluated after the first step only (every 100 steps, counted from 0)
    assert history.total_seen == steps * 4 * 32
    assert history.config["world_size"] == 1 and history.config["args"]["lr"] == 3e-3
    assert history.train_losses[0] > 10.5  # ~10.9 at initialisation
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["world_size"] == 1 and summary["ranks_agree"] and summary["steps"] == steps
    assert summary["final_train_loss"] < 10.0  # it learned
    assert History.from_json(tmp_path / "history.json") == history


def test_the_script_and_the_lecture_give_the_same_losses(tmp_path):
    """``python -m helpers.pretrain`` on one process and lecture 02's code (its loaders, seeds, optimizer and
    ``train_model_simple``) with the same settings: the same losses at the same steps."""
    pretrain.main(["--config", "tiny", "--epochs", "2", "--max-steps", "16", "--eval-freq", "5", "--eval-iter", "5",
                   "--out", str(tmp_path), *QUIET])
    script = History.from_json(tmp_path / "history.json")

    # Lecture 02, cell by cell, with the tiny config and the script's defaults (the course's settings).
    tokenizer = get_tokenizer()
    train_text, val_text = data.train_val_split(data.read_text("the-verdict"), 0.9)
    runtime.set_seed(123)
    ctx = get_config("tiny")["context_length"]
    train_loader = data.create_dataloader(train_text, batch_size=2, max_length=ctx, stride=ctx, drop_last=True,
                                          shuffle=True, tokenizer=tokenizer)
    val_loader = data.create_dataloader(val_text, batch_size=2, max_length=ctx, stride=ctx, drop_last=False,
                                        shuffle=False, tokenizer=tokenizer)
    runtime.set_seed(123)
    model = GPTModel(get_config("tiny")).to("cpu")
    optimizer = make_optimizer(model, lr=4e-4, weight_decay=0.1, options=FastPath.for_device("cpu"))
    runtime.set_seed(123)
    lecture = train_model_simple(model, train_loader, val_loader, optimizer, "cpu", num_epochs=2, eval_freq=5,
                                 eval_iter=5, start_context="Every effort moves you", tokenizer=tokenizer,
                                 max_steps=16, progress=False, verbose=False)

    assert script.steps == lecture.steps == [0, 5, 10, 15]
    assert script.train_losses == lecture.train_losses
    assert script.val_losses == lecture.val_losses
    assert script.tokens_seen == lecture.tokens_seen and script.epochs == lecture.epochs
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 16 and summary["ranks_agree"] and summary["final_val_loss"] > 0


def test_grad_accum_counts_micro_batches():
    history = pretrain.train(pretrain.parse_args([
        "--config", "tiny", "--epochs", "1", "--batch-size", "2", "--grad-accum", "3", "--max-steps", "5",
        "--eval-freq", "5", "--eval-iter", "1", *QUIET]))
    assert history.total_steps == 5 and history.total_seen == 5 * 3 * 2 * 32


def test_padded_vocabulary_trains_the_same(tmp_path):
    """``--pad-vocab 64`` changes matrix shapes only: same seed, same losses, and the saved model is padded."""
    common = ["--config", "tiny", "--epochs", "1", "--batch-size", "2", "--max-steps", "4", "--eval-freq", "2",
              "--eval-iter", "2", "--lr", "3e-3", *QUIET]
    plain = pretrain.train(pretrain.parse_args(common))
    padded = pretrain.train(pretrain.parse_args([*common, "--pad-vocab", "64", "--out", str(tmp_path)]))
    assert padded.train_losses == pytest.approx(plain.train_losses, rel=1e-5)
    assert padded.val_losses == pytest.approx(plain.val_losses, rel=1e-5)
    model, _, _ = load_checkpoint(tmp_path / "checkpoint.pt")
    assert model.cfg["pad_vocab_multiple"] == 64 and model.tok_emb.weight.shape[0] == 50304


def test_resume_continues_exactly(tmp_path):
    """``--checkpoint-every`` then ``--resume``: the resumed run ends with the uninterrupted run's history and weights."""
    common = ["--config", "tiny", "--epochs", "1", "--max-steps", "8", "--eval-freq", "2", "--eval-iter", "2",
              "--grad-accum", "2", "--lr-schedule", "warmup-cosine", "--clip-grad-norm", "1.0", *QUIET]
    full = pretrain.train(pretrain.parse_args([*common, "--out", str(tmp_path / "full"),
                                               "--checkpoint-every", "5"]))
    state = tmp_path / "full" / pretrain.STATE_FILE
    assert load_checkpoint(state)[2]["training"]["steps_done"] == 5  # the checkpoint of step 5, mid-run
    resumed = pretrain.train(pretrain.parse_args([*common, "--out", str(tmp_path / "resumed"), "--resume", str(state)]))
    assert resumed.train_losses == full.train_losses and resumed.val_losses == full.val_losses
    assert resumed.steps == full.steps == [0, 2, 4, 6] and resumed.total_seen == full.total_seen
    digests = [json.loads((tmp_path / run / "summary.json").read_text())["parameter_digests"]
               for run in ("full", "resumed")]
    assert digests[0] == digests[1]


def test_too_little_data_is_a_clear_error():
    with pytest.raises(ValueError, match="No optimizer step"):
        pretrain.train(pretrain.parse_args(["--config", "tiny", "--batch-size", "100", "--grad-accum", "2",
                                            *QUIET]))


@pytest.mark.parametrize("argv, message", [
    (["--grad-accum", "0"], "argument --grad-accum: must be at least 1, got 0"),
    (["--eval-freq", "0"], "argument --eval-freq: must be at least 1"),
    (["--epochs", "two"], "argument --epochs: expected an integer, got 'two'"),
    (["--lr", "0"], "argument --lr: must be above 0.0"),
    (["--config", "huge"], "--config: Unknown config 'huge'"),
    (["--corpus", "no-such-book"], "--corpus: unknown data file(s) no-such-book"),
    (["--checkpoint-every", "5"], "--checkpoint-every needs --out"),
    (["--warmup-steps", "5"], "--warmup-steps only apply with --lr-schedule warmup-cosine"),
    (["--resume", "no/such/state.pt"], "--resume: no file at no/such/state.pt"),
    (["--windows-per-epoch", "5"], "--windows-per-epoch only applies with --data"),
    (["--drop-rate", "-0.1"], "argument --drop-rate: must be at least 0.0"),
])
def test_bad_arguments_stop_before_any_work(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        pretrain.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_an_unwritable_out_folder_is_refused_first(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit):
        pretrain.parse_args(["--out", str(blocker / "run")])
    err = capsys.readouterr().err
    assert "--out:" in err and "a-file" in err
    assert list(tmp_path.iterdir()) == [blocker]  # and left nothing behind


def test_torchrun_two_processes_agree(tmp_path):
    """Two CPU processes with DDP end with bit-identical weights and histories, and rank 0 saves the run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "helpers.pretrain", "--config", "tiny", "--epochs", "1", "--grad-accum", "2",
           "--eval-freq", "6", "--eval-iter", "2", "--device", "cpu", "--no-progress", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert len(summary["parameter_digests"]) == 2 and summary["ranks_agree"] and summary["losses_agree"]
    assert summary["steps"] == 144 // (2 * 2 * 2)  # windows / (ranks * batch * accumulation)
    history = History.from_json(tmp_path / "history.json")
    assert history.steps == [0, 6, 12] and history.total_seen == 18 * 2 * 2 * 2 * 32  # tokens of both ranks
    assert (tmp_path / "checkpoint.pt").is_file()


# ------------------------------------------------------------------------------ a prepared corpus (--data)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A small corpus prepared by helpers.prepare, in several shards."""
    folder = tmp_path_factory.mktemp("prepared")
    prepare.prepare([str(make_corpus(folder / "text"))], folder / "data", shard_mb=0.005, val_fraction=0.2, **FAST)
    return folder / "data"


def test_training_on_prepared_shards_resumes_exactly(prepared, tmp_path):
    """--data: a run resumed mid-epoch from --checkpoint-every gives the uninterrupted run's losses and weights,
    also in the epoch after the resumption (new random windows) and with dropout (RNG states)."""
    common = ["--data", str(prepared), "--config", "tiny", "--drop-rate", "0.1", "--epochs", "3",
              "--windows-per-epoch", "12", "--batch-size", "2", "--grad-accum", "2", "--eval-freq", "2",
              "--eval-iter", "2", "--lr", "3e-3", *QUIET]
    full = pretrain.train(pretrain.parse_args([*common, "--out", str(tmp_path / "full"), "--checkpoint-every", "5"]))
    assert full.total_steps == 3 * 12 // 4 and full.steps == [0, 2, 4, 6, 8]
    assert full.total_seen == 9 * 4 * 32 and full.train_losses[-1] < full.train_losses[0]
    state = tmp_path / "full" / pretrain.STATE_FILE
    training = load_checkpoint(state)[2]["training"]
    assert (training["steps_done"], training["epoch"], training["batches_done"]) == (5, 1, 4)  # mid-epoch 2
    resumed = pretrain.train(pretrain.parse_args([*common, "--out", str(tmp_path / "resumed"), "--resume", str(state)]))
    assert resumed.train_losses == full.train_losses and resumed.val_losses == full.val_losses
    assert resumed.steps == full.steps and resumed.total_seen == full.total_seen
    digests = [json.loads((tmp_path / run / "summary.json").read_text())["parameter_digests"]
               for run in ("full", "resumed")]
    assert digests[0] == digests[1]
    other_seed = pretrain.train(pretrain.parse_args([*common, "--seed", "7", "--max-steps", "1"]))
    assert other_seed.train_losses[0] != full.train_losses[0]  # other windows (and weights)


def test_bad_data_arguments_stop_before_any_work(prepared, tmp_path, capsys):
    for argv, message in ((["--data", str(tmp_path)], "--data: " + str(tmp_path) + " holds no manifest.json"),
                          (["--data", str(prepared), "--corpus", "books"], "--data and --corpus exclude each other")):
        with pytest.raises(SystemExit) as exit_info:
            pretrain.parse_args(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def run_torchrun(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "helpers.pretrain", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_torchrun_two_processes_resume_exactly_on_prepared_shards(prepared, tmp_path):
    """Two DDP processes on --data, each its own share of the windows: a resumed run ends as the uninterrupted one."""
    common = ["--data", str(prepared), "--config", "tiny", "--drop-rate", "0.1", "--epochs", "3",
              "--windows-per-epoch", "24", "--batch-size", "2", "--grad-accum", "2", "--eval-freq", "2",
              "--eval-iter", "2", "--lr", "3e-3", "--device", "cpu", "--no-progress"]
    proc = run_torchrun([*common, "--out", str(tmp_path / "full"), "--checkpoint-every", "5"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    state = tmp_path / "full" / pretrain.STATE_FILE
    training = load_checkpoint(state)[2]["training"]
    assert training["world_size"] == 2 and (training["steps_done"], training["epoch"], training["batches_done"]) == (5, 1, 4)
    proc = run_torchrun([*common, "--out", str(tmp_path / "resumed"), "--resume", str(state)])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    full, resumed = (History.from_json(tmp_path / run / "history.json") for run in ("full", "resumed"))
    assert full.steps == [0, 2, 4, 6, 8] and full.total_steps == 9  # 3 x 24 windows / (2 ranks * batch 2 * 2)
    assert resumed.train_losses == full.train_losses and resumed.val_losses == full.val_losses
    assert resumed.total_seen == full.total_seen == 9 * 2 * 2 * 2 * 32
    summaries = [json.loads((tmp_path / run / "summary.json").read_text()) for run in ("full", "resumed")]
    assert all(s["ranks_agree"] and s["world_size"] == 2 for s in summaries)
    assert summaries[0]["parameter_digests"] == summaries[1]["parameter_digests"]
