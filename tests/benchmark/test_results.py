"""Results files, baseline selection and the human output."""

import io
import json
from datetime import datetime, timezone

import pytest

from quranft.benchmark.report import Progress, runs_table, verdict_lines
from quranft.benchmark.results import (
    ResultsError,
    latency_stats,
    load_runs,
    pick_run,
    rescore_run,
    write_results,
)
from quranft.benchmark.verdict import Targets, Tolerances, metrics_from_run, verdict_message


def run(name, recall=0.5, role=None, **extra):
    r = {"name": name, "recall": recall, "precision": 0.5, "sequence_accuracy": 0.5, "total": 1,
         "avg_latency": 0.3, "model_size": 10, "per_sample": [], **extra}
    if role:
        r["role"] = role
    return r


def test_write_results_timestamped_and_latest(tmp_path):
    now = datetime(2026, 2, 27, 9, 25, 40, tzinfo=timezone.utc)
    first = write_results(tmp_path, [run("a")], now=now)
    second = write_results(tmp_path, [run("b")], now=now)
    assert first.name == "2026-02-27_092540.json" and second.name == "2026-02-27_092540-1.json"
    assert json.loads((tmp_path / "latest.json").read_text())[0]["name"] == "b"
    assert json.loads(first.read_text())[0]["name"] == "a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2026-02-27_092540-1.json", "2026-02-27_092540.json",
                                                          "latest.json"]


def test_pick_run():
    assert pick_run([run("only")])["name"] == "only"
    assert pick_run([run("c", role="candidate"), run("b", role="baseline")])["name"] == "c"
    assert pick_run([run("x"), run("y")], "y")["name"] == "y"
    with pytest.raises(ResultsError, match="--baseline-run"):
        pick_run([run("x"), run("y")])
    with pytest.raises(ResultsError):
        pick_run([run("x")], "nope")


def test_load_runs_accepts_list_or_single(tmp_path):
    (tmp_path / "l.json").write_text(json.dumps([run("a"), run("b")]))
    (tmp_path / "s.json").write_text(json.dumps(run("a")))
    assert load_runs(tmp_path / "l.json")[1] is True and len(load_runs(tmp_path / "l.json")[0]) == 2
    assert load_runs(tmp_path / "s.json")[1] is False
    with pytest.raises(ResultsError):
        load_runs(tmp_path / "missing.json")


def test_rescore_takes_alternatives_from_the_current_manifest():
    old = run("v1", per_sample=[{"id": "imran", "expected": [{"surah": 3, "ayah": 23}],
                                 "predicted": [{"surah": 4, "ayah": 44}]}])
    assert rescore_run(old)["recall"] == 0.0
    assert rescore_run(old, accept_lookup={"imran": [[(4, 44)]]})["recall"] == 1.0
    assert rescore_run(old, also_accept=False, accept_lookup={"imran": [[(4, 44)]]})["recall"] == 0.0
    assert old["recall"] == 0.5  # the input is not modified


def test_latency_stats():
    assert latency_stats([]) == {"avg_latency": None, "p50_latency": None, "p90_latency": None}
    s = latency_stats([0.1, 0.2, 0.3, 0.4, 1.0])
    assert s["avg_latency"] == pytest.approx(0.4) and s["p50_latency"] == pytest.approx(0.3)
    assert s["p90_latency"] == pytest.approx(0.76)


def test_progress_lines_when_not_a_tty():
    out = io.StringIO()
    p = Progress(3, "cand", stream=out, interval=3600)
    for _ in range(3):
        p.update()
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("benchmark cand: 3/3 samples")


def test_tables():
    runs = [run("cand", 0.84, scored=44), run("base", 0.87, scored=44)]
    table = runs_table(runs)
    assert "cand" in table and "base" in table and "-3.0%" in table and "44/1" in table
    msg = verdict_message(metrics_from_run(runs[0]), metrics_from_run(runs[1]), Tolerances(), Targets(), "/r.json")
    text = verdict_lines(msg)
    assert text.splitlines()[0] == "verdict: regression" and "target recall: 84.0% >= 95.0%: FAIL" in text
