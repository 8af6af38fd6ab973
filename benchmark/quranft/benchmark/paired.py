"""Paired statistics: a model and its baseline scored on the same clips, compared clip by clip.

- Pairing: per-sample rows are matched by `id` (order does not matter; rows are sorted by id so the same
  two files always give the same numbers). Files that share no id cannot be compared (PairingError).
- Deltas: candidate minus baseline of the per-clip mean, for recall, precision and sequence accuracy (all
  paired clips) and average latency (clips where both rows have a latency; new runs time a sample of clips).
- Intervals: a 95 % percentile paired bootstrap. One seeded `numpy.random.Generator` draws one
  (resamples x clips) index matrix, and every metric's mean delta is computed from that same matrix.
- Sequence test: an exact McNemar (sign) test on per-clip sequence correctness:
  p = scipy.stats.binomtest(b, b + c, 0.5).pvalue, b = clips only the candidate gets right, c = clips only
  the baseline gets right; p = 1.0 when b + c == 0.
- Power estimate (`required_clips`): the paired corpus size at which a two-sided 95 % interval around the
  observed delta would clear the decision threshold with 80 % power, from the per-clip difference's sample
  standard deviation sd:  n = ceil(((z_0.975 + z_0.8) * sd / (|delta| - margin))^2), where margin is the
  min-gain (delta > 0) or the tolerance (delta < 0). None when delta is 0 or |delta| <= margin (no corpus
  size resolves a difference that does not pass the threshold).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from .results import ResultsError

# contract key -> per-sample row field
SCORE_FIELDS = {"recall": "recall", "precision": "precision", "sequenceAccuracy": "sequence_accuracy"}
LATENCY = "avgLatency"
PAIRED_METRICS = (*SCORE_FIELDS, LATENCY)
DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0
CONFIDENCE = 0.95
POWER = 0.8
_CORRECT = 1.0 - 1e-9  # a row's sequence_accuracy is 0.0 or 1.0


class PairingError(ResultsError):
    """Two runs that cannot be compared clip by clip (no shared sample id, duplicate ids)."""


@dataclass(frozen=True)
class Paired:
    """Per-clip values of two runs on their shared clips, in id order."""

    ids: tuple[str, ...]
    candidate: dict[str, np.ndarray]  # PAIRED_METRICS key -> values; latency is NaN where a row has none
    baseline: dict[str, np.ndarray]
    candidate_samples: int  # rows in each run before pairing
    baseline_samples: int
    labels: dict[str, tuple[str, ...]]  # "category" / "source" -> one label per paired clip


def pair_runs(candidate: Mapping[str, Any], baseline: Mapping[str, Any],
              names: tuple[str, str] = ("candidate", "baseline")) -> Paired:
    """Match the two runs' per-sample rows by id. `names` label the runs in error messages."""
    a, b = _rows_by_id(candidate, names[0]), _rows_by_id(baseline, names[1])
    ids = sorted(a.keys() & b.keys())
    if not ids:
        raise PairingError(
            f"{names[0]} ({len(a)} samples) and {names[1]} ({len(b)} samples) share no sample id: "
            "they were not scored on the same corpus, so they cannot be compared clip by clip")
    labels = {key: tuple(_label(a[i], b[i], key) for i in ids) for key in ("category", "source")}
    return Paired(tuple(ids), _columns([a[i] for i in ids], names[0]), _columns([b[i] for i in ids], names[1]),
                  len(a), len(b), labels)


def _rows_by_id(run: Mapping[str, Any], name: str) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for row in run.get("per_sample") or []:
        key = str(row.get("id"))
        if key in out:
            raise PairingError(f"{name}: sample id {key!r} appears twice; rows cannot be paired by id")
        out[key] = row
    return out


def _columns(rows: list[Mapping[str, Any]], name: str) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {}
    for key, field in SCORE_FIELDS.items():
        try:
            cols[key] = np.array([float(r[field]) for r in rows])
        except (KeyError, TypeError, ValueError) as exc:
            raise PairingError(f"{name}: a row has no numeric {field!r} (re-score the file first)") from exc
    cols[LATENCY] = np.array([np.nan if r.get("latency") is None else float(r["latency"]) for r in rows])
    return cols


def _label(a: Mapping[str, Any], b: Mapping[str, Any], key: str) -> str:
    value = a.get(key) or b.get(key)
    return str(value) if value else "unknown"


@dataclass(frozen=True)
class MetricDelta:
    """Candidate minus baseline on the paired clips (fractions for scores, seconds for latency)."""

    candidate: float  # mean over the clips used
    baseline: float
    delta: float
    low: float  # percentile bootstrap interval of the delta
    high: float
    sd: float  # sample standard deviation of the per-clip difference
    clips: int  # clips used (latency: those timed in both runs)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


@dataclass(frozen=True)
class SequenceTest:
    candidate_only: int  # clips only the candidate gets exactly right
    baseline_only: int
    p_value: float

    def to_json(self) -> dict[str, Any]:
        return {"candidateOnly": self.candidate_only, "baselineOnly": self.baseline_only, "pValue": self.p_value}


