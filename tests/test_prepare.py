"""``python -m helpers.prepare``: text files to token shards, exactly tiktoken's ids, resumable, with clear errors."""

import io
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest

from helpers import data, prepare
from helpers.files import WriteError
from helpers.shards import MANIFEST, read_manifest
from helpers.tokenizer import END_OF_TEXT_ID, get_tokenizer

VERDICT = (Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "the-verdict.txt")
UNICODE = ("Ein Bär läuft über die Straße.\n東京は日本の首都です。\n\u3000全角スペース\nx\u00a0\ny  two  spaces\n\n\n"
           "three\r\nlines\r\n end \n\tTab\n's it's don't\n123\n456 ab\u2028\ncd\u0085\nef\n😀\n😀 ok <|endoftext|> as text\n")
FAST = {"workers": 1, "progress": False, "log": lambda message: None}
ENCODE_PIECE = prepare.encode_piece


def verdict_text() -> str:
    return VERDICT.read_text(encoding="utf-8") if VERDICT.is_file() else data.read_text("the-verdict")


def make_corpus(folder: Path, files: int = 8) -> Path:
    """A few small documents from The Verdict's paragraphs, reshuffled, plus a Unicode one and an empty one."""
    paragraphs = verdict_text().split("\n\n")
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        chosen = rng.sample(paragraphs, 12)
        (folder / f"part-{i:02d}.txt").write_text("\n\n".join(chosen), encoding="utf-8")
    (folder / "unicode.txt").write_text(UNICODE * 20, encoding="utf-8")
    (folder / "empty.txt").write_text("", encoding="utf-8")
    (folder / "notes.md").write_text("not a .txt file, so not part of the corpus", encoding="utf-8")
    return folder


def documents(manifest: dict) -> list[str]:
    """The text of every document, in order, by the documented rules (files, cut at blank lines after doc_bytes)."""
    texts = []
    for source in manifest["sources"]:
        raw = Path(source["path"]).read_bytes()
        ranges = [(0, len(raw))] if source["strip_gutenberg"] else \
            prepare.find_documents(source["path"], len(raw), manifest["settings"]["doc_bytes"])
        assert len(ranges) == source["documents"]
        for start, end in ranges:
            text = raw[start:end].decode("utf-8")
            texts.append(data.strip_gutenberg(text) if source["strip_gutenberg"] else text)
    return texts


def stream(folder: Path, split: str) -> np.ndarray:
    manifest = read_manifest(folder)
    parts = [np.fromfile(folder / s["file"], dtype="<u2") for s in manifest["shards"] if s["split"] == split]
    return np.concatenate(parts) if parts else np.zeros(0, dtype="<u2")


# ------------------------------------------------------------------------------------------ tokenizing in pieces


def test_safe_cuts_give_the_ids_of_the_whole_text():
    """Cutting at every place SAFE_CUT accepts and tokenizing the pieces gives exactly the ids of the whole text."""
    encoding = get_tokenizer()
    rng = random.Random(1)
    soup = [*"abc XYZ\n\n \t'sdmlvr12,.!?-\r", "é", "東", "😀", "\u00a0", "\u3000", "\u2028", "\u0085", "e\u0301", "ß"]
    texts = [verdict_text(), UNICODE] + ["".join(rng.choice(soup) for _ in range(2000)) for _ in range(30)]
    total = 0
    for text in texts:
        raw = text.encode()
        cuts = [m.start() for m in prepare.SAFE_CUT.finditer(raw) if prepare._is_safe(raw, m.start())]
        bounds = [0, *cuts, len(raw)]
        pieces = [encoding.encode_ordinary(raw[a:b].decode()) for a, b in zip(bounds, bounds[1:], strict=False)]
        assert [i for piece in pieces for i in piece] == encoding.encode_ordinary(text)
        total += len(cuts)
    assert total > 3000  # prose has a safe place every few bytes


