"""How long each lecture's training cell takes in the full profile, before and after the shortcuts.

    python -m benchmarks --lectures                  # lectures 02, 04, 05 and 06; a table, JSON in build/
    python -m benchmarks --lectures --only 04,06     # some of them
    python -m benchmarks --lectures --steps 4        # more timed steps (slower, less noisy)
    python -m benchmarks --lectures --quick          # tiny models, one step: checks that everything runs

The settings are the notebooks' own: the config cell of each notebook (the one that sets ``SETTINGS``) is
run with ``PROFILE = "full"``, and its ``SETTINGS``, ``GPT_CONFIG`` / ``MODEL_SIZE``, ``STRATEGIES`` and
switches are used as they are. The data are the lectures' data, batched by the lectures' loaders. The
models have GPT-2's sizes (lecture 02: the course's 124M config with context 256; 04 and 06: GPT-2 124M;
05: GPT-2 355M) and random weights: offline there is no GPT-2, and the time depends on the sizes only.

Each variant times a few training steps (``--steps``, after ``--warmup`` untimed ones) on the lecture's own
batches, a few evaluation batches, one generated sample where the training loop writes them (02 and 05)
and, where the frozen-prefix cache is on, the cache's build per example. It then extrapolates to the
whole training cell: the seconds per batch position (token) of the timed steps times the positions of all
the cell's steps (steps per epoch x epochs; lecture 05's batches differ in length, so it counts them and
times batches of the epoch's mean size),
plus every evaluation batch the cell runs (the losses every ``eval_freq`` steps, the accuracies after
each epoch, lecture 05's losses before training, lecture 06's accuracies before training and its test
accuracy), the samples and the cache builds.

Variants: **before** is the teaching path (attention, LayerNorm and GELU spelled out, a for-loop AdamW)
without any shortcut (no frozen-prefix cache, random batches); **after** is the lecture's default as its
config cell sets it (fused kernels and fused AdamW; lectures 04 and 06 cache the frozen prefix). More
rows: lecture 04 and 06's last-block strategy on the fast path without the cache ("fast path only"), and
lecture 05 with ``GROUP_BY_LENGTH = True`` ("opt-in": off by default, so not in "after").
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from helpers import classifier as clf
from helpers import data
from helpers.files import atomic_write_json
from helpers.generation import generate_and_print_sample
from helpers.instruction import (
    count_padding,
    create_instruction_loaders,
    example_lengths,
    format_input,
    load_instruction_data,
    split_data,
)
from helpers.lora import apply_lora
from helpers.losses import calc_loss_batch
from helpers.model import GPTModel, get_config, set_impl
from helpers.perf import FastPath
from helpers.prefix_cache import cache_frozen_prefix
from helpers.spam_data import build_spam_datasets, create_spam_loaders, prepare_spam_csvs
from helpers.tokenizer import get_tokenizer
from helpers.training import make_optimizer, train_step

REPO = Path(__file__).resolve().parent.parent
LECTURES = ("02", "04", "05", "06")
SAMPLE_TOKENS = 50        # generate_and_print_sample's default: the sample after each epoch (02, 05)
BEFORE_BATCHES = 10       # lecture 06's accuracies before training: 10 batches of each loader
WARMUP_TOKENS = 16       # the warm-up steps train on this many positions per row
QUICK_TOKENS = 16        # --quick: the timed batches are cut to this many positions per row
TINY = {"emb_dim": 32, "n_heads": 4, "n_layers": 2}  # --quick: the lectures' data with tiny models


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def notebook_config(lecture: str, profile: str = "full") -> dict:
    """The names a lecture's config cell defines (``SETTINGS``, ...) when it runs in ``profile``."""
    path = next((REPO / "notebooks").glob(f"{lecture}_*.ipynb"))
    sources = ["".join(c["source"]) for c in json.loads(path.read_text(encoding="utf-8"))["cells"]
               if c["cell_type"] == "code"]   # (plain JSON: nbformat's import alone takes seconds)
    source = next(s for s in sources if "SETTINGS = {" in s)
    names = {"PROFILE": profile, "__name__": "config_cell"}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(source, f"{path.name} config cell", "exec"), names)  # our own notebook's config cell
    return names


