"""Measure training, evaluation and generation speed, teaching path against fast path, side by side.

    python -m benchmarks                 # everything, on the default device; prints a table, writes JSON
    python -m benchmarks --quick         # small sizes: a smoke test in seconds
    python -m benchmarks --device cuda --gpt2-1024   # adds 124M at context 1024 with MFU, on a GPU
    python -m benchmarks --compile --pad-vocab 64    # adds fast-path variants, compared with the fast path

Each measurement runs in a fresh Python process so that its peak memory is its own. Times are medians
over ``--steps`` steps after ``--warmup`` steps.
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
from pathlib import Path

# Peak dense bf16 / fp32 TFLOP/s of some GPUs, for model FLOP utilisation (MFU).
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0, "T4": 65.0}


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def _peak_memory_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return rss_kb / 1024 if sys.platform != "darwin" else rss_kb / 2**20


def _time_steps(fn, steps, warmup, device):
    times = []
    for i in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times), times


def _build(spec):
    from dataclasses import replace

    import torch

    from helpers import model as M
    from helpers.perf import FastPath, prepare_model

    device = torch.device(spec["device"])
    options = FastPath.teaching() if spec["path"] == "teaching" else FastPath.for_device(device)
    if spec.get("compile"):
        options = replace(options, compile=True)
    if spec.get("pad_vocab"):
        options = replace(options, pad_vocab_multiple=spec["pad_vocab"])
    torch.manual_seed(123)
    cfg = M.get_config(spec["config"], **spec.get("overrides", {}))
    model = M.GPTModel(cfg).to(device)
    return torch, M, device, options, cfg, model, prepare_model(model, options)


def measure(spec: dict) -> dict:
    """Run one measurement described by ``spec`` in this process and return its result."""
    torch, M, device, options, cfg, model, run_model = _build(spec)
    from helpers.perf import autocast
    from helpers.training import make_optimizer

    batch, seq = spec.get("batch", 2), spec.get("seq", cfg["context_length"])
    x = torch.randint(0, cfg["vocab_size"], (batch, seq), device=device)
    y = torch.randint(0, cfg["vocab_size"], (batch, seq), device=device)
    result = {**spec, "options": options.as_dict()}
    if spec["kind"] == "train":
        model.train()
        optimizer = make_optimizer(model, 4e-4, 0.1, options, device)

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, options):
                logits = run_model(x)
                loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
            loss.backward()
            optimizer.step()

        median, _ = _time_steps(step, spec["steps"], spec["warmup"], device)
        result.update(seconds_per_step=median, tokens_per_s=batch * seq / median)
        flops = M.flops_per_token(cfg, seq) * batch * seq / median
        result["achieved_tflops"] = flops / 1e12
        if device.type == "cuda":
            name = torch.cuda.get_device_name()
            peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
            if peak:
                result["mfu"] = flops / (peak * 1e12)
    elif spec["kind"] == "eval":
        model.eval()

        def forward():
            with torch.no_grad(), autocast(device, options):
                run_model(x)

        median, _ = _time_steps(forward, spec["steps"], spec["warmup"], device)
        result.update(seconds_per_step=median, tokens_per_s=batch * seq / median)
    elif spec["kind"] == "generate":
        from helpers.generation import generate

        model.eval()
        prompt = torch.randint(0, cfg["vocab_size"], (1, spec["prompt_tokens"]), device=device)
        new = spec["new_tokens"]

        def gen():
            with autocast(device, options):
                generate(run_model if not options.compile else model, prompt, new, cfg["context_length"],
                         use_cache=spec["cache"])

        median, _ = _time_steps(gen, spec["steps"], spec["warmup"], device)
        result.update(seconds_per_run=median, tokens_per_s=new / median)
    else:
        raise ValueError(f"unknown kind {spec['kind']!r}")
    result["peak_memory_mb"] = _peak_memory_mb(device)
    return result


def plan(args) -> list[dict]:
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
    specs = []
    for path in ("teaching", "fast"):
        specs.append({**base, **course, "kind": "train", "label": "train, course config (124M sizes, ctx 256, batch 2)", "path": path})
        specs.append({**base, **small, "kind": "train", "label": "train, small config", "path": path})
        specs.append({**base, **course, "kind": "eval", "label": "eval forward, course config", "path": path})
        for cache in (False, True):
            specs.append({**base, **gen_cfg, "kind": "generate", "prompt_tokens": 8, "new_tokens": new_tokens,
                          "cache": cache, "steps": max(1, args.steps // 3), "warmup": 1 if not args.quick else 0,
                          "label": f"generate 124M, 8+{new_tokens} tokens, {'KV cache' if cache else 'no cache'}",
                          "path": path})
    if args.gpt2_1024:
        for path in ("teaching", "fast"):
            specs.append({**base, "config": "gpt2-small", "batch": args.gpu_batch, "kind": "train",
                          "label": f"train GPT-2 124M, ctx 1024, batch {args.gpu_batch}", "path": path,
                          "compile": args.compile and path == "fast"})
    # Variants of the fast path, each compared with the plain fast path of the same measurement.
    train_label, eval_label = specs[0]["label"], specs[2]["label"]
    variants = []
    if args.compile and not args.gpt2_1024:
        variants += [("torch.compile", {"compile": True}, "train", train_label),
                     ("torch.compile", {"compile": True}, "eval", eval_label)]
    if args.pad_vocab:
        variants.append((f"vocabulary padded to a multiple of {args.pad_vocab}", {"pad_vocab": args.pad_vocab},
                         "train", train_label))
    for name, extra, kind, of in variants:
        specs.append({**base, **course, **extra, "kind": kind, "path": "fast", "variant_of": of,
                      "label": f"{of.split(' (')[0]}: fast path + {name}"})
    return specs


def run_isolated(spec: dict) -> dict:
    """Run :func:`measure` in a fresh interpreter (own peak memory, no warm caches from earlier runs)."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--single", json.dumps(spec)],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark {spec['label']} ({spec['path']}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> str:
    rows = {}
    for r in results:
        key = r["label"]
        rows.setdefault(key, {})[r["path"] + (" (compiled)" if r.get("compile") else "")] = r
    lines = [
        "| measurement | teaching tokens/s | fast tokens/s | speed-up | peak MB teaching / fast |",
        "|---|---:|---:|---:|---:|",
    ]
    fast_of = {label: by_path["fast"] for label, by_path in rows.items() if "fast" in by_path}
    for label, by_path in rows.items():
        variant = next(iter(by_path.values()))
        if variant.get("variant_of") in fast_of:  # a fast-path variant: compare with the plain fast path
            base = fast_of[variant["variant_of"]]
            lines.append(f"| {label} | | {variant['tokens_per_s']:,.1f} | "
                         f"{variant['tokens_per_s'] / base['tokens_per_s']:.2f}x vs fast | "
                         f"- / {variant['peak_memory_mb']:,.0f} |")
            continue
        t = by_path.get("teaching")
        f = by_path.get("fast") or by_path.get("fast (compiled)")
        speed = f"{f['tokens_per_s'] / t['tokens_per_s']:.2f}x" if t and f else ""
        mfu = f" (MFU {f['mfu']:.0%})" if f and "mfu" in f else ""
        lines.append(
            f"| {label} | {t['tokens_per_s']:,.1f} | {f['tokens_per_s']:,.1f}{mfu} | {speed} | "
            f"{t['peak_memory_mb']:,.0f} / {f['peak_memory_mb']:,.0f} |" if t and f else
            f"| {label} | {t['tokens_per_s'] if t else '':} | {f['tokens_per_s'] if f else ''} | | |"
        )
    gen = {(r["path"], r["cache"]): r["tokens_per_s"] for r in results if r["kind"] == "generate"}
    if ("fast", True) in gen and ("fast", False) in gen:
        lines.append("")
        for path in ("teaching", "fast"):
            if (path, True) in gen and (path, False) in gen:
                lines.append(f"KV cache speed-up of generation, {path} path: "
                             f"{gen[(path, True)] / gen[(path, False)]:.1f}x")
    return "\n".join(lines)


def main(argv=None) -> int:
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
    parser.add_argument("--single", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.single:
        print(json.dumps(measure(json.loads(args.single))))
        return 0
    if args.device is None:
        from helpers.runtime import get_device

        args.device = str(get_device())
    import torch

    results = []
    for spec in plan(args):
        print(f"  {spec['label']} [{spec['path']}] ...", end=" ", flush=True)
        r = run_isolated(spec)
        print(f"{r['tokens_per_s']:,.1f} tokens/s", flush=True)
        results.append(r)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "device": args.device, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    if args.device.startswith("cuda"):
        meta["gpu"] = torch.cuda.get_device_name()
    tmp = out.with_name(out.name + ".part")
    tmp.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    os.replace(tmp, out)
    print()
    print(table(results))
    print(f"\nResults written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
