"""Evaluate one model with one decoder head over decoded clips: transcribe, match, score, time.

Two timed passes, as the model is used:
- throughput: every clip, batched (`model.batch_size`): clips/s and RTFx (audio seconds per second);
- latency: a seeded sample of clips one at a time (batch 1), transcription + matching, the team's latency
  metric. The sample is chosen by clip id, so model and baseline are timed on the same clips (paired).
Clips are decoded once (`decode_clips`) and shared by every model and head.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .corpus import SAMPLE_RATE, DecodeError, Sample, decode_audio
from .matcher import Match, VerseMatcher
from .report import Progress
from .results import latency_stats, versions
from .scoring import aggregate, score_sample, verses_to_json
from .transcribe import ModelInfo


class Model(Protocol):
    info: ModelInfo
    device: str
    batch_size: int

    def transcribe(self, audios: list[np.ndarray]) -> list[str]: ...


@dataclass(frozen=True)
class RunOptions:
    also_accept: bool = True


@dataclass(frozen=True)
class Clip:
    """One corpus sample with its decoded 16 kHz audio (or why it could not be decoded)."""
    sample: Sample
    audio: np.ndarray | None
    error: str | None = None

    @property
    def seconds(self) -> float:
        return 0.0 if self.audio is None else len(self.audio) / SAMPLE_RATE


def default_run_name(ref: str) -> str:
    """`runs/v3-hybrid/model.nemo` -> `v3-hybrid`; `/m/base.nemo` -> `base`; hub names stay as they are."""
    path = Path(ref)
    if path.suffix == ".nemo":
        return path.parent.name if path.stem == "model" and path.parent.name else path.stem
    return ref


def decode_clips(samples: Iterable[Sample]) -> list[Clip]:
    out = []
    for sample in samples:
        try:
            out.append(Clip(sample, decode_audio(sample.path)))
        except DecodeError as exc:
            out.append(Clip(sample, None, str(exc)))
    return out


def latency_sample(ids: Sequence[str], n: int, seed: int) -> frozenset[str]:
    """`n` clip ids drawn with `seed` from the sorted ids: the same clips for every model on one corpus."""
    ordered = sorted(ids)
    if n >= len(ordered):
        return frozenset(ordered)
    return frozenset(random.Random(seed).sample(ordered, n))


def _batches(clips: Sequence[Clip], size: int) -> Iterable[list[Clip]]:
    for start in range(0, len(clips), size):
        yield list(clips[start : start + size])


def _alternatives(match: Match) -> list[Any]:
    return list(getattr(match, "alternatives", None) or [])


def evaluate(
    model: Model,
    clips: Sequence[Clip],
    matcher: VerseMatcher,
    name: str,
    options: RunOptions = RunOptions(),
    progress: Progress | None = None,
    *,
    head: str | None = None,
    latency_ids: frozenset[str] | None = None,
    total: int | None = None,
    missing: Sequence[Sample] = (),
) -> dict[str, Any]:
    """One run in the results-file shape (see results.py). Undecodable clips are error rows scored as
    predicting nothing; `latency_ids` (default: all) are timed one by one at batch 1."""
    started = datetime.now(timezone.utc)
    decodable = [c for c in clips if c.audio is not None]
    timed = latency_ids if latency_ids is not None else frozenset(c.sample.id for c in decodable)
    if decodable:  # untimed warm-up: lazy CUDA/kernel init must not count as latency or throughput
        matcher.match(model.transcribe([decodable[0].audio])[0])

    texts: dict[str, str] = {}
    transcribe_s = 0.0
    for batch in _batches(decodable, model.batch_size):
        t0 = time.perf_counter()
        out = model.transcribe([c.audio for c in batch])
        transcribe_s += time.perf_counter() - t0
        texts.update((c.sample.id, text) for c, text in zip(batch, out))
        if progress:
            progress.update(len(batch))

    t0 = time.perf_counter()
    matches = {cid: matcher.match(text) for cid, text in texts.items()}
    match_s = time.perf_counter() - t0

    latencies: dict[str, float] = {}
    for clip in decodable:
        if clip.sample.id in timed:
            t0 = time.perf_counter()
            matcher.match(model.transcribe([clip.audio])[0])
            latencies[clip.sample.id] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rows, scores = [], []
    for clip in clips:
        sample = clip.sample
        match = matches.get(sample.id)
        predicted = match.verses if match else []
        s = score_sample(sample.expected, predicted, sample.also_accept if options.also_accept else None)
        scores.append(s)
        rows.append(_row(sample, s, predicted, texts.get(sample.id, ""), latencies.get(sample.id), clip.error,
                         match, options))
    agg = aggregate(scores)
    score_s = time.perf_counter() - t0

    audio_s = sum(c.seconds for c in decodable)
    info = model.info
    return {
        "name": name,
        "head": head or info.decoder,
        "recall": agg.recall,
        "precision": agg.precision,
        "sequence_accuracy": agg.sequence_accuracy,
        "total": total if total is not None else len(clips) + len(missing),
        "scored": agg.scored,
        "errors": sum(1 for c in clips if c.error),
        "missing": [s.id for s in missing],
        **latency_stats(list(latencies.values())),
        "model_size": info.size_bytes,
        "model": _model_json(info),
        "throughput": {
            "batchSize": model.batch_size,
            "clips": len(decodable),
            "audioSeconds": round(audio_s, 3),
            "transcribeSeconds": round(transcribe_s, 6),
            "clipsPerSecond": round(len(decodable) / transcribe_s, 3) if transcribe_s else None,
            "rtfx": round(audio_s / transcribe_s, 2) if transcribe_s else None,
            "matchSeconds": round(match_s, 6),
            "scoreSeconds": round(score_s, 6),
            # share of the batched pass spent outside the model (matching + scoring)
            "matcherShare": round((match_s + score_s) / (transcribe_s + match_s + score_s), 4)
            if transcribe_s + match_s + score_s else None,
        },
        "settings": {"also_accept": options.also_accept, "batch_size": model.batch_size, "device": model.device,
                     "latency": "wall time of transcribe + match of one clip at batch 1, on a seeded sample of "
                                f"{len(latencies)} clips (same ids for every model); first clip run once as "
                                "warm-up, not counted"},
        "versions": versions(),
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "per_sample": rows,
    }


def _row(sample: Sample, s, predicted, transcript: str, latency: float | None, error: str | None,
         match: Match | None, options: RunOptions) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": sample.id,
        "expected": verses_to_json(sample.expected),
        "predicted": verses_to_json(predicted),
        "recall": s.recall,
        "precision": s.precision,
        "sequence_accuracy": s.sequence_accuracy,
        "latency": latency,
        "transcript": transcript,
    }
    if match is not None and _alternatives(match):
        row["alternatives"] = _alternatives(match)
    if sample.also_accept:
        row["also_accept"] = [verses_to_json(seq) for seq in sample.also_accept]
        if options.also_accept:
            row["accepted"] = s.accepted
    if sample.category:
        row["category"] = sample.category
    if sample.source:
        row["source"] = sample.source
    if error:
        row["error"] = error
    return row


def _model_json(info: ModelInfo) -> dict[str, Any]:
    out = {"ref": info.ref, "path": info.path, "sha256": info.sha256, "class": info.model_class,
           "decoder": info.decoder, "bytes": info.size_bytes}
    for key in ("precision", "compute_dtype"):
        if getattr(info, key, None) is not None:
            out[key] = getattr(info, key)
    return out