# ------------------------------------------------------------------------------------------- timing


@dataclass
class Work:
    """What one training cell does, counted: what the timings are multiplied by."""

    train_positions: int          # batch positions (tokens) of all training steps
    steps: int
    eval_positions: int = 0       # positions of every evaluation batch (no gradients) of the cached / run model
    plain_eval_positions: int = 0  # ... of evaluations on the model without the cache (lecture 06's before-training)
    samples: int = 0
    cache_examples: int = 0


@dataclass
class Timing:
    """Measured seconds: per training position, per evaluation position, per sample, per cached example."""

    train: float
    eval: float
    plain_eval: float = 0.0
    sample: float = 0.0
    cache_build: float = 0.0
    step_seconds: list = field(default_factory=list)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_training(run_model, optimizer, batches, loss_fn, steps: int, warmup: int) -> tuple[float, list[float]]:
    """Seconds per position over ``steps`` timed training steps on ``batches`` in turn.

    The ``warmup`` steps before them (AdamW creates its state in the first step) run on the first
    ``WARMUP_TOKENS`` positions of a batch only: they cost little, and the timed steps see full batches.
    """
    for i in range(warmup):
        x, y = batches[i % len(batches)]
        short = (x[:, :WARMUP_TOKENS], y[:, :WARMUP_TOKENS] if y.dim() > 1 else y)
        train_step(run_model, optimizer, [short], "cpu", loss_fn)
    seconds, positions = [], 0
    for i in range(steps):
        x, y = batches[i % len(batches)]
        seconds.append(_timed(lambda: train_step(run_model, optimizer, [(x, y)], "cpu", loss_fn)))  # noqa: B023
        positions += x.numel()
    return sum(seconds) / positions, seconds


def time_eval(run_model, batches, loss_fn, count: int) -> float:
    """Seconds per position of evaluation batches (eval mode, no gradients)."""
    seconds, positions = 0.0, 0
    run_model.eval()
    with torch.no_grad():
        for x, y in batches[:count]:
            seconds += _timed(lambda: loss_fn(x, y, run_model, "cpu"))  # noqa: B023
            positions += x.numel()
    run_model.train()
    return seconds / positions


def time_sample(model, tokenizer, prompt: str, tokens: int) -> float:
    """Seconds for the sample the training loop writes after each epoch (``SAMPLE_TOKENS`` new tokens).

    ``--quick`` generates fewer ``tokens`` and scales the time up per token.
    """
    return _timed(lambda: generate_and_print_sample(model, tokenizer, "cpu", prompt, tokens, quiet=True)) * (
        SAMPLE_TOKENS / tokens)


def typical_batches(loader, n: int, tokens: int | None = None) -> list:
    """``n`` batches of one epoch of ``loader`` whose sizes (positions) are closest to the epoch's mean.

    Lecture 05's batches differ in length, and a step costs a fixed part (AdamW, the embedding's gradient)
    plus a part per position. Seconds per position measured on batches of the mean size, times all the
    positions, then also count the fixed part once per step.
    """
    epoch = first_batches(loader, len(loader))
    mean = statistics.mean(x.numel() for x, _ in epoch)
    chosen = sorted(epoch, key=lambda batch: abs(batch[0].numel() - mean))[:n]
    return [(x[:, :tokens], y[:, :tokens]) if tokens is not None else (x, y) for x, y in chosen]


def first_batches(loader, n: int, tokens: int | None = None) -> list:
    """The first ``n`` batches of ``loader`` (one pass; the global generator decides a shuffled order).

    ``tokens`` cuts every row to that many positions (``--quick``: the rates per position are all it needs).
    """
    out = []
    for x, y in loader:
        if tokens is not None:
            x, y = x[:, :tokens], (y[:, :tokens] if y.dim() > 1 else y)
        out.append((x, y))
        if len(out) == n:
            break
    return out


