"""Real MLflow (issue 17 item 4): the embedded cluster's tracking server add-on (quranft.cluster.mlflow_addon:
PyPI mlflow 3.17.2 in its own venv, SQLite store and artifact directory, --serve-artifacts) and the project's
MLflow client code, checked through MLflow's REST API only. Nothing on the MLflow side is faked.

1. A tiny-model training (`quranft trainer train` in a subprocess, as a stage pod runs it, with the environment
   the operator gives stage pods) creates the resource's run: its tags, the resolved config as params, a
   train_loss point per optimiser step (>= 10), learning_rate, samples_per_second and val_wer; the termination
   summary names the run.
2. The benchmark's tracking logs a real results file's verdict, with its paired intervals, and the report files
   into that same run (found by the resource's uid), and ends it.
3. MLflow stopped mid-training: the training still finishes (exit 0), its summary says tracking.ok false with the
   error, and the time lost to tracking stays bounded (measured and printed).
4. Registry: `benchmark campaign-report` promoting a variant registers its model as a version of
   `<namespace>.<campaign>` in the winner's run, tagged with the lineage, and the `production` alias resolves to
   it; the report run again reuses the version.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
# The trainer suite's synthetic-data fixtures and the benchmark suite's campaign workspace.
sys.path[:0] = [str(ROOT / "tests" / "trainer"), str(ROOT / "tests" / "benchmark")]
from fixtures_model import prepared_workspace, run_config, synth_112, wait_for  # noqa: E402,F401

from quranft.cluster import mlflow_addon  # noqa: E402
from quranft.trainer.tracking import CLIENT_ENV  # noqa: E402

NAMESPACE = "tests"  # run_config's namespace: the experiment when MLFLOW_EXPERIMENT_NAME is unset
SOURCE_ROOTS = [ROOT / d for d in ("contract", "operator", "trainer", "benchmark")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A tracking server of its own (test 3 stops and restarts it), in a state directory of its own."""
    root = tmp_path_factory.mktemp("mlflow-cluster")
    started = time.monotonic()
    handle = mlflow_addon.start(root, log=print)
    print(f"\nmlflow add-on: up in {time.monotonic() - started:.1f} s at {handle.uri}")
    yield handle
    mlflow_addon.stop(root, log=print, wipe=True)


# --------------------------------------------------------------------------------------------- helpers


def api(uri: str, path: str, query: dict | None = None, body: dict | None = None) -> dict:
    """One call of MLflow's REST API (GET with `query`, POST with `body`)."""
    url = f"{uri}/api/2.0/mlflow/{path}" + (f"?{urllib.parse.urlencode(query, doseq=True)}" if query else "")
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


def run_of(uri: str, uid: str) -> dict:
    """The one run tagged with the resource's uid, found by search (REST), with its full data."""
    experiment = api(uri, "experiments/get-by-name", {"experiment_name": NAMESPACE})["experiment"]
    runs = api(uri, "runs/search", body={"experiment_ids": [experiment["experiment_id"]],
                                         "filter": f"tags.`quranft.uid` = '{uid}'"}).get("runs", [])
    assert len(runs) == 1, f"expected one run tagged quranft.uid={uid}, found {len(runs)}"
    return runs[0]


def history(uri: str, run_id: str, key: str) -> list[dict]:
    return api(uri, "metrics/get-history", {"run_id": run_id, "metric_key": key}).get("metrics", [])


def kv(items: list[dict] | None) -> dict[str, str]:
    return {i["key"]: i["value"] for i in items or []}


def trainer_env(uri: str, uid: str) -> dict[str, str]:
    """A stage pod's environment as the operator builds it: the tracking URI, the resource's uid, the client
    settings; the caller's PYTHONPATH first, then the source roots."""
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, QURANFT_RUN_UID=uid, **CLIENT_ENV)
    env["PYTHONPATH"] = os.pathsep.join([p for p in (env.get("PYTHONPATH") or "").split(os.pathsep) if p]
                                        + [str(p) for p in SOURCE_ROOTS])
    env.pop("QURANFT_TERMINATION_LOG", None)
    env.pop("MLFLOW_EXPERIMENT_NAME", None)
    return env


