"""How the cost of a corpus grows with its size: preparing it (``helpers.prepare``) and reading it (``helpers.shards``).

    python -m benchmarks.corpus                        # corpora of 1 MB, 10 MB, 100 MB and 1 GB
    python -m benchmarks.corpus --sizes 1 10           # only these sizes (MB)
    python -m benchmarks.corpus --files ~/books/ --doc-mb 4    # a real corpus: whatever helpers.prepare takes

The generated corpora are one file each, made from *The Verdict* repeated with variation: passages of
20-400 words from random places, one word in five replaced by another word of the story, so that the
tokenizer never sees the same text twice in a row. They are written to a temporary folder
(``--work-dir``, default the system's) and deleted afterwards; their documents are ``--doc-mb 0.1``
pieces (so that even 1 MB has 10 to split by).

For every corpus, each measurement in a fresh process:

- **tiktoken**: tiktoken's own ``encode_ordinary`` on one core, on the corpus's text (its first
  64 MB) in 1 MiB pieces, nothing else timed: the reference; measured just before and just after
  the single-process preparation, and averaged (the load of a shared machine drifts);
- **prepare, 1 process** and **prepare, all cores**: ``helpers.prepare.prepare`` from the text files
  to finished shards (hashing, checking, tokenizing, writing), timed inside the process; its peak
  resident memory above what the process held before, and the largest worker's;
- the shards' size on disk;
- **dataset**: ``create_shard_dataloader`` (random windows of 1,024 tokens, batches of 8): the time from
  opening the folder to the first batch, then ``--batches`` batches, sampling the resident memory:
  anonymous (the process's own) and file-backed (pages of the memory-mapped shards, which the
  operating system can drop at any time).

The table goes to the screen and the numbers to ``--out`` (JSON), with the machine's load average
before and after: on a busy machine all throughputs are lower.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from helpers import data
from helpers.files import atomic_write_json
from helpers.prepare import prepare
from helpers.shards import create_shard_dataloader, read_manifest
from helpers.tokenizer import get_tokenizer

MB = 1_000_000
REFERENCE_BYTES = 64 * MB
CHUNK = 1 << 20


# ------------------------------------------------------------------------------------------ the corpora


def generate_corpus(path: Path, size: int, seed: int = 0) -> Path:
    """Write ``size`` bytes of text made from The Verdict, varied (see the module's docstring), to ``path``."""
    text = data.read_text("the-verdict")
    pieces = re.findall(r"\S+\s+", text)  # a word with its punctuation and the spaces after it
    parts = [re.fullmatch(r"([^A-Za-z]*)([A-Za-z]*)(.*)", p, re.S).groups() for p in pieces]
    words = sorted({core.lower() for _, core, _ in parts if len(core) >= 3})
    kinds = sorted({(pre, post, core[:1].isupper()) for pre, core, post in parts})  # the frames a word sits in
    kind_of = {kind: i for i, kind in enumerate(kinds)}
    frame = np.array([kind_of[(pre, post, core[:1].isupper())] for pre, core, post in parts])
    swappable = np.array([len(core) >= 3 for _, core, _ in parts])
    # every word of the story in every frame: substitution becomes one fancy-indexing lookup
    table = np.array([[pre + (w.capitalize() if upper else w) + post for w in words] for pre, post, upper in kinds],
                     dtype=object)
    source = np.array(pieces, dtype=object)
    rng, written = np.random.default_rng(seed), 0
    with open(path, "w", encoding="utf-8") as handle:
        while written < size:
            starts, lengths = rng.integers(0, len(pieces), 400), rng.integers(20, 400, 400)
            index = np.concatenate([np.arange(s, s + n) % len(pieces) for s, n in zip(starts, lengths, strict=True)])
            block = source[index]
            swap = np.flatnonzero(swappable[index] & (rng.random(len(index)) < 0.2))
            block[swap] = table[frame[index[swap]], rng.integers(0, len(words), len(swap))]
            raw = "".join(block).encode("utf-8")[: size - written]  # ASCII: any cut is a character boundary
            handle.write(raw.decode("utf-8"))
            written += len(raw)
    return path


def read_prefix(inputs: list[str], limit: int) -> list[str]:
    """The first ``limit`` bytes of text of the files ``inputs`` name, in 1 MiB pieces (for the reference)."""
    files = []
    for item in inputs:
        path = Path(item)
        files += sorted(p for p in path.rglob("*.txt") if p.is_file()) if path.is_dir() else [path]
    chunks, total = [], 0
    for path in files:
        with open(path, "rb") as handle:
            while total < limit and (raw := handle.read(min(CHUNK, limit - total))):
                chunks.append(raw.decode("utf-8", errors="ignore"))
                total += len(raw)
    return chunks


# ------------------------------------------------------------------------------------------ measurements


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM, RssAnon, RssFile), in MB."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024 / MB
    except OSError:
        pass
    if field in ("VmHWM", "VmRSS"):  # elsewhere: the peak from getrusage (KiB on Linux, bytes on macOS)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / MB if sys.platform == "darwin" else rss * 1024 / MB
    return float("nan")


