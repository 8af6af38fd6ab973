"""Benchmark corpus: manifest loading, audio decoding to 16 kHz mono float32, and the corpus content hash.

Decoding is the trainer's (`quranft.trainer.audio.load_16k_mono`: soundfile or ffmpeg, channel mean, soxr),
so a clip gives the same samples here as in prepared training data.
"""

from __future__ import annotations

import hashlib
import json
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
    reciter: str | None = None  # optional manifest key: the leakage check's same-reciter-same-verse test


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
        reciter=None if entry.get("reciter") in (None, "") else str(entry["reciter"]),
    )


def decode_audio(path: str | Path) -> np.ndarray:
    """Decode WAV/MP3/M4A/... at any rate and channel count to 16 kHz mono float32 in [-1, 1].

    The trainer's audio path: libsndfile for WAV/FLAC/OGG/MP3, ffmpeg for the rest (M4A needs it).
    """
    from quranft.trainer.audio import UndecodableAudio, load_16k_mono

    path = Path(path)
    try:
        audio = load_16k_mono(str(path))
    except UndecodableAudio as exc:
        raise DecodeError(f"{path.name}: {exc}") from exc
    if audio.size == 0:
        raise DecodeError(f"{path.name}: no audio samples")
    return audio


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def corpus_hash(corpus: Corpus) -> str:
    """Content hash of what is scored: per sample (sorted by id) its id, expected verses, also_accept and
    the sha256 of its audio file's bytes (null when the file is missing). 64 hex chars.

    Equal for corpora judged on byte-identical clips with the same labels, wherever they live and however
    their manifests are formatted; any changed clip or label changes it. Category, source and reciter do
    not take part (they do not change a score).
    """
    digest = hashlib.sha256(b"quranft-corpus-v1\n")
    for sample in sorted(corpus.samples + corpus.missing, key=lambda s: s.id):
        audio = file_sha256(sample.path) if sample.path.is_file() else None
        line = {"id": sample.id, "expected": [list(v) for v in sample.expected],
                "alsoAccept": [[list(v) for v in seq] for seq in sample.also_accept], "audio": audio}
        digest.update(json.dumps(line, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    return digest.hexdigest()
