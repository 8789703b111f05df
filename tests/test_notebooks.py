"""Every lecture notebook runs top to bottom in the quick profile, and is committed without outputs; so does every
solutions notebook (the worked solutions to the lectures' exercises, each passed through the checker)."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

from helpers import lectures
from helpers.checkpoints import pretrained_checkpoint_path

NOTEBOOKS = lectures.list_notebooks()
SOLUTIONS = lectures.list_solutions()
REPO = Path(__file__).resolve().parent.parent


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no NN_name.ipynb files"


def test_every_lecture_has_its_solutions_notebook():
    assert [p.name for p in SOLUTIONS] == [f"{p.stem}_solutions.ipynb" for p in NOTEBOOKS]


def _repository_of(path: Path) -> Path | None:
    return next((folder for folder in path.resolve().parents if (folder / ".git").exists()), None)


def committed_text(path: Path) -> str:
    """The notebook as git would commit it: the staged copy after git's clean filter (nbstripout, set up by
    ``make setup``). Outside a git checkout, or for a file git does not track yet, the file itself."""
    repo = _repository_of(path)
    if shutil.which("git") and repo is not None:
        relative = path.resolve().relative_to(repo).as_posix()
        shown = subprocess.run(["git", "-C", str(repo), "show", f":{relative}"], capture_output=True, check=False)
        if shown.returncode == 0:
            staged = shown.stdout.decode("utf-8")
            # Also what `git add` would stage now (the working copy through the clean filter):
            cleaned = subprocess.run(["git", "-C", str(repo), "diff", "--quiet", "--", relative],
                                     capture_output=True, check=False)
            if cleaned.returncode == 0:
                return staged
    return path.read_text(encoding="utf-8")


def output_cells(text: str) -> list[int]:
    nb = json.loads(text)
    return [i for i, c in enumerate(nb["cells"])
            if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]


@pytest.mark.parametrize("path", NOTEBOOKS + SOLUTIONS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    """What is (or would be) committed has no outputs; outputs JupyterLab saved into the working copy are
    fine as long as git's filter strips them."""
    dirty = output_cells(committed_text(path))
    assert not dirty, (f"{path.name}: cells {dirty} keep outputs in what git would commit; run `make setup` "
                       f"(it installs the output-stripping git filter) or clear the outputs")


