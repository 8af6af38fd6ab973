"""Candidate-vs-baseline verdict rules, targets and the compact termination JSON.

Two rules (`rule`):
- `paired` (default): per-clip paired statistics (paired.py). `regression` when a guarded metric's 95 %
  interval lies wholly below -tolerance (recall, sequence accuracy; in points) or average latency's interval
  lies wholly above its allowance max(latency_rel * baseline mean, latency_abs); else `improvement` when the
  primary metric's interval lies wholly at or above min-gain; else `neutral` / `Inconclusive`.
- `threshold`: the original rule on aggregate deltas (`decide`), kept so old numbers reproduce.
Without a baseline the verdict is always `neutral` / `NoBaseline`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from quranft.contract.summaries import MAX_TERMINATION_BYTES as MAX_MESSAGE_BYTES

if TYPE_CHECKING:  # paired.py (numpy, scipy) is imported when a judgement is made, not by `--help`
    from .paired import Comparison

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
# The four metrics each head reports in the message's `heads` object.
HEAD_KEYS = ("recall", "precision", "sequenceAccuracy", "avgLatency")
DISPLAY_KEYS = ("recall", "precision", "sequenceAccuracy")
GUARDED = ("recall", "sequenceAccuracy")  # plus latency
PRIMARY_METRICS = ("recall", "precision", "sequenceAccuracy")
RULES = ("paired", "threshold")
DEFAULT_RESAMPLES = 2000  # paired.py's defaults (checked by a test; paired.py is imported lazily)
DEFAULT_SEED = 0
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


def _round(x: float | int, digits: int = 6) -> float | int:
    return x if isinstance(x, int) else round(x, digits)


def decide_paired(
    comparison: Comparison,
    tol: Tolerances = Tolerances(),
    primary: str = "recall",
    metrics: dict[str, Any] | None = None,
    baseline: dict[str, Any] | None = None,
) -> tuple[str, str]:
    """(verdict, reason) by the paired rule (module docstring). `metrics`/`baseline` (aggregates) are used
    for the latency guard only when no clip is timed in both runs."""
    for key in GUARDED:
        interval = comparison.interval(key)
        if interval is not None and interval[1] < -tol.drop - _EPS:
            return "regression", "Regression"
    latency = comparison.metrics.get("avgLatency")
    if latency is not None:
        allowance = max(tol.latency_rel * latency.baseline, tol.latency_abs)
        if latency.low > allowance + _EPS:
            return "regression", "Regression"
    elif metrics is not None and baseline is not None and _latency_regressed(metrics, baseline, tol):
        return "regression", "Regression"
    interval = comparison.interval(primary)
    if interval is not None and interval[0] >= tol.min_gain - _EPS:
        return "improvement", "Improvement"
    return "neutral", "Inconclusive"


_THRESHOLD_REASONS = {"improvement": "Improvement", "regression": "Regression", "neutral": "WithinTolerance"}


@dataclass(frozen=True)
class HeadResult:
    """One decoder head: the candidate's (and baseline's) contract metrics and their paired comparison."""

    head: str
    metrics: dict[str, Any]
    baseline: dict[str, Any] | None
    comparison: Comparison | None  # None without a baseline (or, by the threshold rule, with no shared id)
    candidate_run: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    baseline_run: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)

    def required_clips(self, tol: Tolerances) -> dict[str, int | None]:
        """Per score metric: paired clips needed to resolve the observed delta (paired.required_clips)."""
        if self.comparison is None:
            return {}
        out: dict[str, int | None] = {}
        for key in PRIMARY_METRICS:
            m = self.comparison.metrics[key]
            margin = tol.min_gain if m.delta > 0 else tol.drop
            out[key] = _required_clips(m.delta, m.sd, margin)
        return out


@dataclass(frozen=True)
class Judgement:
    verdict: str  # improvement | regression | neutral
    reason: str  # Improvement | Regression | Inconclusive | NoBaseline | WithinTolerance
    rule: str  # paired | threshold
    verdict_head: str
    primary: str
    tolerances: Tolerances
    heads: dict[str, HeadResult]
    resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED

    @property
    def head(self) -> HeadResult:
        return self.heads[self.verdict_head]

    @property
    def required_clips(self) -> int | None:
        """For the primary metric of the verdict head (None without a comparison or a resolvable delta)."""
        return self.head.required_clips(self.tolerances).get(self.primary)

    def message(self, targets: Targets = Targets(), results_path: str = "",
                extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The termination message (docs/contracts.md), <= MAX_MESSAGE_BYTES once serialised with dumps().

        `extra` keys (corpus, leakage, artifact, ...) are copied verbatim before `resultsPath`; they may not
        reuse a key of the message. If the line would be too long, parts are dropped least important first:
        each head's display, baseline, intervals, then `heads`, then the extra keys (last given first), then
        `resultsPath` keeps its last 256 characters; `truncated` lists what was dropped.
        """
        h = self.head
        c = h.comparison
        test = None if c is None else c.sequence_test.to_json()
        if test is not None:
            test["pValue"] = _sig(test["pValue"])
        msg: dict[str, Any] = {
            "ok": True,
            "stage": "benchmark",
            "verdict": self.verdict,
            "reason": self.reason,
            "rule": self.rule,
            "verdictHead": self.verdict_head,
            "primaryMetric": self.primary,
            "metrics": _rounded(h.metrics, 4),
            "baseline": _rounded(h.baseline, 4) if h.baseline is not None else None,
            "deltas": _rounded(deltas(h.metrics, h.baseline), 4),
            "intervals": _intervals(c),
            "display": _display(c),
            "sequenceTest": test,
            "requiredClips": self.required_clips,
            "pairedClips": None if c is None else c.clips,
            "heads": {
                name: {
                    "metrics": _rounded(_pick(r.metrics, HEAD_KEYS), 4),
                    "baseline": _rounded(_pick(r.baseline, HEAD_KEYS), 4) if r.baseline is not None else None,
                    "intervals": _intervals(r.comparison),
                    "display": _display(r.comparison),
                }
                for name, r in self.heads.items()
            },
            "targets": {k: {**t, "value": _round(t["value"], 4) if isinstance(t["value"], float) else t["value"]}
                        for k, t in check_targets(h.metrics, targets).items()},
        }
        for key, value in (extra or {}).items():
            if key in msg or key in ("resultsPath", "truncated"):
                raise ValueError(f"extra key {key!r} is a key of the termination message")
            msg[key] = value
        msg["resultsPath"] = results_path
        return _fit(msg, list(extra or ()))

    def for_results(self, targets: Targets | None = None) -> dict[str, Any]:
        """The candidate run's `verdict` field in the results file: full precision, every head's comparison."""
        h = self.head
        out: dict[str, Any] = {
            "verdict": self.verdict,
            "reason": self.reason,
            "rule": self.rule,
            "verdictHead": self.verdict_head,
            "primaryMetric": self.primary,
            "requiredClips": self.required_clips,
            "deltas": deltas(h.metrics, h.baseline),
            "tolerances": asdict(self.tolerances),
            "resamples": self.resamples,
            "seed": self.seed,
            "heads": {
                name: {
                    "metrics": r.metrics,
                    "baseline": r.baseline,
                    "deltas": deltas(r.metrics, r.baseline),
                    "comparison": None if r.comparison is None else r.comparison.to_json(),
                    "requiredClips": r.required_clips(self.tolerances),
                }
                for name, r in self.heads.items()
            },
        }
        if targets is not None:
            out["targets"] = check_targets(h.metrics, targets)
        return out