def start_training(tmp_path: Path, workspace: Path, dataset: Path, name: str, uri: str, uid: str,
                   **training) -> tuple[subprocess.Popen, Path, Path]:
    config = tmp_path / f"{name}.json"
    config.write_text(json.dumps(run_config(workspace, dataset, name, **training)))
    term, log = tmp_path / f"{name}.term.json", tmp_path / f"{name}.log"
    proc = subprocess.Popen([sys.executable, "-m", "quranft.cli", "trainer", "train", "--config", str(config),
                             "--termination-log", str(term)], cwd=ROOT, env=trainer_env(uri, uid),
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    return proc, term, log


def finish(proc: subprocess.Popen, log: Path, timeout: float = 300) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"training did not finish in {timeout} s; log:\n{log.read_text()[-3000:]}")


# ----------------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def trained(server, prepared_workspace, synth_112, tmp_path_factory):
    """Test 1's training: 12 steps, validation every 6, into the resource uid's run."""
    tmp = tmp_path_factory.mktemp("mlflow-train")
    uid = str(uuid.uuid4())
    started = time.monotonic()
    proc, term, log = start_training(tmp, prepared_workspace, synth_112 / "dataset", "tracked", server.uri, uid,
                                     maxSteps=12, valCheckInterval=6, checkpointEveryNSteps=6)
    rc = finish(proc, log)
    wall = time.monotonic() - started
    assert rc == 0, log.read_text()[-3000:]
    print(f"\ntracked training: 12 steps in {wall:.1f} s (process wall time)")
    return uid, json.loads(term.read_text()), wall


@pytest.mark.slow
def test_training_logs_params_step_metrics_and_tags_into_the_resources_run(server, trained):
    uid, summary, _ = trained
    run = run_of(server.uri, uid)
    run_id = run["info"]["run_id"]
    assert summary["tracking"] == {"runId": run_id, "uri": server.uri, "ok": True}, summary.get("tracking")

    tags, params = kv(run["data"].get("tags")), kv(run["data"].get("params"))
    assert tags["quranft.namespace"] == NAMESPACE and tags["quranft.name"] == "tracked"
    assert tags["quranft.baseModel"] == "tiny" and tags["quranft.mode"] == "ctcOnly"
    assert tags["quranft.dataSpecHash"] == summary["dataSpecHash"]
    assert tags["mlflow.runName"] == "tracked"
    # The resolved config, flattened: the spec's values and the defaults the trainer filled in.
    assert params["training/maxSteps"] == "12" and params["training/learningRate"] == "0.003"
    assert params["run/name"] == "tracked" and params["training/mode"] == "ctcOnly"
    assert "training/seed" in params and "data/maxUnkRate" in params

    loss = history(server.uri, run_id, "train_loss")
    steps = sorted(p["step"] for p in loss)
    assert len(loss) >= 10 and steps == sorted(set(steps)), f"train_loss points: {steps}"
    assert steps[-1] == 12 and all(np.isfinite(p["value"]) for p in loss)
    assert history(server.uri, run_id, "learning_rate"), "no learning_rate points"
    speed = history(server.uri, run_id, "samples_per_second")
    assert speed and all(p["value"] > 0 for p in speed)
    wer = history(server.uri, run_id, "val_wer")
    assert {p["step"] for p in wer} >= {6, 12}, f"val_wer at steps {[p['step'] for p in wer]}"
    assert run["info"]["status"] == "RUNNING"  # the benchmark ends the run
    keys = sorted(m["key"] for m in run["data"].get("metrics", []))
    print(f"\nrun {run_id}: {len(params)} params, {len(loss)} train_loss points, metric keys {keys}")


