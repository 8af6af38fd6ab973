"""The operator against the embedded real cluster: CRD validation, a stub run to a verdict, restarts,
deletion, quota and the operator budget. The operator runs as a subprocess under its own ServiceAccount."""
from __future__ import annotations

import json
import random
import threading
import time
import urllib.request

import pytest
from clusterkit import condition, resource, stub_commands
from kubernetes.client.exceptions import ApiException


pytestmark = pytest.mark.cluster




def _set(path: str, value):
    def mutate(body):
        node = body
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        if value is KeyError:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return mutate


INVALID = [
    ("no storage", _set("spec.storage", KeyError), "spec.storage: Required value"),
    ("claim and size", _set("spec.storage", {"existingClaim": "ws", "size": "1Gi"}), "exactly one of existingClaim"),
    ("empty storage", _set("spec.storage", {}), "exactly one of existingClaim or size"),
    ("unknown mode", _set("spec.training.mode", "rnnt"), 'Unsupported value: "rnnt"'),
    ("zero steps", _set("spec.training.maxSteps", 0), "spec.training.maxSteps: Invalid value"),
    ("steps wrong type", _set("spec.training.maxSteps", "many"), "must be of type integer"),
    ("warmup >= steps", _set("spec.training.warmupSteps", 10), "warmupSteps must be below training.maxSteps"),
    ("frozen layers", _set("spec.training.freeze", {"encoderLayers": 99}), "spec.training.freeze.encoderLayers"),
    ("local without path", _set("spec.data", {"source": "local"}), "localPath is required"),
    ("durations", _set("spec.data.minDurationSeconds", 40.0), "minDurationSeconds must be below"),
    ("zero lr", _set("spec.training.learningRate", 0), "spec.training.learningRate"),
    ("negative gpus", _set("spec.resources.gpus", -1), "spec.resources.gpus"),
    ("bad memory", _set("spec.resources.memory", "lots"), "spec.resources.memory"),
    ("two baselines", _set("spec.benchmark", {"baseline": {"baseModel": True, "resultsPath": "/x"}}),
     "exactly one of qftRef, resultsPath or baseModel"),
    ("bad secret ref", _set("spec.hubTokenSecretRef", {"name": "Bad_Name"}), "spec.hubTokenSecretRef.name"),
    ("name too long", _set("metadata.name", "x" * 60), "metadata.name"),
    ("no base model", _set("spec.training", {"maxSteps": 10}), "spec.training.baseModel: Required value"),
    ("bad queue name", _set("spec.queueName", "Team A"), "spec.queueName"),
    ("huge batch", _set("spec.training.batchSize", 100000), "spec.training.batchSize"),
    ("unknown enum precision", _set("spec.training.precision", "fp8"), "spec.training.precision"),
]


def test_invalid_specs_are_rejected_by_the_api_server(env):
    failures = []
    for label, mutate, expected in INVALID:
        body = resource("bad")
        mutate(body)
        try:
            env.create(body)
            failures.append(f"{label}: accepted")
            env.delete(body["metadata"]["name"])
        except ApiException as exc:
            message = json.loads(exc.body).get("message", "")
            if exc.status != 422 or expected not in message:
                failures.append(f"{label}: {exc.status} {message[:400]}")
    assert failures == []
    # Unknown fields are an error with strict field validation (kubectl's default).
    with pytest.raises(ApiException) as err:
        body = resource("strict")
        body["spec"]["training"]["maxStep"] = 5
        env.custom.create_namespaced_custom_object("quranft.io", "v1alpha1", env.ns, "quranfinetunes", body,
                                                   field_validation="Strict")
    assert 'unknown field "spec.training.maxStep"' in json.loads(err.value.body)["message"]
    assert env.jobs() == []


def test_immutable_fields_refuse_changes_and_suspend_may_change(env):
    env.create(resource("frozen"))
    for path, value, message in [
        ("training", {"baseModel": "tiny", "maxSteps": 20}, "spec.training is immutable"),
        ("data", {"source": "hub"}, "spec.data is immutable"),
        ("storage", {"existingClaim": "other"}, "spec.storage is immutable"),
    ]:
        with pytest.raises(ApiException) as err:
            env.custom.patch_namespaced_custom_object("quranft.io", "v1alpha1", env.ns, "quranfinetunes",
                                                      "frozen", {"spec": {path: value}})
        assert err.value.status == 422 and message in json.loads(err.value.body)["message"], err.value.body
    env.custom.patch_namespaced_custom_object("quranft.io", "v1alpha1", env.ns, "quranfinetunes", "frozen",
                                              {"spec": {"suspend": True}})
    assert env.get("frozen")["spec"]["suspend"] is True


