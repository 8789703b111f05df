"""Run the lecture notebooks headlessly and collect what they produce.

``python -m helpers lectures`` executes every notebook in ``notebooks/`` (in the quick profile unless
told otherwise) and writes, under ``build/lectures/``, each executed notebook and the figures it drew
as PNG files. The committed notebooks themselves are never modified.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from . import runtime

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
SOLUTIONS_DIR = NOTEBOOKS_DIR / "solutions"
BUILD_DIR = REPO_ROOT / "build" / "lectures"
RERUN_TAG = "training"   # the cells of a lecture's training section (cell tag)


@dataclass
class LectureResult:
    notebook: Path
    executed: Path
    figures: list[Path]
    seconds: float


def list_notebooks(folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def list_solutions(folder: Path = SOLUTIONS_DIR) -> list[Path]:
    """The worked solutions to the lectures' exercises: ``solutions/NN_<lecture>_solutions.ipynb``."""
    return sorted(p for p in folder.glob("[0-9][0-9]_*_solutions.ipynb"))


def add_rerun_check(nb) -> bool:
    """Append to ``nb`` cells that run its training section again and check that nothing changed (issue 13).

    The training section is the cells tagged ``training``; the notebook's metadata names, under
    ``lectures.rerun_check``, an expression for what that section computes (say
    ``history.train_losses, history.val_losses``). After the whole notebook ran, the expression is
    evaluated, the tagged cells run a second time, and the expression must give the same value: a
    training section that depends on what later cells did (a loader peeked at, a model left in eval
    mode, a setting changed) fails. Returns False, changing nothing, for a notebook without the tag.
    """
    tagged = [cell for cell in nb.cells if RERUN_TAG in cell.metadata.get("tags", [])]
    if not tagged:
        return False
    expression = nb.metadata.get("lectures", {}).get("rerun_check")
    if not expression:
        raise ValueError("The notebook tags cells 'training' but names no lectures.rerun_check expression "
                         "in its metadata: say what the training section computes.")
    cells = [nbformat.v4.new_code_cell(f"_first_run = repr(({expression}))", id="rerun-check-before")]
    cells += [nbformat.v4.new_code_cell(cell.source, id=f"rerun-{k}") for k, cell in enumerate(tagged)]
    cells.append(nbformat.v4.new_code_cell(
        f"_second_run = repr(({expression}))\n"
        "assert _second_run == _first_run, ('the training section gave other numbers when run again:\\n'\n"
        "                                   f'{_first_run[:500]}\\n{_second_run[:500]}')",
        id="rerun-check-after"))
    nb.cells.extend(cells)
    return True


def execute_notebook(
    path: str | Path, out_dir: str | Path = BUILD_DIR, profile: str = "quick", timeout: int | None = None,
    rerun_check: bool = False,
) -> LectureResult:
    """Execute one notebook with ``LECTURES_PROFILE=profile``; save it and its figures under ``out_dir``.

    ``timeout`` limits each cell, in seconds; the default (None) sets no limit, because one training
    cell of the full profile runs for well over an hour on a laptop CPU. ``rerun_check`` then runs the
    training section again and checks its numbers (:func:`add_rerun_check`).

    Raises ``nbclient.exceptions.CellExecutionError`` (with the failing cell and traceback) on error;
    the partly executed notebook is still written, so the error can be read in context.
    """
    path, out_dir = Path(path), Path(out_dir)
    runtime.profile(profile)  # validate early
    nb = nbformat.read(path, as_version=4)
    if rerun_check:
        add_rerun_check(nb)
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / path.name
    previous = os.environ.get(runtime.PROFILE_ENV)
    os.environ[runtime.PROFILE_ENV] = profile  # the kernel inherits this process's environment
    start = time.perf_counter()
    try:
        NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        ).execute()
    finally:
        if previous is None:
            os.environ.pop(runtime.PROFILE_ENV, None)
        else:
            os.environ[runtime.PROFILE_ENV] = previous
        nbformat.write(nb, executed)
    seconds = time.perf_counter() - start
    return LectureResult(path, executed, save_figures(nb, out_dir / "figures", path.stem), seconds)


def save_figures(nb, folder: Path, stem: str) -> list[Path]:
    """Write every PNG output of an executed notebook to ``folder/<stem>-cellNN-K.png``."""
    figures = []
    for index, cell in enumerate(nb.cells):
        for k, output in enumerate(cell.get("outputs", [])):
            png = output.get("data", {}).get("image/png")
            if png:
                folder.mkdir(parents=True, exist_ok=True)
                target = folder / f"{stem}-cell{index:02d}-{k}.png"
                target.write_bytes(base64.b64decode(png))
                figures.append(target)
    return figures


def run_all(
    notebooks: list[Path] | None = None, out_dir: Path = BUILD_DIR, profile: str = "quick"
) -> list[LectureResult]:
    results = []
    for nb_path in notebooks or list_notebooks():
        print(f"Running {nb_path.name} ({profile} profile) ...", flush=True)
        result = execute_notebook(nb_path, out_dir, profile)
        print(f"  done in {result.seconds:.0f} s: {result.executed} ({len(result.figures)} figures)", flush=True)
        results.append(result)
    return results
