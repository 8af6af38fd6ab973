"""A real Prometheus scrapes a real operator (runs to a verdict and to a failure on the embedded cluster) and a
short real CPU-stub training run; every PromQL expression of the dashboard returns data, and every metric the
alert rules use exists with the labels they match on."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from promkit import Prometheus, free_port
from promqlkit import dashboard_queries, rule_queries, selectors
from shippaths import DASHBOARD, ROOT, RULES

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

PY_ENV = dict(os.environ, PYTHONUNBUFFERED="1",
              PYTHONPATH=os.pathsep.join(str(ROOT / d) for d in ("contract", "operator", "trainer", "benchmark")))


def _quranft(*args: str, timeout: float = 900, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "quranft.cli", *args], env=PY_ENV, cwd=ROOT, timeout=timeout,
                          capture_output=True, text=True, **kw)


def _trainer_config(tmp_path, port: int) -> dict:
    """The CPU stub: the tiny model on synthetic recitations, long enough for a few scrapes and validations."""
    assert _quranft("trainer", "tiny-model", "--out", str(tmp_path / "tiny.nemo")).returncode == 0
    synth = _quranft("trainer", "synth-data", "--out", str(tmp_path / "synth"))
    assert synth.returncode == 0, synth.stderr[-2000:]
    return {"run": {"name": "prom-live", "namespace": "ship-test", "workspace": str(tmp_path / "ws")},
            "data": {"source": "local", "localPath": str(tmp_path / "synth" / "dataset")},
            "training": {"baseModel": str(tmp_path / "tiny.nemo"), "mode": "ctcOnly", "maxSteps": 40,
                         "batchSize": 4, "learningRate": 3e-3, "warmupSteps": 4, "precision": "32",
                         "valCheckInterval": 10, "checkpointEveryNSteps": 20,
                         "freeze": {"preprocessor": True, "encoderLayers": 0, "rnntDecoder": True}},
            "metrics": {"port": port, "progressIntervalSeconds": 1}}


@pytest.fixture
def operator_env(cluster, namespace, tmp_path):
    from clusterkit import Env

    from quranft.operator import access

    access.install(cluster.bin_dir / "kubectl", cluster.kubeconfig)
    env = Env(cluster, namespace, tmp_path)
    yield env
    env.close()


def test_dashboard_and_rules_return_data_from_real_targets(operator_env, prometheus_bin, tmp_path):
    from clusterkit import resource, stub_commands

    env = operator_env
    trainer_port = free_port()
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(_trainer_config(tmp_path, trainer_port)))
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    prom = Prometheus(prometheus_bin, prom_dir, {"quranft-operator": [f"127.0.0.1:{env.metrics_port}"],
                                                 "quranft-trainer": [f"127.0.0.1:{trainer_port}"]},
                      rule_files=[RULES])
    start = time.time()
    try:
        env.start_operator()
        env.claim()
        env.create(resource("prom-ok", commands=stub_commands(train_seconds=3)))
        env.create(resource("prom-bad", commands=stub_commands(exit_codes={"train": 2})))
        prepared = _quranft("trainer", "prepare", "--config", str(config_path))
        assert prepared.returncode == 0, prepared.stderr[-3000:]
        trained = _quranft("trainer", "train", "--config", str(config_path))
        assert trained.returncode == 0, trained.stderr[-3000:]
        assert env.wait_phase("prom-ok", "Succeeded", timeout=240)["status"]["verdict"] == "improvement"
        env.wait_phase("prom-bad", "Failed", timeout=240)
        time.sleep(3)  # a few more scrapes of the operator after the last transition
        end = time.time()

        empty = []
        for title, expr in dashboard_queries(DASHBOARD):
            result = prom.query_range(expr, start, end)
            assert result["status"] == "success", (title, expr, result)
            if not result["data"]["result"]:
                empty.append((title, expr))
        assert not empty, f"dashboard queries without data: {empty}"

        for alert, expr in rule_queries(RULES):
            result = prom.query_range(expr, start, end)
            assert result["status"] == "success", (alert, expr, result)
            for selector in selectors(expr):
                data = prom.query_range(selector, start, end)["data"]["result"]
                assert data, f"{alert}: {selector} has no data"
        # The failure above is recent: the run-failed alert's expression returns the ConfigError reason.
        fired = prom.query_range(rule_queries(RULES)[0][1], start, end)["data"]["result"]
        assert {r["metric"].get("reason") for r in fired} == {"ConfigError"}
    finally:
        prom.stop()
