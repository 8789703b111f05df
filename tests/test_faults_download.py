"""Fault injection for the downloader: what a flaky network or a hostile server does to a download.

Everything runs against the loopback server of ``conftest.py`` (never the internet), with tiny
payloads and short deadlines. The rule under test: a file reaches its final path only when complete
and verified; anything else ends in a clear error, within a bounded time, and leaves at most a
``.part`` file that the next run resumes or discards.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import download, files

REPO = Path(__file__).resolve().parent.parent
BODY = bytes(range(256)) * 240  # 61,440 bytes
DIGEST = hashlib.sha256(BODY).hexdigest()
HTML = b"<!DOCTYPE html><html><body><h1>503 Service Unavailable</h1></body></html>"


def fetch(urls, dest, **kw):
    kw.setdefault("sha256", DIGEST)
    kw.setdefault("size", len(BODY))
    kw.setdefault("retries", 2)
    kw.setdefault("timeout", 5)
    return download.download(urls, dest, backoff=0.0, progress=False, **kw)


def paths(server, *names):
    return [server.url + name for name in names]


def requested(server):
    return [path for path, _ in server.requests]


# ------------------------------------------------------------------------------- wrong content


def test_html_page_with_200_and_a_known_size_goes_to_the_backup_at_once(http_server, tmp_path):
    http_server.routes["/f"] = (200, HTML, {"content_type": "text/html"})
    http_server.routes["/backup"] = (200, BODY, {})
    assert fetch(paths(http_server, "/f", "/backup"), tmp_path / "f.bin").read_bytes() == BODY
    assert requested(http_server) == ["/f", "/backup"]  # the announced length gave it away: no retry


def test_html_page_without_length_fails_the_hash_and_goes_to_the_backup(http_server, tmp_path):
    http_server.routes["/f"] = (200, HTML, {"no_length": True})
    http_server.routes["/backup"] = (200, BODY, {})
    assert fetch(paths(http_server, "/f", "/backup"), tmp_path / "f.bin", size=None).read_bytes() == BODY
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_same_length_wrong_bytes_are_never_kept(http_server, tmp_path):
    http_server.routes["/f"] = (200, bytes(reversed(BODY)), {})
    with pytest.raises(download.DownloadError, match="SHA-256") as err:
        fetch(paths(http_server, "/f"), tmp_path / "f.bin")
    assert err.value.failures and all("/f" in line for line in err.value.failures)
    assert list(tmp_path.iterdir()) == []


def test_a_content_check_refuses_what_no_hash_could(http_server, tmp_path):
    """Without a pinned hash, the caller's check decides; a file that fails it is never kept."""
    http_server.routes["/f"] = (200, HTML, {})
    http_server.routes["/backup"] = (200, BODY, {})

    def check(path):
        return "an HTML page" if path.read_bytes().startswith(b"<") else None

    path = fetch(paths(http_server, "/f", "/backup"), tmp_path / "f.bin", sha256=None, size=None, check=check)
    assert path.read_bytes() == BODY
    with pytest.raises(download.DownloadError, match="an HTML page"):
        fetch(paths(http_server, "/f"), tmp_path / "g.bin", sha256=None, size=None, check=check)
    assert not (tmp_path / "g.bin").exists() and not (tmp_path / "g.bin.part").exists()


def test_a_damaged_cached_copy_is_replaced(http_server, tmp_path):
    http_server.routes["/f"] = (200, BODY, {})
    dest = tmp_path / "f.bin"
    dest.write_bytes(BODY[:-1] + b"!")  # right size, wrong bytes
    assert fetch(paths(http_server, "/f"), dest).read_bytes() == BODY
    dest.write_bytes(HTML)  # passes no check at all (no hash, no size): the content check catches it
    check = lambda p: "HTML" if p.read_bytes().startswith(b"<") else None  # noqa: E731
    assert fetch(paths(http_server, "/f"), dest, sha256=None, size=None, check=check).read_bytes() == BODY


def test_a_damaged_cached_copy_is_not_kept_when_the_download_fails(http_server, tmp_path):
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"damaged")
    with pytest.raises(download.DownloadError):
        fetch(paths(http_server, "/missing"), dest)
    assert not dest.exists()


