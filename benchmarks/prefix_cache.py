"""Lecture 04's default finetuning ("last block") with and without the frozen-prefix cache, in a few steps.

    python -m benchmarks.prefix_cache            # GPT-2 124M sizes, random weights, batch 8 x 120 tokens
    python -m benchmarks.prefix_cache --quick    # tiny sizes: checks that everything runs

Times, in one process and taking turns (so that a change in the machine's load hits both alike):

* an uncached training step (the whole network forward, the last block backward, fused AdamW);
* a cached training step (the stored activations of blocks 0-10 read back, then the last block for
  every position's keys and values and the last position's output, backward, AdamW);
* building the cache: the frozen blocks' forward for new messages, per example;
* an evaluation batch (forward, no gradients) without and with the cache.

and extrapolates to lecture 04's training cell in the full profile: 5 epochs of 130 steps, 1,045
training messages cached once (plus the 40 validation messages the evaluations read), and 180
evaluation batches (13 loss evaluations and 5 accuracy evaluations, 10 batches each). The speed-up of
a training step counts the build's cost spread over the 650 steps.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from benchmarks.results import save_results
from helpers import classifier as clf
from helpers.model import GPTModel, get_config
from helpers.perf import FastPath
from helpers.prefix_cache import cache_frozen_prefix
from helpers.training import make_optimizer

LECTURE_04 = {"epochs": 5, "steps_per_epoch": 130, "train_examples": 1045, "val_examples_read": 40,
              "eval_batches": 13 * 10 + 5 * 10}


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def measure_prefix_cache(*, size: str = "124M", batch: int = 8, tokens: int = 120, steps: int = 10,
                         warmup: int = 2, build_batches: int = 6, rounds: int = 2, threads: int | None = None,
                         progress: bool = True) -> list[dict]:
    """Median seconds of uncached and cached training steps, evaluation batches and the cache build.

    Returns plain records: one per measurement (``name``, ``seconds`` median, ``all`` the single
    timings), then one ``"lecture 04 estimate"`` record with the extrapolated totals and speed-ups.
    ``steps`` timed steps of each kind, split over ``rounds`` turns. Not lecture material: a benchmark.
    """
    if threads:
        torch.set_num_threads(threads)
    cfg = get_config("gpt2-small") if size == "124M" else get_config("tiny", context_length=max(tokens, 32))
    torch.manual_seed(123)
    model = clf.add_classification_head(GPTModel(cfg), 2, trainable="last_block")
    wrapped = cache_frozen_prefix(model, "last", verbose=False)
    optimizer = make_optimizer(model, lr=5e-5, weight_decay=0.1, options=FastPath.for_device("cpu"))
    g = torch.Generator().manual_seed(0)
    pool = [(torch.randint(0, cfg["vocab_size"], (batch, tokens), generator=g), torch.randint(0, 2, (batch,), generator=g))
            for _ in range(4)]
    fresh = (torch.randint(0, cfg["vocab_size"], (batch, tokens), generator=g) for _ in range(10**6))
    times: dict[str, list[float]] = {"uncached step": [], "cached step": [], "uncached eval batch": [],
                                     "cached eval batch": [], "cache build per example": []}

    def train_step(run_model, i):
        x, y = pool[i % len(pool)]
        optimizer.zero_grad()
        loss = clf.calc_loss_batch(x, y, run_model, "cpu")
        loss.backward()
        optimizer.step()

    def eval_batch(run_model, i):
        x, _ = pool[i % len(pool)]
        with torch.no_grad():
            clf.classifier_logits(run_model, x)

    def build(_, i):
        wrapped.prefix_output(next(fresh))

    model.train()
    for i in range(len(pool)):
        wrapped.prefix_output(pool[i][0])                   # the pool is cached: the cached steps only read
    jobs = [("uncached step", train_step, model), ("cached step", train_step, wrapped),
            ("uncached eval batch", eval_batch, model), ("cached eval batch", eval_batch, wrapped)]
    per_round = max(1, steps // rounds)
    for r in range(rounds):
        for name, fn, run_model in jobs:
            for i in range(warmup + per_round):
                start = time.perf_counter()
                fn(run_model, i)
                if i >= warmup:
                    times[name].append(time.perf_counter() - start)
        for _ in range(max(1, build_batches // rounds)):
            start = time.perf_counter()
            build(None, 0)
            times["cache build per example"].append((time.perf_counter() - start) / batch)
        if progress:
            print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{k} {statistics.median(v):.3f} s"
                                                         for k, v in times.items()) + f" (load {_load()})", flush=True)
    records = [{"name": k, "seconds": statistics.median(v), "all": v} for k, v in times.items()]
    t = {r["name"]: r["seconds"] for r in records}
    n_steps = LECTURE_04["epochs"] * LECTURE_04["steps_per_epoch"]
    build_s = t["cache build per example"] * (LECTURE_04["train_examples"] + LECTURE_04["val_examples_read"])
    uncached = n_steps * t["uncached step"] + LECTURE_04["eval_batches"] * t["uncached eval batch"]
    cached = n_steps * t["cached step"] + LECTURE_04["eval_batches"] * t["cached eval batch"] + build_s
    step_with_build = t["cached step"] + t["cache build per example"] * LECTURE_04["train_examples"] / n_steps
    records.append({
        "name": "lecture 04 estimate", "size": size, "batch": batch, "tokens": tokens,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "load_after": _load(),
        "bytes_per_example": wrapped.bytes_per_example(tokens),
        "cached_step_with_build_s": step_with_build,
        "step_speedup_with_build": t["uncached step"] / step_with_build,
        "step_speedup_without_build": t["uncached step"] / t["cached step"],
        "build_s": build_s, "training_cell_uncached_s": uncached, "training_cell_cached_s": cached,
        "training_cell_speedup": uncached / cached,
    })
    return records


def report(records: list[dict]) -> str:
    """The records as readable lines."""
    est = records[-1]
    lines = [f"{r['name']:26s} {r['seconds']:8.3f} s (median of {len(r['all'])})" for r in records[:-1]]
    lines += [
        f"bytes per cached example: {est['bytes_per_example']:,} ({est['tokens']} tokens x emb_dim x 4)",
        f"training step: uncached {records[0]['seconds']:.3f} s, cached {records[1]['seconds']:.3f} s "
        f"({est['step_speedup_without_build']:.1f}x); with the cache build spread over 650 steps "
        f"{est['cached_step_with_build_s']:.3f} s ({est['step_speedup_with_build']:.1f}x)",
        f"lecture 04's training cell, extrapolated: uncached {est['training_cell_uncached_s'] / 60:.1f} min, "
        f"cached {est['training_cell_cached_s'] / 60:.1f} min (build {est['build_s'] / 60:.1f} min): "
        f"{est['training_cell_speedup']:.1f}x",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.prefix_cache", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few steps")
    parser.add_argument("--steps", type=int, default=10, help="timed steps of each kind")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="build/benchmarks-prefix-cache.json")
    args = parser.parse_args(argv)
    print(f"load average before: {_load()} ({os.cpu_count()} CPUs)")
    if args.quick:
        records = measure_prefix_cache(size="tiny", steps=2, warmup=1, build_batches=2, rounds=1, threads=args.threads)
    else:
        records = measure_prefix_cache(steps=args.steps, rounds=args.rounds, threads=args.threads)
    save_results(args.out, records, report(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
