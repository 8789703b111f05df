"""Every lecture notebook runs top to bottom in the quick profile, and is committed without outputs."""

from __future__ import annotations

import json

import pytest

from helpers import lectures

NOTEBOOKS = lectures.list_notebooks()


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no NN_name.ipynb files"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{path.name}: cells {dirty} keep outputs; clear them before committing"


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
    """Notebooks run in order in one session, sharing the cache, as a learner runs the series."""
    out = tmp_path_factory.getbasetemp() / "lectures-build"
    result = lectures.execute_notebook(path, out, profile="quick", timeout=900)
    assert result.executed.exists()