# ------------------------------------------------------------------------------- wrong length


def test_truncated_body_without_length_is_resumed(http_server, tmp_path):
    http_server.routes["/f"] = (200, BODY, {"no_length": True, "truncate_to": 20_000})
    with pytest.raises(download.DownloadError, match="20,000 of 61,440"):
        fetch(paths(http_server, "/f"), tmp_path / "f.bin", retries=1)
    assert (tmp_path / "f.bin.part").stat().st_size == 20_000 and not (tmp_path / "f.bin").exists()
    http_server.routes["/f"] = (200, BODY, {"no_length": True})
    assert fetch(paths(http_server, "/f"), tmp_path / "f.bin").read_bytes() == BODY
    assert http_server.requests[-1] == ("/f", "bytes=20000-")


def test_truncated_body_of_unknown_size_fails_its_check(http_server, tmp_path):
    http_server.routes["/f"] = (200, BODY, {"no_length": True, "truncate_to": 20_000})

    def check(path):
        return None if path.read_bytes().endswith(BODY[-256:]) else "cut short"

    with pytest.raises(download.DownloadError, match="cut short"):
        fetch(paths(http_server, "/f"), tmp_path / "f.bin", sha256=None, size=None, check=check)
    assert list(tmp_path.iterdir()) == []


def test_a_body_longer_than_expected_is_cut_off(http_server, tmp_path):
    endless = BODY * 20  # no Content-Length: only the limit stops it
    http_server.routes["/f"] = (200, endless, {"no_length": True})
    http_server.routes["/backup"] = (200, BODY, {})
    assert fetch(paths(http_server, "/f", "/backup"), tmp_path / "f.bin").read_bytes() == BODY
    assert requested(http_server) == ["/f", "/backup"]
    with pytest.raises(download.DownloadError, match="more than the expected 100,000 bytes"):
        fetch(paths(http_server, "/f"), tmp_path / "g.bin", sha256=None, size=None, max_bytes=100_000)
    assert list(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_an_announced_length_over_the_limit_is_refused_before_writing(http_server, tmp_path):
    http_server.routes["/f"] = (200, BODY * 2, {})
    with pytest.raises(download.DownloadError, match="announces 122,880 bytes, expected 61,440"):
        fetch(paths(http_server, "/f"), tmp_path / "f.bin")
    with pytest.raises(download.DownloadError, match="at most 1,000 bytes"):
        fetch(paths(http_server, "/f"), tmp_path / "f.bin", sha256=None, size=None, max_bytes=1000)
    assert list(tmp_path.iterdir()) == []


def test_a_lying_content_length_is_a_dropped_connection(http_server, tmp_path):
    http_server.routes["/f"] = (200, BODY[:30_000], {"length": len(BODY)})
    with pytest.raises(download.DownloadError, match="30,000 of 61,440"):
        fetch(paths(http_server, "/f"), tmp_path / "f.bin", retries=1)
    assert not (tmp_path / "f.bin").exists()


def test_a_206_for_the_wrong_range_restarts_from_zero(http_server, tmp_path):
    (tmp_path / "f.bin.part").write_bytes(BODY[:1000])
    http_server.routes["/f"] = (200, BODY, {"range_start": 0})  # ignores where we asked to start
    assert fetch(paths(http_server, "/f"), tmp_path / "f.bin").read_bytes() == BODY


def test_a_stale_part_longer_than_the_file_is_discarded(http_server, tmp_path):
    (tmp_path / "f.bin.part").write_bytes(BODY + b"stale tail")
    http_server.routes["/f"] = (200, BODY, {})
    assert fetch(paths(http_server, "/f"), tmp_path / "f.bin").read_bytes() == BODY
    assert http_server.requests == [("/f", None)]


def test_a_complete_part_is_verified_and_kept_without_a_request(http_server, tmp_path):
    """The process died between the last byte and the rename: nothing is left to download."""
    (tmp_path / "f.bin.part").write_bytes(BODY)
    assert fetch(paths(http_server, "/f"), tmp_path / "f.bin").read_bytes() == BODY
    assert http_server.requests == []


# ------------------------------------------------------------------------------- slow servers, redirects


def test_a_trickling_server_ends_with_a_clear_error_in_bounded_time(http_server, tmp_path):
    http_server.routes["/slow"] = (200, BODY, {"trickle": (64, 0.02)})  # would take ~20 s
    started = time.monotonic()
    with pytest.raises(download.DownloadError, match="too slow") as err:
        fetch(paths(http_server, "/slow"), tmp_path / "f.bin", deadline=0.5, retries=3)
    assert time.monotonic() - started < 4
    assert requested(http_server) == ["/slow"]  # a slow server is not asked again
    assert "deadline" in str(err.value)
    assert not (tmp_path / "f.bin").exists()


def test_a_trickle_moves_on_to_the_backup_which_resumes_the_part(http_server, tmp_path):
    http_server.routes["/slow"] = (200, BODY, {"trickle": (512, 0.01)})
    http_server.routes["/backup"] = (200, BODY, {})
    assert fetch(paths(http_server, "/slow", "/backup"), tmp_path / "f.bin", deadline=0.3).read_bytes() == BODY
    assert http_server.requests[-1][0] == "/backup" and http_server.requests[-1][1] is not None  # resumed


def test_the_default_deadline_scales_with_the_size():
    assert download.default_deadline(0) == download.BASE_DEADLINE
    assert download.default_deadline(477_907) < 100
    assert 3600 < download.default_deadline(497_759_232) < 4 * 3600
    assert download.default_deadline(None) == download.default_deadline(download.UNKNOWN_SIZE)


def test_redirects_are_followed(http_server, tmp_path):
    http_server.routes["/old"] = (301, b"", {"location": "/new"})
    http_server.routes["/new"] = (200, BODY, {})
    assert fetch(paths(http_server, "/old"), tmp_path / "f.bin").read_bytes() == BODY


def test_a_redirect_loop_is_an_error_and_not_retried(http_server, tmp_path):
    http_server.routes["/a"] = (302, b"", {"location": "/b"})
    http_server.routes["/b"] = (302, b"", {"location": "/a"})
    with pytest.raises(download.DownloadError, match="redirect"):
        fetch(paths(http_server, "/a"), tmp_path / "f.bin", retries=3)
    assert len(http_server.requests) <= 12  # one attempt: urllib gives up on the loop, we do not retry it


def test_a_redirect_to_a_local_file_is_refused(http_server, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(BODY)
    http_server.routes["/evil"] = (302, b"", {"location": secret.as_uri()})
    with pytest.raises(download.DownloadError, match="not allowed"):
        fetch(paths(http_server, "/evil"), tmp_path / "f.bin")
    assert not (tmp_path / "f.bin").exists()


def test_server_errors_are_retried_client_errors_are_not(http_server, tmp_path):
    http_server.routes["/down"] = (503, b"", {})
    http_server.routes["/gone"] = (410, b"", {})
    with pytest.raises(download.DownloadError, match="503"):
        fetch(paths(http_server, "/down", "/gone"), tmp_path / "f.bin", retries=3)
    assert requested(http_server) == ["/down"] * 3 + ["/gone"]


def test_a_dead_port_fails_fast_with_every_url_named(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(download.DownloadError) as err:
        fetch([f"http://127.0.0.1:{port}/a", "not-a-url"], tmp_path / "f.bin")
    assert f"127.0.0.1:{port}/a" in str(err.value) and "not-a-url" in str(err.value)


# ------------------------------------------------------------------------------- bad arguments, local failures


@pytest.mark.parametrize("kw", [{"retries": 0}, {"timeout": 0}, {"deadline": -1}])
def test_bad_arguments_are_refused(tmp_path, kw):
    with pytest.raises(ValueError, match="Need retries"):
        fetch("http://127.0.0.1:9/f", tmp_path / "f.bin", **kw)


def test_no_urls_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at least one URL"):
        download.download([], tmp_path / "f.bin")


def test_an_unwritable_destination_is_a_write_error_not_a_network_error(http_server, tmp_path):
    http_server.routes["/f"] = (200, BODY, {})
    (tmp_path / "blocker").write_text("a file where a folder should be")
    with pytest.raises(files.WriteError, match="blocker"):
        fetch(paths(http_server, "/f"), tmp_path / "blocker" / "f.bin")
    assert http_server.requests == []


def test_a_destination_that_is_a_folder_is_a_write_error(http_server, tmp_path):
    (tmp_path / "f.bin").mkdir()
    with pytest.raises(files.WriteError, match="is a folder"):
        fetch(paths(http_server, "/f"), tmp_path / "f.bin")


@pytest.fixture
def small_filesystem(tmp_path):
    """A 32 KiB tmpfs (needs root and a kernel that allows the mount; skipped elsewhere)."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here: " + made.stderr.decode(errors="replace").strip())
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_stops_at_once_and_says_so(http_server, small_filesystem):
    http_server.routes["/f"] = (200, BODY, {})
    http_server.routes["/backup"] = (200, BODY, {})
    with pytest.raises(files.WriteError, match="disk is full"):
        fetch(paths(http_server, "/f", "/backup"), small_filesystem / "f.bin")
    assert requested(http_server) == ["/f"]  # another URL would not have helped
    assert not (small_filesystem / "f.bin").exists()


# ------------------------------------------------------------------------------- SIGKILL mid-download

CHILD = """
import sys
from helpers import download
download.download(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), progress=False, retries=1)
"""


def _kill_mid_download(http_server, dest: Path) -> int:
    """Start a download in a child process, SIGKILL it once some bytes are on disk; the bytes written."""
    http_server.routes["/slow"] = (200, BODY, {"trickle": (1024, 0.02)})  # ~1.2 s in all
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, http_server.url + "/slow", str(dest), DIGEST,
                              str(len(BODY))], env=env)
    part = files.part_path(dest)
    try:
        deadline = time.monotonic() + 30
        while not (part.exists() and part.stat().st_size >= 4096):
            assert child.poll() is None, "the download ended before it could be killed"
            assert time.monotonic() < deadline, "the child never started writing"
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    return part.stat().st_size


def test_sigkill_leaves_only_a_part_which_is_resumed(http_server, tmp_path):
    dest = tmp_path / "f.bin"
    written = _kill_mid_download(http_server, dest)
    assert 0 < written < len(BODY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin.part"]  # never a final file
    http_server.routes["/f"] = (200, BODY, {})
    assert fetch(paths(http_server, "/f"), dest).read_bytes() == BODY
    assert http_server.requests[-1] == ("/f", f"bytes={written}-")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_sigkill_then_a_changed_file_discards_the_part(http_server, tmp_path):
    """The part is resumed from a server that now serves other bytes: the hash catches it, a fresh copy wins."""
    dest = tmp_path / "f.bin"
    _kill_mid_download(http_server, dest)
    other = bytes(reversed(BODY))
    http_server.routes["/f"] = (200, other, {})
    new_digest = hashlib.sha256(other).hexdigest()
    assert fetch(paths(http_server, "/f"), dest, sha256=new_digest).read_bytes() == other


# ------------------------------------------------------------------------------- two processes at once


def test_two_processes_downloading_the_same_file_wait_for_each_other(http_server, tmp_path):
    """Without the lock both would append to one .part; with it the second waits and finds the file done."""
    http_server.routes["/slow"] = (200, BODY, {"trickle": (4096, 0.03)})  # ~0.5 s
    dest = tmp_path / "f.bin"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-c", CHILD, http_server.url + "/slow", str(dest), DIGEST, str(len(BODY))]
    children = [subprocess.Popen(args, env=env, stderr=subprocess.PIPE) for _ in range(2)]
    results = [(child.wait(timeout=60), child.stderr.read().decode()) for child in children]
    assert [code for code, _ in results] == [0, 0], results
    assert dest.read_bytes() == BODY and sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]
    assert requested(http_server) == ["/slow"]  # one transfer; the other process waited for it
    assert any("Waiting for another process" in err for _, err in results)


def test_the_folder_lock_can_be_taken_again_by_its_holder(tmp_path):
    with download.folder_lock(tmp_path), download.folder_lock(tmp_path):
        pass
    assert download._held_locks == {}
