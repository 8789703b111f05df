"""Measure training, evaluation and generation speed, teaching path against fast path, side by side.

    python -m benchmarks                 # everything, on the default device; prints a table, writes JSON
    python -m benchmarks --quick         # small sizes: a smoke test in seconds
    python -m benchmarks --device cuda --gpt2-1024   # adds 124M at context 1024 with MFU, on a GPU
    python -m benchmarks --compile --pad-vocab 64    # adds fast-path variants, compared with the fast path
    python -m benchmarks generation      # our KV-cache generation against transformers' (benchmarks/generation.py)
    python -m benchmarks prefix-cache    # lecture 04's training with and without the frozen-prefix cache
    python -m benchmarks corpus          # preparing and reading token shards of 1 MB to 1 GB (benchmarks/corpus.py)
    python -m benchmarks padding         # lecture 05 with random batches against batches grouped by length
    python -m benchmarks --lectures      # each lecture's training cell in the full profile, before and after

Each measurement is described by a :class:`Spec` and runs in a fresh Python process, so that its peak
memory is its own; it comes back as a :class:`Measurement`. Times are medians over ``--steps`` steps
after ``--warmup`` steps. A training step is the library's own: ``helpers.training.train_step``, the
function the lectures' training loop calls, inside ``helpers.perf.precision`` as in the loop.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch

from benchmarks import corpus, generation, lectures, padding, prefix_cache
from helpers import model as M
from helpers.files import atomic_write_json
from helpers.generation import generate
from helpers.perf import FastPath, autocast, precision, prepare_model
from helpers.runtime import get_device
from helpers.training import make_optimizer, train_step

# Peak dense bf16 / fp32 TFLOP/s of some GPUs, for model FLOP utilisation (MFU).
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0, "T4": 65.0}
KINDS = ("train", "eval", "generate")
PATHS = ("teaching", "fast")


@dataclass(frozen=True)
class Spec:
    """One measurement to make: what (``kind``, ``name``), on which path and device, at which sizes."""

    kind: str                            # "train", "eval" or "generate"
    name: str                            # the table's row, e.g. "train, small config"
    path: str                            # "teaching" or "fast"
    device: str
    config: str                          # a helpers.model.get_config name ...
    overrides: dict = field(default_factory=dict)  # ... with these changes
    batch: int = 2
    seq: int | None = None               # tokens per sequence (default: the config's context length)
    steps: int = 6                       # measured steps (runs, for generation)
    warmup: int = 2                      # unmeasured steps first
    compile: bool = False                # torch.compile the model
    pad_vocab: int = 0                   # pad the vocabulary to a multiple of this (0: the path's default)
    variant: str | None = None           # a fast-path variant, compared with the plain fast path of ``name``
    prompt_tokens: int = 8               # generation only
    new_tokens: int = 0                  # generation only
    cache: bool = False                  # generation only: with the KV cache

    def __post_init__(self):
        if self.kind not in KINDS or self.path not in PATHS:
            raise ValueError(f"kind must be one of {KINDS} and path one of {PATHS}, got {self.kind!r}, {self.path!r}")


@dataclass(frozen=True)
class Measurement:
    """What one :class:`Spec` measured."""

    spec: Spec
    options: dict                        # the FastPath fields used
    tokens_per_s: float
    seconds: float                       # median seconds per step (train, eval) or per run (generate)
    peak_memory_mb: float
    achieved_tflops: float | None = None  # training only
    mfu: float | None = None              # training on a GPU of PEAK_TFLOPS only

    def as_dict(self) -> dict:
        """One flat dict for JSON: the spec's fields and the results side by side."""
        results = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "spec"}
        return {**asdict(self.spec), **results}

    @classmethod
    def from_dict(cls, data: dict) -> Measurement:
        spec_fields = {f.name for f in fields(Spec)}
        spec = Spec(**{k: v for k, v in data.items() if k in spec_fields})
        return cls(spec=spec, **{k: v for k, v in data.items() if k not in spec_fields})


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return rss_kb / 1024 if sys.platform != "darwin" else rss_kb / 2**20


def _median_seconds(fn, steps: int, warmup: int, device: torch.device) -> float:
    times = []
    for i in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def fast_path(spec: Spec, device: torch.device) -> FastPath:
    """The speed-ups a spec asks for: the teaching path, or the device's fast path with its variant."""
    options = FastPath.teaching() if spec.path == "teaching" else FastPath.for_device(device)
    if spec.compile:
        options = replace(options, compile=True)
    if spec.pad_vocab:
        options = replace(options, pad_vocab_multiple=spec.pad_vocab)
    return options


