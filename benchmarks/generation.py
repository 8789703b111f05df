"""Generation speed, side by side in one run: our ``generate`` against Hugging Face ``transformers``.

    python -m benchmarks.generation                       # GPT-2 124M sizes, 8-token prompt, 200 new tokens
    python -m benchmarks.generation --baseline /tmp/base  # also the helpers package found in /tmp/base
    python -m benchmarks.generation --quick               # tiny sizes: checks that everything runs

Variants (all greedy, random weights, batch 1):

* ``fast``, ``teaching``: ``helpers.generation.generate`` with the KV cache, on the fast path (fused
  kernels) and on the teaching path (attention, LayerNorm and GELU spelled out);
* ``fast-no-cache``: the same without the KV cache (each step reruns the whole sequence);
* ``transformers``: ``GPT2LMHeadModel.generate(do_sample=False, use_cache=True)`` with the same sizes;
* ``fast-bf16``, ``transformers-bf16``: the same two with the weights in bfloat16 (``model.to(torch.bfloat16)``).
  At batch 1 on a CPU every weight is read from memory once per new token, so halving the bytes is
  what speeds generation up once nothing is recomputed; the tokens can differ from float32's where two
  logits nearly tie (random weights make that common), so they are left out of the same-tokens check;
* ``baseline-fast``, ``baseline-teaching`` (with ``--baseline DIR``): ``generate`` from the ``helpers``
  package inside ``DIR``, e.g. an older commit exported with
  ``git archive COMMIT helpers | tar -x -C DIR``.

Each measurement runs in a fresh Python process (its own model, allocator and threads); the variants
take turns for ``--rounds`` rounds so that a change in the machine's load hits them alike, and the
report gives the median tokens per second of each. Our float32 variants start from the same seed, so they
must produce the same tokens: the report says whether they did.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OURS = ("fast", "teaching", "fast-no-cache", "fast-bf16")
DEFAULT_VARIANTS = ("fast", "teaching", "fast-no-cache", "transformers", "fast-bf16", "transformers-bf16")
SIZES = {  # GPT-2 124M, the sizes of transformers' GPT2Config(); "tiny" for a smoke test
    "124M": {"vocab_size": 50257, "context_length": 1024, "emb_dim": 768, "n_heads": 12, "n_layers": 12},
    "tiny": {"vocab_size": 50257, "context_length": 64, "emb_dim": 32, "n_heads": 4, "n_layers": 2},
}


def _ours(spec: dict):
    """Build our model and return a function that generates once, from ``helpers`` wherever it is found."""
    if spec.get("helpers_path"):
        sys.path.insert(0, spec["helpers_path"])
    import torch

    import helpers
    from helpers import model as M
    from helpers.generation import generate

    sizes = SIZES[spec["size"]]
    cfg = {**sizes, "drop_rate": 0.0, "qkv_bias": True}
    torch.manual_seed(123)
    model = M.GPTModel(cfg).eval()
    M.set_impl(model, "teaching" if spec["variant"].endswith("teaching") else "fast")
    if spec["variant"].endswith("-bf16"):
        model.to(torch.bfloat16)
    use_cache = not spec["variant"].endswith("no-cache")
    prompt = torch.randint(0, sizes["vocab_size"], (1, spec["prompt_tokens"]), generator=torch.Generator().manual_seed(7))

    def run(new_tokens):
        return generate(model, prompt, new_tokens, sizes["context_length"], use_cache=use_cache)

    return run, {"helpers": str(Path(helpers.__file__).parent)}


def _transformers(spec: dict):
    import torch
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel

    sizes = SIZES[spec["size"]]
    config = GPT2Config(vocab_size=sizes["vocab_size"], n_positions=sizes["context_length"],
                        n_embd=sizes["emb_dim"], n_layer=sizes["n_layers"], n_head=sizes["n_heads"])
    torch.manual_seed(123)
    model = GPT2LMHeadModel(config).eval()
    if spec["variant"].endswith("-bf16"):
        model.to(torch.bfloat16)
    model.generation_config.eos_token_id = None   # never stop early: always produce every token asked for
    model.generation_config.pad_token_id = 50256
    prompt = torch.randint(0, sizes["vocab_size"], (1, spec["prompt_tokens"]), generator=torch.Generator().manual_seed(7))
    mask = torch.ones_like(prompt)

    def run(new_tokens):
        with torch.no_grad():
            return model.generate(prompt, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                                  use_cache=True)

    return run, {"transformers": transformers.__version__,
                 "attn_implementation": getattr(model.config, "_attn_implementation", None)}


def measure_one(spec: dict) -> dict:
    """One variant in this process: a short warm-up, then ``repeats`` timed runs. Returns a plain record."""
    build = _transformers if spec["variant"].startswith("transformers") else _ours
    run, info = build(spec)
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    run(min(spec["new_tokens"], 10))                            # warm-up: first-call allocations, kernels
    seconds, out = [], None
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        out = run(spec["new_tokens"])
        seconds.append(time.perf_counter() - start)
    new = out[0, spec["prompt_tokens"]:].tolist()
    if len(new) != spec["new_tokens"]:
        raise RuntimeError(f"{spec['variant']} produced {len(new)} new tokens, not {spec['new_tokens']}.")
    return {**spec, **info, "seconds": seconds, "tokens_per_s": [spec["new_tokens"] / s for s in seconds],
            "threads_used": torch.get_num_threads(), "torch": torch.__version__,
            "tokens_sha1": hashlib.sha1(json.dumps(new).encode()).hexdigest()[:12]}


def _run_isolated(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.generation", "--single", json.dumps(spec)],
                          capture_output=True, text=True, check=False, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"generation benchmark {spec['variant']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def measure_generation(variants=DEFAULT_VARIANTS, *, size: str = "124M", prompt_tokens: int = 8,
                       new_tokens: int = 200, rounds: int = 3, repeats: int = 1, threads: int | None = None,
                       baseline: str | Path | None = None, no_cache_rounds: int | None = None,
                       progress: bool = True) -> list[dict]:
    """Measure each variant ``rounds`` times (taking turns), each in a fresh process; return plain records.

    The slow no-cache variants run in the first ``no_cache_rounds`` rounds only (default: all rounds).

    One record per variant: ``variant``, ``tokens_per_s`` (the median over all runs), ``runs`` (every
    run's tokens/s, in order), ``tokens_sha1`` (a fingerprint of the generated tokens), the load average
    before each round in ``load``, and what the process reported (``torch``, ``threads_used``, the
    ``helpers`` folder or the ``transformers`` version). Not lecture material: a benchmark.
    """
    variants = list(variants)
    if baseline is not None:
        variants += [v for v in ("baseline-fast", "baseline-teaching") if v not in variants]
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    loads = []
    for r in range(rounds):
        loads.append(_load())
        order = variants[r % len(variants):] + variants[: r % len(variants)]   # a different first each round
        for variant in order:
            if variant.endswith("no-cache") and no_cache_rounds is not None and r >= no_cache_rounds:
                continue
            spec = {"variant": variant, "size": size, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
                    "repeats": repeats, "threads": threads}
            if variant.startswith("baseline-"):
                spec.update(variant=variant, helpers_path=str(Path(baseline).resolve()))
            result = _run_isolated(spec)
            runs[variant].append(result)
            if progress:
                print(f"  round {r + 1}/{rounds} {variant:18s} "
                      f"{', '.join(f'{t:.1f}' for t in result['tokens_per_s'])} tokens/s", flush=True)
    records = []
    for variant, results in runs.items():
        every = [t for res in results for t in res["tokens_per_s"]]
        last = results[-1]
        record = {"variant": variant, "tokens_per_s": statistics.median(every), "runs": every,
                  "tokens_sha1": sorted({res["tokens_sha1"] for res in results}), "load": loads,
                  "size": size, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
                  "torch": last["torch"], "threads_used": last["threads_used"]}
        for key in ("helpers", "transformers", "attn_implementation"):
            if key in last:
                record[key] = last[key]
        records.append(record)
    return records


def table(records: list[dict]) -> str:
    """The records as a Markdown table, each variant also relative to transformers and to the baseline."""
    by = {r["variant"]: r for r in records}
    ref = by.get("transformers")
    base = by.get("baseline-fast")
    lines = ["| variant | tokens/s (median) | runs | vs transformers | vs baseline fast |", "|---|---:|---|---:|---:|"]
    for r in records:
        vs_hf = f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f}x" if ref else ""
        vs_base = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x" if base else ""
        runs = ", ".join(f"{t:.1f}" for t in r["runs"])
        lines.append(f"| {r['variant']} | {r['tokens_per_s']:.1f} | {runs} | {vs_hf} | {vs_base} |")
    ours = {v: by[v]["tokens_sha1"] for v in by if not v.startswith("transformers") and not v.endswith("-bf16")}
    if ours:
        same = len({tuple(s) for s in ours.values()}) == 1 and all(len(s) == 1 for s in ours.values())
        lines.append("")
        lines.append(f"Our variants generated {'the same' if same else 'DIFFERENT'} tokens: {ours}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.generation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"comma-separated, from {', '.join(OURS)}, transformers, transformers-bf16 (default: all)")
    parser.add_argument("--baseline", help="a folder holding an older helpers package to compare with")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 20 new tokens, one round")
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--prompt-tokens", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-cache-rounds", type=int, default=None,
                        help="run the (slow) no-cache variant in this many rounds only (default: every round)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per process")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--out", default="build/benchmarks-generation.json")
    parser.add_argument("--single", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.single:
        print(json.dumps(measure_one(json.loads(args.single))))
        return 0
    size, new_tokens, rounds = ("tiny", 20, 1) if args.quick else ("124M", args.new_tokens, args.rounds)
    print(f"load average before: {_load()} ({os.cpu_count()} CPUs)")
    records = measure_generation(args.variants.split(","), size=size, prompt_tokens=args.prompt_tokens,
                                 new_tokens=new_tokens, rounds=rounds, repeats=args.repeats, threads=args.threads,
                                 baseline=args.baseline, no_cache_rounds=args.no_cache_rounds)
    print(f"load average after: {_load()}")
    from helpers.files import atomic_write_json  # here, not at the top: --single may import another helpers

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"python": platform.python_version(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "when": time.strftime("%Y-%m-%d %H:%M:%S"), "load_after": _load()}
    atomic_write_json(out, {"meta": meta, "results": records})
    print()
    print(table(records))
    print(f"\nResults written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
