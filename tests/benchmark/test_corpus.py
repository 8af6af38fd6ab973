"""Corpus loading and decoding of every file in the shared recitations corpus."""

import json
import shutil

import numpy as np
import pytest

from quranft.benchmark.corpus import (SAMPLE_RATE, CorpusError, DecodeError, corpus_hash, decode_audio,
                                      load_corpus)

from corpus_helpers import entry, make_corpus


def test_manifest_fields(recitations):
    corpus = load_corpus(recitations)
    raw = json.loads((recitations / "manifest.json").read_text())["samples"]
    assert corpus.total == len(raw)
    by_id = {s.id: s for s in corpus.samples + corpus.missing}
    nisa = by_id["user_imran_23"]
    assert nisa.expected == [(3, 23)] and nisa.also_accept == [[(4, 44)]]
    assert by_id["multi_114_001_006"].expected == [(114, a) for a in range(1, 7)]
    assert corpus.id.startswith("recitations-v1@")


def test_every_present_file_decodes_to_16k_mono(recitations):
    corpus = load_corpus(recitations)
    assert corpus.samples, "no audio present in the shared corpus"
    present = {p.name for p in recitations.iterdir()} - {"manifest.json"}
    assert {s.path.name for s in corpus.samples} == present & {s.path.name for s in corpus.samples + corpus.missing}
    formats = set()
    for sample in corpus.samples:
        audio = decode_audio(sample.path)
        formats.add(sample.path.suffix)
        assert audio.dtype == np.float32 and audio.ndim == 1
        seconds = len(audio) / SAMPLE_RATE
        assert 0.3 < seconds < 120, (sample.id, seconds)
        assert np.abs(audio).max() <= 1.0 + 1e-6 and np.abs(audio).max() > 1e-3, sample.id
    assert formats >= {".wav", ".mp3", ".m4a"}


def test_resampling_keeps_duration(tmp_path, recitations):
    import soundfile as sf

    src = decode_audio(recitations / "retasy_000.wav")
    stereo_44k = np.stack([np.interp(np.linspace(0, len(src) - 1, int(len(src) * 44100 / 16000)),
                                     np.arange(len(src)), src)] * 2, axis=1)
    path = tmp_path / "stereo44k.wav"
    sf.write(path, stereo_44k, 44100)
    out = decode_audio(path)
    assert abs(len(out) - len(src)) <= 16  # within a millisecond


def test_missing_files_are_reported_not_scored(tmp_path):
    root = make_corpus(tmp_path / "c", [
        entry("a", "a.wav", [(1, 1)], copy_from="retasy_000.wav"),
        entry("gone", "gone.wav", [(1, 2)]),
    ])
    corpus = load_corpus(root)
    assert [s.id for s in corpus.samples] == ["a"]
    assert [s.id for s in corpus.missing] == ["gone"]
    assert corpus.total == 2


def test_undecodable_file_raises_decode_error(tmp_path):
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"this is not audio" * 100)
    with pytest.raises(DecodeError):
        decode_audio(bad)
    empty = tmp_path / "empty.wav"
    import soundfile as sf

    sf.write(empty, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(DecodeError):
        decode_audio(empty)


def test_soundfile_fallback_without_ffmpeg(tmp_path, recitations, monkeypatch):
    with_ffmpeg = decode_audio(recitations / "retasy_000.wav")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    without = decode_audio(recitations / "retasy_000.wav")
    assert abs(len(with_ffmpeg) - len(without)) <= 16
    with pytest.raises(DecodeError, match="ffmpeg"):
        decode_audio(recitations / "nisa_51.m4a")


@pytest.mark.parametrize("manifest", [None, "{not json", '{"samples": [{"id": "x"}]}',
                                      '{"samples": [{"id": "x", "file": "a", "expected_verses": []},'
                                      ' {"id": "x", "file": "b", "expected_verses": []}]}'])
def test_bad_manifest_is_a_corpus_error(tmp_path, manifest):
    if manifest is not None:
        (tmp_path / "manifest.json").write_text(manifest)
    with pytest.raises(CorpusError):
        load_corpus(tmp_path)


def test_corpus_hash_of_the_shared_corpus_is_its_content(tmp_path, recitations):
    h = corpus_hash(load_corpus(recitations))
    copy = tmp_path / "copy"
    shutil.copytree(recitations, copy)
    assert corpus_hash(load_corpus(copy)) == h  # another place, same clips and labels
    (copy / "retasy_000.wav").unlink()  # a clip goes missing: it is still listed, so the hash changes
    assert corpus_hash(load_corpus(copy)) != h


def test_reciter_is_read_when_the_manifest_has_it(tmp_path):
    root = make_corpus(tmp_path / "c", [entry("a", "a.wav", [(1, 1)], copy_from="retasy_000.wav", reciter="husary"),
                                        entry("b", "b.wav", [(1, 2)], copy_from="retasy_000.wav")])
    assert [s.reciter for s in load_corpus(root).samples] == ["husary", None]
