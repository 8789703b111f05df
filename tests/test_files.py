"""helpers.files: a file appears complete or not at all, and failures say what went wrong."""

from __future__ import annotations

import errno
import json
import os

import pytest
import torch

from helpers import files


def test_atomic_write_text_and_json(tmp_path):
    target = tmp_path / "sub" / "a.json"
    files.atomic_write_json(target, {"x": 1, "path": tmp_path})
    assert json.loads(target.read_text()) == {"x": 1, "path": str(tmp_path)}
    assert not files.part_path(target).exists()
    files.atomic_write_text(target, "new")
    assert target.read_text() == "new"


def test_a_failing_writer_keeps_the_old_file_and_no_part(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(ZeroDivisionError):
        with files.atomic_write(target, "w") as handle:
            handle.write("half")
            raise ZeroDivisionError("the writer failed")
    assert target.read_text() == "old"
    assert not files.part_path(target).exists()


def test_atomic_save_with_torch(tmp_path):
    target = tmp_path / "t.pt"
    files.atomic_save(target, lambda handle: torch.save({"a": torch.arange(3)}, handle))
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.arange(3))


def test_disk_full_is_named(tmp_path, monkeypatch):
    target = tmp_path / "full.bin"

    def full(handle):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(files.WriteError, match="disk is full") as info:
        files.atomic_save(target, full)
    assert str(target) in str(info.value)
    assert not target.exists() and not files.part_path(target).exists()


def test_torch_disk_full_message_is_translated(tmp_path):
    def torch_style(handle):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")

    with pytest.raises(files.WriteError, match="disk is full"):
        files.atomic_save(tmp_path / "x.pt", torch_style)


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True,
                    reason="root can write into read-only folders")
def test_permission_is_named(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(files.WriteError, match="no permission"):
            files.atomic_write_text(folder / "x.txt", "x")
    finally:
        folder.chmod(0o700)


def test_writing_onto_a_folder_is_refused(tmp_path):
    with pytest.raises(files.WriteError, match="is a folder"):
        files.atomic_write_text(tmp_path, "x")


def test_a_file_where_a_folder_should_be(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(files.WriteError, match="not a folder"):
        files.atomic_write_text(tmp_path / "afile" / "x.txt", "x")


def test_commit_part(tmp_path):
    part = tmp_path / "d.bin.part"
    part.write_bytes(b"abc")
    assert files.commit_part(part, tmp_path / "d.bin").read_bytes() == b"abc"
    assert not part.exists()


def test_describe_read_error(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert "is empty (0 bytes)" in files.describe_read_error(empty, EOFError(), "a checkpoint")
    assert "No a checkpoint" not in files.describe_read_error(tmp_path / "nope", FileNotFoundError(), "checkpoint")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a zip")
    message = files.describe_read_error(junk, RuntimeError("bad zip"), "a checkpoint")
    assert "9 bytes" in message and "truncated" in message


def test_mode_is_checked(tmp_path):
    with pytest.raises(ValueError, match="whole files"):
        with files.atomic_write(tmp_path / "x", "a"):
            pass


@pytest.fixture
def small_filesystem(tmp_path):
    """A 256 KiB tmpfs (needs root and a kernel that allows the mount; skipped elsewhere)."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here: " + made.stderr.decode(errors="replace").strip())
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_really_full_disk(small_filesystem):
    target = small_filesystem / "big.pt"
    (small_filesystem / "old.txt").write_text("kept")
    with pytest.raises(files.WriteError, match="disk is full") as info:
        files.atomic_save(target, lambda handle: torch.save(torch.zeros(200_000), handle))
    assert str(target) in str(info.value)
    assert sorted(p.name for p in small_filesystem.iterdir()) == ["old.txt"]  # no .part left behind
    files.atomic_write_text(small_filesystem / "small.txt", "fits")              # space came back
    assert (small_filesystem / "small.txt").read_text() == "fits"


def test_write_errors_read_cleanly(tmp_path):
    message = str(files.explain_write_error(tmp_path / "x.pt", OSError(errno.ENOSPC, "No space left on device")))
    assert message.startswith(f"Could not write {tmp_path / 'x.pt'}: the disk is full")
    assert "[Errno" not in message.split("(")[0]  # the words come first, not an errno prefix
    assert files.explain_write_error(tmp_path, OSError(errno.ENOSPC, "x")).errno == errno.ENOSPC


@pytest.mark.parametrize("content, match", [
    (None, "does not exist"),
    (b"", "is empty"),
    (b'{"cut": ', "could not be read"),
    (b"\xff\xfe\x00", "could not be read"),
], ids=["missing", "empty", "truncated", "binary"])
def test_read_json_names_the_path_and_the_cause(tmp_path, content, match):
    path = tmp_path / "settings.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(files.ReadError, match=match) as info:
        files.read_json(path, "the settings")
    assert str(path) in str(info.value) and "the settings" in str(info.value)


def test_read_json_of_a_folder(tmp_path):
    with pytest.raises(files.ReadError, match="is a folder"):
        files.read_json(tmp_path)
