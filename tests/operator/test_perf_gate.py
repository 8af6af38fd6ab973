"""CI gate, in the spirit of Kueue's performance tests: a small fixed configuration of the operator benchmark
(scripts/bench_operator_scale.py: 5 stub runs one at a time for the stage hop, then a burst of 20), compared with
thresholds recorded from a few runs and kept in tests/operator/perf_thresholds.json (mean x 1.2 plus a per-figure
jitter allowance). A regression, such as passes waiting for a clock again (hops of seconds), fails it; the file
says how to re-record after a deliberate change."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
THRESHOLDS = Path(__file__).with_name("perf_thresholds.json")



def _bench():
    spec = importlib.util.spec_from_file_location("bench_operator_scale", ROOT / "scripts/bench_operator_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_thresholds_file_is_the_recording_rule_applied_to_its_runs():
    bench = _bench()
    recorded = json.loads(THRESHOLDS.read_text())
    runs = [{name: m["runs"][i] for name, m in recorded["metrics"].items()} for i in range(3)]
    again = bench.thresholds(recorded["config"], runs)
    assert set(recorded["metrics"]) == set(bench.GATED)
    for name, spec in recorded["metrics"].items():
        assert spec["threshold"] == pytest.approx(again["metrics"][name]["threshold"], abs=0.002), name
    # The gate says which figure regressed, and a missing one is a failure too.
    worse = {**{name: spec["threshold"] * 2 for name, spec in recorded["metrics"].items()}, "rss_mib": None}
    problems = bench.regressions(worse, recorded)
    assert len(problems) == len(bench.GATED) and any("rss_mib: not measured" in p for p in problems)
    assert bench.regressions({name: spec["mean"] for name, spec in recorded["metrics"].items()}, recorded) == []


def test_operator_performance_has_not_regressed(installed):
    bench = _bench()
    recorded = json.loads(THRESHOLDS.read_text())
    args = bench.gate_args(recorded)
    figures = bench.run(args, installed, print)
    bench.report(args, figures)
    assert figures["ok"], "not every run reached its stages (see the report above)"
    assert bench.regressions(figures, recorded) == []
