"""The downloader and the data registry, against a loopback HTTP server (never the internet)."""

import hashlib
import io
import zipfile

import pytest

from helpers import data, download

BODY = b"The Verdict, by Edith Wharton. " * 2000
DIGEST = hashlib.sha256(BODY).hexdigest()


def fast(urls, dest, **kw):
    kw.setdefault("sha256", DIGEST)
    kw.setdefault("size", len(BODY))
    return download.download(urls, dest, retries=2, backoff=0.0, progress=False, timeout=5, **kw)


def test_good_file(http_server, tmp_path):
    http_server.routes["/f"] = (200, BODY, {})
    path = fast(http_server.url + "/f", tmp_path / "f.txt")
    assert path.read_bytes() == BODY
    assert not (tmp_path / "f.txt.part").exists()


def test_cached_valid_file_is_not_downloaded_again(http_server, tmp_path):
    (tmp_path / "f.txt").write_bytes(BODY)
    fast(http_server.url + "/f", tmp_path / "f.txt")
    assert http_server.requests == []


def test_wrong_bytes_are_never_kept(http_server, tmp_path):
    http_server.routes["/f"] = (200, BODY.replace(b"Verdict", b"Verdikt"), {})
    with pytest.raises(download.DownloadError) as err:
        fast(http_server.url + "/f", tmp_path / "f.txt")
    assert "SHA-256" in str(err.value) and "/f" in str(err.value)
    assert "LECTURES_MIRROR" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_truncated_body_is_resumed(http_server, tmp_path):
    http_server.routes["/f"] = (200, BODY, {"truncate_to": 10_000})
    with pytest.raises(download.DownloadError, match="f.txt"):
        download.download(http_server.url + "/f", tmp_path / "f.txt", DIGEST, len(BODY),
                          retries=1, backoff=0, progress=False, timeout=5)
    part = tmp_path / "f.txt.part"
    assert part.stat().st_size == 10_000 and not (tmp_path / "f.txt").exists()
    http_server.routes["/f"] = (200, BODY, {})
    fast(http_server.url + "/f", tmp_path / "f.txt")
    assert (tmp_path / "f.txt").read_bytes() == BODY
    assert http_server.requests[-1] == ("/f", "bytes=10000-")


def test_server_without_ranges_restarts_from_zero(http_server, tmp_path):
    (tmp_path / "f.txt.part").write_bytes(b"garbage that is not a prefix")
    http_server.routes["/f"] = (200, BODY, {"ranges": False})
    assert fast(http_server.url + "/f", tmp_path / "f.txt").read_bytes() == BODY


def test_404_then_backup(http_server, tmp_path):
    http_server.routes["/backup/f"] = (200, BODY, {})
    path = fast([http_server.url + "/missing", http_server.url + "/backup/f"], tmp_path / "f.txt")
    assert path.read_bytes() == BODY
    # a 404 is not retried: one request to the missing URL, then the backup
    assert [r[0] for r in http_server.requests] == ["/missing", "/backup/f"]


def test_all_sources_fail_names_every_url(http_server, tmp_path):
    with pytest.raises(download.DownloadError) as err:
        fast([http_server.url + "/a", http_server.url + "/b"], tmp_path / "f.txt")
    msg = str(err.value)
    assert "/a" in msg and "/b" in msg and "404" in msg and str(tmp_path / "f.txt") in msg


# ------------------------------------------------------------------------------------ registry


@pytest.fixture
def fake_entry(monkeypatch, http_server):
    entry = data.DataFile("fake", "fake.txt", (http_server.url + "/fake.txt",), DIGEST, len(BODY), "a test file", "none")
    monkeypatch.setitem(data.REGISTRY, "fake", entry)
    return entry


def test_fetch_uses_mirror_before_network(monkeypatch, tmp_path, http_server, fake_entry):
    monkeypatch.setenv("LECTURES_CACHE", str(tmp_path / "cache"))
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "fake.txt").write_bytes(BODY)
    monkeypatch.setenv("LECTURES_MIRROR", str(tmp_path / "mirror"))
    path = data.fetch("fake", progress=False)
    assert path == tmp_path / "cache" / "data" / "fake.txt" and path.read_bytes() == BODY
    assert http_server.requests == []


def test_fetch_ignores_corrupt_mirror_and_cache(monkeypatch, tmp_path, http_server, fake_entry):
    monkeypatch.setenv("LECTURES_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "data").mkdir(parents=True)
    (tmp_path / "cache" / "data" / "fake.txt").write_bytes(b"corrupt")
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "fake.txt").write_bytes(b"also corrupt")
    monkeypatch.setenv("LECTURES_MIRROR", str(tmp_path / "mirror"))
    http_server.routes["/fake.txt"] = (200, BODY, {})
    with pytest.warns(UserWarning, match="does not match"):
        path = data.fetch("fake", progress=False)
    assert path.read_bytes() == BODY


