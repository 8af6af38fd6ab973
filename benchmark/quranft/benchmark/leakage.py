"""Leakage between a benchmark corpus and the run's prepared training and validation data.

Two checks, before scoring:
- exact audio: the same decoded 16 kHz PCM on both sides (`pcm_digest`, the sha256 of the 16-bit samples
  exactly as `quranft.trainer.audio.write_wav` stores them). Prepare records each clip's digest in its
  manifest line (`pcm_sha256`); older prepared directories are digested from their WAV files. Because both
  sides decode through the one audio path, the original MP3 of a training clip and a copy of its prepared
  WAV both match. These clips are excluded from scoring by default.
- same reciter, same verse (different audio): only where both sides carry reciter and verse ids (the data
  spec's reciterColumn/surahColumn/ayahColumn; the corpus manifest's `reciter`). Reported, still scored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .corpus import Corpus, DecodeError, Sample, decode_audio

MANIFESTS = ("train_manifest.json", "val_manifest.json")
MAX_IDS = 20  # ids listed in the results / status; the counts are complete


def pcm_digest(samples: np.ndarray) -> str:
    """sha256 of these float samples as 16-bit PCM, exactly as prepare's WAV files store them."""
    from quranft.trainer.audio import pcm_sha256

    return pcm_sha256(samples)


@dataclass
class TrainingIndex:
    """What a prepared data directory holds, for matching: audio digests and (reciter, surah, ayah)."""
    data_dir: Path
    digests: dict[str, str] = field(default_factory=dict)  # pcm digest -> audio_filepath of one clip
    reciter_verses: set[tuple[str, int, int]] = field(default_factory=set)
    clips: int = 0
    digested_from_wav: int = 0  # lines without pcm_sha256 (prepared before it was recorded)
    unreadable: int = 0  # such lines whose WAV could not be read: not matchable

    @property
    def has_reciter_verses(self) -> bool:
        return bool(self.reciter_verses)


def _wav_digest(path: str) -> str | None:
    from quranft.trainer.audio import wav_pcm_sha256

    try:
        return wav_pcm_sha256(path)
    except Exception:  # missing, truncated or not a mono PCM WAV
        return None


def training_index(data_dir: str | Path, *, workers: int = 4) -> TrainingIndex:
    """Read `data_dir`'s train and val manifests (NeMo JSON lines; see docs/contracts.md).

    Raises DataError when neither manifest exists or a line is not JSON.
    """
    from quranft.trainer.errors import DataError

    data_dir = Path(data_dir)
    index = TrainingIndex(data_dir)
    lines: list[dict[str, Any]] = []
    found = False
    for name in MANIFESTS:
        path = data_dir / name
        if not path.is_file():
            continue
        found = True
        try:
            with open(path, encoding="utf-8") as fh:
                lines.extend(json.loads(line) for line in fh if line.strip())
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: unreadable manifest: {exc}") from exc
    if not found:
        raise DataError(f"{data_dir}: no {' or '.join(MANIFESTS)} (not a prepared data directory)")

    index.clips = len(lines)
    unhashed = [line for line in lines if not line.get("pcm_sha256")]
    index.digested_from_wav = len(unhashed)
    with ThreadPoolExecutor(max(1, workers)) as pool:  # reading and hashing release the GIL
        computed = list(pool.map(lambda line: _wav_digest(str(line.get("audio_filepath", ""))), unhashed))
    for line, digest in zip(unhashed, computed):
        line["pcm_sha256"] = digest
    for line in lines:
        digest = line.get("pcm_sha256")
        if digest is None:
            index.unreadable += 1
        else:
            index.digests.setdefault(digest, str(line.get("audio_filepath")))
        reciter = line.get("reciter")
        if reciter is not None and str(reciter).strip():
            for verse in line.get("verses") or ():
                try:
                    index.reciter_verses.add((str(reciter).strip(), int(verse["surah"]), int(verse["ayah"])))
                except (KeyError, TypeError, ValueError):
                    continue
    return index


@dataclass
class Leakage:
    exact_audio: list[str] = field(default_factory=list)  # corpus ids whose audio is a training/val clip's
    same_reciter_verse: list[str] = field(default_factory=list)  # other ids: same reciter on a trained verse
    excluded: list[str] = field(default_factory=list)  # ids left out of scoring (exact_audio by default)
    checked: int = 0  # corpus clips compared (undecodable ones cannot be)
    training_clips: int = 0
    reciter_verse_checked: bool = False  # both sides carried reciter and verse ids

    @property
    def any(self) -> bool:
        return bool(self.exact_audio or self.same_reciter_verse)

    def to_json(self) -> dict[str, Any]:
        """For results (`leakage`) and status.benchmark.leakage."""
        return {"exactAudio": len(self.exact_audio), "sameReciterVerse": len(self.same_reciter_verse),
                "excluded": len(self.excluded), "exactAudioIds": self.exact_audio[:MAX_IDS],
                "sameReciterVerseIds": self.same_reciter_verse[:MAX_IDS]}

    def describe(self) -> str:
        """One sentence for the BenchmarkLeakage condition and its Event."""
        parts = []
        if self.exact_audio:
            parts.append(f"{len(self.exact_audio)} corpus clip(s) are exact audio copies of training/validation "
                         f"clips ({len(self.excluded)} excluded from scoring): "
                         + ", ".join(self.exact_audio[:5]) + (" ..." if len(self.exact_audio) > 5 else ""))
        if self.same_reciter_verse:
            parts.append(f"{len(self.same_reciter_verse)} have the same reciter on a verse the run trained on: "
                         + ", ".join(self.same_reciter_verse[:5])
                         + (" ..." if len(self.same_reciter_verse) > 5 else ""))
        return "; ".join(parts) if parts else f"no leakage in {self.checked} clips"


def digest_corpus(corpus: Corpus) -> Iterator[tuple[Sample, str | None]]:
    """(sample, pcm digest) for every present sample, decoding it; None when it does not decode."""
    for sample in corpus.samples:
        try:
            yield sample, pcm_digest(decode_audio(sample.path))
        except DecodeError:
            yield sample, None


def find_leaks(samples_with_digests: Iterable[tuple[Sample, str | None]], index: TrainingIndex, *,
               exclude_exact: bool = True) -> Leakage:
    """Compare corpus samples (with their `pcm_digest`, None if undecodable) against a training index.

    A sample counts once: as exact audio when its digest matches, otherwise as same-reciter-same-verse when
    its reciter and any of its expected verses match a training clip's.
    """
    leak = Leakage(training_clips=index.clips)
    for sample, digest in samples_with_digests:
        if digest is None:
            continue
        leak.checked += 1
        reciter = getattr(sample, "reciter", None)
        if reciter and index.has_reciter_verses:
            leak.reciter_verse_checked = True
        if digest in index.digests:
            leak.exact_audio.append(sample.id)
            continue
        if reciter and index.has_reciter_verses and any(
                (str(reciter).strip(), s, a) in index.reciter_verses for s, a in sample.expected):
            leak.same_reciter_verse.append(sample.id)
    if exclude_exact:
        leak.excluded = list(leak.exact_audio)
    return leak