def record(lecture: str, part: str, variant: str, role: str, work: Work, timing: Timing) -> dict:
    """One row: the counts, the measured rates and the extrapolated seconds of each share and in all."""
    shares = {"training_s": work.train_positions * timing.train,
              "evaluation_s": work.eval_positions * timing.eval + work.plain_eval_positions * timing.plain_eval,
              "samples_s": work.samples * timing.sample,
              "cache_build_s": work.cache_examples * timing.cache_build}
    return {"lecture": lecture, "part": part, "variant": variant, "role": role, **vars(work),
            "seconds_per_position": timing.train, "eval_seconds_per_position": timing.eval,
            "plain_eval_seconds_per_position": timing.plain_eval, "sample_s": timing.sample,
            "cache_build_per_example_s": timing.cache_build, "timed_step_s": timing.step_seconds,
            "median_step_s": statistics.median(timing.step_seconds), **shares, "total_s": sum(shares.values())}


def paths(fast_only: bool = False):
    """``(role, variant name, FastPath)``: the teaching path first ("before"), then the fast path."""
    fast = ("after", "default", FastPath.for_device("cpu"))
    return [fast] if fast_only else [("before", "teaching path, no shortcuts", FastPath.teaching()), fast]


def _evaluations(steps: int, eval_freq: int) -> int:
    return math.ceil(steps / eval_freq)  # the loop evaluates at step 0, eval_freq, 2 eval_freq, ...


# ------------------------------------------------------------------------------------------ lecture 02


def lecture02(args, tokenizer) -> list[dict]:
    """Lecture 02's training cell: pretraining the course's 124M config on The Verdict, 10 epochs."""
    nb = notebook_config("02")
    s, cfg = nb["SETTINGS"], dict(nb["GPT_CONFIG"])
    if args.quick:
        cfg.update(TINY)
    ctx, batch = cfg["context_length"], s["batch_size"]
    train_text, val_text = data.train_val_split(data.read_text("the-verdict"), 0.9)
    train = data.create_dataloader(train_text, batch_size=batch, max_length=ctx, stride=ctx, drop_last=True,
                                   shuffle=True, tokenizer=tokenizer)
    val = data.create_dataloader(val_text, batch_size=batch, max_length=ctx, stride=ctx, drop_last=False,
                                 shuffle=False, tokenizer=tokenizer)
    steps = len(train) * s["num_epochs"]
    evals = _evaluations(steps, s["eval_freq"])
    val_positions = sum(x.numel() for x, _ in first_batches(val, s["eval_iter"]))
    work = Work(train_positions=steps * batch * ctx, steps=steps,
                eval_positions=evals * (min(s["eval_iter"], len(train)) * batch * ctx + val_positions),
                samples=s["num_epochs"])
    batches = first_batches(train, max(1, args.steps), args.tokens)
    torch.manual_seed(nb["SEED"])
    model = GPTModel(cfg)
    rows = []
    for role, variant, options in paths():
        set_impl(model, options.impl)
        model.train()
        optimizer = make_optimizer(model, s["learning_rate"], s["weight_decay"], options)
        per_position, step_s = time_training(model, optimizer, batches, calc_loss_batch, args.steps, args.warmup)
        timing = Timing(train=per_position, step_seconds=step_s,
                        eval=time_eval(model, batches + first_batches(val, 1, args.tokens), calc_loss_batch,
                                       args.eval_batches),
                        sample=time_sample(model, tokenizer, nb["START_CONTEXT"], args.sample_tokens))
        rows.append(record("02", "", variant, role, work, timing))
        del optimizer
    return rows


# ------------------------------------------------------------------------------------- lectures 04, 06


def spam_loaders(nb: dict, tokenizer, batch: int):
    csvs = prepare_spam_csvs(seed=nb["SEED"])
    train_set, val_set, test_set = build_spam_datasets(csvs, tokenizer, context_length=1024)
    loaders = create_spam_loaders(train_set, val_set, test_set, batch_size=batch,
                                  train_examples=nb.get("TRAIN_EXAMPLES"))
    return csvs, train_set.max_length, loaders