def measure(spec: Spec) -> Measurement:
    """Run one measurement in this process."""
    device = torch.device(spec.device)
    options = fast_path(spec, device)
    torch.manual_seed(123)
    cfg = M.get_config(spec.config, **spec.overrides)
    model = M.GPTModel(cfg).to(device)
    run_model = prepare_model(model, options)
    batch, seq = spec.batch, spec.seq or cfg["context_length"]
    x = torch.randint(0, cfg["vocab_size"], (batch, seq), device=device)
    y = torch.randint(0, cfg["vocab_size"], (batch, seq), device=device)
    extra = {}
    with precision(options):
        if spec.kind == "train":
            model.train()
            optimizer = make_optimizer(model, 4e-4, 0.1, options, device)
            seconds = _median_seconds(lambda: train_step(run_model, optimizer, [(x, y)], device, options=options),
                                      spec.steps, spec.warmup, device)
            tokens_per_s = batch * seq / seconds
            flops = M.flops_per_token(cfg, seq) * tokens_per_s
            extra["achieved_tflops"] = flops / 1e12
            if device.type == "cuda":
                peak = next((v for k, v in PEAK_TFLOPS.items() if k in torch.cuda.get_device_name()), None)
                extra["mfu"] = flops / (peak * 1e12) if peak else None
        elif spec.kind == "eval":
            model.eval()

            def forward():
                with torch.no_grad(), autocast(device, options):
                    run_model(x)

            seconds = _median_seconds(forward, spec.steps, spec.warmup, device)
            tokens_per_s = batch * seq / seconds
        else:
            model.eval()
            prompt = torch.randint(0, cfg["vocab_size"], (1, spec.prompt_tokens), device=device)

            def gen():
                with autocast(device, options):
                    generate(run_model if not options.compile else model, prompt, spec.new_tokens,
                             cfg["context_length"], use_cache=spec.cache)

            seconds = _median_seconds(gen, spec.steps, spec.warmup, device)
            tokens_per_s = spec.new_tokens / seconds
    return Measurement(spec=spec, options=options.as_dict(), tokens_per_s=tokens_per_s, seconds=seconds,
                       peak_memory_mb=_peak_memory_mb(device), **extra)


