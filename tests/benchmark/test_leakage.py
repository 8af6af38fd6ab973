"""Leakage: corpus clips that are training/validation clips (exact audio) or the same reciter on the same verse."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from quranft.benchmark.corpus import decode_audio, load_corpus
from quranft.benchmark.leakage import digest_corpus, find_leaks, pcm_digest, training_index
from quranft.trainer import prepare as prep
from quranft.trainer.audio import pcm16, wav_pcm_sha256, write_wav
from quranft.contract.config import load_config
from quranft.trainer.errors import DataError


def tone(freq: float, seconds: float = 1.0, rate: int = 16_000, channels: int = 1, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
    buf = io.BytesIO()
    sf.write(buf, np.repeat(mono[:, None], channels, axis=1).astype(np.float32), rate, format="WAV",
             subtype="PCM_16")
    return buf.getvalue()


# (audio bytes, surah, ayah, reciter): train rows 0-3, validation rows 4-5. Row 1 is 44.1 kHz stereo.
TRAIN = [(tone(200), 112, 1, "alafasy"), (tone(250, rate=44_100, channels=2), 112, 2, "alafasy"),
         (tone(300), 112, 3, "husary"), (tone(350), 112, 4, "husary")]
VAL = [(tone(400), 113, 1, "alafasy"), (tone(450), 113, 2, "minshawi")]


def _write(rows, path: Path) -> None:
    from datasets import Audio, Dataset

    table = {"audio": [{"bytes": a, "path": f"{i}.wav"} for i, (a, *_) in enumerate(rows)],
             "text": [f"آية {s}:{a}" for _, s, a, _ in rows], "surah": [s for _, s, _, _ in rows],
             "ayah": [a for _, _, a, _ in rows], "reciter": [r for *_, r in rows]}
    Dataset.from_dict(table).cast_column("audio", Audio(decode=False)).to_parquet(str(path))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A prepared data directory (prepare itself, no training) whose manifests carry reciter and verses."""
    root = tmp_path_factory.mktemp("leak")
    _write(TRAIN, root / "ds" / "data" / "train-00000-of-00001.parquet")
    _write(VAL, root / "ds" / "data" / "validation-00000-of-00001.parquet")
    cfg = load_config(None, [f"run.workspace={root / 'ws'}", "data.source=local", f"data.localPath={root / 'ds'}",
                             "data.blend=null", "data.reciterColumn=reciter", "data.surahColumn=surah",
                             "data.ayahColumn=ayah", "training.baseModel=tiny"])
    return Path(prep.prepare(cfg, log=lambda _: None)["dataDir"])


def _lines(data_dir: Path, name: str = "train_manifest.json") -> list[dict]:
    return [json.loads(x) for x in (data_dir / name).read_text(encoding="utf-8").splitlines()]


def _corpus(root: Path, clips: list[tuple[str, Path | bytes, int, int, str | None]]) -> Path:
    """A recitations-format corpus: (id, audio file to copy or bytes, surah, ayah, reciter)."""
    root.mkdir(parents=True)
    samples = []
    for sample_id, audio, surah, ayah, reciter in clips:
        file = f"{sample_id}.wav"
        if isinstance(audio, Path):
            shutil.copy(audio, root / file)
        else:
            (root / file).write_bytes(audio)
        entry = {"id": sample_id, "file": file, "surah": surah, "ayah": ayah, "ayah_end": None,
                 "category": "short", "source": "test", "expected_verses": [{"surah": surah, "ayah": ayah}]}
        if reciter:
            entry["reciter"] = reciter
        samples.append(entry)
    (root / "manifest.json").write_text(json.dumps({"samples": samples}))
    return root