def measure_reference(inputs: list[str]) -> dict:
    """tiktoken's own single-core throughput on the corpus's text."""
    chunks = read_prefix(inputs, REFERENCE_BYTES)
    encoding = get_tokenizer()
    encoding.encode_ordinary(chunks[0][:10_000])  # warm up
    start, tokens = time.perf_counter(), 0
    for chunk in chunks:
        tokens += len(encoding.encode_ordinary(chunk))
    seconds = time.perf_counter() - start
    text_bytes = sum(len(c.encode("utf-8")) for c in chunks)
    return {"seconds": seconds, "text_bytes": text_bytes, "tokens": tokens,
            "mb_per_s": text_bytes / MB / seconds, "tokens_per_s": tokens / seconds}


def measure_prepare(inputs: list[str], out: str, workers: int, doc_mb: float | None) -> dict:
    """``helpers.prepare.prepare`` from text to shards, timed in this process, with its peak memory."""
    get_tokenizer()
    baseline = _status_mb("VmRSS")
    start = time.perf_counter()
    manifest = prepare(inputs, out, workers=workers, progress=False, log=lambda message: None,
                       **({"doc_mb": doc_mb} if doc_mb else {}))
    seconds = time.perf_counter() - start
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    text_bytes = sum(s["bytes"] for s in manifest["sources"])
    tokens = sum(manifest["tokens"].values())
    return {"seconds": seconds, "text_bytes": text_bytes, "tokens": tokens, "workers": workers,
            "mb_per_s": text_bytes / MB / seconds, "tokens_per_s": tokens / seconds,
            "documents": sum(manifest["documents"].values()), "shards": len(manifest["shards"]),
            "disk_bytes": sum(s["bytes"] for s in manifest["shards"]),
            "baseline_rss_mb": baseline, "peak_rss_mb": _status_mb("VmHWM"),
            "peak_worker_rss_mb": children / MB if workers > 1 else None}


def measure_dataset(folder: str, batches: int, context: int = 1024, batch_size: int = 8) -> dict:
    """Time to the first batch from a prepared folder, and the resident memory while reading ``batches`` more."""
    baseline_anon, baseline_file = _status_mb("RssAnon"), _status_mb("RssFile")
    start = time.perf_counter()
    loader = create_shard_dataloader(folder, "train", batch_size=batch_size, max_length=context,
                                     windows_per_epoch=batch_size * (batches + 1), seed=1)
    batches_read = iter(loader)
    next(batches_read)
    first = time.perf_counter() - start
    anon, mapped, start = baseline_anon, baseline_file, time.perf_counter()
    for i, _ in enumerate(batches_read):
        if i % 10 == 0:
            anon, mapped = max(anon, _status_mb("RssAnon")), max(mapped, _status_mb("RssFile"))
    seconds = time.perf_counter() - start
    return {"first_batch_s": first, "batches": batches, "batches_per_s": batches / seconds,
            "tokens_per_s": batches * batch_size * context / seconds,
            "train_tokens": read_manifest(folder)["tokens"]["train"],
            "anon_growth_mb": anon - baseline_anon, "file_growth_mb": mapped - baseline_file}