@pytest.mark.slow
def test_benchmark_logs_the_verdict_with_intervals_and_the_report_into_the_same_run(server, trained, tmp_path):
    from quranft.benchmark.report_files import write_report
    from quranft.benchmark.results import write_results
    from quranft.benchmark.tracking import log_benchmark
    from quranft.benchmark.verdict import judge

    uid, summary, _ = trained
    run_id = summary["tracking"]["runId"]
    # A results file as `benchmark run` writes it: candidate and baseline scored on the same 40 clips.
    rng = np.random.default_rng(7)
    base = rng.choice([0.0, 0.5, 1.0], size=40, p=[0.2, 0.2, 0.6])
    better = np.where(rng.random(40) < 0.5, 1.0, base)
    candidate, baseline = _scored("tracked", better, "candidate"), _scored("base", base, "baseline")
    judgement = judge({"ctc": (candidate, baseline)}, verdict_head="ctc", resamples=500)
    candidate["verdict"] = judgement.for_results()
    results = write_results(tmp_path / "benchmark", [candidate, baseline])
    md, png = write_report(results.parent, judgement, [candidate, baseline], results.stem)

    env = {"MLFLOW_TRACKING_URI": server.uri, "QURANFT_RUN_UID": uid, "QURANFT_NAMESPACE": NAMESPACE}
    tracking = log_benchmark(results, [md, png], name="tracked", env=env, log=print)
    assert tracking == {"runId": run_id, "uri": server.uri, "ok": True}

    run = run_of(server.uri, uid)
    assert run["info"]["run_id"] == run_id and run["info"]["status"] == "FINISHED"
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    recall = judgement.head.comparison.metrics["recall"]
    assert metrics["recall"] == pytest.approx(candidate["recall"])
    assert metrics["ctc/recall"] == pytest.approx(candidate["recall"])
    assert metrics["baseline_recall"] == pytest.approx(baseline["recall"])
    assert metrics["recall_delta"] == pytest.approx(recall.delta)
    assert metrics["recall_delta_ci_low"] == pytest.approx(recall.low)
    assert metrics["recall_delta_ci_high"] == pytest.approx(recall.high)
    assert metrics["recall_delta_ci_low"] <= metrics["recall_delta"] <= metrics["recall_delta_ci_high"]
    assert "ctc/sequence_accuracy_delta_ci_low" in metrics and "sequence_test_p_value" in metrics
    assert "train_loss" in metrics  # the training's metrics are in the same run
    tags = kv(run["data"]["tags"])
    assert tags["quranft.verdict"] == judgement.verdict and tags["quranft.verdictHead"] == "ctc"

    listed = api(server.uri, "artifacts/list", {"run_id": run_id, "path": "benchmark"}).get("files", [])
    assert {f["path"] for f in listed} == {f"benchmark/{p.name}" for p in (results, md, png)}
    with urllib.request.urlopen(f"{server.uri}/get-artifact?" + urllib.parse.urlencode(
            {"run_id": run_id, "path": f"benchmark/{md.name}"}), timeout=30) as resp:
        assert resp.read() == md.read_bytes()
    print(f"\nbenchmark: {len(metrics)} metrics in run {run_id}; artifacts {sorted(f['path'] for f in listed)}")


def _scored(name: str, recall: np.ndarray, role: str) -> dict:
    rows = [{"id": f"clip{i:03d}", "expected": [], "predicted": [], "recall": float(r), "precision": float(r),
             "sequence_accuracy": float(r == 1.0), "latency": 0.2 + 0.001 * (i % 5), "transcript": ""}
            for i, r in enumerate(recall)]
    return {"name": name, "head": "ctc", "role": role, "recall": float(recall.mean()),
            "precision": float(recall.mean()), "sequence_accuracy": float(np.mean(recall == 1.0)),
            "avg_latency": 0.202, "total": len(rows), "scored": len(rows), "model_size": 2_000_000,
            "model": {"sha256": "ab" * 32}, "corpus": {"hash": "corpus-1"}, "per_sample": rows}


@pytest.mark.slow
def test_mlflow_stopped_mid_training_degrades_tracking_and_training_succeeds(server, prepared_workspace, synth_112,
                                                                              tmp_path):
    uid = str(uuid.uuid4())
    proc, term, log = start_training(tmp_path, prepared_workspace, synth_112 / "dataset", "unplugged", server.uri,
                                     uid, maxSteps=40, valCheckInterval=20, checkpointEveryNSteps=20)
    try:
        # Wait until the run has received loss points, then take the server away.
        run_id = wait_for(lambda: _points(server.uri, uid), 240, proc, "the first loss points in MLflow")[0]
        stopped_at = time.monotonic()
        assert mlflow_addon.stop(server.root.parent, log=print)
        rc = finish(proc, log)
        after_stop = time.monotonic() - stopped_at
    finally:
        if proc.poll() is None:
            proc.kill()
        restarted = mlflow_addon.start(server.root.parent, log=print)  # same store, same port
    assert restarted.uri == server.uri
    assert rc == 0, log.read_text()[-3000:]
    summary = json.loads(term.read_text())
    tracking = summary["tracking"]
    assert summary["ok"] is True and summary["step"] == 40
    assert tracking["ok"] is False and tracking["runId"] == run_id and tracking["error"], tracking
    logged = log.read_text()
    assert logged.count("tracking degraded") == 1, "the failure is logged once"
    # The run kept what reached the server before it stopped; the store survived the restart.
    kept = history(server.uri, run_id, "train_loss")
    assert 0 < len(kept) < 40
    progress = [line for line in logged.splitlines() if line.startswith("QURANFT_PROGRESS ")]
    print(f"\nMLflow stopped with {len(kept)} of 40 loss points logged; training went on for {after_stop:.1f} s "
          f"({len(progress)} progress lines) and exited 0 at step {summary['step']}; tracking lost "
          f"{tracking['lostSeconds']} s; error: {tracking['error']}")
    # Bounded: with the client settings (2 retries, 10 s timeout) and the guard's pause after a failure, a refused
    # server costs seconds, not MLflow's default of minutes per call (7 retries with backoff).
    assert 0 < tracking["lostSeconds"] < 20, tracking
    assert after_stop < 120, f"training took {after_stop:.0f} s after MLflow stopped"


