"""Verdict rules as a table (issue 4, "Baseline and verdict"): the threshold rule; the paired rule is in
test_paired.py."""

import json

import pytest

from quranft.benchmark.verdict import (
    MAX_MESSAGE_BYTES,
    Targets,
    Tolerances,
    check_targets,
    decide,
    deltas,
    dumps,
    metrics_from_run,
    verdict_message,
)


def m(recall, seq, latency=0.33, precision=0.9, size=115_000_000):
    return {"recall": recall, "precision": precision, "sequenceAccuracy": seq, "avgLatency": latency,
            "p50Latency": latency, "p90Latency": latency, "modelSize": size, "total": 44, "scored": 44}


@pytest.mark.parametrize(
    ("name", "candidate", "baseline", "verdict"),
    [
        ("team's v1 run", m(0.84, 0.81, 0.35, 0.85), m(0.87, 0.85, 0.33, 0.89), "regression"),
        ("no baseline", m(0.5, 0.5), None, "neutral"),
        ("identical", m(0.87, 0.85), m(0.87, 0.85), "neutral"),
        ("recall drop of exactly the tolerance", m(0.86, 0.85), m(0.87, 0.85), "neutral"),
        ("recall drop beyond tolerance", m(0.859, 0.85), m(0.87, 0.85), "regression"),
        ("seq drop beyond tolerance", m(0.87, 0.83), m(0.87, 0.85), "regression"),
        ("recall gain of exactly min gain", m(0.88, 0.85), m(0.87, 0.85), "improvement"),
        ("seq gain", m(0.87, 0.90), m(0.87, 0.85), "improvement"),
        ("small gain below min gain", m(0.875, 0.855), m(0.87, 0.85), "neutral"),
        ("gain but the other metric regresses", m(0.95, 0.80), m(0.87, 0.85), "regression"),
        ("gain but latency regresses", m(0.95, 0.95, 0.60), m(0.87, 0.85, 0.33), "regression"),
        ("latency within relative tolerance", m(0.95, 0.95, 0.36), m(0.87, 0.85, 0.33), "improvement"),
        ("tiny latencies: absolute floor", m(0.87, 0.85, 0.03), m(0.87, 0.85, 0.01), "neutral"),
        ("latency beyond both allowances", m(0.87, 0.85, 0.40), m(0.87, 0.85, 0.33), "regression"),
        ("precision drop alone does not regress", m(0.87, 0.85, precision=0.5), m(0.87, 0.85), "neutral"),
    ],
)
def test_verdict_table(name, candidate, baseline, verdict):
    assert decide(candidate, baseline) == verdict, name


def test_tolerances_are_configurable():
    assert decide(m(0.84, 0.85), m(0.87, 0.85), Tolerances(drop=0.05)) == "neutral"
    assert decide(m(0.89, 0.85), m(0.87, 0.85), Tolerances(min_gain=0.05)) == "neutral"
    assert decide(m(0.87, 0.85, 0.34), m(0.87, 0.85, 0.33), Tolerances(latency_rel=0.0, latency_abs=0.0)) == "regression"


def test_deltas():
    d = deltas(m(0.84, 0.81, 0.35, 0.85, 459_000_000), m(0.87, 0.85, 0.33, 0.89, 115_000_000))
    assert d["recall"] == pytest.approx(-0.03)
    assert d["sequenceAccuracy"] == pytest.approx(-0.04)
    assert d["precision"] == pytest.approx(-0.04)
    assert d["avgLatency"] == pytest.approx(0.02)
    assert d["modelSize"] == 344_000_000
    assert deltas(m(1, 1), None) == {}


def test_targets():
    t = check_targets(m(0.95, 0.9, 0.99, size=200_000_000))
    assert t == {"recall": {"target": 0.95, "value": 0.95, "pass": True},
                 "modelSize": {"target": 200_000_000, "value": 200_000_000, "pass": True},
                 "latency": {"target": 1.0, "value": 0.99, "pass": True}}
    t = check_targets(m(0.94, 0.9, 1.0, size=200_000_001))
    assert [v["pass"] for v in t.values()] == [False, False, False]
    assert check_targets(m(0.5, 0.5), Targets(recall=0.4))["recall"]["pass"]


def test_metrics_from_results_run_uses_team_field_names():
    run = {"name": "x", "recall": 0.8, "precision": 0.7, "sequence_accuracy": 0.6, "total": 3,
           "avg_latency": 0.3, "model_size": 10, "per_sample": [{}, {}]}
    got = metrics_from_run(run)
    assert got["sequenceAccuracy"] == 0.6 and got["avgLatency"] == 0.3 and got["modelSize"] == 10
    assert got["scored"] == 2 and got["p50Latency"] is None


def test_verdict_message_shape_and_size():
    msg = verdict_message(m(0.84, 0.81), m(0.87, 0.85), Tolerances(), Targets(), "/w/" + "x" * 10_000)
    line = dumps(msg)
    assert len(line.encode()) <= MAX_MESSAGE_BYTES
    back = json.loads(line)
    assert back["ok"] is True and back["stage"] == "benchmark" and back["verdict"] == "regression"
    assert set(back) == {"ok", "stage", "verdict", "reason", "rule", "verdictHead", "primaryMetric", "metrics",
                         "baseline", "deltas", "intervals", "display", "sequenceTest", "requiredClips",
                         "pairedClips", "targets", "resultsPath", "truncated"}  # heads dropped: too long
    assert back["truncated"] == ["heads", "resultsPath"] and back["resultsPath"] == ("x" * 10_000)[-256:]
    assert (back["reason"], back["rule"]) == ("Regression", "threshold")
    # aggregates alone: no per-clip rows, so no intervals
    assert back["intervals"] == {} and back["sequenceTest"] is None and back["pairedClips"] is None
    assert set(back["metrics"]) == set(back["baseline"]) == set(back["deltas"])
    alone = verdict_message(m(0.84, 0.81), None, Tolerances(), Targets(), "/w/r.json")
    assert alone["baseline"] is None and alone["deltas"] == {} and alone["verdict"] == "neutral"
    assert alone["reason"] == "NoBaseline" and "truncated" not in alone
    within = verdict_message(m(0.87, 0.85), m(0.87, 0.85), Tolerances(), Targets(), "/w/r.json")
    assert (within["verdict"], within["reason"]) == ("neutral", "WithinTolerance")
    assert within["metrics"]["recall"] == 0.87 and within["heads"]["ctc"]["metrics"]["recall"] == 0.87


def test_message_rounds_to_4_decimals():
    msg = verdict_message(m(0.123456789, 0.81), m(0.87, 0.85), Tolerances(), Targets(), "/r.json")
    assert msg["metrics"]["recall"] == 0.1235 and msg["deltas"]["recall"] == round(0.123456789 - 0.87, 4)
    assert msg["targets"]["recall"]["value"] == 0.1235
