"""The learner's loop in a real JupyterLab, in a real browser (Chromium driven by Playwright).

JupyterLab is started on loopback over a copy of the notebooks (the repository is never written to). The
test runs lecture 01 and lecture 02 with *Run All Cells* in the quick profile, then edits a value in lecture
02's config cell by typing into the editor, runs it again, and checks what a learner would look at: no error
output, progress bars rendered as widgets, figures rendered as images, the edited value in effect, and the
comparison plot listing both runs. Screenshots go to ``build/browser/``.

Needs Chromium (Debian's ``chromium``, which ``.ci/run`` installs) and the ``playwright`` package. Locally the
test is skipped when either is missing; under CI (``CI`` set) a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "build" / "browser"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

pytestmark = pytest.mark.browser


def _need(condition: bool, why: str) -> None:
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"{why} (CI must run the browser test: .ci/run installs what it needs)")
        pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 over a copy of notebooks/; yields (url, token, folder)."""
    _need(CHROMIUM is not None, "no Chromium here (apt-get install chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        _need(False, "the playwright package is not installed")
    folder = tmp_path_factory.mktemp("lab")
    for nb in sorted((REPO / "notebooks").glob("0[12]_*.ipynb")):
        shutil.copy(nb, folder / nb.name)
    # JupyterLab 4 renders only the cells near the viewport; render all of them, so that the test sees the
    # training cell's progress bar wherever the page is scrolled (a learner would scroll to it).
    settings = tmp_path_factory.mktemp("lab-settings")
    (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        json.dumps({"windowingMode": "none"}), encoding="utf-8")
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "LECTURES_PROFILE": "quick", "PYTHONPATH": str(REPO), "JUPYTER_PLATFORM_DIRS": "1",
           "LECTURES_CACHE": str(tmp_path_factory.mktemp("lab-cache"))}
    log = open(folder / "jupyter.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False", "--allow-root",
         f"--ServerApp.root_dir={folder}", "--LabApp.expose_app_in_browser=True", f"--LabApp.user_settings_dir={settings}",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
    if server.poll() is not None:
        log.close()
        pytest.fail("JupyterLab did not start:\n" + (folder / "jupyter.log").read_text()[-3000:])
    try:
        yield url, token, folder
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def page(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        yield context.new_page()
        context.close()
        browser.close()


def _open(page, lab, name: str) -> None:
    url, token, _ = lab
    page.goto(f"{url}/lab/tree/{name}?token={token}&reset", wait_until="domcontentloaded")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget "
                           "&& window.jupyterapp.shell.currentWidget.context", timeout=120_000)
    # Wait for a live kernel, so Run All does not race the kernel's start.
    page.wait_for_function(
        "() => { const w = window.jupyterapp.shell.currentWidget; const k = w.sessionContext.session?.kernel;"
        " return k && k.status === 'idle'; }", timeout=120_000)


def _run_all_and_wait(page, timeout_s: float, progress_shot: str | None = None) -> None:
    """Run All Cells and wait until every cell ran. With ``progress_shot``, first wait for a tqdm progress bar
    to render as a widget while training runs (the loops close their bars when done), and screenshot it."""
    # Start Run All without awaiting it: execute() returns a promise that settles when every cell has run,
    # and page.evaluate would wait for it, long after the training cell's progress bars have closed.
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    if progress_shot:
        bar = page.locator(".jp-OutputArea-output .widget-hprogress").first  # ipywidgets 8: a horizontal progress bar
        bar.wait_for(state="attached", timeout=timeout_s * 1000)
        bar.scroll_into_view_if_needed()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{progress_shot}.png"))
    # Each cell's prompt shows [*] while it waits or runs; done when no prompt does and the kernel is idle.
    page.wait_for_timeout(1000)
    page.wait_for_function(
        "() => { const w = window.jupyterapp.shell.currentWidget;"
        " const busy = [...document.querySelectorAll('.jp-InputArea-prompt')].some(p => p.textContent.includes('*'));"
        " return !busy && w.sessionContext.session?.kernel?.status === 'idle'; }",
        timeout=timeout_s * 1000, polling=1000)


def _save(page) -> None:
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=30_000)


def _saved_outputs(folder: Path, name: str) -> list[dict]:
    nb = json.loads((folder / name).read_text(encoding="utf-8"))
    return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]


def _text(outputs: list[dict]) -> str:
    parts = []
    for o in outputs:
        if o["output_type"] == "stream":
            parts.append("".join(o["text"]))
        elif "data" in o and "text/plain" in o["data"]:
            parts.append("".join(o["data"]["text/plain"]))
    return "\n".join(parts)


def _check_rendered(page, folder: Path, name: str, shot: str) -> list[dict]:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{shot}.png"), full_page=False)
    _save(page)
    outputs = _saved_outputs(folder, name)
    errors = [o for o in outputs if o["output_type"] == "error"]
    assert not errors, f"{name}: error output: {errors[0]['ename']}: {errors[0]['evalue']}"
    images = page.locator(".jp-RenderedImage img")
    assert images.count() >= 1, f"{name}: no figure rendered as an image"
    return outputs


def test_lecture_01_runs_in_the_browser(page, lab):
    _open(page, lab, "01_loss_calculation.ipynb")
    _run_all_and_wait(page, timeout_s=300)
    outputs = _check_rendered(page, lab[2], "01_loss_calculation.ipynb", "01-run-all")
    assert "Training loss" in _text(outputs) or "training loss" in _text(outputs).lower()


def test_lecture_02_change_a_value_rerun_compare(page, lab):
    name = "02_pretraining_loop.ipynb"
    _open(page, lab, name)
    _run_all_and_wait(page, timeout_s=1200, progress_shot="02-progress-widget")  # fails if no widget shows
    first = _check_rendered(page, lab[2], name, "02-run-all")
    assert "saved runs:" in _text(first)

    # Edit the config cell as a learner would: click into its editor, switch dropout off, run everything again.
    config = page.locator(".jp-Notebook .jp-Cell.jp-CodeCell").nth(1)
    source = config.locator(".cm-content").inner_text()
    assert '"drop_rate": 0.1,' in source, "lecture 02's config cell has no drop_rate to edit"
    config.locator(".cm-content").click()
    page.keyboard.press("Control+a")
    page.keyboard.insert_text(source.replace('"drop_rate": 0.1,', '"drop_rate": 0.0,'))
    page.keyboard.press("Escape")
    _run_all_and_wait(page, timeout_s=1200)
    second = _check_rendered(page, lab[2], name, "02-after-edit")
    text = _text(second)
    assert "'drop_rate': 0.0" in text, "the model config printed after the edit does not show drop_rate 0.0"
    runs = re.findall(r"saved runs: \[(.*)\]", text)
    assert runs, "the rerun printed no list of saved runs"
    names = [n.strip(" '") for n in runs[-1].split(",")]
    assert "lecture02-quick" in names, f"the first run is not among the compared runs: {names}"
    edited = [n for n in names if n.startswith("lecture02-quick-drop_rate0.0-")]
    assert edited, f"the edited run was not saved under a name of its own: {names}"
    # The first run kept its losses (never overwritten) and the edited one trained differently.
    first_losses = re.findall(r"training loss: +([0-9.]+) -> ([0-9.]+)", _text(first))
    second_losses = re.findall(r"training loss: +([0-9.]+) -> ([0-9.]+)", text)
    assert first_losses and second_losses and first_losses[-1] != second_losses[-1], (
        "dropout 0.0 gave the same training losses as dropout 0.1: the edit did not take effect")