def run_isolated(kind: str, repeat: int = 1, **kwargs) -> dict:
    """Run one measurement in a fresh interpreter (its own peak memory, nothing warm from the last one).

    With ``repeat`` > 1, the best of that many runs (the fastest; for the dataset, the quickest first
    batch), each in its own interpreter; the others are kept under ``"runs"``.
    """
    runs = []
    for _ in range(repeat):
        if "out" in kwargs:
            shutil.rmtree(kwargs["out"], ignore_errors=True)
        proc = subprocess.run([sys.executable, "-m", "benchmarks.corpus", "--single",
                               json.dumps({"kind": kind, **kwargs})], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"the {kind} measurement failed:\n{proc.stderr[-3000:]}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda r: r["first_batch_s"]) if kind == "dataset" else max(runs, key=lambda r: r["mb_per_s"])
    return {**best, "runs": runs} if repeat > 1 else best


MEASUREMENTS = {"reference": measure_reference, "prepare": measure_prepare, "dataset": measure_dataset}


# ------------------------------------------------------------------------------------------ the table


def _size(text_bytes: int) -> str:
    return f"{text_bytes / 1e9:.0f} GB" if text_bytes >= 1e9 else f"{text_bytes / MB:,.0f} MB"


def table(rows: list[dict], cores: int) -> str:
    """Two Markdown tables: tokenizing (throughput, scaling), then memory, disk and reading the shards."""
    lines = [
        f"| corpus | tokens | documents | tiktoken, 1 core | prepare, 1 process | of tiktoken | "
        f"prepare, {cores} processes | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ref, one, many = r["reference"], r["prepare_1"], r["prepare_n"]
        lines.append(
            f"| {r['name']} | {one['tokens'] / 1e6:,.1f} M | {one['documents']:,} | {ref['mb_per_s']:.2f} MB/s | "
            f"{one['mb_per_s']:.2f} MB/s ({one['tokens_per_s'] / 1e6:.2f} M tokens/s) | "
            f"{one['mb_per_s'] / ref['mb_per_s']:.0%} | "
            f"{many['mb_per_s']:.2f} MB/s ({many['tokens_per_s'] / 1e6:.2f} M tokens/s) | "
            f"{many['mb_per_s'] / one['mb_per_s']:.2f}x |")
    lines += [
        "",
        f"| corpus | prepare's peak memory growth: 1 process / {cores} processes (main) | a worker's RSS | "
        f"shards on disk | first batch | batches of 8 x 1,024 tokens | dataset's memory growth: own / mapped file |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        one, many, d = r["prepare_1"], r["prepare_n"], r["dataset"]
        lines.append(
            f"| {r['name']} | +{one['peak_rss_mb'] - one['baseline_rss_mb']:,.0f} MB / "
            f"+{many['peak_rss_mb'] - many['baseline_rss_mb']:,.0f} MB | {many['peak_worker_rss_mb'] or 0:,.0f} MB | "
            f"{one['disk_bytes'] / MB:,.1f} MB | {d['first_batch_s'] * 1000:,.1f} ms | {d['batches_per_s']:,.0f} /s | "
            f"{d['anon_growth_mb']:+,.1f} MB / {d['file_growth_mb']:+,.1f} MB |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.corpus", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 10, 100, 1000], metavar="MB",
                        help="sizes of the generated corpora in MB (default: 1 10 100 1000)")
    parser.add_argument("--files", nargs="+", default=None, metavar="INPUT",
                        help="measure this corpus instead (files, folders, globs, registry names)")
    parser.add_argument("--doc-mb", type=float, default=None,
                        help="helpers.prepare's --doc-mb (default: 0.1 for generated corpora, prepare's own for --files)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for 'all cores'")
    parser.add_argument("--batches", type=int, default=200, help="batches read in the dataset measurement")
    parser.add_argument("--repeat", type=int, default=3,
                        help="best of this many runs of each measurement for corpora below 100 MB (default 3); "
                             "larger ones run once, long enough to average the noise of a shared machine out")
    parser.add_argument("--work-dir", default=None, help="where to put the corpora and shards while measuring")
    parser.add_argument("--out", default="build/benchmarks-corpus.json", help="where to write the JSON results")
    parser.add_argument("--single", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.single:
        spec = json.loads(args.single)
        print(json.dumps(MEASUREMENTS[spec.pop("kind")](**spec)))
        return 0

    load_before = os.getloadavg()
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f} "
          f"({os.cpu_count()} cores)", flush=True)
    work = Path(tempfile.mkdtemp(prefix="corpus-benchmark-", dir=args.work_dir))
    rows = []
    try:
        corpora = [(None, size) for size in args.sizes] if args.files is None else [(args.files, None)]
        for files, size in corpora:
            if files is None:
                name = _size(int(size * MB))
                print(f"{name}: generating ...", end=" ", flush=True)
                files = [str(generate_corpus(work / f"corpus-{size:g}MB.txt", int(size * MB), seed=int(size)))]
                doc_mb = args.doc_mb or 0.1
            else:
                name, doc_mb = "your files", args.doc_mb
            row = {"name": name, "inputs": files, "doc_mb": doc_mb}
            text_bytes = sum(p.stat().st_size for f in files if (p := Path(f)).is_file())
            repeat = args.repeat if 0 < text_bytes < 100 * MB else 1
            # tiktoken just before and just after the single-process preparation: on a machine whose load
            # changes, their mean is the fairest reference for it
            print("tiktoken ...", end=" ", flush=True)
            row["reference_before"] = run_isolated("reference", repeat, inputs=files)
            for key, workers in (("prepare_1", 1), ("prepare_n", args.workers)):
                print(f"prepare x{workers} ...", end=" ", flush=True)
                out = work / f"shards-{key}"
                row[key] = run_isolated("prepare", repeat, inputs=files, out=str(out), workers=workers, doc_mb=doc_mb)
                if key == "prepare_1":
                    shutil.rmtree(out)
                    print("tiktoken ...", end=" ", flush=True)
                    row["reference_after"] = run_isolated("reference", repeat, inputs=files)
            row["reference"] = {key: (row["reference_before"][key] + row["reference_after"][key]) / 2
                                for key in ("mb_per_s", "tokens_per_s")}
            if args.files is not None:
                row["name"] = f"--files, {_size(row['prepare_1']['text_bytes'])}"
            print("dataset ...", end=" ", flush=True)
            row["dataset"] = run_isolated("dataset", repeat, folder=str(work / "shards-prepare_n"), batches=args.batches)
            shutil.rmtree(work / "shards-prepare_n")
            for path in work.glob("corpus-*.txt"):
                path.unlink()
            rows.append(row)
            print(f"{row['prepare_n']['mb_per_s']:.2f} MB/s with {args.workers} processes", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    meta = {"python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor(),
            "cpu_count": os.cpu_count(), "workers": args.workers, "when": time.strftime("%Y-%m-%d %H:%M:%S"),
            "load_average_before": load_before, "load_average_after": load_after}
    out = atomic_write_json(Path(args.out), {"meta": meta, "results": rows}, indent=2)
    print()
    print(table(rows, args.workers))
    print(f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 minute; "
          f"{os.cpu_count()} cores). Results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
