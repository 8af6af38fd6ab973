"""The pure parts of the benchmark's MLflow tracking and registry: the metrics and tags of a real verdict object
(judged by the real paired rule), the model version's lineage tags, and tracking off without a tracking URI.
The server side is tests/reliability/test_mlflow_real.py."""
from __future__ import annotations

import json

import pytest

from campaign_helpers import BASE_RECALL, improved, scored_run
from quranft.benchmark.registry import register_promotion, registered_model_name, version_tags
from quranft.benchmark.tracking import benchmark_metrics, benchmark_tags, log_benchmark, snake
from quranft.benchmark.verdict import judge


@pytest.fixture(scope="module")
def judged():
    candidate = scored_run("v2", improved(20), "candidate")
    baseline = scored_run("base", BASE_RECALL, "baseline")
    judgement = judge({"ctc": (candidate, baseline)}, verdict_head="ctc", resamples=400)
    return judgement, judgement.for_results()


def test_snake_case_names():
    assert [snake(k) for k in ("recall", "sequenceAccuracy", "p50Latency", "avgLatency")] == [
        "recall", "sequence_accuracy", "p50_latency", "avg_latency"]


def test_metrics_carry_each_heads_values_deltas_and_paired_intervals(judged):
    judgement, verdict = judged
    metrics = benchmark_metrics(verdict)
    recall = judgement.head.comparison.metrics["recall"]
    for prefix in ("", "ctc/"):
        assert metrics[f"{prefix}recall"] == pytest.approx(judgement.head.metrics["recall"])
        assert metrics[f"{prefix}baseline_recall"] == pytest.approx(judgement.head.baseline["recall"])
        assert metrics[f"{prefix}recall_delta"] == pytest.approx(recall.delta)
        assert (metrics[f"{prefix}recall_delta_ci_low"], metrics[f"{prefix}recall_delta_ci_high"]) == pytest.approx(
            (recall.low, recall.high))
        assert f"{prefix}sequence_accuracy_delta_ci_low" in metrics
        assert f"{prefix}avg_latency_delta_ci_high" in metrics
        assert metrics[f"{prefix}paired_clips"] == 60
    assert 0 <= metrics["sequence_test_p_value"] <= 1
    assert all(isinstance(v, float) for v in metrics.values())


def test_metrics_without_a_baseline_are_the_heads_own():
    run = scored_run("v2", improved(5), "candidate")
    verdict = judge({"ctc": (run, None)}, verdict_head="ctc").for_results()
    metrics = benchmark_metrics(verdict)
    assert metrics["recall"] == pytest.approx(run["recall"]) and metrics["ctc/scored"] == 60
    assert not [k for k in metrics if "delta" in k or "baseline" in k]


def test_verdict_tags(judged):
    judgement, verdict = judged
    assert benchmark_tags(verdict) == {"quranft.verdict": judgement.verdict, "quranft.verdictReason": judgement.reason,
                                       "quranft.verdictHead": "ctc", "quranft.verdictRule": "paired",
                                       "quranft.primaryMetric": "recall"}


def test_tracking_is_off_without_a_tracking_uri(tmp_path):
    assert log_benchmark(tmp_path / "missing.json", env={}) is None
    assert register_promotion(tmp_path / "m", tmp_path / "l", env={}) is None


def test_an_unreadable_results_file_degrades_tracking_and_does_not_raise(tmp_path):
    lines = []
    out = log_benchmark(tmp_path / "missing.json", env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
                        log=lines.append)
    assert out["ok"] is False and out["runId"] is None and "missing.json" in out["error"] and len(lines) == 1


LINEAGE = {
    "promotionId": "uid-1/v2", "promotedAt": "2026-03-01T10:00:00Z",
    "campaign": {"name": "plan", "namespace": "team-a", "uid": "uid-1"}, "variant": "v2", "child": "plan-v2",
    "reason": "automatic: best improvement", "model": {"sha256": "ab" * 32, "bytes": 1234},
    "baseModel": {"name": "nvidia/stt_ar_fastconformer_hybrid_large_pcd_v1.0", "revision": None},
    "datasets": {"dataSpecHash": "d5a7", "sources": [
        {"dataset": "rabah2026/Quran-Ayah-Corpus", "split": "train", "revision": "v1.2", "resolvedRevision": "abc"},
        {"dataset": "RetaSy/quranic_audio_dataset", "split": "train", "revision": None, "resolvedRevision": None}]},
    "tokenizer": {"sha256": "70c"}, "verdict": {"verdict": "improvement", "verdictHead": "ctc"},
    "benchmark": {"corpusHash": "c1", "metrics": {"recall": 0.9}}, "image": {"id": "sha256:feed"},
}


def test_version_tags_carry_the_lineage():
    tags = version_tags(LINEAGE)
    assert tags["quranft.promotionId"] == "uid-1/v2" and tags["quranft.namespace"] == "team-a"
    assert tags["quranft.datasets"] == ("rabah2026/Quran-Ayah-Corpus@abc[train], "
                                        "RetaSy/quranic_audio_dataset@unpinned[train]")
    assert tags["quranft.modelBytes"] == "1234" and tags["quranft.modelSha256"] == "ab" * 32
    assert json.loads(tags["quranft.benchmarkMetrics"]) == {"recall": 0.9}
    assert "quranft.baseModelRevision" not in tags  # unknown values are left out
    assert all(isinstance(v, str) and len(v) <= 5000 for v in tags.values())


def test_registered_model_name_splits_back():
    assert registered_model_name("team-a", "plan.v2") == "team-a.plan.v2"
    assert registered_model_name(None, "plan") == "plan"
