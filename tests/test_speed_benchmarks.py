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
    stdout = run("benchmarks.generation", "--variants", "fast,teaching,fast-no-cache,transformers",
                 "--baseline", str(tmp_path / "base"), "--out", str(out))
    records = {r["variant"]: r for r in json.loads(out.read_text())["results"]}
    assert set(records) == {"fast", "teaching", "fast-no-cache", "transformers", "baseline-fast", "baseline-teaching"}
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