def plan(args) -> list[Spec]:
    """The measurements ``args`` ask for, teaching and fast path for each, then the fast-path variants."""
    base = {"device": args.device, "steps": args.steps, "warmup": args.warmup}
    if args.quick:
        course = {"config": "tiny", "overrides": {"context_length": 64}, "batch": 2}
        small = {"config": "tiny", "batch": 4}
        gen_cfg = {"config": "tiny", "overrides": {"context_length": 64}}
        new_tokens = 20
    else:
        course = {"config": "pretrain-124M", "batch": 2}  # the course's pretraining setting
        small = {"config": "tiny", "overrides": {"context_length": 128, "emb_dim": 128}, "batch": 8}
        gen_cfg = {"config": "pretrain-124M"}
        new_tokens = 200
    train_course = "train, course config (124M sizes, ctx 256, batch 2)"
    eval_course = "eval forward, course config"
    specs = []
    for path in PATHS:
        specs.append(Spec(kind="train", name=train_course, path=path, **base, **course))
        specs.append(Spec(kind="train", name="train, small config", path=path, **base, **small))
        specs.append(Spec(kind="eval", name=eval_course, path=path, **base, **course))
        for cache in (False, True):
            specs.append(Spec(
                kind="generate", path=path, cache=cache, prompt_tokens=8, new_tokens=new_tokens,
                name=f"generate 124M, 8+{new_tokens} tokens, {'KV cache' if cache else 'no cache'}",
                **{**base, "steps": max(1, args.steps // 3), "warmup": 0 if args.quick else 1}, **gen_cfg))
    if args.gpt2_1024:
        compiled = ", fast path compiled" if args.compile else ""
        for path in PATHS:
            specs.append(Spec(kind="train", name=f"train GPT-2 124M, ctx 1024, batch {args.gpu_batch}{compiled}",
                              path=path, config="gpt2-small", batch=args.gpu_batch,
                              compile=args.compile and path == "fast", **base))
    variants = []
    if args.compile and not args.gpt2_1024:
        variants += [("torch.compile", {"compile": True}, "train", train_course),
                     ("torch.compile", {"compile": True}, "eval", eval_course)]
    if args.pad_vocab:
        variants.append((f"vocabulary padded to a multiple of {args.pad_vocab}", {"pad_vocab": args.pad_vocab},
                         "train", train_course))
    for variant, extra, kind, name in variants:
        specs.append(Spec(kind=kind, name=name, path="fast", variant=variant, **base, **course, **extra))
    return specs


def run_isolated(spec: Spec) -> Measurement:
    """Run :func:`measure` in a fresh interpreter (own peak memory, no warm caches from earlier runs)."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--single", json.dumps(asdict(spec))],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark {spec.name} ({spec.path}) failed:\n{proc.stderr[-3000:]}")
    return Measurement.from_dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def table(results: list[Measurement]) -> str:
    """A Markdown table: one row per measurement, teaching against fast; variants against the fast path."""
    rows: dict[tuple[str, str | None], dict[str, Measurement]] = {}
    for m in results:
        rows.setdefault((m.spec.name, m.spec.variant), {})[m.spec.path] = m
    lines = [
        "| measurement | teaching tokens/s | fast tokens/s | speed-up | peak MB teaching / fast |",
        "|---|---:|---:|---:|---:|",
    ]
    for (name, variant), by_path in rows.items():
        t, f = by_path.get("teaching"), by_path.get("fast")
        if variant is not None:
            base = rows.get((name, None), {}).get("fast")
            speed = f"{f.tokens_per_s / base.tokens_per_s:.2f}x vs fast" if base else ""
            lines.append(f"| {name}: fast path + {variant} | | {f.tokens_per_s:,.1f} | {speed} | "
                         f"- / {f.peak_memory_mb:,.0f} |")
        elif t and f:
            mfu = f" (MFU {f.mfu:.0%})" if f.mfu is not None else ""
            lines.append(f"| {name} | {t.tokens_per_s:,.1f} | {f.tokens_per_s:,.1f}{mfu} | "
                         f"{f.tokens_per_s / t.tokens_per_s:.2f}x | {t.peak_memory_mb:,.0f} / {f.peak_memory_mb:,.0f} |")
        else:
            only = t or f
            lines.append(f"| {name} | {t.tokens_per_s if t else ''} | {f.tokens_per_s if f else ''} | | "
                         f"{only.peak_memory_mb:,.0f} |")
    gen = {(m.spec.path, m.spec.cache): m.tokens_per_s for m in results if m.spec.kind == "generate"}
    if ("fast", True) in gen and ("fast", False) in gen:
        lines.append("")
        for path in PATHS:
            if (path, True) in gen and (path, False) in gen:
                lines.append(f"KV cache speed-up of generation, {path} path: "
                             f"{gen[(path, True)] / gen[(path, False)]:.1f}x")
    return "\n".join(lines)


# The other measurements, each with its own options: ``python -m benchmarks corpus --sizes 1 10``.
SUITES = {"corpus": corpus.main, "generation": generation.main, "prefix-cache": prefix_cache.main,
          "padding": padding.main, "lectures": lectures.main}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SUITES:
        return SUITES[argv[0]](argv[1:])
    if "--lectures" in argv:  # the spelling: python -m benchmarks --lectures [its options]
        argv.remove("--lectures")
        return lectures.main(argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: helpers.runtime.get_device())")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that everything runs")
    parser.add_argument("--steps", type=int, default=6, help="measured steps per training/eval benchmark")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured warm-up steps")
    parser.add_argument("--gpt2-1024", action="store_true", help="also train GPT-2 124M at context 1024 (GPU)")
    parser.add_argument("--gpu-batch", type=int, default=16, help="batch size for --gpt2-1024")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile on the fast path")
    parser.add_argument("--pad-vocab", type=int, default=0, metavar="N",
                        help="also measure the fast path with the vocabulary padded to a multiple of N (e.g. 64)")
    parser.add_argument("--out", default="build/benchmarks.json", help="where to write the JSON results")
    parser.add_argument("--in-process", action="store_true",
                        help="measure everything in this process, not each in a fresh one (faster to start, but peak "
                             "memory is then the whole process's and warm caches carry over: for smoke tests)")
    parser.add_argument("--single", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error(f"--steps must be at least 1 and --warmup at least 0, got {args.steps} and {args.warmup}")

    if args.single:
        print(json.dumps(measure(Spec(**json.loads(args.single))).as_dict()))
        return 0
    if args.device is None:
        args.device = str(get_device())

    results = []
    for spec in plan(args):
        print(f"  {spec.name}{f' + {spec.variant}' if spec.variant else ''} [{spec.path}] ...", end=" ", flush=True)
        measurement = measure(spec) if args.in_process else run_isolated(spec)
        print(f"{measurement.tokens_per_s:,.1f} tokens/s", flush=True)
        results.append(measurement)
    meta = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "device": args.device, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    if args.device.startswith("cuda"):
        meta["gpu"] = torch.cuda.get_device_name()
    out = atomic_write_json(Path(args.out), {"meta": meta, "results": [m.as_dict() for m in results]}, indent=2)
    print()
    print(table(results))
    print(f"\nResults written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