def test_stub_run_reaches_a_verdict(env):
    env.claim()
    env.start_operator()
    env.create(resource("happy", commands=stub_commands(train_seconds=12)))
    seen = env.wait(lambda: (env.get("happy").get("status") or {}).get("progress"), 60, "progress in status")
    assert 1 <= seen["step"] <= 10 and seen["maxSteps"] == 10
    obj = env.wait_phase("happy", ("Succeeded", "Failed"), 120)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert obj["status"]["verdict"] == "improvement"
    assert obj["status"]["benchmark"]["metrics"]["recall"] == 0.9
    assert obj["status"]["model"]["sha256"] == "0" * 64
    assert obj["status"]["jobs"] == {"prepare": "happy-prepare", "train": "happy-train", "benchmark": "happy-bench"}
    for ctype in ("DataReady", "QuotaAdmitted", "Trained", "Benchmarked", "Improved"):
        assert condition(obj, ctype)["status"] == "True", ctype
        assert condition(obj, ctype)["observedGeneration"] == 1
    assert sorted(j.metadata.labels["quranft.io/stage"] for j in env.jobs("happy")) == ["benchmark", "prepare", "train"]
    table = env.cluster.kubectl("get", "qft", "-n", env.ns).stdout
    assert "Succeeded" in table and "improvement" in table and "0.9" in table, table
    env.events_once("happy", {"PhasePreparingData", "PhaseTraining", "PhaseBenchmarking", "PhaseSucceeded",
                              "JobCreated"})
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{env.metrics_port}/metrics", timeout=5).read().decode()
    assert 'quranft_verdicts_total{verdict="improvement"} 1.0' in metrics
    assert 'quranft_runs{phase="Succeeded"} 1.0' in metrics
    assert "quranft_reconcile_duration_seconds_count" in metrics


def test_config_error_exit_code_fails_fast_with_one_pod(env):
    env.claim()
    env.start_operator()
    env.create(resource("bad-config", commands=stub_commands(exit_codes={"train": 2})))
    obj = env.wait_phase("bad-config", "Failed", 90)
    failed = condition(obj, "Failed")
    assert failed["reason"] == "ConfigError" and "exit code 2" in failed["message"], failed
    assert len(env.pods("bad-config")) == 2  # one prepare pod, one train pod: exit 2 is never retried


def test_spec_beyond_operator_budget_fails_without_jobs(env):
    env.claim()
    env.start_operator("--max-gpus-per-namespace", "1")
    env.create(resource("too-big", gpus=2))
    obj = env.wait_phase("too-big", "Failed", 60)
    assert condition(obj, "Failed")["reason"] == "ConfigError"
    assert "GPUs per namespace" in condition(obj, "Failed")["message"]
    assert env.jobs() == []


def test_operator_killed_mid_run_never_duplicates_jobs(env):
    env.claim()
    rng = random.Random(5)
    names = ["chaos-a", "chaos-b"]
    env.start_operator()
    for name in names:
        env.create(resource(name, commands=stub_commands(train_seconds=6, prepare_seconds=2, bench_seconds=2)))
    deadline = time.monotonic() + 180
    kills = 0
    while time.monotonic() < deadline and kills < 4:  # 4 seeded kills, then let it finish
        phases = [(env.get(n).get("status") or {}).get("phase") for n in names]
        if all(p in ("Succeeded", "Failed") for p in phases):
            break
        time.sleep(rng.uniform(0.5, 4.0))
        env.kill_operator()
        kills += 1
        env.start_operator()
    for name in names:
        obj = env.wait_phase(name, ("Succeeded", "Failed"), 120)
        assert obj["status"]["phase"] == "Succeeded", (name, obj["status"])
        stages = sorted(j.metadata.labels["quranft.io/stage"] for j in env.jobs(name))
        assert stages == ["benchmark", "prepare", "train"], (name, stages)
    assert kills >= 2


def test_delete_removes_jobs_and_pods_and_keeps_the_claim(env):
    env.start_operator()
    env.create(resource("doomed", claim=None, size="1Gi", commands=stub_commands(train_seconds=60)))
    env.wait(lambda: [p for p in env.pods("doomed") if p.metadata.labels["quranft.io/stage"] == "train"
                      and p.status.phase == "Running"], 90, "a running training pod")
    env.delete("doomed")
    env.wait(lambda: not env.jobs("doomed") and not env.pods("doomed"), 60, "Jobs and pods gone")
    claims = [c.metadata.name for c in env.core.list_namespaced_persistent_volume_claim(env.ns).items]
    assert claims == ["doomed-workspace"]
    env.wait(lambda: not env.custom.list_namespaced_custom_object("quranft.io", "v1alpha1", env.ns,
                                                                 "quranfinetunes")["items"], 30, "resource gone")