def test_safe_cut_looks_ahead_and_forces_a_cut_only_without_a_safe_place():
    text = b"aaaa bbbb"
    assert prepare.safe_cut(io.BytesIO(text), 2, 0, len(text)) == (4, False)  # before " bbbb"
    assert prepare.safe_cut(io.BytesIO(text), 5, 0, len(text)) == (len(text), False)  # none left: the end
    long = "東" * (prepare.SEARCH_LIMIT // 3 + 10) + "\n" + "x" * 10
    raw = long.encode()
    cut, forced = prepare.safe_cut(io.BytesIO(raw), 4, 0, len(raw))  # inside a character, nothing safe within 1 MB
    assert forced and cut == 6 and raw[:cut].decode() == "東東"


def test_large_files_are_cut_into_documents_at_blank_lines(tmp_path):
    text = "\n\n".join(f"Paragraph {i}: " + "word " * random.Random(i).randint(5, 60) for i in range(300))
    path = tmp_path / "big.txt"
    path.write_text(text)
    ranges = prepare.find_documents(path, path.stat().st_size, 1000)
    raw = path.read_bytes()
    assert ranges[0][0] == 0 and ranges[-1][1] == len(raw)
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))  # they tile the file
    for start, end in ranges[:-1]:
        assert end - start >= 1000 and raw[start:end].endswith(b"\n\n")
        assert b"\n\n" not in raw[start + 1000 : end - 2]  # the first blank line after 1000 bytes
    assert prepare.find_documents(path, len(raw), 10**9) == [(0, len(raw))]


def test_validation_documents_are_a_seeded_choice():
    first = prepare.choose_validation(50, 0.1, seed=1)
    assert first.sum() == 5 and np.array_equal(first, prepare.choose_validation(50, 0.1, seed=1))
    assert not np.array_equal(first, prepare.choose_validation(50, 0.1, seed=2))
    assert prepare.choose_validation(3, 0.1, seed=1).sum() == 1  # at least one ...
    assert prepare.choose_validation(2, 0.9, seed=1).sum() == 1  # ... and at least one left for training
    assert prepare.choose_validation(1, 0.0, seed=1).sum() == 0
    with pytest.raises(prepare.PrepareError, match="too few to split"):
        prepare.choose_validation(1, 0.1, seed=1)


# ------------------------------------------------------------------------------------------ round trips


def test_shards_hold_each_documents_ids_then_end_of_text(tmp_path):
    """The ids in the shards, split by split, are tiktoken's ids of each document followed by 50256, in order."""
    corpus = make_corpus(tmp_path / "corpus")
    big = tmp_path / "big.txt"  # a single large file: several documents
    big.write_text("\n\n".join(verdict_text().split("\n\n")[::-1]) * 3, encoding="utf-8")
    manifest = prepare.prepare([str(corpus), str(big)], tmp_path / "out", doc_mb=0.02, shard_mb=0.01,
                               piece_kb=1, val_fraction=0.2, **FAST)
    assert manifest["complete"] and manifest["tokenizer"] == {"name": "gpt2", "vocab_size": 50257, "end_of_text": 50256}
    assert [Path(s["path"]).name for s in manifest["sources"]] == [
        "empty.txt", *(f"part-{i:02d}.txt" for i in range(8)), "unicode.txt", "big.txt"]  # sorted; no notes.md
    assert manifest["sources"][-1]["documents"] > 1 and manifest["sources"][-1]["bytes"] == big.stat().st_size
    assert manifest["sources"][-1]["sha256"] == prepare._file_sha256(big)
    assert sum(s["forced_cuts"] for s in manifest["shards"]) == 0

    texts, val = documents(manifest), set(manifest["validation_documents"])
    assert len(val) == round(0.2 * len(texts)) and manifest["documents"] == {"train": len(texts) - len(val), "val": len(val)}
    encoding = get_tokenizer()
    for split in ("train", "val"):
        ids = [encoding.encode_ordinary(t) + [END_OF_TEXT_ID] for i, t in enumerate(texts) if (i in val) == (split == "val")]
        got = stream(tmp_path / "out", split)
        assert got.tolist() == [i for doc in ids for i in doc]
        # the separators sit exactly where documents end, and nowhere else (a written "<|endoftext|>" is ordinary text)
        assert np.flatnonzero(got == END_OF_TEXT_ID).tolist() == (np.cumsum([len(d) for d in ids]) - 1).tolist()
        assert manifest["tokens"][split] == len(got)
    shards = manifest["shards"]
    assert len(shards) > 5 and all(s["bytes"] == 2 * s["tokens"] for s in shards)
    assert all((tmp_path / "out" / s["file"]).stat().st_size == s["bytes"] for s in shards)


