"""Dataset corpora: a local parquet split through the hub code path, materialised once, hashed by content."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pydantic import ValidationError

from quranft.benchmark.corpus import corpus_hash, decode_audio, load_corpus
from quranft.benchmark.corpus_source import CorpusSpec, materialize, spec_hash
from quranft.benchmark.leakage import pcm_digest
from quranft.trainer.errors import DataError


def tone(freq: float, seconds: float = 0.8, rate: int = 16_000, channels: int = 1, fmt: str = "WAV") -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * freq * t)
    buf = io.BytesIO()
    sf.write(buf, np.repeat(mono[:, None], channels, axis=1).astype(np.float32), rate, format=fmt,
             subtype="PCM_16" if fmt == "WAV" else None)
    return buf.getvalue()


ROWS = [  # (id, audio, verses, surah, ayah, ayah_end, category, reciter)
    ("r0", tone(220), ["1:1"], 1, 1, None, "short", "alafasy"),
    ("r1", tone(260, rate=44_100, channels=2), ["112:1"], 112, 1, None, "short", "husary"),
    ("r2", tone(300, rate=22_050, fmt="MP3"), ["114:1", "114:2", "114:3"], 114, 1, 3, "multi", "alafasy"),
    ("r3", b"not audio" * 40, ["2:255"], 2, 255, None, "long", "husary"),  # undecodable: skipped, counted
    ("r4", tone(340, rate=48_000), [{"surah": 36, "ayah": 1}], 36, 1, None, "short", None),
]


def write_dataset(root: Path, rows=ROWS, split: str = "test") -> Path:
    from datasets import Audio, Dataset, Features, List, Value

    features = Features({"audio": Audio(decode=False), "id": Value("string"), "verses": List(Value("string")),
                         "surah": Value("int32"), "ayah": Value("int32"), "ayah_end": Value("int32"),
                         "category": Value("string"), "reciter": Value("string"), "text": Value("string")})
    table = {"audio": [{"bytes": r[1], "path": f"{r[0]}.bin"} for r in rows], "id": [r[0] for r in rows],
             "verses": [[v if isinstance(v, str) else f"{v['surah']}:{v['ayah']}" for v in r[2]] for r in rows],
             "surah": [r[3] for r in rows], "ayah": [r[4] for r in rows], "ayah_end": [r[5] for r in rows],
             "category": [r[6] for r in rows], "reciter": [r[7] for r in rows],
             "text": ["نص"] * len(rows)}
    Dataset.from_dict(table, features=features).to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("corpus-ds"))


def spec_for(local: Path, **extra) -> CorpusSpec:
    return CorpusSpec.model_validate({"localPath": str(local), "idColumn": "id", "versesColumn": "verses",
                                      "categoryColumn": "category", "reciterColumn": "reciter",
                                      "textColumn": "text", **extra})


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*")}


def quiet(_line: str) -> None:
    pass


def test_dataset_split_becomes_a_recitations_corpus(tmp_path, dataset):
    spec = spec_for(dataset)
    lines: list[str] = []
    made = materialize(spec, tmp_path / "ws", lines.append, workers=2)
    assert made.reused is False and made.root == tmp_path / "ws" / "corpora" / spec_hash(spec)
    assert made.bytes_written == sum(p.stat().st_size for p in made.root.rglob("*") if p.is_file()) > 0
    assert sorted(p.name for p in made.root.iterdir()) == ["COMPLETE", "audio", "manifest.json", "stats.json"]
    assert not list((tmp_path / "ws" / "corpora").glob(".tmp-*"))

    manifest = json.loads((made.root / "manifest.json").read_text())
    assert manifest["stats"] == {**manifest["stats"], "samples": 4, "rowsRead": 5, "undecodable": 1}
    assert [s["id"] for s in manifest["skipped"]] == ["r3"]
    by_id = {s["id"]: s for s in manifest["samples"]}
    assert by_id["r2"]["expected_verses"] == [{"surah": 114, "ayah": a} for a in (1, 2, 3)]
    assert (by_id["r2"]["surah"], by_id["r2"]["ayah"], by_id["r2"]["ayah_end"]) == (114, 1, 3)
    assert by_id["r1"]["reciter"] == "husary" and "reciter" not in by_id["r4"]
    assert by_id["r0"]["category"] == "short" and by_id["r0"]["source"] == dataset.name

    corpus = load_corpus(made.root)
    assert corpus.id == f"{dataset.name}:test" and corpus.total == 4 and not corpus.missing
    assert corpus.samples[1].reciter == "husary"
    for sample in corpus.samples:
        info = sf.info(str(sample.path))
        assert (info.samplerate, info.channels, info.subtype) == (16_000, 1, "PCM_16")
        # the digest recorded at materialisation is the one the benchmark's decode gives
        assert pcm_digest(decode_audio(sample.path)) == by_id[sample.id]["pcm_sha256"]
    assert by_id["r1"]["duration"] == pytest.approx(0.8, abs=1e-3)  # 44.1 kHz stereo, resampled
    assert any("corpus: wrote" in line for line in lines)


def test_a_sibling_reuses_it_without_writing_a_byte(tmp_path, dataset):
    source = tmp_path / "source"
    shutil.copytree(dataset, source)
    spec = spec_for(source)
    first = materialize(spec, tmp_path / "ws", quiet)
    before = snapshot(tmp_path / "ws")
    shutil.rmtree(source)  # proof that the reuse path never reads the dataset
    again = materialize(CorpusSpec.model_validate_json(spec.model_dump_json(by_alias=True)), tmp_path / "ws", quiet)
    assert (again.reused, again.bytes_written, again.root) == (True, 0, first.root)
    assert snapshot(tmp_path / "ws") == before
    assert corpus_hash(load_corpus(again.root)) == corpus_hash(load_corpus(first.root))


def test_corpus_hash_follows_content_not_place(tmp_path, dataset):
    a = materialize(spec_for(dataset), tmp_path / "a", quiet)
    b = materialize(spec_for(dataset), tmp_path / "b", quiet)  # another volume: rebuilt, byte-identical
    h = corpus_hash(load_corpus(a.root))
    assert len(h) == 64 and corpus_hash(load_corpus(b.root)) == h

    moved = tmp_path / "moved"
    shutil.copytree(a.root, moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["samples"].reverse()  # order and formatting do not matter
    (moved / "manifest.json").write_text(json.dumps(manifest, indent=4))
    assert corpus_hash(load_corpus(moved)) == h

    manifest["samples"][0]["expected_verses"] = [{"surah": 36, "ayah": 2}]  # one label changes
    (moved / "manifest.json").write_text(json.dumps(manifest))
    relabelled = corpus_hash(load_corpus(moved))
    assert relabelled != h
    manifest["samples"][0]["also_accept"] = [[{"surah": 36, "ayah": 1}]]
    (moved / "manifest.json").write_text(json.dumps(manifest))
    assert corpus_hash(load_corpus(moved)) not in (h, relabelled)

    shutil.copytree(a.root, tmp_path / "clip", dirs_exist_ok=True)
    wav = sorted((tmp_path / "clip").rglob("*.wav"))[0]
    data = bytearray(wav.read_bytes())
    data[-1] ^= 1  # one sample of one clip
    wav.write_bytes(bytes(data))
    assert corpus_hash(load_corpus(tmp_path / "clip")) != h


def test_surah_and_ayah_columns_with_a_range_and_a_sample_cap(tmp_path, dataset):
    spec = CorpusSpec.model_validate({"localPath": str(dataset), "surahColumn": "surah", "ayahColumn": "ayah",
                                      "ayahEndColumn": "ayah_end", "maxSamples": 2})
    made = materialize(spec, tmp_path / "ws", quiet)
    samples = json.loads((made.root / "manifest.json").read_text())["samples"]
    assert [s["id"] for s in samples] == ["test-000000", "test-000001"]  # no idColumn: split and row index
    assert [s["expected_verses"] for s in samples] == [[{"surah": 1, "ayah": 1}], [{"surah": 112, "ayah": 1}]]
    assert samples[0]["source"] == dataset.name and samples[0]["category"] is None
    assert spec_hash(spec) != spec_hash(spec_for(dataset))


def test_without_verse_columns_verses_are_found_by_their_exact_text(tmp_path):
    from datasets import Audio, Dataset

    texts = ["قُلْ هُوَ اللَّهُ أَحَدٌ",  # 112:1 with diacritics
             "بِسْمِ اللَّهِ الرَّحْمَٰنِ الرَّحِيمِ اللَّهُ الصَّمَدُ",  # 112:2 after the basmala
             "ذَٰلِكَ الْكِتَابُ لَا رَيْبَ ۛ فِيهِ ۛ هُدًى لِّلْمُتَّقِينَ",  # 2:2
             "فبأي آلاء ربكما تكذبان"]  # 55:13, recurring 31 times in surah 55
    table = {"audio": [{"bytes": tone(200 + 40 * i), "path": f"{i}.wav"} for i in range(len(texts))],
             "text": texts}
    Dataset.from_dict(table).cast_column("audio", Audio(decode=False)).to_parquet(
        str(tmp_path / "ds" / "data" / "test-00000-of-00001.parquet"))
    spec = CorpusSpec.model_validate({"localPath": str(tmp_path / "ds"), "textColumn": "text"})
    made = materialize(spec, tmp_path / "ws", quiet)
    samples = json.loads((made.root / "manifest.json").read_text())["samples"]
    assert [[(v["surah"], v["ayah"]) for v in s["expected_verses"]] for s in samples] == [
        [(112, 1)], [(112, 2)], [(2, 2)], [(55, 13)]]
    assert "also_accept" not in samples[0] and len(samples[3]["also_accept"]) == 30
    assert samples[0]["text"] == texts[0]
    assert load_corpus(made.root).samples[3].also_accept[0] == [(55, 16)]

    table["text"][2] = "كلام ليس من القرآن"
    Dataset.from_dict(table).cast_column("audio", Audio(decode=False)).to_parquet(
        str(tmp_path / "bad" / "data" / "test-00000-of-00001.parquet"))
    with pytest.raises(DataError, match=r"row 2 \(id test-000002\) has no usable verse ids in text: .* is not exactly"):
        materialize(spec_for(tmp_path / "bad", idColumn=None, versesColumn=None, categoryColumn=None,
                             reciterColumn=None), tmp_path / "ws", quiet)


def test_hub_datasets_stream_by_name_with_their_revision(tmp_path, monkeypatch, dataset):
    import datasets

    real = datasets.load_dataset
    calls = []

    def hub(name, **kwargs):
        calls.append((name, kwargs))
        assert name == "team/recitations-eval"
        return real(str(dataset), split=kwargs["split"], streaming=kwargs["streaming"])

    monkeypatch.setattr(datasets, "load_dataset", hub)
    base = {"dataset": "team/recitations-eval", "versesColumn": "verses", "idColumn": "id"}
    pinned = CorpusSpec.model_validate({**base, "revision": "3f2c1ab"})
    floating = CorpusSpec.model_validate(base)
    assert pinned.source == floating.source == "hub"
    assert spec_hash(pinned) != spec_hash(floating)
    made = materialize(pinned, tmp_path / "ws", quiet)
    materialize(floating, tmp_path / "ws", quiet)
    assert calls == [("team/recitations-eval", {"split": "test", "streaming": True, "revision": "3f2c1ab"}),
                     ("team/recitations-eval", {"split": "test", "streaming": True})]
    assert load_corpus(made.root).id == "team/recitations-eval:test@3f2c1ab"


def test_path_corpora_are_used_as_they_are(tmp_path):
    spec = CorpusSpec.model_validate_json('{"path": "/work/shared/corpus/recitations-v1"}')
    made = materialize(spec, tmp_path / "ws", quiet)
    assert made.root == Path("/work/shared/corpus/recitations-v1") and made.bytes_written == 0
    assert made.spec_hash is None and spec_hash(spec) is None and not (tmp_path / "ws").exists()


@pytest.mark.parametrize("doc, message", [
    ({}, "needs path, dataset"),
    ({"path": "/c", "dataset": "a/b", "versesColumn": "v"}, "not both"),
    ({"path": "/c", "split": "validation"}, "split only apply to a dataset corpus"),
    ({"dataset": "a/b"}, "needs verse ids"),
    ({"dataset": "a/b", "surahColumn": "s"}, "surahColumn and ayahColumn go together"),
    ({"dataset": "a/b", "categoryColumn": "c"}, "needs verse ids"),
    ({"dataset": "a/b", "versesColumn": "v", "surahColumn": "s", "ayahColumn": "a"}, "not both"),
    ({"dataset": "a/b", "versesColumn": "v", "ayahEndColumn": "e"}, "ayahEndColumn needs"),
    ({"localPath": "/d", "versesColumn": "v", "revision": "main"}, "revision pins hub datasets only"),
    ({"source": "hub", "localPath": "/d", "versesColumn": "v"}, "localPath needs source=local"),
    ({"source": "local", "dataset": "a/b", "versesColumn": "v"}, "source=local needs localPath"),
    ({"dataset": "a/b", "versesColumn": "v", "maxSamples": 0}, "greater than or equal to 1"),
    ({"dataset": "a/b", "versesColumn": "v", "textColum": "t"}, "Extra inputs are not permitted"),
])
def test_bad_specs_are_validation_errors(doc, message):
    with pytest.raises(ValidationError, match=message):
        CorpusSpec.model_validate(doc)


def test_a_missing_verse_column_or_a_row_without_verses_is_a_data_error(tmp_path, dataset):
    with pytest.raises(DataError, match=r"missing column\(s\) ayah_no"):
        materialize(spec_for(dataset, versesColumn=None, surahColumn="surah", ayahColumn="ayah_no"),
                    tmp_path / "ws", quiet)
    rows = [ROWS[0], ("nov", tone(500), [], 1, 2, None, "short", None)]
    local = write_dataset(tmp_path / "ds", rows)
    with pytest.raises(DataError, match=r"row 1 \(id nov\) has no usable verse ids in verses"):
        materialize(spec_for(local), tmp_path / "ws", quiet)
    with pytest.raises(DataError, match=r"no verse 1:0"):
        materialize(spec_for(write_dataset(tmp_path / "ds0", [("z", tone(500), ["1:0"], 1, 0, None, "x", None)])),
                    tmp_path / "ws", quiet)
    assert [p.name for p in (tmp_path / "ws" / "corpora").iterdir()] == []  # nothing half-written remains


def test_empty_unreadable_or_undecodable_datasets_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="is empty: no rows"):
        materialize(spec_for(write_dataset(tmp_path / "empty", [])), tmp_path / "ws", quiet)
    with pytest.raises(DataError, match="does not exist"):
        materialize(spec_for(tmp_path / "nowhere"), tmp_path / "ws", quiet)
    with pytest.raises(DataError, match="none of 1 clips decodes"):
        materialize(spec_for(write_dataset(tmp_path / "junk", [ROWS[3]])), tmp_path / "ws", quiet)
    with pytest.raises(DataError, match="split 'validation'"):
        materialize(spec_for(write_dataset(tmp_path / "other", ROWS[:1]), split="validation"), tmp_path / "ws",
                    quiet)
    with pytest.raises(DataError, match="duplicate sample id 'r0'"):
        materialize(spec_for(write_dataset(tmp_path / "dup", [ROWS[0], ROWS[0]])), tmp_path / "ws", quiet)
