"""Test session set-up: quick profile, an isolated cache, and an offline mirror when one is available."""

from __future__ import annotations

import http.server
import os
import threading
from pathlib import Path
from time import sleep  # bound here: tests that stub time.sleep for the downloader keep the trickle

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_configure(config):
    os.environ.setdefault("LECTURES_PROFILE", "quick")
    os.environ.setdefault("LECTURES_DEVICE", "cpu")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    if "LECTURES_MIRROR" not in os.environ:
        user_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llm-lectures" / "data"
        for candidate in (SHARED_DATA, user_cache):
            if candidate.is_dir():
                os.environ["LECTURES_MIRROR"] = str(candidate)
                break


@pytest.fixture(scope="session", autouse=True)
def lectures_cache(tmp_path_factory):
    """Every test session writes downloads, checkpoints and runs into its own temporary cache."""
    if "LECTURES_CACHE" in os.environ:
        yield Path(os.environ["LECTURES_CACHE"])
        return
    path = tmp_path_factory.mktemp("lectures-cache")
    os.environ["LECTURES_CACHE"] = str(path)
    yield path
    os.environ.pop("LECTURES_CACHE", None)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.routes``: path -> (status, body, options). Supports Range requests.

    Options, for fault tests: ``ranges`` (False: ignore Range), ``truncate_to`` (send only that many
    bytes, then close), ``no_length`` (no Content-Length: the body ends when the connection closes),
    ``length`` (announce this Content-Length instead), ``content_type``, ``trickle`` ((bytes, seconds):
    send that many bytes per pause), ``range_start`` (answer a Range request with a 206 that starts
    there instead), ``location`` (with a 3xx status: where to redirect).
    """

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        route = self.server.routes.get(self.path)
        self.server.requests.append((self.path, self.headers.get("Range")))
        if route is None:
            self.send_error(404)
            return
        status, body, options = route
        if 300 <= status < 400:
            self.send_response(status)
            self.send_header("Location", options["location"])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if status != 200:
            self.send_error(status)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and options.get("ranges", True):
            start = options.get("range_start", int(rng.split("=")[1].split("-")[0]))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        if options.get("content_type"):
            self.send_header("Content-Type", options["content_type"])
        if not options.get("no_length"):
            self.send_header("Content-Length", str(options.get("length", len(payload))))
        self.end_headers()
        cut = options.get("truncate_to")
        payload = payload if cut is None else payload[:cut]
        try:
            if options.get("trickle"):
                step, pause = options["trickle"]
                for i in range(0, len(payload), step):
                    self.wfile.write(payload[i : i + step])
                    self.wfile.flush()
                    sleep(pause)
            else:
                self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up: fine
            return
        if cut is not None or options.get("no_length"):
            self.close_connection = True


@pytest.fixture
def http_server():
    """A loopback HTTP server; add files with ``server.routes["/x"] = (200, b"...", {})``."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.routes, server.requests = {}, []
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def verdict_text():
    from helpers import data

    return data.read_text("the-verdict")
