"""Benchmark corpus: manifest loading and audio decoding to 16 kHz mono float32."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .scoring import Verse, parse_verses

SAMPLE_RATE = 16_000


class CorpusError(Exception):
    """The corpus itself is unusable (no/invalid manifest)."""


class DecodeError(Exception):
    """One audio file could not be decoded (becomes an error row, not a crash)."""


@dataclass(frozen=True)
class Sample:
    id: str
    path: Path
    expected: list[Verse]
    also_accept: list[list[Verse]] = field(default_factory=list)
    category: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class Corpus:
    root: Path
    id: str
    manifest_sha256: str
    samples: list[Sample]  # files present on disk
    missing: list[Sample]  # listed in the manifest, absent on disk: reported, never scored

    @property
    def total(self) -> int:
        return len(self.samples) + len(self.missing)


def load_corpus(root: str | Path) -> Corpus:
    root = Path(root)
    manifest_path = root / "manifest.json"
    try:
        raw = manifest_path.read_bytes()
        manifest = json.loads(raw)
        entries = manifest["samples"]
        samples = [_parse_sample(root, entry) for entry in entries]
    except FileNotFoundError as exc:
        raise CorpusError(f"no manifest.json in {root}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise CorpusError(f"invalid manifest {manifest_path}: {exc!r}") from exc
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        raise CorpusError(f"duplicate sample ids in {manifest_path}")
    sha = hashlib.sha256(raw).hexdigest()
    corpus_id = str(manifest.get("id") or f"{root.resolve().name}@{sha[:12]}")
    present = [s for s in samples if s.path.is_file()]
    missing = [s for s in samples if not s.path.is_file()]
    return Corpus(root=root, id=corpus_id, manifest_sha256=sha, samples=present, missing=missing)


def _parse_sample(root: Path, entry: dict[str, Any]) -> Sample:
    return Sample(
        id=str(entry["id"]),
        path=root / entry["file"],
        expected=parse_verses(entry["expected_verses"]),
        also_accept=[parse_verses(seq) for seq in entry.get("also_accept") or []],
        category=entry.get("category"),
        source=entry.get("source"),
    )


def decode_audio(path: str | Path) -> np.ndarray:
    """Decode WAV/MP3/M4A/... at any rate and channel count to 16 kHz mono float32 in [-1, 1].

    ffmpeg handles every container we meet (M4A needs it); without it, soundfile covers WAV/FLAC/MP3.
    """
    path = Path(path)
    ffmpeg = shutil.which("ffmpeg")
    audio = _decode_ffmpeg(ffmpeg, path) if ffmpeg else _decode_soundfile(path)
    if audio.size == 0:
        raise DecodeError(f"{path.name}: no audio samples")
    return audio


def _decode_ffmpeg(ffmpeg: str, path: Path) -> np.ndarray:
    cmd = [ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1",
           "-ar", str(SAMPLE_RATE), "-"]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()
        raise DecodeError(f"{path.name}: ffmpeg: {detail[-1] if detail else proc.returncode}")
    return np.frombuffer(proc.stdout, dtype=np.float32).copy()


def _decode_soundfile(path: Path) -> np.ndarray:
    import soundfile as sf
    from scipy.signal import resample_poly

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / TypeError by format
        raise DecodeError(f"{path.name}: {exc} (install ffmpeg for this format)") from exc
    mono = data.mean(axis=1)
    if rate != SAMPLE_RATE:
        g = np.gcd(int(rate), SAMPLE_RATE)
        mono = resample_poly(mono, SAMPLE_RATE // g, int(rate) // g).astype(np.float32)
    return mono
