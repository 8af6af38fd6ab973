"""Candidate-vs-baseline comparison, verdict rules, targets and the compact termination JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# Keys of the contract's `metrics` object (docs/contracts.md), in the order they are written.
METRIC_KEYS = (
    "recall",
    "precision",
    "sequenceAccuracy",
    "avgLatency",
    "p50Latency",
    "p90Latency",
    "modelSize",
    "total",
    "scored",
)
# results-file field -> contract key
_RESULT_FIELDS = {
    "recall": "recall",
    "precision": "precision",
    "sequence_accuracy": "sequenceAccuracy",
    "avg_latency": "avgLatency",
    "p50_latency": "p50Latency",
    "p90_latency": "p90Latency",
    "model_size": "modelSize",
    "total": "total",
    "scored": "scored",
}
MAX_MESSAGE_BYTES = 4096
_EPS = 1e-9  # so 0.86 - 0.87 compares as exactly one point


@dataclass(frozen=True)
class Tolerances:
    """Recall/sequence-accuracy tolerances are fractions (0.01 = one point)."""

    drop: float = 0.01
    min_gain: float = 0.01
    # Latency regresses when it grows by more than both the relative and the absolute allowance;
    # the absolute floor keeps timer noise on millisecond latencies from deciding a verdict.
    latency_rel: float = 0.10
    latency_abs: float = 0.05


@dataclass(frozen=True)
class Targets:
    recall: float = 0.95
    model_size_bytes: int = 200_000_000  # "200 MB" (decimal megabytes)
    latency_seconds: float = 1.0


def metrics_from_run(run: dict[str, Any]) -> dict[str, Any]:
    """Contract-shaped metrics from a results run (the team's snake_case field names)."""
    out: dict[str, Any] = {}
    for field, key in _RESULT_FIELDS.items():
        value = run.get(field)
        if value is None and field == "scored":
            value = len(run.get("per_sample") or [])
        out[key] = value
    return out


def deltas(metrics: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, Any]:
    if baseline is None:
        return {}
    out: dict[str, Any] = {}
    for key in METRIC_KEYS:
        a, b = metrics.get(key), baseline.get(key)
        out[key] = None if a is None or b is None else _round(a - b)
    return out


def decide(metrics: dict[str, Any], baseline: dict[str, Any] | None, tol: Tolerances = Tolerances()) -> str:
    """`regression` | `improvement` | `neutral` (no baseline is always neutral)."""
    if baseline is None:
        return "neutral"
    d_recall = metrics["recall"] - baseline["recall"]
    d_seq = metrics["sequenceAccuracy"] - baseline["sequenceAccuracy"]
    if d_recall < -tol.drop - _EPS or d_seq < -tol.drop - _EPS or _latency_regressed(metrics, baseline, tol):
        return "regression"
    if d_recall >= tol.min_gain - _EPS or d_seq >= tol.min_gain - _EPS:
        return "improvement"
    return "neutral"


def _latency_regressed(metrics: dict[str, Any], baseline: dict[str, Any], tol: Tolerances) -> bool:
    new, old = metrics.get("avgLatency"), baseline.get("avgLatency")
    if new is None or old is None:
        return False
    allowance = max(tol.latency_rel * old, tol.latency_abs)
    return new - old > allowance + _EPS


def check_targets(metrics: dict[str, Any], targets: Targets = Targets()) -> dict[str, dict[str, Any]]:
    recall, size, latency = metrics.get("recall"), metrics.get("modelSize"), metrics.get("avgLatency")
    return {
        "recall": _target(targets.recall, recall, recall is not None and recall >= targets.recall - _EPS),
        "modelSize": _target(
            targets.model_size_bytes, size, size is not None and size <= targets.model_size_bytes
        ),
        "latency": _target(
            targets.latency_seconds, latency, latency is not None and latency < targets.latency_seconds
        ),
    }


def _target(target: Any, value: Any, passed: bool) -> dict[str, Any]:
    return {"target": target, "value": value, "pass": passed}


def _round(x: float | int) -> float | int:
    return x if isinstance(x, int) else round(x, 6)


def verdict_message(
    metrics: dict[str, Any],
    baseline: dict[str, Any] | None,
    tol: Tolerances,
    targets: Targets,
    results_path: str,
) -> dict[str, Any]:
    """The benchmark's termination message (docs/contracts.md), always <= 4 KB once serialised."""
    msg = {
        "ok": True,
        "stage": "benchmark",
        "verdict": decide(metrics, baseline, tol),
        "metrics": _rounded(metrics),
        "baseline": _rounded(baseline) if baseline is not None else None,
        "deltas": deltas(metrics, baseline),
        "targets": check_targets(metrics, targets),
        "resultsPath": results_path,
    }
    if len(dumps(msg).encode()) > MAX_MESSAGE_BYTES:
        # Only a pathological path can overflow; keep the verdict, drop the path.
        msg["resultsPath"] = results_path[-256:]
    return msg


def _rounded(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: (_round(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
            for k, v in metrics.items() if k in METRIC_KEYS}


def dumps(msg: dict[str, Any]) -> str:
    return json.dumps(msg, ensure_ascii=False, separators=(",", ":"))
