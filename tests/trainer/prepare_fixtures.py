"""Audio and row tables for the prepare tests (imported by conftest.py and the tests)."""
from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

VERSE = "  بِسْمِ اللَّهِ الرَّحْمَٰنِ الرَّحِيمِ  "  # surrounding spaces: prepare strips, keeps the rest


def synth_audio(seconds: float, rate: int = 16_000, channels: int = 1, fmt: str = "WAV",
                subtype: str | None = "PCM_16") -> bytes:
    """A sine + noise clip encoded by libsndfile (WAV/FLAC/MP3)."""
    rng = np.random.default_rng(int(seconds * 1000) + rate + channels)
    t = np.arange(int(round(seconds * rate))) / rate
    mono = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.02 * rng.standard_normal(t.size)
    samples = np.repeat(mono[:, None], channels, axis=1).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def synth_m4a(seconds: float, tmp_dir: Path) -> bytes:
    """AAC in MP4 with its index at the end, as phones write it; libsndfile cannot read it, ffmpeg can."""
    src, out = tmp_dir / "in.wav", tmp_dir / "out.m4a"
    src.write_bytes(synth_audio(seconds, rate=44_100))
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(src), "-c:a", "aac", str(out)],
                   check=True)
    data = out.read_bytes()
    assert data.find(b"moov") > data.find(b"mdat") > 0  # index after the audio
    return data


def _audio(data: bytes, name: str) -> dict:
    return {"bytes": data, "path": name}


# Expected outcome per row: "keep", "short", "long", "empty", "undecodable" (maxDurationSeconds=5 in tests).
QURAN_TRAIN = [
    (_audio(synth_audio(1.0), "a.wav"), VERSE, "keep"),
    (_audio(synth_audio(2.0, rate=44_100, channels=2), "b.wav"), "قُلْ هُوَ اللَّهُ أَحَدٌ", "keep"),
    (_audio(synth_audio(1.5, rate=48_000, fmt="FLAC"), "c.flac"), "اللَّهُ الصَّمَدُ", "keep"),
    (_audio(synth_audio(2.5, rate=44_100, channels=2, fmt="MP3", subtype=None), "d.mp3"),
     "لَمْ يَلِدْ وَلَمْ يُولَدْ", "keep"),
    (_audio(synth_audio(0.3), "short.wav"), "وَلَمْ يَكُن", "short"),
    (_audio(synth_audio(6.0, rate=8_000), "long.wav"), "طَوِيلٌ", "long"),
    (_audio(synth_audio(1.0), "blank.wav"), "   ", "empty"),
    (_audio(synth_audio(1.0), "none.wav"), None, "empty"),
    (_audio(b"definitely not audio", "junk.wav"), "قُلْ أَعُوذُ", "undecodable"),
    (_audio(b"RIFF\x24\x00\x00\x00WAVEfmt garbage", "truncated.wav"), "بِرَبِّ النَّاسِ", "undecodable"),
]
QURAN_VAL = [
    (_audio(synth_audio(1.2), "v1.wav"), "مَلِكِ النَّاسِ", "keep"),
    (_audio(synth_audio(0.9, rate=22_050), "v2.wav"), "إِلَٰهِ النَّاسِ", "keep"),
    (_audio(synth_audio(0.2), "v3.wav"), "مِن شَرِّ", "short"),
]

# RetaSy-like rows: (duration_ms claim, final_label, expected outcome). Unannotated rows (None) are kept.
RETASY = [
    (1100, "correct", "keep"),
    (1200, None, "keep"),
    (1300, "in_correct", "excluded"),
    (1400, "not_related_quran", "excluded"),
    (1500, "not_match_aya", "excluded"),
    (1600, "multiple_aya", "keep"),
    (100, "correct", "short"),  # the claim alone rejects it: no decoding
]
