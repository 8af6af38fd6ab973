"""End to end with real MLflow (issue 17, "Done when"): the operator with a tracking URI (its setting
mlflow_tracking_uri, Helm `mlflow.trackingUri`) runs the CPU-stub CTC example (real tiny trainer and benchmark)
on the embedded cluster, whose MLflow add-on (quranft.cluster.mlflow_addon) is the tracking server.

MLflow is stopped mid-training (once the run holds >= 10 loss points) and started again (same store, same
port) when training has ended: the run still Succeeds, with the warning condition TrackingDegraded and
status.tracking naming its MLflow run, and that MLflow run (read through the REST API) holds the resolved
config as params, the loss curve up to the stop, and the benchmark's metrics and report, logged after the
restart into the same run (found by the resource's uid)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from clusterkit import Env, condition
from trainkit import EXAMPLE, ROOT

from quranft.cluster import mlflow_addon

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def api(uri: str, path: str, query: dict | None = None, body: dict | None = None) -> dict:
    url = f"{uri}/api/2.0/mlflow/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


def mlflow_run(uri: str, experiment: str, uid: str) -> dict | None:
    try:
        exp = api(uri, "experiments/get-by-name", {"experiment_name": experiment})["experiment"]
        runs = api(uri, "runs/search", body={"experiment_ids": [exp["experiment_id"]],
                                             "filter": f"tags.`quranft.uid` = '{uid}'"}).get("runs", [])
    except OSError:
        return None
    return runs[0] if len(runs) == 1 else None


def losses(uri: str, run_id: str) -> list[dict]:
    return api(uri, "metrics/get-history", {"run_id": run_id, "metric_key": "train_loss"}).get("metrics", [])


@pytest.fixture
def tracking_server(cluster):
    running = mlflow_addon.attach(cluster.state_dir)
    server = running or mlflow_addon.start(cluster.state_dir, log=print)
    yield server
    if running is None:
        mlflow_addon.stop(cluster.state_dir, log=print, wipe=True)


def test_cpu_stub_run_is_tracked_and_succeeds_with_a_warning_when_mlflow_stops(installed, namespace, tmp_path,
                                                                             tracking_server):
    cluster, uri = installed, tracking_server.uri
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    name = next(d for d in docs if d["kind"] == "QuranFineTune")["metadata"]["name"]
    env = Env(cluster, namespace, tmp_path)
    demo_log = tmp_path / "demo.log"
    pyenv = dict(os.environ, QURANFT_OPERATOR_MLFLOW_TRACKING_URI=uri,
                 PYTHONPATH=os.pathsep.join(str(ROOT / d) for d in ("contract", "operator", "trainer", "benchmark")))
    with open(demo_log, "w") as out:
        demo = subprocess.Popen([sys.executable, "-m", "quranft.cli", "demo", "--namespace", namespace,
                                 "--example", str(EXAMPLE), "--timeout", "900"],
                                env=pyenv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    restarted = None
    try:
        def logging_losses():
            if demo.poll() is not None:
                raise AssertionError(f"demo exited {demo.returncode}:\n{demo_log.read_text()[-3000:]}")
            uid = ((env.custom.list_namespaced_custom_object("quranft.io", "v1alpha1", namespace, "quranfinetunes")
                    .get("items") or [{}])[0].get("metadata") or {}).get("uid")
            run = uid and mlflow_run(uri, namespace, uid)
            return (uid, run) if run and len(losses(uri, run["info"]["run_id"])) >= 10 else None

        uid, run = env.wait(logging_losses, 600, ">= 10 loss points in MLflow", interval=2)
        run_id = run["info"]["run_id"]
        before = len(losses(uri, run_id))
        assert mlflow_addon.stop(cluster.state_dir, log=print)
        print(f"MLflow stopped with {before} loss points in run {run_id}")

        def trained():
            if demo.poll() is not None:
                raise AssertionError(f"demo exited {demo.returncode}:\n{demo_log.read_text()[-3000:]}")
            return condition(env.get(name), "Trained") and condition(env.get(name), "Trained")["status"] == "True"

        env.wait(trained, 600, "training to end", interval=2)
        restarted = mlflow_addon.start(cluster.state_dir, log=print)
        assert restarted.uri == uri
        assert demo.wait(timeout=900) == 0, demo_log.read_text()[-4000:]
    finally:
        if demo.poll() is None:
            demo.kill()
        if restarted is None and mlflow_addon.attach(cluster.state_dir) is None:
            mlflow_addon.start(cluster.state_dir, log=print)
        env.close()

    obj = env.get(name)
    status = obj["status"]
    assert status["phase"] == "Succeeded", status
    degraded = condition(obj, "TrackingDegraded")
    assert degraded and degraded["status"] == "True" and run_id in degraded["message"], degraded
    assert status["tracking"] == {"runId": run_id, "uri": uri}, status.get("tracking")
    assert not condition(obj, "Failed") or condition(obj, "Failed")["status"] != "True"

    run = mlflow_run(uri, namespace, uid)
    assert run["info"]["run_id"] == run_id and run["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["training/maxSteps"] == "200" and params["run/name"] == name
    after = losses(uri, run_id)
    assert len(after) >= 10 and len(after) < 200  # the points logged before MLflow stopped, none invented
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    bench = status["benchmark"]
    assert metrics["recall"] == pytest.approx(bench["metrics"]["recall"], abs=1e-4)
    assert "recall_delta_ci_low" in metrics and "recall_delta_ci_high" in metrics
    files = {f["path"] for f in api(uri, "artifacts/list", {"run_id": run_id, "path": "benchmark"}).get("files", [])}
    report = Path(bench["reportPath"]).name
    assert f"benchmark/{report}" in files and any(f.endswith(".png") for f in files), files
    print(f"run {name}: Succeeded with TrackingDegraded ({degraded['message']}); MLflow run {run_id}: "
          f"{len(params)} params, {len(after)} loss points, {len(metrics)} metrics, artifacts {sorted(files)}")
