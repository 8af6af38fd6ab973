"""One audio path: prepare (training data) and the benchmark decode the same file to the same samples."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from quranft.benchmark.corpus import SAMPLE_RATE, decode_audio
from quranft.benchmark.leakage import pcm_digest
from quranft.trainer import prepare as prep
from quranft.trainer.audio import wav_pcm_sha256
from quranft.contract.config import load_config


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """The same recitation-like signal as WAV (22.05 kHz mono), MP3 (44.1 kHz stereo) and M4A (44.1 kHz)."""
    root = tmp_path_factory.mktemp("audio-path")
    source = root / "source.wav"
    espeak = shutil.which("espeak-ng")
    if espeak:  # real speech, as espeak writes it (22.05 kHz mono)
        subprocess.run([espeak, "-v", "ar", "-w", str(source), "قل هو الله أحد الله الصمد"], check=True)
    else:
        t = np.arange(int(1.5 * 22050)) / 22050
        sf.write(source, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 22050, subtype="PCM_16")
    out = {"wav": root / "clip.wav", "mp3": root / "clip.mp3", "m4a": root / "clip.m4a"}
    _ffmpeg("-i", str(source), "-ar", "22050", "-ac", "1", "-c:a", "pcm_s16le", str(out["wav"]))
    _ffmpeg("-i", str(source), "-ar", "44100", "-ac", "2", "-c:a", "libmp3lame", "-b:a", "128k",
            str(out["mp3"]))
    _ffmpeg("-i", str(source), "-ar", "44100", "-ac", "1", "-c:a", "aac", str(out["m4a"]))
    assert sf.info(str(out["mp3"])).channels == 2 and sf.info(str(out["wav"])).samplerate == 22050
    return out


@pytest.mark.parametrize("fmt", ["wav", "mp3", "m4a"])
def test_prepare_and_benchmark_decode_identical_samples(clips, fmt):
    path = clips[fmt]
    # What prepare's workers decode (a `datasets` audio value) and what the benchmark decodes (a file).
    prepared = prep.decode_clip({"bytes": path.read_bytes(), "path": path.name})
    benchmarked = decode_audio(path)
    assert isinstance(prepared, np.ndarray) and prepared.dtype == np.float32 and prepared.ndim == 1
    assert np.array_equal(prepared, benchmarked)
    assert abs(len(benchmarked) / SAMPLE_RATE - sf.info(str(clips["wav"])).duration) < 0.1


def test_formats_agree_with_each_other_roughly(clips):
    # Not identical across codecs (lossy), but the same clip: same length within the codecs' padding.
    lengths = {fmt: len(decode_audio(p)) for fmt, p in clips.items()}
    assert max(lengths.values()) - min(lengths.values()) < 0.1 * SAMPLE_RATE, lengths


def test_prepared_wavs_digest_like_the_benchmarks_decode_of_the_source(tmp_path, clips):
    """A prepared clip's recorded pcm_sha256 equals pcm_digest of the benchmark's decode of the same file,
    and of the benchmark's decode of the prepared WAV itself (a copy of it in a corpus)."""
    from datasets import Audio, Dataset

    names = ["wav", "mp3", "m4a"]
    rows = {"audio": [{"bytes": clips[n].read_bytes(), "path": clips[n].name} for n in names],
            "text": ["قُلْ هُوَ اللَّهُ أَحَدٌ"] * len(names)}
    ds = Dataset.from_dict(rows).cast_column("audio", Audio(decode=False))
    for split in ("train", "validation"):
        ds.to_parquet(str(tmp_path / "ds" / "data" / f"{split}-00000-of-00001.parquet"))
    cfg = load_config(None, [f"run.workspace={tmp_path / 'ws'}", "data.source=local",
                             f"data.localPath={tmp_path / 'ds'}", "data.blend=null", "training.baseModel=tiny"])
    summary = prep.prepare(cfg, log=lambda _: None)
    lines = [json.loads(x) for x in (Path(summary["dataDir"]) / "train_manifest.json").read_text().splitlines()]
    assert len(lines) == 3
    for name, line in zip(names, lines):
        expected = pcm_digest(decode_audio(clips[name]))
        assert line["pcm_sha256"] == expected, name
        assert wav_pcm_sha256(line["audio_filepath"]) == expected, name
        assert pcm_digest(decode_audio(line["audio_filepath"])) == expected, name