def test_more_workers_write_the_same_shards(tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    one = prepare.prepare([str(corpus)], tmp_path / "one", shard_mb=0.01, piece_kb=2, **FAST)
    two = prepare.prepare([str(corpus)], tmp_path / "two", shard_mb=0.01, piece_kb=2,
                          **{**FAST, "workers": 2})
    assert one["shards"] == two["shards"] and one["plan_id"] == two["plan_id"]


def test_registry_texts_and_gutenberg_books(tmp_path):
    """Registry names go through helpers.data.fetch; Gutenberg's header and footer are dropped as read_corpus does."""
    book = tmp_path / "pg1.txt"
    body = "\r\n".join(verdict_text().split("\n")[:40])
    book.write_text("The Project Gutenberg eBook\r\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\r\n" + body +
                    "\r\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\r\nlicence text\r\n", encoding="utf-8", newline="")
    manifest = prepare.prepare(["the-verdict", str(book)], tmp_path / "out", strip_gutenberg=True,
                               val_fraction=0.5, **FAST)
    assert [s["name"] for s in manifest["sources"]] == ["the-verdict", str(book)]
    encoding = get_tokenizer()
    texts = [data.strip_gutenberg(data.read_text("the-verdict")), data.strip_gutenberg(book.read_text(encoding="utf-8"))]
    assert "START OF" not in texts[1] and "licence" not in texts[1] and "\r" not in texts[1]
    streams = sorted([stream(tmp_path / "out", "train").tolist(), stream(tmp_path / "out", "val").tolist()])
    assert streams == sorted(encoding.encode_ordinary(t) + [END_OF_TEXT_ID] for t in texts)  # one document each


# ------------------------------------------------------------------------------------------ interrupted runs


def crash_after(monkeypatch, pieces: int) -> list:
    """Make encode_piece fail after ``pieces`` calls (a simulated crash); returns the list of pieces encoded."""
    real, calls = ENCODE_PIECE, []

    def encode(piece):
        if len(calls) >= pieces:
            raise RuntimeError("simulated crash")
        calls.append(piece)
        return real(piece)

    monkeypatch.setattr(prepare, "encode_piece", encode)
    return calls


def test_an_interrupted_preparation_continues_where_it_stopped(tmp_path, monkeypatch):
    corpus = make_corpus(tmp_path / "corpus")
    settings = {"shard_mb": 0.01, "piece_kb": 2}
    clean = prepare.prepare([str(corpus)], tmp_path / "clean", **settings, **FAST)

    calls = crash_after(monkeypatch, 12)
    with pytest.raises(RuntimeError, match="simulated crash"):
        prepare.prepare([str(corpus)], tmp_path / "out", **settings, **FAST)
    with pytest.raises(ValueError, match="did not finish"):
        read_manifest(tmp_path / "out")
    partial = json.loads((tmp_path / "out" / MANIFEST).read_text())
    done = [s for s in partial["shards"] if s["sha256"] is not None]
    assert 0 < len(done) < len(partial["shards"])
    assert not list((tmp_path / "out").glob("*.part"))  # the shard being written when it crashed is gone
    assert sorted(p.name for p in (tmp_path / "out").glob("*.bin")) == sorted(s["file"] for s in done)
    (tmp_path / "out" / "val-00000.bin.part").write_bytes(b"left by a killed run")
    stamps = {s["file"]: (tmp_path / "out" / s["file"]).stat().st_mtime_ns for s in done}

    calls = crash_after(monkeypatch, 10**9)
    messages = []
    again = prepare.prepare([str(corpus)], tmp_path / "out", **settings, **{**FAST, "log": messages.append})
    assert f"{len(done)} of {len(clean['shards'])} shards already written" in messages[0]
    assert again["shards"] == clean["shards"] and again["complete"]
    assert {(tmp_path / "out" / f).stat().st_mtime_ns for f in stamps} == set(stamps.values())  # not rewritten
    done_files = {s["file"] for s in done}
    redone_text = sum(s["text_bytes"] for s in clean["shards"] if s["file"] not in done_files)
    assert sum(p.end - p.start for p in calls) == redone_text  # only the unfinished shards were tokenized
    assert not list((tmp_path / "out").glob("*.part"))


def test_a_damaged_or_missing_shard_is_written_again(tmp_path, monkeypatch):
    corpus = make_corpus(tmp_path / "corpus")
    first = prepare.prepare([str(corpus)], tmp_path / "out", shard_mb=0.01, piece_kb=2, **FAST)
    damaged, missing = (tmp_path / "out" / first["shards"][1]["file"]), (tmp_path / "out" / first["shards"][3]["file"])
    raw = bytearray(damaged.read_bytes())
    raw[10] ^= 0xFF  # same size, other content
    damaged.write_bytes(bytes(raw))
    missing.unlink()
    calls, messages = crash_after(monkeypatch, 10**9), []
    again = prepare.prepare([str(corpus)], tmp_path / "out", shard_mb=0.01, piece_kb=2,
                            **{**FAST, "log": messages.append})
    assert again["shards"] == first["shards"]
    assert any(damaged.name in m and "damaged" in m for m in messages) and any(missing.name in m for m in messages)
    assert sum(p.end - p.start for p in calls) == first["shards"][1]["text_bytes"] + first["shards"][3]["text_bytes"]


def test_other_inputs_or_settings_in_the_same_folder_need_overwrite(tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    prepare.prepare([str(corpus)], tmp_path / "out", shard_mb=0.01, **FAST)
    with pytest.raises(prepare.PrepareError, match="--overwrite"):
        prepare.prepare([str(corpus)], tmp_path / "out", shard_mb=0.01, seed=7, **FAST)
    (corpus / "part-00.txt").write_text("changed text", encoding="utf-8")
    with pytest.raises(prepare.PrepareError, match="other inputs or settings"):
        prepare.prepare([str(corpus)], tmp_path / "out", shard_mb=0.01, **FAST)
    manifest = prepare.prepare([str(corpus)], tmp_path / "out", shard_mb=0.5, overwrite=True, **FAST)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.bin")) == sorted(s["file"] for s in manifest["shards"])


# ------------------------------------------------------------------------------------------ bad inputs


def test_an_empty_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(prepare.PrepareError, match="holds no files matching '\\*.txt'"):
        prepare.prepare([str(tmp_path / "empty")], tmp_path / "out", **FAST)


def test_unknown_inputs_are_refused(tmp_path):
    with pytest.raises(prepare.PrepareError, match="no file, folder, glob or name of the data registry"):
        prepare.prepare([str(tmp_path / "nothing-here")], tmp_path / "out", **FAST)
    with pytest.raises(prepare.PrepareError, match="No file matches"):
        prepare.prepare([str(tmp_path / "*.txt")], tmp_path / "out", **FAST)


def test_a_file_that_is_not_utf8_is_named_with_the_offset(tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    (corpus / "latin1.txt").write_bytes("Café au lait".encode("latin-1"))
    with pytest.raises(prepare.PrepareError, match=r"latin1.txt is not UTF-8 text: the byte 0xe9 at offset 3 "):
        prepare.prepare([str(corpus)], tmp_path / "out", **FAST)
    assert not (tmp_path / "out" / MANIFEST).exists()


def test_an_unwritable_output_folder_is_refused_before_any_work(tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(WriteError, match="a-file"):
        prepare.prepare([str(corpus)], blocker / "out", **FAST)
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(WriteError, match="no permission"):
            prepare.prepare([str(corpus)], locked / "out", **FAST)


def test_the_command_line_reports_errors_in_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert prepare.main([str(tmp_path / "empty"), "--out", str(tmp_path / "out"), "--no-progress"]) == 1
    assert capsys.readouterr().err.startswith("error: The folder")
    with pytest.raises(SystemExit) as exit_info:
        prepare.main([str(tmp_path), "--out", str(tmp_path / "out"), "--val-fraction", "1.5"])
    assert exit_info.value.code == 2 and "--val-fraction must be at least 0 and below 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        prepare.main([str(tmp_path), "--out", str(tmp_path / "out"), "--workers", "0"])
    assert "argument --workers: must be above 0" in capsys.readouterr().err


def test_the_command_line_prepares_a_corpus(tmp_path, capsys):
    corpus = make_corpus(tmp_path / "corpus")
    assert prepare.main([str(corpus / "part-0*.txt"), "--out", str(tmp_path / "out"), "--shard-mb", "0.02",
                         "--workers", "2", "--no-progress"]) == 0
    manifest = read_manifest(tmp_path / "out")
    assert len(manifest["sources"]) == 8 and manifest["documents"] == {"train": 7, "val": 1}
    assert "8 documents (1 for validation)" in capsys.readouterr().out
