"""``python -m benchmarks.corpus``: the generated corpora and each measurement, in this process at a tiny size."""

import re

from benchmarks import corpus
from helpers.shards import read_manifest


def test_generated_text_is_the_story_varied(tmp_path):
    path = corpus.generate_corpus(tmp_path / "c.txt", 300_000, seed=1)
    text = path.read_text(encoding="utf-8")
    assert path.stat().st_size == 300_000 and "\n\n" in text
    again = corpus.generate_corpus(tmp_path / "d.txt", 300_000, seed=1).read_text(encoding="utf-8")
    other = corpus.generate_corpus(tmp_path / "e.txt", 300_000, seed=2).read_text(encoding="utf-8")
    assert again == text and other != text
    lines = [line for line in text.split("\n") if len(line) > 80]
    assert len(set(lines)) > 0.9 * len(lines)  # passages rarely repeat word for word
    words = set(re.findall(r"[a-z]+", text.rsplit(maxsplit=1)[0].lower()))  # the last word may be cut off
    assert words <= set(re.findall(r"[a-z]+", corpus.data.read_text("the-verdict").lower()))


def test_each_measurement_and_the_table(tmp_path):
    files = [str(corpus.generate_corpus(tmp_path / "c.txt", 300_000))]
    reference = corpus.measure_reference(files)
    assert reference["text_bytes"] == 300_000 and reference["tokens"] > 50_000
    row = {"name": "0.3 MB", "reference": reference}
    for key, workers in (("prepare_1", 1), ("prepare_n", 2)):
        row[key] = corpus.measure_prepare(files, str(tmp_path / key), workers, doc_mb=0.02)
        assert row[key]["tokens"] == sum(read_manifest(tmp_path / key)["tokens"].values())
        assert row[key]["documents"] == 15 and row[key]["disk_bytes"] == 2 * row[key]["tokens"]
    assert row["prepare_1"]["tokens"] == row["prepare_n"]["tokens"]
    row["dataset"] = corpus.measure_dataset(str(tmp_path / "prepare_n"), batches=5, context=64)
    assert row["dataset"]["first_batch_s"] < 5 and row["dataset"]["anon_growth_mb"] < 50
    assert "| 0.3 MB |" in corpus.table([row], cores=2)