def judge(
    heads: Mapping[str, tuple[Mapping[str, Any], Mapping[str, Any] | None]],
    *,
    verdict_head: str,
    rule: str = "paired",
    tolerances: Tolerances = Tolerances(),
    primary: str = "recall",
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Judgement:
    """Judge each head's candidate run against its baseline run (results-file runs with per_sample rows).

    The verdict is the `verdict_head`'s. Raises PairingError (a ResultsError) by the paired rule when a head's
    two runs share no sample id; the threshold rule then judges the aggregates alone. ValueError for an
    unknown rule, primary metric or verdict head.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, not {rule!r}")
    if primary not in PRIMARY_METRICS:
        raise ValueError(f"primary metric must be one of {PRIMARY_METRICS}, not {primary!r}")
    if verdict_head not in heads:
        raise ValueError(f"verdict head {verdict_head!r} is not among the judged heads {sorted(heads)}")
    from .paired import PairingError, compare, pair_runs

    results: dict[str, HeadResult] = {}
    for name, (candidate, baseline) in heads.items():
        comparison = None
        if baseline is not None:
            labels = (f"{name} run {candidate.get('name')!r}", f"baseline run {baseline.get('name')!r}")
            try:
                comparison = compare(pair_runs(candidate, baseline, labels), resamples, seed)
            except PairingError:
                if rule == "paired":
                    raise
        results[name] = HeadResult(name, metrics_from_run(candidate),
                                   metrics_from_run(baseline) if baseline is not None else None,
                                   comparison, candidate, baseline)
    h = results[verdict_head]
    if h.baseline is None:
        verdict, reason = "neutral", "NoBaseline"
    elif rule == "threshold":
        verdict = decide(h.metrics, h.baseline, tolerances)
        reason = _THRESHOLD_REASONS[verdict]
    else:
        assert h.comparison is not None
        verdict, reason = decide_paired(h.comparison, tolerances, primary, h.metrics, h.baseline)
    return Judgement(verdict, reason, rule, verdict_head, primary, tolerances, results, resamples, seed)


def verdict_message(
    metrics: dict[str, Any],
    baseline: dict[str, Any] | None,
    tol: Tolerances,
    targets: Targets,
    results_path: str,
    head: str = "ctc",
) -> dict[str, Any]:
    """The threshold rule's termination message from aggregate metrics alone (no per-sample rows to pair)."""
    verdict = decide(metrics, baseline, tol)
    reason = "NoBaseline" if baseline is None else _THRESHOLD_REASONS[verdict]
    judgement = Judgement(verdict, reason, "threshold", head, "recall", tol,
                          {head: HeadResult(head, metrics, baseline, None)})
    return judgement.message(targets, results_path)


def display(delta: float, low: float, high: float) -> str:
    """A score delta in points with its interval's half-width: `+2.1 ±1.4`."""
    d = round(delta * 100, 1) + 0.0  # + 0.0: no "-0.0"
    return f"{'+' if d >= 0 else '-'}{abs(d):.1f} ±{(high - low) * 50:.1f}"


def _required_clips(delta: float, sd: float, margin: float) -> int | None:
    from .paired import required_clips

    return required_clips(delta, sd, margin)


def _intervals(c: Comparison | None) -> dict[str, list[float]]:
    if c is None:
        return {}
    return {k: [round(m.low, 4), round(m.high, 4)] for k, m in c.metrics.items()}


def _display(c: Comparison | None) -> dict[str, str]:
    if c is None:
        return {}
    return {k: display(c.metrics[k].delta, c.metrics[k].low, c.metrics[k].high) for k in DISPLAY_KEYS}


def _pick(metrics: dict[str, Any] | None, keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: (metrics or {}).get(k) for k in keys}


def _sig(p: float) -> float:
    return float(f"{p:.4g}")


def _size(msg: dict[str, Any]) -> int:
    return len(dumps(msg).encode())


def _fit(msg: dict[str, Any], extra_keys: list[str]) -> dict[str, Any]:
    if _size(msg) <= MAX_MESSAGE_BYTES:
        return msg
    dropped: list[str] = []
    msg["truncated"] = dropped

    def fits() -> bool:
        return _size(msg) <= MAX_MESSAGE_BYTES

    for part in ("display", "baseline", "intervals"):
        for head in msg["heads"].values():
            head.pop(part, None)
        dropped.append(f"heads.{part}")
        if fits():
            return msg
    del msg["heads"]
    dropped[-3:] = ["heads"]
    if fits():
        return msg
    for key in reversed(extra_keys):
        del msg[key]
        dropped.append(key)
        if fits():
            return msg
    msg["resultsPath"] = msg["resultsPath"][-256:]
    dropped.append("resultsPath")
    if fits():
        return msg
    raise ValueError(f"benchmark message does not fit {MAX_MESSAGE_BYTES} bytes: {dumps(msg)[:200]}...")


def _rounded(metrics: dict[str, Any], digits: int = 6) -> dict[str, Any]:
    return {k: (_round(v, digits) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
            for k, v in metrics.items() if k in METRIC_KEYS}


def dumps(msg: dict[str, Any]) -> str:
    return json.dumps(msg, ensure_ascii=False, separators=(",", ":"))