def test_pcm_digest_survives_write_wav_and_reading_back(tmp_path):
    rng = np.random.default_rng(7)
    samples = np.concatenate([rng.uniform(-1, 1, 16_000), [0.0, 1.0, -1.0, 1.5, -2.0, 0.5 / 32768, 1 / 65536,
                                                           -0.99999, 0.999985]]).astype(np.float32)
    path = tmp_path / "x.wav"
    write_wav(path, samples)
    back, rate = sf.read(str(path), dtype="float32")
    assert rate == 16_000
    assert pcm_digest(back) == pcm_digest(samples) == wav_pcm_sha256(path)
    assert pcm_digest(decode_audio(path)) == pcm_digest(samples)
    assert pcm_digest(samples[:-1]) != pcm_digest(samples)
    stored, _ = sf.read(str(path), dtype="int16")
    assert stored[-9:].tolist() == [0, 32767, -32768, 32767, -32768, 0, 0, -32768, 32767]  # clipped, floored
    # The same bytes libsndfile writes from float itself (what prepare stored before pcm16 existed).
    raw = io.BytesIO()
    sf.write(raw, np.clip(samples, -1, 1), 16_000, format="RAW", subtype="PCM_16")
    assert raw.getvalue() == pcm16(samples).tobytes()


def test_prepare_records_digests_reciters_and_verses(prepared):
    train = _lines(prepared)
    assert [(line["reciter"], line["verses"]) for line in train] == [
        (r, [{"surah": s, "ayah": a}]) for _, s, a, r in TRAIN]
    for line in train + _lines(prepared, "val_manifest.json"):
        assert line["pcm_sha256"] == wav_pcm_sha256(line["audio_filepath"])
    index = training_index(prepared)
    assert index.clips == 6 and len(index.digests) == 6 and index.digested_from_wav == 0
    assert ("minshawi", 113, 2) in index.reciter_verses and len(index.reciter_verses) == 6


def test_three_clips_copied_from_training_data_are_exact_leaks(tmp_path, prepared):
    train, val = _lines(prepared), _lines(prepared, "val_manifest.json")
    root = _corpus(tmp_path / "c", [
        ("copy_train_0", Path(train[0]["audio_filepath"]), 112, 1, None),   # a prepared WAV, copied
        ("copy_val_1", Path(val[1]["audio_filepath"]), 113, 2, None),
        ("orig_train_1", TRAIN[1][0], 112, 2, None),  # the original 44.1 kHz stereo source, not the WAV
        ("fresh_a", tone(600), 1, 1, None),
        ("fresh_b", tone(650), 1, 2, None),
    ])
    leak = find_leaks(digest_corpus(load_corpus(root)), training_index(prepared))
    assert sorted(leak.exact_audio) == ["copy_train_0", "copy_val_1", "orig_train_1"]
    assert leak.to_json() == {"exactAudio": 3, "sameReciterVerse": 0, "excluded": 3,
                              "exactAudioIds": leak.exact_audio, "sameReciterVerseIds": []}
    assert leak.any and leak.checked == 5 and "3 corpus clip(s)" in leak.describe()
    kept = find_leaks(digest_corpus(load_corpus(root)), training_index(prepared), exclude_exact=False)
    assert kept.excluded == [] and len(kept.exact_audio) == 3


def test_different_audio_is_no_leak(tmp_path, prepared):
    root = _corpus(tmp_path / "c", [("a", tone(700), 112, 1, None), ("b", tone(200, seed=1), 112, 1, None)])
    leak = find_leaks(digest_corpus(load_corpus(root)), training_index(prepared))
    assert leak.to_json()["exactAudio"] == 0 and leak.to_json()["sameReciterVerse"] == 0 and not leak.any
    assert leak.checked == 2 and leak.describe() == "no leakage in 2 clips"


