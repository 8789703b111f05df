"""The generation and frozen-prefix benchmarks run end to end (tiny sizes) and report what they measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.generation import table

REPO = Path(__file__).resolve().parent.parent


def run(module, *args):
    proc = subprocess.run([sys.executable, "-m", module, "--quick", *args], capture_output=True, text=True,
                          timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_generation_benchmark_compares_ours_with_transformers_and_a_baseline(tmp_path):
    pytest.importorskip("transformers")
    out = tmp_path / "gen.json"
    # the baseline: this very helpers package, found through another folder
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "helpers").symlink_to(REPO / "helpers")
    stdout = run("benchmarks.generation", "--variants", "fast,transformers,fast-bf16",
                 "--baseline", str(tmp_path / "base"), "--out", str(out))
    records = {r["variant"]: r for r in json.loads(out.read_text())["results"]}
    assert set(records) == {"fast", "transformers", "fast-bf16", "baseline-fast", "baseline-teaching"}
    assert all(r["tokens_per_s"] > 0 and r["new_tokens"] == 20 for r in records.values())
    assert records["baseline-fast"]["helpers"] == str(tmp_path / "base" / "helpers")
    assert records["fast"]["helpers"] == str(REPO / "helpers")
    assert "vs transformers" in stdout and "Our variants generated the same tokens" in stdout


def test_generation_table_flags_different_tokens():
    rows = [{"variant": "fast", "tokens_per_s": 10.0, "runs": [10.0], "tokens_sha1": ["a"]},
            {"variant": "teaching", "tokens_per_s": 5.0, "runs": [5.0], "tokens_sha1": ["b"]},
            {"variant": "transformers", "tokens_per_s": 8.0, "runs": [8.0], "tokens_sha1": ["c"]}]
    text = table(rows)
    assert "| fast | 10.0 | 10.0 | 1.25x |  |" in text and "DIFFERENT" in text


def test_generation_table_leaves_bfloat16_out_of_the_same_tokens_check():
    rows = [{"variant": "fast", "tokens_per_s": 10.0, "runs": [10.0], "tokens_sha1": ["a"]},
            {"variant": "fast-bf16", "tokens_per_s": 17.0, "runs": [17.0], "tokens_sha1": ["b"]},
            {"variant": "transformers-bf16", "tokens_per_s": 16.0, "runs": [16.0], "tokens_sha1": ["c"]}]
    text = table(rows)
    assert "the same tokens" in text and "fast-bf16'" not in text.split("tokens:")[-1]


def test_prefix_cache_benchmark_extrapolates_lecture_04(tmp_path):
    out = tmp_path / "prefix.json"
    stdout = run("benchmarks.prefix_cache", "--out", str(out))
    records = json.loads(out.read_text())["results"]
    names = [r["name"] for r in records]
    assert names == ["uncached step", "cached step", "uncached eval batch", "cached eval batch",
                     "cache build per example", "lecture 04 estimate"]
    estimate = records[-1]
    assert estimate["bytes_per_example"] == 120 * 32 * 4
    assert estimate["training_cell_uncached_s"] > 0 and estimate["step_speedup_with_build"] > 0
    assert "lecture 04's training cell, extrapolated" in stdout


def test_padding_benchmark_counts_padding_and_trains_both_variants(tmp_path, capsys):
    from benchmarks import padding

    out = tmp_path / "padding.json"
    assert padding.main(["--quick", "--out", str(out)]) == 0
    records = json.loads(out.read_text())["results"]
    random_, grouped = records["variants"]["random"], records["variants"]["grouped"]
    assert records["train_examples"] == 48 and len(random_["padding_per_epoch"]) == 2
    for r, g in zip(random_["padding_per_epoch"], grouped["padding_per_epoch"], strict=True):
        assert r["batches"] == g["batches"] == 6 and r["real"] == g["real"]  # the same examples, other neighbours
        assert g["padding"] < r["padding"]
    for v in (random_, grouped):
        assert len(v["losses"]) == 2 and v["timed_steps"] == 1 and v["val"][-1]["step"] == 2
        assert v["real_tokens_per_s"] > 0 and v["lecture_training_estimate_s"] > 0
    stdout = capsys.readouterr().out
    assert "| epoch 1: real tokens + padding |" in stdout and "speed-up of the timed steps" in stdout


def test_lectures_benchmark_extrapolates_each_lectures_training_cell(tmp_path, capsys):
    from benchmarks.__main__ import main

    out = tmp_path / "lectures.json"
    assert main(["--quick", "--lectures", "--out", str(out)]) == 0  # the spelling, options around it
    rows = json.loads(out.read_text())["results"]
    by = {(r["lecture"], r["part"], r["variant"]): r for r in rows}
    assert [r["lecture"] for r in rows if r["role"] == "before"] == ["02", "04", "05", "06", "06", "06"]
    assert [r["part"] for r in rows if r["lecture"] == "06" and r["role"] == "after"] == [
        "all layers", "last block + head", "LoRA r=16"]
    # the full profile's counts, from the notebooks' config cells and the lectures' data
    assert by["02", "", "default"]["steps"] == 9 * 10 and by["02", "", "default"]["samples"] == 10
    lecture04 = by["04", "last_block", "default"]
    assert lecture04["steps"] == 130 * 5 and lecture04["cache_examples"] == 1045 + 5 * 8
    assert lecture04["eval_positions"] == (13 + 5) * 10 * lecture04["train_positions"] // 650
    assert by["04", "last_block", "teaching path, no shortcuts"]["cache_examples"] == 0
    assert by["05", "", "default"]["steps"] == by["05", "", "GROUP_BY_LENGTH = True"]["steps"] == 116 * 2
    assert (by["05", "", "GROUP_BY_LENGTH = True"]["train_positions"] < by["05", "", "default"]["train_positions"])
    assert all(r["total_s"] > 0 and r["median_step_s"] > 0 for r in rows)
    stdout = capsys.readouterr().out
    assert "| lecture | before (min) | after (min) | speed-up |" in stdout


def test_lectures_benchmark_reads_the_notebooks_full_profile():
    from benchmarks.lectures import notebook_config

    lecture05 = notebook_config("05")
    assert lecture05["PROFILE"] == "full" and lecture05["MODEL_SIZE"] == "355M"
    assert lecture05["SETTINGS"]["num_epochs"] == 2 and lecture05["GROUP_BY_LENGTH"] is False
    assert notebook_config("02")["GPT_CONFIG"]["emb_dim"] == 768
    assert notebook_config("04", profile="quick")["SETTINGS"]["num_epochs"] == 3