def _points(uri: str, uid: str) -> tuple[str, int] | None:
    try:
        run = run_of(uri, uid)
    except (AssertionError, OSError, KeyError):
        return None
    points = len(history(uri, run["info"]["run_id"], "train_loss"))
    return (run["info"]["run_id"], points) if points >= 3 else None


@pytest.mark.slow
def test_campaign_promotion_registers_a_version_with_its_lineage_and_the_production_alias(server, tmp_path,
                                                                                         monkeypatch, capsys):
    from campaign_helpers import campaign_input, four_variants
    from quranft.benchmark.cli import main

    # A campaign's workspace as its children leave it (real results files, judged; training metadata); the
    # winner's training logged into an MLflow run, whose id its training_metadata.json records (summary.tracking).
    workspace = tmp_path / "workspace"
    variants = four_variants(workspace)
    experiment = api(server.uri, "experiments/create", body={"name": "team-a"})["experiment_id"]
    child_run = api(server.uri, "runs/create", body={"experiment_id": experiment, "run_name": "plan-v2", "tags": [
        {"key": "quranft.namespace", "value": "team-a"}, {"key": "quranft.name", "value": "plan-v2"}]})["run"]
    child_run_id = child_run["info"]["run_id"]
    meta_path = workspace / "runs" / "plan-v2" / "training_metadata.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()),
                                     "tracking": {"runId": child_run_id, "ok": True}}))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    doc = tmp_path / "in.json"
    doc.write_text(json.dumps(campaign_input(variants, promote="v2")))

    def report() -> dict:
        rc = main(["campaign-report", "--input", str(doc), "--workspace", str(workspace),
                   "--termination-log", str(tmp_path / "term")])
        out = capsys.readouterr()
        assert rc == 0, out.err
        return json.loads(out.out.splitlines()[-1])

    first = report()["registry"]
    assert first == {"runId": child_run_id, "uri": server.uri, "ok": True, "registeredModel": "team-a.plan",
                     "version": "1", "alias": "production", "reused": False}, first
    assert report()["registry"] == {**first, "reused": True}  # the Job run again: the same version

    version = api(server.uri, "registered-models/alias", {"name": "team-a.plan", "alias": "production"})
    version = version["model_version"]
    tags = kv(version.get("tags"))
    lineage = json.loads((workspace / "models" / "production" / "plan" / "lineage.json").read_text())
    assert version["version"] == "1" and version["run_id"] == child_run_id
    assert tags["quranft.promotionId"] == lineage["promotionId"] == "uid-1/v2"
    assert tags["quranft.variant"] == "v2" and tags["quranft.child"] == "plan-v2"
    assert tags["quranft.baseModel"] == "tiny" and tags["quranft.dataSpecHash"] == "d5a7a0c0ffee"
    assert tags["quranft.datasets"] == ("rabah2026/Quran-Ayah-Corpus@abc123commit[train], "
                                        "rabah2026/Quran-Ayah-Corpus@abc123commit[validation]")
    assert tags["quranft.verdict"] == "improvement" and tags["quranft.modelSha256"] == lineage["model"]["sha256"]
    files = api(server.uri, "artifacts/list", {"run_id": child_run_id, "path": "model"}).get("files", [])
    assert {f["path"] for f in files} == {"model/model.nemo", "model/lineage.json", "model/results.json"}
    with urllib.request.urlopen(f"{server.uri}/get-artifact?" + urllib.parse.urlencode(
            {"run_id": child_run_id, "path": "model/model.nemo"}), timeout=30) as resp:
        assert resp.read() == (workspace / "models" / "production" / "plan" / "model.nemo").read_bytes()
    print(f"\nregistry: team-a.plan v{version['version']} (alias production), source {version['source']}")