def test_same_reciter_on_a_trained_verse_is_counted_but_not_excluded(tmp_path, prepared):
    root = _corpus(tmp_path / "c", [
        ("same", tone(900), 112, 3, "husary"),       # husary recited 112:3 in training (other audio)
        ("other_reciter", tone(910), 112, 3, "alafasy"),
        ("other_verse", tone(920), 112, 1, "husary"),
        ("val_verse", tone(930), 113, 2, "minshawi"),  # validation counts too
        ("no_reciter", tone(940), 112, 3, None),
    ])
    leak = find_leaks(digest_corpus(load_corpus(root)), training_index(prepared))
    assert leak.same_reciter_verse == ["same", "val_verse"] and leak.exact_audio == [] and leak.excluded == []
    assert leak.to_json()["sameReciterVerse"] == 2 and leak.reciter_verse_checked


def test_older_prepared_dirs_without_digests_are_read_from_their_wavs(tmp_path, prepared):
    old = tmp_path / "old"
    shutil.copytree(prepared, old)
    for name in ("train_manifest.json", "val_manifest.json"):
        lines = [{k: v for k, v in line.items() if k in ("audio_filepath", "duration", "text")}
                 for line in _lines(old, name)]
        (old / name).write_text("".join(json.dumps(x) + "\n" for x in lines))
    index = training_index(old)
    assert index.digested_from_wav == 6 and index.digests.keys() == training_index(prepared).digests.keys()
    assert not index.has_reciter_verses  # nothing to compare: the check is skipped, not failed
    root = _corpus(tmp_path / "c", [("copy", Path(_lines(prepared)[2]["audio_filepath"]), 112, 3, "husary")])
    leak = find_leaks(digest_corpus(load_corpus(root)), index)
    assert leak.exact_audio == ["copy"] and not leak.reciter_verse_checked


def test_undecodable_corpus_clips_are_not_compared(tmp_path, prepared):
    root = _corpus(tmp_path / "c", [("bad", b"not audio at all" * 50, 112, 1, None)])
    leak = find_leaks(digest_corpus(load_corpus(root)), training_index(prepared))
    assert leak.checked == 0 and not leak.any


def test_a_directory_that_is_not_prepared_data_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not a prepared data directory"):
        training_index(tmp_path)


@pytest.mark.slow
def test_benchmark_run_counts_and_excludes_clips_copied_from_the_training_data(prepared, tmp_path, monkeypatch):
    """`quranft benchmark run --training-data`: 3 corpus clips are training clips (copied files) -> counted,
    left out of the scores, named in the termination message the operator turns into BenchmarkLeakage."""
    from quranft.benchmark.cli import main

    monkeypatch.setenv("QURANFT_CACHE_DIR", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    samples = []
    for i, line in enumerate(_lines(prepared)[:3]):
        shutil.copy(line["audio_filepath"], corpus / f"leak{i}.wav")
        samples.append({"id": f"leak{i}", "file": f"leak{i}.wav", "expected_verses": [{"surah": 112, "ayah": i + 1}]})
    for i, freq in enumerate((600, 700)):
        (corpus / f"new{i}.wav").write_bytes(tone(freq, seed=i + 7))
        samples.append({"id": f"new{i}", "file": f"new{i}.wav", "expected_verses": [{"surah": 1, "ayah": i + 1}]})
    (corpus / "manifest.json").write_text(json.dumps({"samples": samples}))
    term, out = tmp_path / "term.json", tmp_path / "out"
    rc = main(["run", "--model", "tiny", "--corpus", str(corpus), "--out", str(out), "--decoder", "ctc",
               "--training-data", str(prepared), "--latency-samples", "1", "--termination-log", str(term)])
    assert rc == 0
    msg = json.loads(term.read_text())
    assert msg["leakage"]["exactAudio"] == 3 and msg["leakage"]["excluded"] == 3
    assert sorted(msg["leakage"]["exactAudioIds"]) == ["leak0", "leak1", "leak2"]
    assert msg["metrics"]["scored"] == 2 and msg["corpus"]["clips"] == 2
    (run,) = json.loads((out / "latest.json").read_text())
    assert {r["id"] for r in run["per_sample"]} == {"new0", "new1"} and run["leakage"]["exactAudio"] == 3
