"""Verse-sequence scoring, exactly as the team's historical results were computed.

Keep these semantics frozen: old results files are re-scored with them and compared to new runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean
from typing import Any

Verse = tuple[int, int]


@dataclass(frozen=True)
class SampleScore:
    recall: float
    precision: float
    sequence_accuracy: float
    # 0 = scored against `expected`, k >= 1 = against also_accept[k - 1].
    accepted: int = 0


def score_sequence(expected: Sequence[Verse], predicted: Sequence[Verse]) -> SampleScore:
    """Score one prediction: ordered, cursor-based matching of `expected` inside `predicted`."""
    if not expected:
        return SampleScore(1.0, 1.0, 1.0)
    if not predicted:
        return SampleScore(0.0, 0.0, 0.0)
    matches = 0
    cursor = 0
    for verse in expected:
        for j in range(cursor, len(predicted)):
            if predicted[j] == verse:
                matches += 1
                cursor = j + 1
                break
    return SampleScore(
        recall=matches / len(expected),
        precision=matches / len(predicted),
        sequence_accuracy=1.0 if list(predicted) == list(expected) else 0.0,
    )


def score_sample(
    expected: Sequence[Verse],
    predicted: Sequence[Verse],
    also_accept: Iterable[Sequence[Verse]] | None = None,
) -> SampleScore:
    """Score against `expected` and every alternative; keep the best (first one wins ties).

    "Best" is ordered by recall, then sequence accuracy, then precision: recall is the headline metric.
    """
    best = score_sequence(expected, predicted)
    for k, alternative in enumerate(also_accept or (), start=1):
        s = score_sequence(alternative, predicted)
        if _rank(s) > _rank(best):
            best = SampleScore(s.recall, s.precision, s.sequence_accuracy, accepted=k)
    return best


def _rank(s: SampleScore) -> tuple[float, float, float]:
    return (s.recall, s.sequence_accuracy, s.precision)


@dataclass(frozen=True)
class Aggregate:
    recall: float
    precision: float
    sequence_accuracy: float
    scored: int


def aggregate(scores: Sequence[SampleScore]) -> Aggregate:
    """Means over scored samples (an empty corpus scores 0 so it can never look like a win)."""
    if not scores:
        return Aggregate(0.0, 0.0, 0.0, 0)
    return Aggregate(
        recall=fmean(s.recall for s in scores),
        precision=fmean(s.precision for s in scores),
        sequence_accuracy=fmean(s.sequence_accuracy for s in scores),
        scored=len(scores),
    )


def parse_verse(value: Any) -> Verse:
    """Accept the shapes found in manifests and old results: {surah, ayah}, [s, a] or "s:a"."""
    if isinstance(value, Mapping):
        return (int(value["surah"]), int(value["ayah"]))
    if isinstance(value, str):
        surah, _, ayah = value.partition(":")
        return (int(surah), int(ayah))
    if isinstance(value, Sequence) and len(value) == 2:
        return (int(value[0]), int(value[1]))
    raise ValueError(f"not a verse reference: {value!r}")


def parse_verses(values: Iterable[Any] | None) -> list[Verse]:
    return [parse_verse(v) for v in values or ()]


def verses_to_json(verses: Iterable[Verse]) -> list[dict[str, int]]:
    return [{"surah": s, "ayah": a} for s, a in verses]