def classifier_variant(base, strategy: dict, options: FastPath, cache: bool, batches, eval_batches, args,
                       position: str = "last") -> Timing:
    """Time one classifier strategy (lectures 04, 06) on one path, with or without the frozen-prefix cache."""
    model = copy.deepcopy(base)
    trainable = "head" if "lora" in strategy else strategy["trainable"]
    clf.add_classification_head(model, 2, trainable=trainable)
    if "lora" in strategy:
        apply_lora(model, targets="all", **strategy["lora"])
    set_impl(model, options.impl)
    run_model = cache_frozen_prefix(model, position, verbose=False) if cache else model
    optimizer = make_optimizer(model, strategy["learning_rate"], strategy["weight_decay"], options)
    loss_fn = partial(clf.calc_loss_batch, position=position)
    build = 0.0
    if run_model is not model:
        fresh = eval_batches[-1][0]   # a batch the steps do not use: its examples are new to the cache
        build = _timed(lambda: run_model.prefix_output(fresh)) / fresh.shape[0]
        for x, _ in batches + eval_batches:
            run_model.prefix_output(x)  # the timed steps and evaluations read the cache, as after the first epoch
    model.train()
    per_position, step_s = time_training(run_model, optimizer, batches, loss_fn, args.steps, args.warmup)
    return Timing(train=per_position, step_seconds=step_s, cache_build=build,
                  eval=time_eval(run_model, eval_batches, loss_fn, args.eval_batches),
                  plain_eval=time_eval(model, eval_batches, loss_fn, args.eval_batches))


def classifier_work(s: dict, loaders, max_length: int, batch: int, before_and_test: bool,
                    cached: bool, cache_test: bool) -> Work:
    """What ``train_classifier_simple`` (and lecture 06's cell around it) runs, counted."""
    steps = len(loaders.train) * s["num_epochs"]
    per_eval = min(s["eval_iter"], len(loaders.train)) + min(s["eval_iter"], len(loaders.validation))
    eval_batches = (_evaluations(steps, s["eval_freq"]) + s["num_epochs"]) * per_eval  # losses + accuracies
    plain = 0
    cache_examples = len(loaders.train.dataset) + min(s["eval_iter"], len(loaders.validation)) * batch
    if before_and_test:                      # lecture 06: accuracies before training, test accuracy after
        plain = sum(min(BEFORE_BATCHES, len(loader)) for loader in loaders)
        eval_batches += len(loaders.test)
        cache_examples += len(loaders.test.dataset) if cache_test else 0
    positions = batch * max_length
    return Work(train_positions=steps * positions, steps=steps, eval_positions=eval_batches * positions,
                plain_eval_positions=plain * positions, cache_examples=cache_examples if cached else 0)


def spam_lecture_setup(lecture: str, args, tokenizer):
    """What lectures 04 and 06 share: the notebook's config, its spam loaders, the seeded base model and the
    batches to time. Returns ``(nb, settings, max_length, loaders, base, batches, eval_batches)``."""
    nb = notebook_config(lecture)
    s = nb["SETTINGS"]
    cfg = get_config(nb["MODEL_SIZE"], **(TINY if args.quick else {}))
    _, max_length, loaders = spam_loaders(nb, tokenizer, s["batch_size"])
    torch.manual_seed(nb["SEED"])
    base = GPTModel(cfg)
    batches = first_batches(loaders.train, max(1, args.steps), args.tokens)
    eval_batches = first_batches(loaders.validation, args.eval_batches + 1, args.tokens)
    return nb, s, max_length, loaders, base, batches, eval_batches


def lecture04(args, tokenizer) -> list[dict]:
    """Lecture 04's training cell: GPT-2 124M's last block and a new head on the spam messages, 5 epochs."""
    nb, s, max_length, loaders, base, batches, eval_batches = spam_lecture_setup("04", args, tokenizer)
    strategy = {"trainable": nb["TRAINABLE"], "learning_rate": s["learning_rate"], "weight_decay": s["weight_decay"]}
    rows = []
    variants = [("before", "teaching path, no shortcuts", FastPath.teaching(), False),
                ("fast path only", "fast path, no cache", FastPath.for_device("cpu"), False),
                ("after", "default", FastPath.for_device("cpu"), nb["CACHE_FROZEN_PREFIX"])]
    for role, variant, options, cache in variants:
        timing = classifier_variant(base, strategy, options, cache, batches, eval_batches, args, nb["POSITION"])
        work = classifier_work(s, loaders, max_length, s["batch_size"], False, cache, False)
        rows.append(record("04", nb["TRAINABLE"], variant, role, work, timing))
    return rows


