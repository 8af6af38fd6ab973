"""Evaluate one model over a corpus: decode, transcribe, match, score, time. Produces one results run."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .corpus import Corpus, DecodeError, Sample, decode_audio
from .matcher import VerseMatcher
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


def default_run_name(ref: str) -> str:
    """`runs/v3-hybrid/model.nemo` -> `v3-hybrid`; `/m/base.nemo` -> `base`; hub names stay as they are."""
    path = Path(ref)
    if path.suffix == ".nemo":
        return path.parent.name if path.stem == "model" and path.parent.name else path.stem
    return ref


def _decoded(samples: list[Sample]) -> Iterator[tuple[Sample, np.ndarray | None, str | None]]:
    for sample in samples:
        try:
            yield sample, decode_audio(sample.path), None
        except DecodeError as exc:
            yield sample, None, str(exc)


def _batches(items: Iterator[Any], size: int, keep: Callable[[Any], bool]) -> Iterator[tuple[list, list]]:
    """Group decodable items into batches of `size`; undecodable ones come out alone as errors."""
    batch: list = []
    for item in items:
        if not keep(item):
            yield [], [item]
            continue
        batch.append(item)
        if len(batch) == size:
            yield batch, []
            batch = []
    if batch:
        yield batch, []


def evaluate(
    model: Model,
    corpus: Corpus,
    matcher: VerseMatcher,
    name: str,
    options: RunOptions = RunOptions(),
    progress: Progress | None = None,
) -> dict[str, Any]:
    """One run in the results-file shape (see results.py). Missing files are listed, not scored."""
    started = datetime.now(timezone.utc)
    _warm_up(model, corpus, matcher)
    rows: list[dict[str, Any]] = []
    scores = []
    latencies: list[float] = []

    def add_row(sample: Sample, predicted, transcript: str, latency: float | None, error: str | None) -> None:
        alternatives = sample.also_accept if options.also_accept else None
        s = score_sample(sample.expected, predicted, alternatives)
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
        if sample.also_accept:
            row["also_accept"] = [verses_to_json(seq) for seq in sample.also_accept]
            if options.also_accept:
                row["accepted"] = s.accepted
        if sample.category:
            row["category"] = sample.category
        if error:
            row["error"] = error
        rows.append(row)
        scores.append(s)
        if latency is not None:
            latencies.append(latency)
        if progress:
            progress.update(1)

    keep = lambda item: item[2] is None  # noqa: E731
    for batch, errors in _batches(_decoded(corpus.samples), model.batch_size, keep):
        for sample, _, error in errors:  # an undecodable file is an error row, scored as predicting nothing
            add_row(sample, [], "", None, error)
        if not batch:
            continue
        t0 = time.perf_counter()
        texts = model.transcribe([audio for _, audio, _ in batch])
        predictions = [matcher.predict(t) for t in texts]
        per_sample = (time.perf_counter() - t0) / len(batch)  # batch wall time shared evenly
        for (sample, _, _), text, predicted in zip(batch, texts, predictions):
            add_row(sample, predicted, text, per_sample, None)

    agg = aggregate(scores)
    info = model.info
    return {
        "name": name,
        "recall": agg.recall,
        "precision": agg.precision,
        "sequence_accuracy": agg.sequence_accuracy,
        "total": corpus.total,
        "scored": agg.scored,
        "errors": sum(1 for r in rows if "error" in r),
        "missing": [s.id for s in corpus.missing],
        **latency_stats(latencies),
        "model_size": info.size_bytes,
        "model": {"ref": info.ref, "path": info.path, "sha256": info.sha256, "class": info.model_class,
                  "decoder": info.decoder},
        "corpus": {"id": corpus.id, "path": str(corpus.root), "manifest_sha256": corpus.manifest_sha256},
        "settings": {"also_accept": options.also_accept, "batch_size": model.batch_size, "device": model.device,
                     "latency": "wall time of transcribe + match per sample (batch time / batch size); "
                                "first sample run once as warm-up, not counted"},
        "versions": versions(),
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "per_sample": rows,
    }


def _warm_up(model: Model, corpus: Corpus, matcher: VerseMatcher) -> None:
    """Run the first decodable sample once untimed: lazy CUDA/kernel init must not count as latency."""
    for sample, audio, error in _decoded(corpus.samples):
        if error is None:
            matcher.predict(model.transcribe([audio])[0])
            return
