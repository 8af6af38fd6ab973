"""The Grafana dashboard and the Prometheus alert rules: valid, parsable, and tested with promtool."""
from __future__ import annotations

import json
import subprocess

from shippaths import DASHBOARD, RULES, RULES_TESTS
from promqlkit import as_recording_rules, dashboard_queries, fill, rule_queries, selectors

# Metrics the operator and the trainer export (operator/quranft/operator/metrics.py,
# trainer/quranft/trainer/metrics.py); the dashboard must only use these.
OPERATOR_METRICS = {"quranft_runs", "quranft_reconcile_duration_seconds_bucket", "quranft_stage_duration_seconds_sum",
                    "quranft_stage_duration_seconds_count", "quranft_stage_duration_seconds_bucket",
                    "quranft_verdicts_total", "quranft_failures_total"}
TRAINER_METRICS = {"quranft_train_loss", "quranft_learning_rate", "quranft_global_step", "quranft_max_steps",
                   "quranft_val_wer", "quranft_samples_per_second", "quranft_epoch"}


def test_dashboard_json_is_a_complete_grafana_dashboard():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dash["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    titles = " | ".join(p["title"].lower() for p in dash["panels"])
    for subject in ("loss", "learning rate", "progress", "wer", "samples per second", "phase", "verdict",
                    "stage duration"):
        assert subject in titles, f"no panel about {subject}"
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "namespace", "run"} <= variables


def test_dashboard_uses_only_exported_metrics():
    used = {s.split("{")[0] for _, expr in dashboard_queries(DASHBOARD) for s in selectors(expr)}
    assert used and used <= OPERATOR_METRICS | TRAINER_METRICS, used - OPERATOR_METRICS - TRAINER_METRICS
    rule_metrics = {s.split("{")[0] for _, expr in rule_queries(RULES) for s in selectors(expr)}
    assert rule_metrics <= OPERATOR_METRICS | TRAINER_METRICS, rule_metrics - OPERATOR_METRICS - TRAINER_METRICS


def test_every_dashboard_query_parses(promtool, tmp_path):
    rules = tmp_path / "dashboard-rules.yaml"
    rules.write_text(as_recording_rules(dashboard_queries(DASHBOARD)))
    out = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_unparsable_promql_is_caught(promtool, tmp_path):
    """The parse check above can fail: a broken expression is rejected."""
    rules = tmp_path / "broken.yaml"
    rules.write_text(as_recording_rules([("broken", "sum by (phase (quranft_runs)")]))
    assert subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True).returncode != 0


def test_fill_replaces_grafana_variables():
    assert fill('rate(x{run=~"$run"}[$__rate_interval])') == 'rate(x{run=~".*"}[1m])'
    assert fill("increase(x[${__range}])") == "increase(x[10m])"


def test_promtool_check_rules(promtool):
    out = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert out.returncode == 0 and "SUCCESS: 3 rules found" in out.stdout, out.stdout + out.stderr


def test_alert_rules_fire_when_they_should(promtool, tmp_path):
    cases = RULES_TESTS.read_text()
    test_file = tmp_path / "rules_test.yaml"
    test_file.write_text(cases.replace("rule_files: [RULES]", f"rule_files: [{RULES}]"))
    out = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