def test_gpu_quota_blocks_then_proceeds_when_raised(env):
    env.claim()
    env.core.create_namespaced_resource_quota(env.ns, {"metadata": {"name": "gpus"},
                                                       "spec": {"hard": {"requests.nvidia.com/gpu": "0"}}})
    env.start_operator()
    env.create(resource("gpu-run", gpus=1))
    def quota_exceeded():
        obj = env.get("gpu-run")
        return obj if (condition(obj, "QuotaExceeded") or {}).get("status") == "True" else None
    obj = env.wait(quota_exceeded, 60, "QuotaExceeded")
    assert obj["status"]["phase"] == "Training"
    assert "exceeded quota" in condition(obj, "QuotaExceeded")["message"]
    env.core.patch_namespaced_resource_quota("gpus", env.ns, {"spec": {"hard": {"requests.nvidia.com/gpu": "1"}}})
    obj = env.wait_phase("gpu-run", ("Succeeded", "Failed"), 180)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert condition(obj, "QuotaExceeded")["status"] == "False"


def test_operator_budget_caps_concurrent_trainings_fifo(env):
    env.claim()
    env.start_operator("--max-concurrent-trainings", "2")
    names = [f"fifo-{i}" for i in range(5)]
    for name in names:
        env.create(resource(name, commands=stub_commands(train_seconds=4, prepare_seconds=0.2)))
    peak, stop = [0], threading.Event()

    def watch():
        while not stop.is_set():
            active = [j for j in env.jobs(stage="train") if not (j.status.succeeded or j.status.failed)]
            peak[0] = max(peak[0], len(active))
            time.sleep(0.2)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        queued = env.wait(lambda: [n for n in names if (env.get(n).get("status") or {}).get("phase") == "Queued"],
                          60, "a Queued run")
        assert queued
        for name in names:
            assert env.wait_phase(name, ("Succeeded", "Failed"), 240)["status"]["phase"] == "Succeeded"
    finally:
        stop.set()
        watcher.join(5)
    assert peak[0] == 2
    # Admitted first-in first-out (admission.decide: head of line): the two that fit at once were admitted before
    # any later run, and the three that waited in the order the resources were created. Measured at admission
    # (QuotaAdmitted's transition; RFC 3339 sorts as text): between the first two, the order their training Jobs
    # appear in is their data preparation's, not the budget's (CI saw fifo-1's 2 s before fifo-0's).
    admitted = {n: condition(env.get(n), "QuotaAdmitted")["lastTransitionTime"] for n in names}
    assert max(admitted[n] for n in names[:2]) <= min(admitted[n] for n in names[2:]), admitted
    assert [admitted[n] for n in names[2:]] == sorted(admitted[n] for n in names[2:]), admitted
    # Siblings on the same claim with the same data spec reuse the first run's prepared data.
    reused = [n for n in names if condition(env.get(n), "DataReady")["reason"] == "ReusedFromSibling"]
    assert len(env.jobs(stage="prepare")) + len(reused) == len(names)


def test_suspend_resume_and_cleanup_after_ttl(env):
    env.claim()
    env.start_operator()
    env.create(resource("pausable", commands=stub_commands(train_seconds=20), ttlSecondsAfterFinished=0,
                        cleanup={"onSuccess": "DeleteJobs"}))
    env.wait(lambda: [p for p in env.pods("pausable") if p.metadata.labels["quranft.io/stage"] == "train"
                      and p.status.phase == "Running"], 90, "a running training pod")
    env.custom.patch_namespaced_custom_object("quranft.io", "v1alpha1", env.ns, "quranfinetunes", "pausable",
                                              {"spec": {"suspend": True}})
    obj = env.wait_phase("pausable", "Suspended", 30)
    assert condition(obj, "Suspended")["status"] == "True"
    env.wait(lambda: env.batch.read_namespaced_job("pausable-train", env.ns).spec.suspend, 30, "Job suspended")
    env.wait(lambda: not [p for p in env.pods("pausable") if p.metadata.labels["quranft.io/stage"] == "train"
                          and p.status.phase in ("Pending", "Running")], 60, "training pod stopped")
    env.custom.patch_namespaced_custom_object("quranft.io", "v1alpha1", env.ns, "quranfinetunes", "pausable",
                                              {"spec": {"suspend": False}})
    obj = env.wait_phase("pausable", ("Succeeded", "Failed"), 120)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert len(env.jobs("pausable", "train")) <= 1
    # ttlSecondsAfterFinished=0 + onSuccess DeleteJobs: the Jobs go, the status (and the claim) stay.
    env.wait(lambda: env.get("pausable")["status"].get("cleanedUp"), 30, "cleanup applied")
    env.wait(lambda: not env.jobs("pausable"), 30, "Jobs deleted")
    assert env.get("pausable")["status"]["verdict"] == "improvement"
    assert [c.metadata.name for c in env.core.list_namespaced_persistent_volume_claim(env.ns).items] == ["ws"]
