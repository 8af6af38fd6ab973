"""The benchmark's part of MLflow tracking: the verdict's metrics with their paired intervals, and the report as
artifacts, into the resource's run (the one its training logged into; quranft.trainer.tracking finds it by the
resource's uid). A tracking failure never fails the benchmark: it is logged, and the summary's `tracking`
object says `ok: false` (the operator's TrackingDegraded warning).

Metrics (pure: `benchmark_metrics`, from the results file's `verdict` object), per decoder head `<head>/`:
`recall`, `precision`, `sequence_accuracy`, `avg_latency`, `p50_latency`, `p90_latency`, `model_size`,
`scored`, `total`; with a baseline `baseline_<metric>`, `<metric>_delta` and, by the paired rule, the delta's
95 % bootstrap interval `<metric>_delta_ci_low` / `<metric>_delta_ci_high` and the sequence test's
`sequence_test_p_value`. The verdict head's metrics are logged unprefixed too (`recall`, `recall_delta_ci_low`,
...), so runs compare on one column whatever head decided. Tags: `quranft.verdict`, `quranft.verdictReason`,
`quranft.verdictHead`, `quranft.verdictRule`, `quranft.primaryMetric`. Artifacts under `benchmark/`: the results
file, its report.md and PNG. The benchmark ends the run (FINISHED): it is the resource's last stage.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from quranft.trainer.tracking import (Guard, TrackingTarget, apply_client_env, find_or_create_run, metric_key,
                                      resource_tags, target_from_env)

ARTIFACT_DIR = "benchmark"
_DELTA_FIELDS = (("delta", "_delta"), ("low", "_delta_ci_low"), ("high", "_delta_ci_high"))


def snake(key: str) -> str:
    """`sequenceAccuracy` -> `sequence_accuracy`; `p50Latency` -> `p50_latency`."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower()


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def head_metrics(head: Mapping[str, Any]) -> dict[str, float]:
    """One head of the verdict object: its metrics, the baseline's, the deltas and their intervals."""
    out: dict[str, float] = {}
    for key, value in (head.get("metrics") or {}).items():
        if (v := _number(value)) is not None:
            out[snake(key)] = v
    for key, value in (head.get("baseline") or {}).items():
        if (v := _number(value)) is not None:
            out[f"baseline_{snake(key)}"] = v
    for key, value in (head.get("deltas") or {}).items():
        if (v := _number(value)) is not None:
            out[f"{snake(key)}_delta"] = v
    comparison = head.get("comparison") or {}
    for key, delta in (comparison.get("metrics") or {}).items():
        for field, suffix in _DELTA_FIELDS:  # the paired comparison's delta wins over the rounded one
            if (v := _number((delta or {}).get(field))) is not None:
                out[f"{snake(key)}{suffix}"] = v
    p_value = _number((comparison.get("sequenceTest") or {}).get("pValue"))
    if p_value is not None:
        out["sequence_test_p_value"] = p_value
    if (v := _number(comparison.get("pairedClips"))) is not None:
        out["paired_clips"] = v
    return out


def benchmark_metrics(verdict: Mapping[str, Any]) -> dict[str, float]:
    """The MLflow metrics of a results file's `verdict` object (Judgement.for_results()): see the docstring."""
    out: dict[str, float] = {}
    heads = verdict.get("heads") or {}
    for name, head in heads.items():
        out.update({f"{name}/{k}": v for k, v in head_metrics(head).items()})
    decisive = heads.get(verdict.get("verdictHead"))
    if decisive:
        out.update(head_metrics(decisive))
    if (v := _number(verdict.get("requiredClips"))) is not None:
        out["required_clips"] = v
    return {metric_key(k): v for k, v in out.items()}


def benchmark_tags(verdict: Mapping[str, Any]) -> dict[str, str]:
    keys = {"verdict": "verdict", "reason": "verdictReason", "verdictHead": "verdictHead", "rule": "verdictRule",
            "primaryMetric": "primaryMetric"}
    return {f"quranft.{tag}": str(verdict[key]) for key, tag in keys.items() if verdict.get(key) is not None}


def judged_verdict(runs: list[dict[str, Any]]) -> Mapping[str, Any]:
    """The `verdict` object of a results file's runs (its judged candidate's)."""
    from .campaign_report import judged_run

    verdict = judged_run(runs).get("verdict")
    if not isinstance(verdict, Mapping):
        raise ValueError("the results file has no judged candidate run (no `verdict` object)")
    return verdict


def log_benchmark(results_path: Path, artifacts: Iterable[Path] = (), *, name: str | None = None,
                  namespace: str | None = None, env: Mapping[str, str] | None = None,
                  log: Callable[[str], None] = print, target: TrackingTarget | None = None) -> dict[str, Any] | None:
    """Log the verdict of `results_path` (metrics, tags) and `artifacts` (report.md, PNG; the results file is
    added) into the resource's run and end it. Returns the summary's `tracking` object, or None when tracking is
    off (no MLFLOW_TRACKING_URI). Never raises."""
    target = target or target_from_env(namespace, name, env)
    if target is None:
        return None
    guard, found = Guard(log), {}
    guard.call("log the benchmark", _log_benchmark, target, Path(results_path), list(artifacts), guard, log, found)
    return guard.summary(found.get("runId"), target.uri)


def _log_benchmark(target: TrackingTarget, results_path: Path, artifacts: list[Path], guard: Guard,
                   log: Callable[[str], None], found: dict[str, str]) -> None:
    import time

    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    from .results import load_runs

    apply_client_env()
    verdict = judged_verdict(load_runs(str(results_path))[0])
    client = MlflowClient(target.uri)
    run_id = found["runId"] = find_or_create_run(client, target, resource_tags(target))
    stamp = int(time.time() * 1000)
    metrics = [Metric(k, v, stamp, 0) for k, v in sorted(benchmark_metrics(verdict).items())]
    tags = [RunTag(k, v) for k, v in benchmark_tags(verdict).items()]
    client.log_batch(run_id, metrics=metrics, tags=tags)
    for path in [results_path, *artifacts]:
        if Path(path).is_file():
            guard.call(f"upload {Path(path).name}", client.log_artifact, run_id, str(path), ARTIFACT_DIR)
    guard.call("end the run", client.set_terminated, run_id, "FINISHED")
    if guard.ok:
        log(f"benchmark: {len(metrics)} metrics and the report logged to MLflow run {run_id} ({target.uri})")
