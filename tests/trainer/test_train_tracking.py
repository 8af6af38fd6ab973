"""The pure parts of MLflow tracking (quranft.trainer.tracking): the target from the environment, tags, the run
lookup (against a fake client: the real server is tests/reliability/test_mlflow_real.py), the guard, metric
selection. Importing the module must not import mlflow, Lightning or torch (the operator reads CLIENT_ENV)."""
from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from fixtures_model import cli_env
from quranft.trainer.tracking import (CLIENT_ENV, TAG_UID, Guard, TrackingTarget, apply_client_env, clip,
                                      find_or_create_run, flatten, metric_key, public_uri, resource_tags,
                                      step_metrics, target_from_env, uid_filter, validation_metrics)

UID = "0b6f3c2e-5d1a-4f0e-9a53-3c2d1e0f9a11"


def test_importing_tracking_loads_neither_mlflow_nor_lightning_nor_torch():
    code = ("import sys, quranft.trainer.tracking; "
            "print(sorted(m for m in ('mlflow', 'lightning', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=cli_env())
    assert out.stdout.strip() == "[]"


def test_no_tracking_uri_means_tracking_is_off():
    assert target_from_env("team-a", "v2", {}) is None
    assert target_from_env("team-a", "v2", {"MLFLOW_TRACKING_URI": "  "}) is None


def test_target_from_the_operators_environment():
    env = {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "QURANFT_RUN_UID": UID}
    target = target_from_env("team-a", "v2", env)
    assert target == TrackingTarget(uri="http://mlflow:5000", experiment="team-a", uid=UID, namespace="team-a",
                                    name="v2")
    # An experiment setting wins over the namespace; the benchmark takes namespace and name from the pod's env.
    env |= {"MLFLOW_EXPERIMENT_NAME": "asr", "QURANFT_NAMESPACE": "team-b", "QURANFT_RUN": "v3"}
    target = target_from_env(None, None, env)
    assert (target.experiment, target.namespace, target.name) == ("asr", "team-b", "v3")
    assert target_from_env(None, None, {"MLFLOW_TRACKING_URI": "x"}).experiment == "quranft"


def test_resource_tags_leave_out_what_is_unknown():
    target = TrackingTarget(uri="u", experiment="e", uid=UID, namespace="team-a", name="v2")
    assert resource_tags(target, dataSpecHash="d5a7", baseModel=None) == {
        "quranft.namespace": "team-a", "quranft.name": "v2", TAG_UID: UID, "quranft.dataSpecHash": "d5a7"}


def test_uid_filter_quotes_and_refuses_quotes():
    assert uid_filter(UID) == f"tags.`quranft.uid` = '{UID}'"
    with pytest.raises(ValueError):
        uid_filter("x' or '1'='1")


def test_client_env_is_a_default_the_pod_can_override():
    env = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}
    apply_client_env(env)
    assert env["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "60"
    assert env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == CLIENT_ENV["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    assert int(CLIENT_ENV["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) <= 2 and int(CLIENT_ENV["MLFLOW_HTTP_REQUEST_TIMEOUT"]) <= 10


class FakeClient:
    """MlflowClient's lookup calls, recorded."""

    def __init__(self, experiments=(), runs=()):
        self.experiments = {name: SimpleNamespace(experiment_id=str(i)) for i, name in enumerate(experiments)}
        self.runs = list(runs)
        self.calls: list[tuple] = []
        self.create_fails = False

    def get_experiment_by_name(self, name):
        return self.experiments.get(name)

    def create_experiment(self, name):
        self.calls.append(("create_experiment", name))
        self.experiments[name] = SimpleNamespace(experiment_id="9")
        if self.create_fails:  # another stage created it first
            raise RuntimeError("RESOURCE_ALREADY_EXISTS")
        return "9"

    def search_runs(self, experiment_ids, filter_string, max_results, order_by):
        self.calls.append(("search_runs", tuple(experiment_ids), filter_string))
        return [SimpleNamespace(info=SimpleNamespace(run_id=r)) for r in self.runs][:max_results]

    def create_run(self, experiment_id, tags, run_name):
        self.calls.append(("create_run", experiment_id, tags, run_name))
        return SimpleNamespace(info=SimpleNamespace(run_id="new"))

    def set_tag(self, run_id, key, value):
        self.calls.append(("set_tag", run_id, key, value))


TARGET = TrackingTarget(uri="u", experiment="team-a", uid=UID, namespace="team-a", name="v2")


def test_the_resources_run_is_found_by_uid_and_retagged():
    client = FakeClient(experiments=["team-a"], runs=["r1"])
    assert find_or_create_run(client, TARGET, {TAG_UID: UID}) == "r1"
    assert ("search_runs", ("0",), uid_filter(UID)) in client.calls
    assert ("set_tag", "r1", TAG_UID, UID) in client.calls
    assert not [c for c in client.calls if c[0] == "create_run"]


def test_a_missing_experiment_and_run_are_created():
    client = FakeClient()
    assert find_or_create_run(client, TARGET, {TAG_UID: UID}) == "new"
    assert client.calls[0] == ("create_experiment", "team-a")
    assert client.calls[-1] == ("create_run", "9", {TAG_UID: UID}, "v2")


def test_an_experiment_created_meanwhile_is_used():
    client = FakeClient()
    client.create_fails = True
    assert find_or_create_run(client, TARGET, {}) == "new"


def test_a_run_named_directly_is_not_searched():
    client = FakeClient(experiments=["team-a"], runs=["r1"])
    direct = TARGET.model_copy(update={"run_id": "given"})
    assert find_or_create_run(client, direct, {"k": "v"}) == "given"
    assert client.calls == [("set_tag", "given", "k", "v")]


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_the_guard_swallows_failures_logs_once_and_pauses_with_doubling_cooldown():
    clock, lines = Clock(), []
    guard = Guard(lines.append, cooldown=10, max_cooldown=25, clock=clock)
    assert guard.call("ok", lambda: 42) == 42 and guard.ok

    def refused():
        clock.now += 3  # the client's retries take time
        raise ConnectionError("refused")

    assert guard.call("log metrics", refused) is None
    assert not guard.ok and guard.error == "log metrics: ConnectionError: refused" and len(lines) == 1
    calls = []
    assert guard.call("skipped", calls.append, 1) is None and calls == [] and guard.skipped == 1
    clock.now += 10  # the first pause is over: the next failure pauses twice as long
    guard.call("log metrics", refused)
    clock.now += 19
    assert guard.paused
    clock.now += 1
    assert not guard.paused
    guard.call("log metrics", refused)  # a third failure: the pause is capped at 25 s
    clock.now += 25
    assert not guard.paused
    assert guard.call("recovered", lambda: "back") == "back"
    assert not guard.ok and len(lines) == 1  # the run lost data: still degraded, and logged once
    assert guard.summary("r1") == {"runId": "r1", "ok": False, "error": "log metrics: ConnectionError: refused",
                                   "lostSeconds": 9.0}
    assert Guard().summary(None) == {"runId": None, "ok": True}
    assert Guard().summary("r2", "https://bob:s3cret@mlflow.example:443/") == {
        "runId": "r2", "uri": "https://mlflow.example:443/", "ok": True}


def test_public_uri_drops_credentials_only():
    assert public_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert public_uri("https://user:p@ss@mlflow.team:8443/base?x=1") == "https://mlflow.team:8443/base?x=1"


def test_long_errors_keep_both_ends():
    text = "API request failed " + "x" * 500 + " [Errno 111] Connection refused"
    short = clip(text, 120)
    assert len(short) <= 120 and short.startswith("API request failed") and short.endswith("Connection refused")


def test_config_flattened_like_lightning_does():
    doc = {"run": {"name": "v2"}, "training": {"freeze": {"encoderLayers": 10}, "lr": 0.001, "tags": {}},
           "data": {"blend": None}}
    assert flatten(doc) == {"run/name": "v2", "training/freeze/encoderLayers": 10, "training/lr": 0.001,
                            "training/tags": {}, "data/blend": None}


def test_step_and_validation_metrics_from_callback_metrics():
    import torch
    logged = {"train_loss": torch.tensor(2.5), "train_ctc_loss": 2.5, "learning_rate": 1e-3,
              "global_step": torch.tensor(4.0), "val_wer": torch.tensor(0.8), "train_batch": torch.ones(3)}
    assert step_metrics(logged) == {"train_loss": 2.5, "train_ctc_loss": 2.5, "learning_rate": 1e-3}
    assert validation_metrics(logged) == pytest.approx({"val_wer": 0.8})
    assert metric_key("val_wer@ctc:head") == "val_wer_ctc_head"