@dataclass(frozen=True)
class Comparison:
    clips: int  # paired clips
    candidate_samples: int
    baseline_samples: int
    metrics: dict[str, MetricDelta]  # PAIRED_METRICS keys; avgLatency absent when no clip is timed in both
    sequence_test: SequenceTest
    resamples: int
    seed: int
    confidence: float = CONFIDENCE

    def interval(self, key: str) -> tuple[float, float] | None:
        m = self.metrics.get(key)
        return None if m is None else (m.low, m.high)

    def to_json(self) -> dict[str, Any]:
        return {
            "pairedClips": self.clips,
            "candidateSamples": self.candidate_samples,
            "baselineSamples": self.baseline_samples,
            "metrics": {k: asdict(v) for k, v in self.metrics.items()},
            "sequenceTest": self.sequence_test.to_json(),
            "resamples": self.resamples,
            "seed": self.seed,
            "confidence": self.confidence,
        }


def compare(paired: Paired, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> Comparison:
    """Deltas, paired-bootstrap intervals and the sequence test for two paired runs."""
    if resamples < 1:
        raise ValueError("resamples must be >= 1")
    n = len(paired.ids)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, size=(resamples, n))  # one resampling of clips, shared by every metric
    tail = 100 * (1 - CONFIDENCE) / 2
    metrics: dict[str, MetricDelta] = {}
    for key in PAIRED_METRICS:
        cand, base = paired.candidate[key], paired.baseline[key]
        timed = ~(np.isnan(cand) | np.isnan(base))
        if not timed.any():
            continue
        diff = np.where(timed, cand - base, 0.0)
        if timed.all():
            boot = diff[index].mean(axis=1)
        else:  # latency: mean over the resampled clips that are timed in both runs
            with np.errstate(invalid="ignore", divide="ignore"):
                boot = diff[index].sum(axis=1) / timed[index].sum(axis=1)
        low, high = np.nanpercentile(boot, [tail, 100 - tail])
        d = diff[timed]
        metrics[key] = MetricDelta(
            candidate=float(cand[timed].mean()), baseline=float(base[timed].mean()), delta=float(d.mean()),
            low=float(low), high=float(high), sd=float(d.std(ddof=1)) if d.size > 1 else 0.0, clips=int(d.size))
    return Comparison(n, paired.candidate_samples, paired.baseline_samples, metrics,
                      sequence_test(paired.candidate["sequenceAccuracy"], paired.baseline["sequenceAccuracy"]),
                      resamples, seed)


def sequence_test(candidate_seq: Sequence[float] | np.ndarray,
                  baseline_seq: Sequence[float] | np.ndarray) -> SequenceTest:
    """Exact McNemar test on per-clip sequence correctness (two-sided sign test on the discordant clips)."""
    a = np.asarray(candidate_seq, dtype=float) >= _CORRECT
    b = np.asarray(baseline_seq, dtype=float) >= _CORRECT
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(b & ~a))
    if only_a + only_b == 0:
        return SequenceTest(only_a, only_b, 1.0)
    p = float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)
    return SequenceTest(only_a, only_b, p)


def required_clips(delta: float, sd: float, margin: float, confidence: float = CONFIDENCE,
                   power: float = POWER) -> int | None:
    """Paired clips needed to resolve a difference of `delta` against `margin` (see the module docstring)."""
    excess = abs(delta) - margin
    if delta == 0 or excess <= 1e-12:
        return None
    z = stats.norm.ppf(1 - (1 - confidence) / 2) + stats.norm.ppf(power)
    return max(2, math.ceil((z * sd / excess) ** 2))


@dataclass(frozen=True)
class GroupRow:
    """One category/source group: per-clip means of each run (baseline None without a baseline)."""

    dimension: str  # "category" | "source"
    label: str
    clips: int
    candidate: dict[str, float]  # recall, precision, sequenceAccuracy
    baseline: dict[str, float] | None


def breakdown(candidate: Mapping[str, Any], baseline: Mapping[str, Any] | None = None) -> list[GroupRow]:
    """Scores per `category` and per `source` of the rows (paired clips only when there is a baseline).

    Rows without a label go to "unknown"; a dimension no row is labelled in is left out.
    """
    if baseline is not None:
        paired = pair_runs(candidate, baseline)
        cand, base, labels = paired.candidate, paired.baseline, paired.labels
    else:
        rows = list(_rows_by_id(candidate, "candidate").values())
        cand, base = _columns(rows, "candidate"), None
        labels = {key: tuple(_label(r, {}, key) for r in rows) for key in ("category", "source")}
    out: list[GroupRow] = []
    for dimension, values in labels.items():
        groups = np.asarray(values)
        names = sorted(set(values), key=lambda v: (v == "unknown", v))
        if names == ["unknown"]:
            continue
        for name in names:
            mask = groups == name
            out.append(GroupRow(
                dimension, name, int(mask.sum()),
                {k: float(cand[k][mask].mean()) for k in SCORE_FIELDS},
                None if base is None else {k: float(base[k][mask].mean()) for k in SCORE_FIELDS}))
    return out

