"""Fault injection for the lecture data: bad archives, bad books, bad caches, and `python -m helpers prefetch`.

Crafted zip archives (bombs by declared and by actual size, zip slip, missing or damaged members)
and a loopback server (never the internet) that serves error pages, broken zips and cut-off books.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import struct
import zipfile
from pathlib import Path

import pytest

from helpers import __main__ as cli
from helpers import data, download, files

MEMBER = b"ham\tOk lar... Joking wif u oni...\n" * 2000  # stands in for SMSSpamCollection
MEMBER_DIGEST = hashlib.sha256(MEMBER).hexdigest()
MIRROR = Path(os.environ["LECTURES_MIRROR"]) if os.environ.get("LECTURES_MIRROR") else None
HTML = b"<!DOCTYPE html><html><body><h1>Temporarily unavailable</h1></body></html>"


def make_zip(members: dict, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return buf.getvalue()


def set_declared_size(archive: bytes, size: int) -> bytes:
    """The same zip (one member), with its declared uncompressed size changed in both headers."""
    raw = bytearray(archive)
    local = raw.index(b"PK\x03\x04")
    central = raw.index(b"PK\x01\x02")
    raw[local + 22 : local + 26] = struct.pack("<I", size)
    raw[central + 24 : central + 28] = struct.pack("<I", size)
    return bytes(raw)


def patch_central(archive: bytes, offset: int, fmt: str, value: int) -> bytes:
    """Change one field of the first central-directory entry (and the same field of the local header)."""
    raw = bytearray(archive)
    central = raw.index(b"PK\x01\x02")
    local = raw.index(b"PK\x03\x04")
    width = struct.calcsize(fmt)
    raw[central + offset : central + offset + width] = struct.pack(fmt, value)
    raw[local + offset - 2 : local + offset - 2 + width] = struct.pack(fmt, value)  # local fields sit 2 earlier
    return bytes(raw)


def tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# ------------------------------------------------------------------------------- safe_extract


def test_zip_bomb_by_declared_size_is_refused_before_writing(tmp_path):
    archive = tmp_path / "bomb.zip"
    archive.write_bytes(make_zip({"SMS": bytes(30_000_000)}))  # 30 MB of zeros, ~30 kB compressed
    assert archive.stat().st_size < 100_000
    with pytest.raises(download.IntegrityError, match="30,000,000 bytes, expected 477,907"):
        data.safe_extract(archive, tmp_path / "out", ["SMS"], sizes={"SMS": 477_907})
    with pytest.raises(download.IntegrityError, match="zip bomb"):
        data.safe_extract(archive, tmp_path / "out", max_bytes=1_000_000)
    assert tree(tmp_path / "out") == []  # not even a .part file


def test_a_lying_huge_declared_size_is_refused_too(tmp_path):
    archive = tmp_path / "liar.zip"
    archive.write_bytes(set_declared_size(make_zip({"SMS": b"small"}), 300_000_000))
    with pytest.raises(download.IntegrityError, match="300,000,000 bytes, expected 5"):
        data.safe_extract(archive, tmp_path / "out", sizes={"SMS": 5})
    with pytest.raises(download.IntegrityError, match="zip bomb"):
        data.safe_extract(archive, tmp_path / "out", max_bytes=10_000_000)
    assert tree(tmp_path / "out") == []


def test_zip_bomb_by_actual_size_stops_at_the_declared_size(tmp_path):
    """The header says 1,000 bytes but the data inflates to 20 MB: writing stops, nothing is kept."""
    archive = tmp_path / "bomb.zip"
    archive.write_bytes(set_declared_size(make_zip({"SMS": bytes(20_000_000)}), 1000))
    with pytest.raises(download.IntegrityError, match="SMS"):
        data.safe_extract(archive, tmp_path / "out", ["SMS"], sizes={"SMS": 1000})
    assert tree(tmp_path / "out") == []


@pytest.mark.parametrize("name", ["../escape.txt", "/tmp/absolute.txt", "a/../../escape.txt"])
def test_zip_slip_names_are_refused_before_writing(tmp_path, name):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(make_zip({"fine.txt": b"ok", name: b"bad"}))
    with pytest.raises(download.IntegrityError, match="outside"):
        data.safe_extract(archive, tmp_path / "out")
    assert tree(tmp_path / "out") == [] and not (tmp_path / "escape.txt").exists()


def test_a_missing_member_names_what_the_archive_holds(tmp_path):
    archive = tmp_path / "other.zip"
    archive.write_bytes(make_zip({"readme.txt": b"hello"}))
    with pytest.raises(download.IntegrityError, match=r"holds no 'SMS' \(it holds: readme.txt\)"):
        data.safe_extract(archive, tmp_path / "out", ["SMS"])


@pytest.mark.parametrize("content", [HTML, b"", b"PK\x03\x04 truncated"], ids=["html", "empty", "garbage"])
def test_not_a_zip_is_an_integrity_error(tmp_path, content):
    archive = tmp_path / "x.zip"
    archive.write_bytes(content)
    with pytest.raises(download.IntegrityError, match="not a zip archive"):
        data.safe_extract(archive, tmp_path / "out")


def test_a_zip_cut_short_is_an_integrity_error(tmp_path):
    archive = tmp_path / "cut.zip"
    archive.write_bytes(make_zip({"SMS": MEMBER})[:-200])
    with pytest.raises(download.IntegrityError):
        data.safe_extract(archive, tmp_path / "out")
    assert tree(tmp_path / "out") == []


def test_damaged_member_data_is_an_integrity_error(tmp_path):
    raw = bytearray(make_zip({"SMS": MEMBER}))
    middle = raw.index(b"PK\x01\x02") // 2
    raw[middle : middle + 8] = bytes(8)
    archive = tmp_path / "damaged.zip"
    archive.write_bytes(bytes(raw))
    with pytest.raises(download.IntegrityError, match="could not be unpacked"):
        data.safe_extract(archive, tmp_path / "out")
    assert tree(tmp_path / "out") == []


@pytest.mark.parametrize("field", ["encrypted", "unknown compression"])
def test_members_we_cannot_read_are_integrity_errors(tmp_path, field):
    raw = make_zip({"SMS": MEMBER})
    raw = patch_central(raw, 8, "<H", 0x1) if field == "encrypted" else patch_central(raw, 10, "<H", 99)
    archive = tmp_path / "odd.zip"
    archive.write_bytes(raw)
    with pytest.raises(download.IntegrityError, match="could not be unpacked"):
        data.safe_extract(archive, tmp_path / "out")


def test_a_missing_archive_is_a_read_error(tmp_path):
    with pytest.raises(files.ReadError, match="does not exist"):
        data.safe_extract(tmp_path / "nope.zip", tmp_path / "out")


# ------------------------------------------------------------------------------- the zipped SMS data


@pytest.fixture
def offline_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("LECTURES_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LECTURES_MIRROR", raising=False)
    monkeypatch.setattr(download.time, "sleep", lambda s: None)
    return tmp_path / "cache" / "data"


@pytest.fixture
def spam_entry(monkeypatch, http_server):
    entry = data.DataFile("spam", "SMS", (http_server.url + "/first.zip", http_server.url + "/backup.zip"),
                          MEMBER_DIGEST, len(MEMBER), "the SMS test data", "none", zip_member="SMS",
                          max_bytes=200_000)
    monkeypatch.setitem(data.REGISTRY, "spam", entry)
    http_server.routes["/backup.zip"] = (200, make_zip({"SMS": MEMBER, "readme": b"x"}), {})
    return entry


GOOD_ZIP = make_zip({"SMS": MEMBER, "readme": b"x"})


@pytest.mark.parametrize("first", [
    (200, HTML, {"content_type": "text/html"}),                          # an error page with 200
    (200, GOOD_ZIP[:-300], {}),                                          # a zip cut short
    (200, GOOD_ZIP, {"no_length": True, "truncate_to": len(GOOD_ZIP) // 2}),  # cut, no Content-Length
    (200, make_zip({"readme": b"x"}), {}),                               # the member is missing
    (200, make_zip({"SMS": MEMBER.replace(b"ham", b"spa")}), {}),        # the member's bytes are wrong
    (200, make_zip({"SMS": MEMBER + b"extra"}), {}),                     # the member's size is wrong
    (200, make_zip({"SMS": bytes(3_000_000)}), {}),                      # a zip bomb (declares 3 MB)
    (200, make_zip({"../SMS": MEMBER}), {}),                             # zip slip
    (200, bytes(range(256)) * 1200, {"no_length": True}),              # far too long, no Content-Length
    (404, b"", {}),
], ids=["html", "cut-zip", "cut-no-length", "no-member", "wrong-bytes", "wrong-size", "bomb", "slip",
        "too-long", "404"])
def test_a_bad_first_archive_moves_on_to_the_backup(http_server, offline_cache, spam_entry, first):
    http_server.routes["/first.zip"] = first
    path = data.fetch("spam", progress=False)
    assert path.read_bytes() == MEMBER
    assert [r[0] for r in http_server.requests][-1] == "/backup.zip"
    assert tree(offline_cache) == ["SMS"]  # no zip, no staging folder, no .part


def test_when_every_archive_is_bad_the_error_lists_each_and_nothing_is_left(http_server, offline_cache,
                                                                           spam_entry):
    http_server.routes["/first.zip"] = (200, HTML, {})
    http_server.routes["/backup.zip"] = (200, make_zip({"readme": b"x"}), {})
    with pytest.raises(download.DownloadError) as err:
        data.fetch("spam", progress=False)
    message = str(err.value)
    assert "not a zip archive" in message and "holds no 'SMS'" in message and "the SMS test data" in message
    assert tree(offline_cache) == []


def test_a_damaged_cached_member_is_replaced(http_server, offline_cache, spam_entry):
    offline_cache.mkdir(parents=True)
    (offline_cache / "SMS").write_bytes(MEMBER[:-10])
    http_server.routes["/first.zip"] = (200, GOOD_ZIP, {})
    assert data.fetch("spam", progress=False).read_bytes() == MEMBER


def test_the_real_sms_entry_tries_its_backup_after_an_error_page(http_server, offline_cache, monkeypatch):
    """The registry's own entry (pinned hash of the file inside the zip), its URLs pointed at the loopback."""
    if MIRROR is None or not (MIRROR / "SMSSpamCollection").is_file():
        pytest.skip("needs the offline copy of SMSSpamCollection (LECTURES_MIRROR)")
    real = (MIRROR / "SMSSpamCollection").read_bytes()
    entry = data.REGISTRY["sms-spam"]
    assert entry.max_bytes is not None and entry.max_bytes < 10_000_000
    monkeypatch.setitem(data.REGISTRY, "sms-spam", dataclasses.replace(
        entry, urls=(http_server.url + "/uci.zip", http_server.url + "/backblaze.zip")))
    http_server.routes["/uci.zip"] = (200, HTML, {"content_type": "text/html"})
    http_server.routes["/backblaze.zip"] = (200, make_zip({"SMSSpamCollection": real, "readme": b"x"}), {})
    path = data.fetch("sms-spam", progress=False)
    download.verify_file(path, entry.sha256, entry.size)
    assert [r[0] for r in http_server.requests] == ["/uci.zip"] * 3 + ["/backblaze.zip"]