def test_fetch_error_says_where_to_put_a_copy(monkeypatch, tmp_path, fake_entry):
    monkeypatch.setenv("LECTURES_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LECTURES_MIRROR", raising=False)
    monkeypatch.setattr(download.time, "sleep", lambda s: None)
    with pytest.raises(download.DownloadError) as err:
        data.fetch("fake", progress=False)
    assert "a test file" in str(err.value) and str(tmp_path / "cache" / "data") in str(err.value)


def _zip(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return buf.getvalue()


def test_fetch_zip_member_with_backup(monkeypatch, tmp_path, http_server):
    entry = data.DataFile("z", "inner.txt", (http_server.url + "/gone.zip", http_server.url + "/b.zip"),
                          DIGEST, len(BODY), "zipped", "none", zip_member="inner.txt")
    monkeypatch.setitem(data.REGISTRY, "z", entry)
    monkeypatch.setenv("LECTURES_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LECTURES_MIRROR", raising=False)
    http_server.routes["/b.zip"] = (200, _zip({"inner.txt": BODY, "readme.txt": b"x"}), {})
    path = data.fetch("z", progress=False)
    assert path.read_bytes() == BODY
    assert sorted(p.name for p in path.parent.iterdir()) == ["inner.txt"]  # zip and staging removed


def test_safe_extract_refuses_zip_slip(tmp_path):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(_zip({"ok.txt": b"fine", "../escape.txt": b"bad"}))
    with pytest.raises(ValueError, match="outside"):
        data.safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out" / "ok.txt").exists()
    assert [p.name for p in data.safe_extract(archive, tmp_path / "out", ["ok.txt"])] == ["ok.txt"]

    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ok.txt"]  # no .part file left


def test_copy_verified_is_atomic(tmp_path):
    src = tmp_path / "src.txt"
    src.write_bytes(BODY)
    dest = download.copy_verified(src, tmp_path / "sub" / "dest.txt", DIGEST, len(BODY))
    assert dest.read_bytes() == BODY and sorted(p.name for p in dest.parent.iterdir()) == ["dest.txt"]
    with pytest.raises(download.IntegrityError):
        download.copy_verified(src, tmp_path / "other.txt", "0" * 64)
    assert not (tmp_path / "other.txt").exists() and not (tmp_path / "other.txt.part").exists()


def test_unknown_name():
    with pytest.raises(KeyError, match="the-verdict"):
        data.fetch("the-verdikt")


def test_unpinned_file_is_checked_by_its_content_every_time(monkeypatch, tmp_path, http_server):
    """No hash is recorded from a first download (it could be an error page); the content check decides."""
    def check(path):
        return None if path.read_bytes().startswith(b"The Verdict") else "not the book"

    entry = data.DataFile("book", "book.txt", (http_server.url + "/book.txt",), None, None, "a book", "pd",
                          check=check)
    monkeypatch.setitem(data.REGISTRY, "book", entry)
    monkeypatch.setenv("LECTURES_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LECTURES_MIRROR", raising=False)
    monkeypatch.setattr(download.time, "sleep", lambda s: None)
    http_server.routes["/book.txt"] = (200, BODY, {})
    path = data.fetch("book", progress=False)
    assert sorted(p.name for p in path.parent.iterdir()) == ["book.txt"]  # no .sha256 sidecar
    path.write_bytes(b"tampered " + BODY)  # a cached copy that fails the check is fetched again
    http_server.requests.clear()
    assert data.fetch("book", progress=False).read_bytes() == BODY
    assert [r[0] for r in http_server.requests] == ["/book.txt"]
    http_server.routes["/book.txt"] = (200, b"<html>error</html>", {})
    path.unlink()
    with pytest.raises(download.DownloadError, match="not the book"):
        data.fetch("book", progress=False)


def test_strip_gutenberg_and_corpus(monkeypatch):
    book = ("Title page\r\n*** START OF THE PROJECT GUTENBERG EBOOK ALICE ***\r\nDown the rabbit hole.\r\n"
            "*** END OF THE PROJECT GUTENBERG EBOOK ALICE ***\r\nLicence text")
    assert data.strip_gutenberg(book) == "Down the rabbit hole."
    assert data.strip_gutenberg("no markers") == "no markers"
    monkeypatch.setattr(data, "read_text", lambda name: book if name == "book-alice" else "The Verdict.")
    assert data.read_corpus(["the-verdict", "book-alice"]) == "The Verdict.<|endoftext|>Down the rabbit hole."


@pytest.mark.parametrize("name", data.LECTURE_DATA)
def test_registry_files_verify(name):
    """Each lecture file is reachable offline (mirror or cache) and matches its SHA-256."""
    entry = data.REGISTRY[name]
    path = data.fetch(name, progress=False)
    download.verify_file(path, entry.sha256, entry.size)