def lecture06(args, tokenizer) -> list[dict]:
    """Lecture 06's training cell: three finetuning strategies of GPT-2 124M on the spam messages, 5 epochs each."""
    nb, s, max_length, loaders, base, batches, eval_batches = spam_lecture_setup("06", args, tokenizer)
    rows = []
    for name, strategy in nb["STRATEGIES"].items():
        strategy = {**strategy, "weight_decay": s["weight_decay"]}
        last_block = strategy.get("trainable") == "last_block"
        variants = [("before", "teaching path, no shortcuts", FastPath.teaching(), False)]
        if last_block:
            variants.append(("fast path only", "fast path, no cache", FastPath.for_device("cpu"), False))
        variants.append(("after", "default", FastPath.for_device("cpu"), nb["CACHE_FROZEN_PREFIX"] and last_block))
        for role, variant, options, cache in variants:
            timing = classifier_variant(base, strategy, options, cache, batches, eval_batches, args)
            work = classifier_work(s, loaders, max_length, s["batch_size"], True, cache, True)
            rows.append(record("06", name, variant, role, work, timing))
    return rows


# ------------------------------------------------------------------------------------------ lecture 05


def lecture05(args, tokenizer) -> list[dict]:
    """Lecture 05's training cell: instruction finetuning of GPT-2 355M, 2 epochs, batches padded per batch."""
    nb = notebook_config("05")
    s = nb["SETTINGS"]
    cfg = get_config(nb["MODEL_SIZE"], **(TINY if args.quick else {}))
    train_data, _, val_data = split_data(load_instruction_data())
    allowed = min(s["allowed_max_length"], cfg["context_length"])
    torch.manual_seed(nb["SEED"])
    model = GPTModel(cfg)
    rows = []
    variants = [("before", "teaching path, no shortcuts", FastPath.teaching(), False),
                ("after", "default", FastPath.for_device("cpu"), nb["GROUP_BY_LENGTH"]),
                ("opt-in", "GROUP_BY_LENGTH = True", FastPath.for_device("cpu"), True)]
    loaders = {}
    for role, variant, options, grouped in variants:
        if role == "opt-in" and nb["GROUP_BY_LENGTH"]:
            continue  # the default groups already
        if grouped not in loaders:
            loaders[grouped] = create_instruction_loaders(train_data, val_data, tokenizer, batch_size=s["batch_size"],
                                                          allowed_max_length=allowed, group_by_length=grouped)
        train, val = loaders[grouped]
        lengths = example_lengths(train.dataset, allowed)
        epochs = [count_padding(train.batch_sampler, lengths) for _ in range(s["num_epochs"])]
        steps = sum(e["batches"] for e in epochs)
        mean_batch = sum(e["total"] for e in epochs) / steps
        val_positions = sum(x.numel() for x, _ in first_batches(val, s["eval_iter"]))
        evals = _evaluations(steps, s["eval_freq"]) + 1               # + the losses before training
        work = Work(train_positions=sum(e["total"] for e in epochs), steps=steps,
                    eval_positions=round(evals * (min(s["eval_iter"], len(train)) * mean_batch + val_positions)),
                    samples=s["num_epochs"])
        torch.manual_seed(nb["SEED"])
        batches = typical_batches(train, max(1, args.steps), args.tokens)
        set_impl(model, options.impl)
        model.train()
        optimizer = make_optimizer(model, s["learning_rate"], s["weight_decay"], options)
        per_position, step_s = time_training(model, optimizer, batches, calc_loss_batch, args.steps, args.warmup)
        prompt = format_input(val_data[0])
        timing = Timing(train=per_position, step_seconds=step_s,
                        eval=time_eval(model, first_batches(val, args.eval_batches, args.tokens), calc_loss_batch,
                                       args.eval_batches),
                        sample=time_sample(model, tokenizer, prompt, args.sample_tokens))
        row = record("05", "", variant, role, work, timing)
        row["padding_fraction"] = sum(e["padding"] for e in epochs) / sum(e["total"] for e in epochs)
        rows.append(row)
        del optimizer
    return rows