# ------------------------------------------------------------------------------- Project Gutenberg books

BOOK = ("\ufeffThe Project Gutenberg eBook of A Test Book\r\n\r\n"
        "*** START OF THE PROJECT GUTENBERG EBOOK A TEST BOOK ***\r\n"
        + "It was a dark and stormy night; the rain fell in torrents.\r\n" * 1500
        + "*** END OF THE PROJECT GUTENBERG EBOOK A TEST BOOK ***\r\n"
        "Licence text.\r\n").encode("utf-8")


@pytest.fixture
def book_entry(monkeypatch, http_server):
    entry = data.DataFile("book-test", "pg0.txt", (http_server.url + "/cache/pg0.txt", http_server.url + "/pg0.txt"),
                          None, None, "a test book", "pd", check=data.gutenberg_problem,
                          max_bytes=data.BOOK_MAX_BYTES)
    monkeypatch.setitem(data.REGISTRY, "book-test", entry)
    http_server.routes["/pg0.txt"] = (200, BOOK, {})
    return entry


def test_a_good_book_passes(tmp_path):
    (tmp_path / "b.txt").write_bytes(BOOK)
    assert data.gutenberg_problem(tmp_path / "b.txt") is None


@pytest.mark.parametrize("content, problem", [
    (HTML * 1000, "HTML page"),
    (BOOK[: len(BOOK) // 2], "cut short"),
    (BOOK.replace(b"*** START", b"*** BEGIN"), "START"),
    (BOOK[:20_000], "between 50,000"),
    (BOOK.replace(b"dark", b"\xff\xfe\xfd\xfc"), "not UTF-8"),
    (BOOK * 250, "between 50,000"),
], ids=["html", "cut-short", "no-start", "too-small", "not-utf8", "too-big"])
def test_bad_books_are_named(tmp_path, content, problem):
    (tmp_path / "b.txt").write_bytes(content)
    assert problem in data.gutenberg_problem(tmp_path / "b.txt")


@pytest.mark.parametrize("first", [
    (200, HTML * 1000, {"content_type": "text/html"}),
    (200, BOOK, {"no_length": True, "truncate_to": len(BOOK) - 2000}),
], ids=["html-200", "cut-short-no-length"])
def test_a_bad_book_download_moves_on_to_the_next_url(http_server, offline_cache, book_entry, first):
    http_server.routes["/cache/pg0.txt"] = first
    path = data.fetch("book-test", progress=False)
    assert path.read_bytes() == BOOK
    assert tree(offline_cache) == ["pg0.txt"]  # no .sha256 sidecar, no .part


def test_an_error_page_is_never_accepted_as_a_book(http_server, offline_cache, book_entry):
    http_server.routes["/cache/pg0.txt"] = (200, HTML * 1000, {})
    http_server.routes["/pg0.txt"] = (200, HTML * 1000, {})
    with pytest.raises(download.DownloadError, match="HTML page"):
        data.fetch("book-test", progress=False)
    assert tree(offline_cache) == []


def test_a_cached_error_page_recorded_by_an_old_version_is_replaced(http_server, offline_cache, book_entry):
    """Earlier versions recorded the first download's hash beside it and trusted it forever."""
    offline_cache.mkdir(parents=True)
    (offline_cache / "pg0.txt").write_bytes(HTML * 1000)
    (offline_cache / "pg0.txt.sha256").write_text(hashlib.sha256(HTML * 1000).hexdigest() + "\n")
    assert data.fetch("book-test", progress=False).read_bytes() == BOOK
    assert tree(offline_cache) == ["pg0.txt"]


def test_a_cached_book_that_was_cut_short_is_replaced(http_server, offline_cache, book_entry):
    offline_cache.mkdir(parents=True)
    (offline_cache / "pg0.txt").write_bytes(BOOK[:-3000])
    assert data.fetch("book-test", progress=False).read_bytes() == BOOK


def test_a_bad_mirror_book_is_ignored_with_a_warning(http_server, monkeypatch, offline_cache, book_entry, tmp_path):
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "pg0.txt").write_bytes(BOOK[:-3000])
    monkeypatch.setenv("LECTURES_MIRROR", str(tmp_path / "mirror"))
    with pytest.warns(UserWarning, match="cut short"):
        assert data.fetch("book-test", progress=False).read_bytes() == BOOK


def test_every_registered_book_is_content_checked():
    for name in data.GUTENBERG_BOOKS:
        entry = data.REGISTRY[name]
        assert entry.sha256 is None and entry.check is data.gutenberg_problem and entry.max_bytes


# ------------------------------------------------------------------------------- the cache itself


def test_a_cached_file_that_is_a_folder_is_a_clear_write_error(offline_cache, spam_entry):
    (offline_cache / "SMS").mkdir(parents=True)
    with pytest.raises(files.WriteError, match="is a folder"):
        data.fetch("spam", progress=False)


def test_a_cache_path_that_is_a_file_is_a_clear_write_error(monkeypatch, tmp_path):
    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv("LECTURES_CACHE", str(tmp_path / "cache"))
    with pytest.raises((files.WriteError, FileExistsError, NotADirectoryError), match="cache"):
        data.data_dir()


# ------------------------------------------------------------------------------- python -m helpers prefetch


def test_prefetch_reports_each_failure_in_one_line_and_goes_on(http_server, offline_cache, spam_entry, book_entry,
                                                               capsys):
    http_server.routes["/first.zip"] = (200, HTML, {})
    http_server.routes["/backup.zip"] = (200, HTML, {})  # spam: every URL bad
    status = cli.main(["prefetch", "--data", "spam", "no-such-file", "book-test", "--gpt2", "none", "9000M"])
    out = capsys.readouterr().out
    lines = {line.split()[0] if not line.startswith("  GPT-2") else "gpt2": line for line in out.splitlines()
             if line.startswith("  ")}
    assert status == 1
    assert "FAILED: DownloadError" in lines["spam"] and "not a zip archive" in lines["spam"]
    assert "FAILED: KeyError" in lines["no-such-file"]
    assert "FAILED" not in lines["book-test"] and (offline_cache / "pg0.txt").read_bytes() == BOOK  # went on
    assert "FAILED: ValueError: Unknown GPT-2 size '9000M'" in lines["gpt2"]
    assert "3 item(s) failed" in out
    assert "Traceback" not in out


def test_prefetch_succeeds_with_status_zero(http_server, offline_cache, book_entry, capsys):
    assert cli.main(["prefetch", "--data", "book-test", "--gpt2"]) == 0
    assert "FAILED" not in capsys.readouterr().out


@pytest.fixture
def small_filesystem(tmp_path):
    """A 32 KiB tmpfs (needs root and a kernel that allows the mount; skipped elsewhere)."""
    import subprocess

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


def test_a_full_disk_while_unpacking_is_a_write_error(http_server, monkeypatch, small_filesystem, spam_entry):
    """The zip (1 kB) fits, its member (68 kB) does not: the error says so and nothing half-written stays."""
    monkeypatch.setenv("LECTURES_CACHE", str(small_filesystem))
    monkeypatch.delenv("LECTURES_MIRROR", raising=False)
    http_server.routes["/first.zip"] = (200, GOOD_ZIP, {})
    with pytest.raises(files.WriteError, match="disk is full"):
        data.fetch("spam", progress=False)
    assert [r[0] for r in http_server.requests] == ["/first.zip"]  # not retried elsewhere
    assert tree(small_filesystem / "data") == []


def test_offline_the_message_says_so_and_what_to_do(monkeypatch, offline_cache, spam_entry):
    """No name can be looked up: one line per URL (attempts merged), the diagnosis, and where a copy goes."""
    import socket
    import urllib.error

    def no_dns(request, timeout=None):
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(download.urllib.request, "urlopen", no_dns)
    with pytest.raises(download.DownloadError) as err:
        data.fetch("spam", progress=False)
    message = str(err.value)
    assert err.value.offline and download.OFFLINE_HINT in message
    assert message.count("(attempts 1-3): <urlopen error [Errno -2] Name or service not known>") == 2
    assert f"take SMS out of the zip, and copy it into {offline_cache}" in message and MEMBER_DIGEST in message
    assert ".zip," not in message  # no advice to put the zip itself somewhere
