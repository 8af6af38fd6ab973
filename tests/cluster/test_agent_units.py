"""Pure parts of the node agent: env resolution, pod phase, termination messages, images, provisioning."""
from __future__ import annotations

import base64
from pathlib import Path

import pytest

from quranft.cluster import images
from quranft.cluster.envvars import ContainerConfigError, command_line, container_env, expand
from quranft.cluster.logserver import tail_bytes
from quranft.cluster.podstatus import ContainerRecord, pod_phase, termination_message
from quranft.cluster.provisioner import volume_for, wants_volume

POD = {"metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"app": "x"}},
       "spec": {"nodeName": "n0", "serviceAccountName": "sa"}, "status": {}}


def fetch_from(objects: dict):
    return lambda kind, ns, name: objects.get((kind, ns, name))


def test_expand_follows_kubernetes_rules():
    env = {"A": "1"}
    assert expand("x$(A)y", env) == "x1y"
    assert expand("$(MISSING)", env) == "$(MISSING)"
    assert expand("$$(A)", env) == "$(A)"


def test_container_env_sources_in_order():
    objects = {("ConfigMap", "ns", "cm"): {"data": {"K": "from-cm", "OTHER": "o"}},
               ("Secret", "ns", "s"): {"data": {"tok": base64.b64encode(b"secret!").decode()}}}
    container = {"name": "c", "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
                 "env": [{"name": "PLAIN", "value": "v-$(CM_K)"},
                         {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                         {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                         {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "tok"}}},
                         {"name": "GPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.nvidia.com/gpu"}}},
                         {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k",
                                                                            "optional": True}}}],
                 "resources": {"limits": {"nvidia.com/gpu": "1"}}}
    env = container_env(POD, container, {"PATH": "/bin"}, fetch_from(objects))
    assert env["CM_K"] == "from-cm" and env["PLAIN"] == "v-from-cm"
    assert env["POD"] == "p" and env["APP"] == "x" and env["TOKEN"] == "secret!" and env["GPU"] == "1"
    assert "OPT" not in env and env["PATH"] == "/bin" and env["HOSTNAME"] == "p"


def test_missing_required_key_is_a_config_error():
    container = {"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}
    with pytest.raises(ContainerConfigError):
        container_env(POD, container, {}, fetch_from({}))


def test_command_line_expands_and_requires_command():
    assert command_line({"name": "c", "command": ["echo"], "args": ["$(A)"]}, {"A": "hi"}) == ["echo", "hi"]
    with pytest.raises(ContainerConfigError):
        command_line({"name": "c", "args": ["x"]}, {})


def rec(name: str, state: dict, last: dict | None = None) -> ContainerRecord:
    r = ContainerRecord(name, "python")
    r.state, r.last_state = state, last or {}
    return r


@pytest.mark.parametrize("states,policy,expected", [
    ([{"waiting": {"reason": "ContainerCreating"}}], "Never", "Pending"),
    ([{"running": {}}], "Never", "Running"),
    ([{"terminated": {"exitCode": 0}}], "Never", "Succeeded"),
    ([{"terminated": {"exitCode": 0}}, {"terminated": {"exitCode": 3}}], "Never", "Failed"),
    ([{"terminated": {"exitCode": 3}}], "OnFailure", "Running"),
    ([{"terminated": {"exitCode": 0}}], "Always", "Running"),
    ([{"terminated": {"exitCode": 0}}, {"running": {}}], "Never", "Running"),
])
def test_pod_phase(states, policy, expected):
    main = [rec(f"c{i}", s) for i, s in enumerate(states)]
    assert pod_phase([], main, policy, failed_init=False) == expected


def test_phase_waiting_for_restart_is_running():
    main = [rec("c", {"waiting": {"reason": "CrashLoopBackOff"}}, {"terminated": {"exitCode": 1}})]
    assert pod_phase([], main, "OnFailure", failed_init=False) == "Running"


def test_termination_message_cap_and_fallback():
    assert termination_message("x" * 5000, 0, "File", "") == "x" * 4096
    logs = "".join(f"line {i}\n" for i in range(200))
    fallback = termination_message("", 1, "FallbackToLogsOnError", logs)
    assert fallback.endswith("line 199\n") and len(fallback) <= 2048
    assert termination_message("", 1, "File", logs) == ""
    assert termination_message("", 0, "FallbackToLogsOnError", logs) == ""


def test_tail_bytes():
    assert tail_bytes(b"a\nb\nc\n", 2) == b"b\nc\n"
    assert tail_bytes(b"a\nb", 1) == b"b"
    assert tail_bytes(b"a\n", 0) == b""


@pytest.mark.parametrize("image,ok", [
    ("ghcr.io/quran-finetune/trainer:0.1.0", True), ("ghcr.io/quran-finetune/trainer-cpu:dev", True),
    ("ghcr.io/quran-finetune/stub-stage:latest", True), ("python:3.11-slim", True), ("python", True),
    ("ghcr.io/quran-finetune/unknown:1", False), ("busybox", False), ("nvcr.io/nvidia/nemo:25.04", False),
])
def test_image_table(image, ok):
    runtime = images.resolve(image, "/shim")
    assert (runtime is not None) == ok
    if runtime:
        assert runtime.base_env()["PATH"].startswith(f"{runtime.venv}/bin")


def test_provisioner_builds_prebound_volume(tmp_path: Path):
    pvc = {"metadata": {"name": "ws", "namespace": "ns", "uid": "abc"},
           "spec": {"storageClassName": "local", "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "2Gi"}}}, "status": {"phase": "Pending"}}
    assert wants_volume(pvc)
    pv = volume_for(pvc, tmp_path)
    assert pv["metadata"]["name"] == "pvc-abc"
    assert pv["spec"]["claimRef"] == {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "ns",
                                      "name": "ws", "uid": "abc"}
    assert pv["spec"]["hostPath"]["path"] == str(tmp_path / "pvc-abc")
    assert pv["spec"]["capacity"] == {"storage": "2Gi"}
    assert not wants_volume({**pvc, "spec": {**pvc["spec"], "storageClassName": "other"}})


def test_gpu_allocator_assigns_distinct_devices_and_releases():
    from quranft.cluster.gpus import GpuAllocator, requested

    alloc = GpuAllocator({"n0": 2})
    assert alloc.allocate("pod-a/main", "n0", 1) == [0]
    assert alloc.allocate("pod-a/main", "n0", 1) == [0]  # a restart keeps its device
    assert alloc.allocate("pod-b/main", "n0", 1) == [1]
    alloc.release_prefix("pod-a/")
    assert alloc.allocate("pod-c/main", "n0", 1) == [0]
    assert requested({"resources": {"limits": {"nvidia.com/gpu": "2"}}}) == 2
    assert requested({"name": "cpu-only"}) == 0