def test_the_git_filter_strips_outputs(tmp_path):
    """A notebook saved with outputs, in a repository set up as `make setup` does, commits without them."""
    if not shutil.which("git"):
        pytest.skip("git is not installed")
    src = NOTEBOOKS[0]
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    run = functools.partial(subprocess.run, cwd=repo, check=True, capture_output=True)
    run(["git", "init", "-q"])
    run(["git", "config", "user.email", "t@example.com"])
    run(["git", "config", "user.name", "t"])
    run(["git", "config", "filter.nbstripout.clean", f"'{sys.executable}' -m nbstripout --keep-id"])
    run(["git", "config", "filter.nbstripout.smudge", "cat"])
    (repo / ".gitattributes").write_text((REPO / ".gitattributes").read_text())
    target = repo / "notebooks" / src.name
    nb = json.loads(src.read_text(encoding="utf-8"))
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["hello\n"]}]
    code["execution_count"] = 7
    target.write_text(json.dumps(nb, indent=1) + "\n", encoding="utf-8")
    run(["git", "add", "-A"])
    run(["git", "commit", "-qm", "x"])
    committed = run(["git", "show", f"HEAD:notebooks/{src.name}"]).stdout.decode()
    assert output_cells(committed) == []
    assert output_cells(target.read_text(encoding="utf-8")), "the working copy keeps its outputs"
    assert committed_text(target) == committed
    assert run(["git", "diff", "--stat"]).stdout == b""


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_config_cell_comes_first(path):
    """The first code cell is the papermill parameters cell; the config cell follows it."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert "parameters" in code[0].get("metadata", {}).get("tags", []), f"{path.name}: first code cell must be tagged 'parameters'"
    assert "PROFILE" in "".join(code[0]["source"])


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_quick_profile(path, tmp_path_factory):
    """Notebooks run in order in one session, sharing the cache, as a learner runs the series. Lectures 03-06
    start from lecture 02's model when GPT-2 cannot be had (offline): when only some of them are selected
    (``-k 04``), lecture 02 runs first, once, as a learner would have run it, so that their checks see the
    stand-in they are written for rather than an untrained model."""
    out = tmp_path_factory.getbasetemp() / "lectures-build"
    if path.name[:2] in ("03", "04", "05", "06") and not pretrained_checkpoint_path("quick").is_file():
        lectures.execute_notebook(next(p for p in NOTEBOOKS if p.name.startswith("02_")), out, profile="quick", timeout=900)
    result = lectures.execute_notebook(path, out, profile="quick", timeout=900, rerun_check=True)
    assert result.executed.exists()


TRAINING_LECTURES = ("02", "04", "05", "06")


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name[:2] in TRAINING_LECTURES], ids=lambda p: p.stem)
def test_training_lectures_mark_their_training_section(path):
    """The notebook run above also reruns these cells and compares what they computed (no hidden state)."""
    nb = nbformat.read(path, as_version=4)
    assert lectures.add_rerun_check(nb), f"{path.name}: tag the cells of its training section {lectures.RERUN_TAG!r}"


def _notebook(*sources, rerun_check="result"):
    nb = nbformat.v4.new_notebook(metadata={"lectures": {"rerun_check": rerun_check}})
    nb.cells = [nbformat.v4.new_code_cell(src, id=f"c{k}") for k, (src, _) in enumerate(sources)]
    for cell, (_, tags) in zip(nb.cells, sources, strict=True):
        cell.metadata["tags"] = tags
    return nb


@pytest.mark.notebook
def test_the_rerun_check_catches_hidden_state(tmp_path):
    """A training cell that depends on what a later cell did gives other numbers the second time: an error."""
    clean = _notebook(("import random\nrandom.seed(0)", []), ("random.seed(1)\nresult = random.random()", ["training"]),
                      ("random.random()", []))
    hidden = _notebook(("import random\nrandom.seed(0)", []), ("result = random.random()", ["training"]),
                       ("random.random()", []))
    for name, nb in (("clean", clean), ("hidden", hidden)):
        nbformat.write(nb, tmp_path / f"{name}.ipynb")
    lectures.execute_notebook(tmp_path / "clean.ipynb", tmp_path / "out", timeout=60, rerun_check=True)
    with pytest.raises(CellExecutionError, match="gave other numbers when run again"):
        lectures.execute_notebook(tmp_path / "hidden.ipynb", tmp_path / "out", timeout=60, rerun_check=True)
    with pytest.raises(ValueError, match="rerun_check"):
        lectures.add_rerun_check(_notebook(("x = 1", ["training"]), rerun_check=None))


@pytest.mark.notebook
def test_solutions_notebooks_run(tmp_path):
    """Every worked solution passes its exercise's checker (``strict=True``: a wrong solution raises).

    The solutions notebooks run one after another in one kernel, the namespace cleared between them (``%reset -f``),
    so each must still import and define everything it uses; sharing the kernel saves a kernel start and an import
    of PyTorch per notebook. A failure names the notebook and the cell.
    """
    combined = nbformat.v4.new_notebook(metadata=nbformat.read(SOLUTIONS[0], as_version=4).metadata)
    for path in SOLUTIONS:
        reset = nbformat.v4.new_code_cell("%reset -f", id=f"reset-{path.stem[:2]}")
        cells = [reset, *nbformat.read(path, as_version=4).cells]
        for cell in cells:
            cell.metadata["solutions_notebook"] = path.name
        combined.cells.extend(cells)
    target = tmp_path / "solutions" / "all_solutions.ipynb"
    target.parent.mkdir()
    nbformat.write(combined, target)
    try:
        lectures.execute_notebook(target, tmp_path / "executed", profile="quick", timeout=120)
    except CellExecutionError as err:
        executed = nbformat.read(tmp_path / "executed" / target.name, as_version=4)
        failed = next((c for c in executed.cells if any(o.get("output_type") == "error" for o in c.get("outputs", []))),
                      None)
        where = f"{failed.metadata['solutions_notebook']}, cell {failed.id}" if failed is not None else "a solutions notebook"
        pytest.fail(f"{where} failed:\n{str(err)[-3000:]}")
