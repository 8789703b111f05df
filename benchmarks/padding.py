"""Lecture 05's training with random batches (the course's) against batches grouped by length, side by side.

    python -m benchmarks padding                     # GPT-2 124M sizes, random weights, 10 steps of each
    python -m benchmarks padding --size 355M         # the lecture's GPT-2 medium sizes (two models: ~14 GB)
    python -m benchmarks padding --size small --steps 232 --eval-every 29   # both of the lecture's epochs
    python -m benchmarks padding --quick             # tiny sizes, a few steps: checks that everything runs

On lecture 05's data (the 935 training examples of the instruction data, batch 8, the last incomplete batch
dropped, ``allowed_max_length`` 1024) it

1. counts, for each of the lecture's 2 epochs, the positions of the training batches that hold real tokens
   and those that hold padding (the batches the training below then draws), with ``create_instruction_loaders(...)`` as the lecture builds it and with
   ``group_by_length=True``;
2. trains two copies of the same randomly initialised model (GPT-2's sizes: offline there are no GPT-2
   weights, and the sizes are what the time depends on), one on each loader, both seeded alike, with the
   lecture's AdamW (lr 5e-5, weight decay 0.1) and the lecture's training step
   (``helpers.training.train_step``). The two take turns step by step, so that a change in the machine's
   load hits both alike. Each variant's first step is a warm-up and is not timed;
3. reports the time of the timed steps, the real tokens trained on per second, an estimate of the
   lecture's whole training (both epochs: the seconds per batch position measured here times the positions
   of both epochs), each step's training loss, and the validation loss over all 55 validation examples
   at the end (and every ``--eval-every`` steps).

The models start from random weights, so the losses say whether grouping changes how training goes,
not what the finetuned GPT-2 would reach. The JSON goes to ``build/benchmarks-padding.json``.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import torch

from benchmarks.results import save_results
from helpers.instruction import IGNORE_INDEX, create_instruction_loaders, load_instruction_data, split_data
from helpers.losses import calc_loss_loader
from helpers.model import GPTModel, get_config
from helpers.perf import FastPath
from helpers.tokenizer import get_tokenizer
from helpers.training import make_optimizer, rng_state, set_rng_state, train_step

LECTURE_05 = {"batch_size": 8, "num_epochs": 2, "learning_rate": 5e-5, "weight_decay": 0.1,
              "allowed_max_length": 1024}
SEED = 123
VARIANTS = ("random", "grouped")
SIZES = {"124M": get_config("124M"), "355M": get_config("355M"),
         # a small model for loss curves over whole epochs in minutes
         "small": get_config("124M", emb_dim=256, n_heads=4, n_layers=4),
         "tiny": get_config("tiny", context_length=1024)}


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def lecture_loaders(tokenizer, examples: int | None = None, seed: int = SEED) -> dict:
    """Lecture 05's training and validation loaders, with random batches and grouped by length (own seeds)."""
    train_data, _, val_data = split_data(load_instruction_data())
    if examples is not None:
        train_data, val_data = train_data[:examples], val_data[: max(1, examples // 6)]
    options = {"batch_size": LECTURE_05["batch_size"], "allowed_max_length": LECTURE_05["allowed_max_length"],
               "seed": seed}
    return {name: create_instruction_loaders(train_data, val_data, tokenizer, group_by_length=name == "grouped",
                                             **options)
            for name in VARIANTS}


def padding_per_epoch(loaders: dict, epochs: int) -> dict:
    """Real and padding positions of each variant's training batches, epoch by epoch: the batches training sees.

    Counted on the batches the loader gives (an example's positions are those whose target is not
    ``IGNORE_INDEX``: its tokens, the last one's target being the end-of-text token; the loaders here do not
    mask the prompt), as :func:`helpers.instruction.count_padding` counts them. The random generators are put
    back afterwards, so that training draws the same batches again.
    """
    counts = {}
    for name, (train, _) in loaders.items():
        state = rng_state(train)
        counts[name] = []
        for _ in range(epochs):
            sizes = [(int((y != IGNORE_INDEX).sum()), x.numel()) for x, y in train]
            real, total = sum(r for r, _ in sizes), sum(t for _, t in sizes)
            counts[name].append({"batches": len(sizes), "real": real, "padding": total - real, "total": total,
                                 "padding_fraction": (total - real) / total})
        set_rng_state(state, train)
    return counts


def _batches(loader):
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


def measure_padding(*, size: str = "124M", steps: int = 10, eval_every: int = 0, examples: int | None = None,
                    threads: int | None = None, progress: bool = True) -> dict:
    """Count the padding of both epochs and train ``steps`` steps of each variant; return plain records.

    Not lecture material: a benchmark (``python -m benchmarks padding``), described in this module's docstring.
    """
    if steps < 2:
        raise ValueError(f"steps must be at least 2 (the first step of each variant is not timed), got {steps}.")
    if threads:
        torch.set_num_threads(threads)
    tokenizer = get_tokenizer()
    loaders = lecture_loaders(tokenizer, examples)
    padding = padding_per_epoch(loaders, LECTURE_05["num_epochs"])
    cfg = SIZES[size]
    torch.manual_seed(SEED)
    base = GPTModel(cfg)
    options = FastPath.for_device("cpu")
    runs = {}
    for name in VARIANTS:
        model = copy.deepcopy(base).train()
        runs[name] = {"model": model, "batches": _batches(loaders[name].train),
                      "optimizer": make_optimizer(model, LECTURE_05["learning_rate"], LECTURE_05["weight_decay"],
                                                  options),
                      "losses": [], "seconds": [], "positions": [], "real": [], "val": []}
    del base

    def evaluate(step):
        for name, run in runs.items():
            run["model"].eval()
            loss = calc_loss_loader(loaders[name].val, run["model"], "cpu")
            run["model"].train()
            run["val"].append({"step": step, "loss": loss})

    for step in range(steps):
        for run in runs.values():
            inputs, targets = next(run["batches"])
            start = time.perf_counter()
            loss = train_step(run["model"], run["optimizer"], [(inputs, targets)], "cpu", options=options)
            seconds = time.perf_counter() - start
            run["losses"].append(float(loss))
            if step > 0:  # the first step of each is a warm-up
                run["seconds"].append(seconds)
                run["positions"].append(inputs.numel())
                # real tokens: the input positions before each row's padding (targets -100 after the first
                # end-of-text; the end-of-text target itself sits at the last real input position)
                run["real"].append(int((targets != IGNORE_INDEX).sum()))
        if eval_every and (step + 1) % eval_every == 0 and step + 1 < steps:
            evaluate(step + 1)
        if progress:
            print(f"  step {step + 1}/{steps}: " + ", ".join(
                f"{name} loss {run['losses'][-1]:.3f}" + (f" {run['seconds'][-1]:.2f} s" if step else "")
                for name, run in runs.items()) + f" (load {_load()})", flush=True)
    evaluate(steps)

    lecture_positions = {name: sum(c["total"] for c in counts) for name, counts in padding.items()}
    records = {"size": size, "config": cfg, "steps": steps, "threads": torch.get_num_threads(),
               "torch": torch.__version__, "load_after": _load(), "train_examples": len(loaders["random"].train.dataset),
               "variants": {}}
    for name, run in runs.items():
        timed = sum(run["seconds"])
        per_position = timed / sum(run["positions"])
        records["variants"][name] = {
            "padding_per_epoch": padding[name],
            "timed_steps": len(run["seconds"]), "timed_seconds": timed,
            "median_step_s": statistics.median(run["seconds"]),
            "real_tokens_per_s": sum(run["real"]) / timed,
            "seconds_per_position": per_position,
            "lecture_training_estimate_s": per_position * lecture_positions[name],
            "losses": run["losses"], "val": run["val"],
        }
    r, g = records["variants"]["random"], records["variants"]["grouped"]
    records["speedup_timed"] = r["timed_seconds"] / g["timed_seconds"]
    records["speedup_lecture_estimate"] = r["lecture_training_estimate_s"] / g["lecture_training_estimate_s"]
    return records


def report(records: dict) -> str:
    """The records as a Markdown table and a few lines (what the README shows)."""
    v = records["variants"]
    steps_per_epoch = v["random"]["padding_per_epoch"][0]["batches"]
    lines = [f"{records['size']} sizes, random weights, batch {LECTURE_05['batch_size']}, "
             f"{records['train_examples']} training examples ({steps_per_epoch} steps per epoch), "
             f"{records['steps']} steps of each, {records['threads']} threads",
             "",
             "| | random batches (the course's) | grouped by length |",
             "|---|---:|---:|"]

    def row(label, fn):
        lines.append(f"| {label} | {fn(v['random'])} | {fn(v['grouped'])} |")

    def epoch(i):
        return lambda x: (f"{x['padding_per_epoch'][i]['real']:,} + {x['padding_per_epoch'][i]['padding']:,} "
                          f"({x['padding_per_epoch'][i]['padding_fraction']:.1%} padding)")

    for i in range(len(v["random"]["padding_per_epoch"])):
        row(f"epoch {i + 1}: real tokens + padding", epoch(i))
    row(f"{v['random']['timed_steps']} timed steps (s)", lambda x: f"{x['timed_seconds']:.1f}")
    row("median step (s)", lambda x: f"{x['median_step_s']:.2f}")
    row("real tokens per second", lambda x: f"{x['real_tokens_per_s']:,.0f}")
    row("lecture's 2 epochs of training, estimated (min)", lambda x: f"{x['lecture_training_estimate_s'] / 60:.1f}")
    row(f"training loss, step 1 / mean of the last {min(5, records['steps'])}",
        lambda x: f"{x['losses'][0]:.3f} / {statistics.mean(x['losses'][-5:]):.3f}")
    row(f"validation loss after {records['steps']} steps", lambda x: f"{x['val'][-1]['loss']:.3f}")
    lines += ["", f"speed-up of the timed steps: {records['speedup_timed']:.2f}x; of the lecture's training "
              f"(estimated from the seconds per batch position): {records['speedup_lecture_estimate']:.2f}x"]
    if len(v["random"]["val"]) > 1:
        lines += ["", "validation loss, random / grouped: " + ", ".join(
            f"step {a['step']}: {a['loss']:.3f} / {b['loss']:.3f}"
            for a, b in zip(v["random"]["val"], v["grouped"]["val"], strict=True))]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks padding", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 48 examples, 2 steps")
    parser.add_argument("--size", choices=sorted(SIZES), default="124M")
    parser.add_argument("--steps", type=int, default=10, help="training steps of each variant (the first untimed)")
    parser.add_argument("--eval-every", type=int, default=0, help="also evaluate every N steps (0: at the end only)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="build/benchmarks-padding.json")
    args = parser.parse_args(argv)
    print(f"load average before: {_load()} ({os.cpu_count()} CPUs)")
    if args.quick:
        records = measure_padding(size="tiny", steps=2, examples=48, threads=args.threads)
    else:
        records = measure_padding(size=args.size, steps=args.steps, eval_every=args.eval_every, threads=args.threads)
    save_results(args.out, records, report(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