RUNNERS = {"02": lecture02, "04": lecture04, "05": lecture05, "06": lecture06}


# ------------------------------------------------------------------------------------------- report


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def table(rows: list[dict]) -> str:
    """Two Markdown tables: every variant with its shares, then each lecture before and after."""
    lines = ["| lecture | part | variant | median step (s) | steps | training (min) | evaluation (min) | "
             "samples + cache build (min) | training cell (min) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['lecture']} | {r['part']} | {r['variant']} | {r['median_step_s']:.2f} | {r['steps']} | "
                     f"{_minutes(r['training_s'])} | {_minutes(r['evaluation_s'])} | "
                     f"{_minutes(r['samples_s'] + r['cache_build_s'])} | {_minutes(r['total_s'])} |")
    lines += ["", "| lecture | before (min) | after (min) | speed-up | with every shortcut (min) |",
              "|---|---:|---:|---:|---:|"]
    for lecture in dict.fromkeys(r["lecture"] for r in rows):
        parts = [r for r in rows if r["lecture"] == lecture]
        totals = {}
        for role in ("before", "after"):
            totals[role] = sum(r["total_s"] for r in parts if r["role"] == role)
        # every shortcut: the default, and lecture 05 with the opt-in length grouping as well
        best = 0.0
        for part in dict.fromkeys(r["part"] for r in parts):
            chosen = {r["role"]: r for r in parts if r["part"] == part}
            best += chosen.get("opt-in", chosen["after"])["total_s"]
        lines.append(f"| {lecture} | {_minutes(totals['before'])} | {_minutes(totals['after'])} | "
                     f"{totals['before'] / totals['after']:.1f}x | {_minutes(best)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks --lectures", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(LECTURES), help="lectures to time, e.g. 04,06")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps per variant")
    parser.add_argument("--warmup", type=int, default=1, help=f"untimed training steps first (on {WARMUP_TOKENS} tokens per row)")
    parser.add_argument("--eval-batches", type=int, default=2, help="timed evaluation batches per variant")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="tiny models, one step: a smoke test")
    parser.add_argument("--out", default="build/benchmarks-lectures.json")
    args = parser.parse_args(argv)
    lectures = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = sorted(set(lectures) - set(LECTURES))
    if unknown or args.steps < 1 or args.warmup < 0 or args.eval_batches < 1:
        parser.error(f"--only takes some of {', '.join(LECTURES)} (got {unknown or lectures}); --steps and "
                     f"--eval-batches must be at least 1 and --warmup at least 0")
    args.tokens = QUICK_TOKENS if args.quick else None
    args.sample_tokens = 4 if args.quick else SAMPLE_TOKENS
    if args.quick:
        args.steps, args.warmup, args.eval_batches = 1, 0, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"load average before: {_load()} ({os.cpu_count()} CPUs, {torch.get_num_threads()} threads)", flush=True)
    tokenizer = get_tokenizer()
    rows, start = [], time.perf_counter()
    for lecture in lectures:
        for row in RUNNERS[lecture](args, tokenizer):
            print(f"  {row['lecture']} {row['part']} {row['variant']}: median step {row['median_step_s']:.2f} s, "
                  f"training cell {_minutes(row['total_s'])} min (load {_load()})", flush=True)
            rows.append(row)
    meta = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "steps": args.steps,
            "warmup": args.warmup, "eval_batches": args.eval_batches, "quick": args.quick,
            "load_after": _load(), "benchmark_s": time.perf_counter() - start,
            "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    out = atomic_write_json(Path(args.out), {"meta": meta, "results": rows}, indent=2)
    print()
    print(table(rows))
    print(f"\nThe benchmark took {meta['benchmark_s'] / 60:.1f} min; load average after: {meta['load_after']}."
          f"\nResults written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
