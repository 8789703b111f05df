"""Writing a benchmark's results: the JSON file and the printed table (shared by the lecture benchmarks).

Only the benchmarks that import ``helpers`` at their top use it: ``benchmarks.generation`` must not import
``helpers`` before ``--baseline`` puts an older package first, so this is not in ``benchmarks/__init__``.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

from helpers.files import atomic_write_json


def save_results(out: str | Path, records: list[dict], table: str) -> Path:
    """Write ``records`` with the machine's basics to ``out`` (atomically), then print ``table`` and the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, {"meta": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                                     "when": time.strftime("%Y-%m-%d %H:%M:%S")}, "results": records})
    print()
    print(table)
    print(f"\nResults written to {out}")
    return out
