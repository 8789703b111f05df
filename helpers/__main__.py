"""Command line: ``python -m helpers lectures`` and ``python -m helpers prefetch``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import data, lectures, runtime, weights
from .download import one_line


def _lectures(args) -> int:
    paths = [Path(p) for p in args.notebooks] or lectures.list_notebooks()
    out = Path(args.out)
    results = lectures.run_all(paths, out, args.profile)
    total = sum(r.seconds for r in results)
    print(f"\n{len(results)} notebooks ran in {total:.0f} s ({args.profile} profile).")
    print(f"Executed notebooks: {out.resolve()}\nFigures:            {(out / 'figures').resolve()}")
    return 0


def _prefetch(args) -> int:
    """Fetch each file; a failure is reported in one line and the rest still run. Exit status 1 if any failed."""
    print(f"Cache: {runtime.cache_dir()}")
    failed = 0
    for name in args.data or data.LECTURE_DATA:
        try:
            print(f"  {name:18s} {data.fetch(name)}")
        except Exception as err:  # any failure of one file must not stop the others
            failed += 1
            print(f"  {name:18s} FAILED: {one_line(err)}")
    for size in [s for s in args.gpt2 if s.lower() != "none"]:
        try:
            weights.prefetch_gpt2(size)
        except Exception as err:  # the Hub and TensorFlow raise their own error types
            failed += 1
            print(f"  GPT-2 {size:5s}      FAILED: {one_line(err)}")
    if failed:
        print(f"{failed} item(s) failed, each named above. Rerun once the cause is fixed (offline: once online); "
              "finished files are kept and partial downloads resume.")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("lectures", help="execute the lecture notebooks headlessly into a build folder")
    p.add_argument("notebooks", nargs="*", help="notebooks to run (default: all in notebooks/)")
    p.add_argument("--profile", default="quick", choices=["quick", "full"])
    p.add_argument("--out", default="build/lectures", help="folder for executed notebooks and figures")
    p.set_defaults(func=_lectures)

    p = sub.add_parser("prefetch", help="download everything the series needs, before class")
    p.add_argument("--data", nargs="*", default=None, help="data files to fetch (default: the lectures' three files; book-* names add Gutenberg books)")
    p.add_argument(
        "--gpt2", nargs="*", default=["124M", "355M"],
        help="GPT-2 sizes whose weights to download (default: 124M 355M; `--gpt2 none` skips them)",
    )
    p.set_defaults(func=_prefetch)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
