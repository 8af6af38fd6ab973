"""The embedded cluster end to end: real control plane, node agent running the pods as processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from kubernetes import client

pytestmark = pytest.mark.cluster
PY = "python:3.11"


def wait_for(predicate, timeout: float = 90, what: str = "condition", interval: float = 0.2):
    """Poll `predicate` until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def core(cluster):
    api = cluster.api_client()
    yield client.CoreV1Api(api)
    api.close()


@pytest.fixture
def batch(cluster):
    api = cluster.api_client()
    yield client.BatchV1Api(api)
    api.close()


def pod_body(name: str, script: str, **extra) -> dict:
    container = {"name": "main", "image": PY, "command": ["python", "-c", script]}
    container.update(extra.pop("container", {}))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "containers": [container], **extra}}


def job_body(name: str, script: str, gpus: int = 0, owner: dict | None = None) -> dict:
    container: dict = {"name": "main", "image": PY, "command": ["python", "-c", script]}
    if gpus:
        container["resources"] = {"requests": {"nvidia.com/gpu": str(gpus)}, "limits": {"nvidia.com/gpu": str(gpus)}}
    meta: dict = {"name": name}
    if owner:
        meta["ownerReferences"] = [owner]
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
            "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [container]}}}}


def job_condition(batch, namespace: str, name: str, kind: str) -> bool:
    job = batch.read_namespaced_job_status(name, namespace)
    return any(c.type == kind and c.status == "True" for c in job.status.conditions or [])


def pod_phase(core, namespace: str, name: str) -> str:
    return core.read_namespaced_pod_status(name, namespace).status.phase


def test_kubectl_works_with_written_kubeconfig(cluster):
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    ready = {n["metadata"]["name"]: any(c["type"] == "Ready" and c["status"] == "True"
                                        for c in n["status"]["conditions"]) for n in nodes}
    assert ready == {n.name: True for n in cluster.nodes}
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == version["clientVersion"]["gitVersion"] == "v1.37.2"
    assert cluster.kubectl("auth", "can-i", "create", "pods").stdout.strip() == "yes"


def test_cli_env_exports_kubeconfig_and_tools(cluster):
    operator_root = Path(__file__).resolve().parents[2] / "operator"
    script = (f'eval "$({sys.executable} -m quranft.cli cluster env)" && command -v kubectl helm '
              '&& kubectl get nodes -o name')
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(operator_root)})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert lines[:2] == [str(cluster.bin_dir / "kubectl"), str(cluster.bin_dir / "helm")]
    assert lines[2:] == [f"node/{n.name}" for n in cluster.nodes]


def test_job_running_python_completes_and_logs_are_served(cluster, namespace, batch, core):
    batch.create_namespaced_job(namespace, job_body("hello", "import sys; print('hello from', sys.version_info[0])"))
    wait_for(lambda: job_condition(batch, namespace, "hello", "Complete"), what="Job hello Complete")
    logs = cluster.kubectl("logs", "-n", namespace, "job/hello").stdout
    assert logs == "hello from 3\n"
    pod = core.list_namespaced_pod(namespace, label_selector="job-name=hello").items[0]
    assert core.read_namespaced_pod_log(pod.metadata.name, namespace, tail_lines=1) == "hello from 3\n"
    assert pod.status.container_statuses[0].state.terminated.reason == "Completed"


def test_exit_code_and_termination_message_in_status(namespace, core):
    body = pod_body("fails", "open('/dev/termination-log', 'w').write('{\"ok\": false}'); raise SystemExit(3)")
    body["spec"]["containers"].append({
        "name": "fallback", "image": PY, "terminationMessagePolicy": "FallbackToLogsOnError",
        "command": ["python", "-c", "print('last words', flush=True); raise SystemExit(1)"]})
    core.create_namespaced_pod(namespace, body)
    wait_for(lambda: pod_phase(core, namespace, "fails") == "Failed", what="pod Failed")
    statuses = {s.name: s.state.terminated for s in core.read_namespaced_pod_status("fails", namespace)
                .status.container_statuses}
    assert (statuses["main"].exit_code, statuses["main"].reason, statuses["main"].message) == (3, "Error", '{"ok": false}')
    assert (statuses["fallback"].exit_code, statuses["fallback"].message) == (1, "last words\n")


def test_resource_quota_on_gpus_holds_back_second_job(cluster, namespace, batch, core, tmp_path: Path):
    assert max(n.gpus for n in cluster.nodes) >= 1, "the cluster must advertise nvidia.com/gpu (--gpus)"
    core.create_namespaced_resource_quota(namespace, {"metadata": {"name": "gpus"},
                                                      "spec": {"hard": {"requests.nvidia.com/gpu": "1"}}})
    wait_for(lambda: core.read_namespaced_resource_quota_status("gpus", namespace).status.hard,
             what="quota status")
    release = tmp_path / "release"
    hold = f"import os, time\nwhile not os.path.exists({str(release)!r}): time.sleep(0.1)"
    batch.create_namespaced_job(namespace, job_body("first", hold, gpus=1))
    wait_for(lambda: [p for p in core.list_namespaced_pod(namespace, label_selector="job-name=first").items
                      if p.status.phase == "Running"], what="first GPU pod Running")
    batch.create_namespaced_job(namespace, job_body(
        "second", "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])", gpus=1))

    def failed_create():
        events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=second").items
        return [e for e in events if e.reason == "FailedCreate" and "exceeded quota" in e.message]

    assert "requests.nvidia.com/gpu" in wait_for(failed_create, what="FailedCreate event")[0].message
    assert core.list_namespaced_pod(namespace, label_selector="job-name=second").items == []
    release.touch()
    wait_for(lambda: job_condition(batch, namespace, "first", "Complete"), what="first Job Complete")
    # The Job controller retries with back-off once quota is free again.
    wait_for(lambda: job_condition(batch, namespace, "second", "Complete"), timeout=120, what="second Job Complete")
    # Like the NVIDIA device plugin, the agent hands the GPU pod one device index of its node.
    assert cluster.kubectl("logs", "-n", namespace, "job/second").stdout.strip() in {
        str(i) for i in range(max(n.gpus for n in cluster.nodes))}


def test_gpu_pod_beyond_node_capacity_stays_pending(cluster, namespace, core):
    capacity = max(n.gpus for n in cluster.nodes)
    body = pod_body("greedy", "print('never')",
                    container={"resources": {"limits": {"nvidia.com/gpu": str(capacity + 1)}}})
    core.create_namespaced_pod(namespace, body)

    def unschedulable():
        conds = core.read_namespaced_pod_status("greedy", namespace).status.conditions or []
        return [c for c in conds if c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"]

    assert "nvidia.com/gpu" in wait_for(unschedulable, what="PodScheduled=False/Unschedulable")[0].message
    pod = core.read_namespaced_pod("greedy", namespace)
    assert pod.status.phase == "Pending" and not pod.spec.node_name


def test_deleting_owner_garbage_collects_jobs_and_pods(namespace, batch, core):
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid,
           "blockOwnerDeletion": True}
    for name in ("child-a", "child-b"):
        batch.create_namespaced_job(namespace, job_body(name, "import time; time.sleep(600)", owner=ref))
    wait_for(lambda: len([p for p in core.list_namespaced_pod(namespace).items if p.status.phase == "Running"]) == 2,
             what="both child pods Running")
    core.delete_namespaced_config_map("owner", namespace)
    wait_for(lambda: not batch.list_namespaced_job(namespace).items, what="Jobs collected")
    wait_for(lambda: not core.list_namespaced_pod(namespace).items, what="pods collected (SIGTERM, deletion confirmed)")


def test_pvc_binds_and_pods_in_sequence_share_files(namespace, core):
    core.create_namespaced_persistent_volume_claim(namespace, {
        "metadata": {"name": "workspace"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    claim = wait_for(lambda: (lambda c: c if c.status.phase == "Bound" else None)(
        core.read_namespaced_persistent_volume_claim("workspace", namespace)), what="PVC Bound")
    assert claim.spec.storage_class_name == "local"  # the default StorageClass was applied
    volume = {"volumes": [{"name": "ws", "persistentVolumeClaim": {"claimName": "workspace"}}]}
    mount = {"volumeMounts": [{"name": "ws", "mountPath": "/workspace"}]}
    token = uuid.uuid4().hex
    core.create_namespaced_pod(namespace, pod_body(
        "writer", f"import os; os.makedirs('/workspace/runs'); open('/workspace/runs/t.txt', 'w').write({token!r})",
        container=mount, **volume))
    wait_for(lambda: pod_phase(core, namespace, "writer") == "Succeeded", what="writer Succeeded")
    core.create_namespaced_pod(namespace, pod_body(
        "reader", f"assert open('/workspace/runs/t.txt').read() == {token!r}; print('same files')",
        container=mount, **volume))
    wait_for(lambda: pod_phase(core, namespace, "reader") in ("Succeeded", "Failed"), what="reader finished")
    assert pod_phase(core, namespace, "reader") == "Succeeded", core.read_namespaced_pod_log("reader", namespace)


def test_configmap_secret_emptydir_and_downward_env(namespace, core):
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"}, "data": {"config.json": '{"a": 1}'}})
    core.create_namespaced_secret(namespace, {"metadata": {"name": "sec"}, "stringData": {"token": "s3cret"}})
    script = "\n".join([
        "import json, os, stat",
        "assert json.load(open('/etc/quranft/config.json')) == {'a': 1}",
        "assert open('/var/run/sec/tok').read() == 's3cret'",
        "assert stat.S_IMODE(os.stat('/var/run/sec/tok').st_mode) == 0o400",
        "assert os.environ['POD_NAME'] == 'mounts' and os.environ['TOKEN'] == 's3cret'",
        "assert os.environ['NS'] == os.environ['EXPECTED_NS']",
        "assert os.path.ismount('/dev/shm-test')",
        "open('/dev/shm-test/x', 'w').write('in memory')",
        "assert os.path.exists('/var/run/secrets/kubernetes.io/serviceaccount/token')",
        "assert os.getcwd() == '/etc/quranft'",
        "print('mounts ok')",
    ])
    body = pod_body("mounts", script, container={
        "workingDir": "/etc/quranft",
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "EXPECTED_NS", "value": namespace},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "token"}}}],
        "volumeMounts": [{"name": "cfg", "mountPath": "/etc/quranft", "readOnly": True},
                         {"name": "sec", "mountPath": "/var/run/sec"},
                         {"name": "shm", "mountPath": "/dev/shm-test"}]},
        volumes=[{"name": "cfg", "configMap": {"name": "cfg"}},
                 {"name": "sec", "secret": {"secretName": "sec", "defaultMode": 0o400,
                                            "items": [{"key": "token", "path": "tok"}]}},
                 {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}])
    core.create_namespaced_pod(namespace, body)
    wait_for(lambda: pod_phase(core, namespace, "mounts") in ("Succeeded", "Failed"), what="pod finished")
    assert core.read_namespaced_pod_log("mounts", namespace) == "mounts ok\n"
    assert pod_phase(core, namespace, "mounts") == "Succeeded"


def test_unknown_image_reports_err_image_pull(namespace, core):
    core.create_namespaced_pod(namespace, {"metadata": {"name": "alien"}, "spec": {"containers": [
        {"name": "main", "image": "docker.io/library/busybox:1.36", "command": ["true"]}]}})

    def waiting():
        statuses = core.read_namespaced_pod_status("alien", namespace).status.container_statuses or []
        return [s.state.waiting for s in statuses if s.state.waiting and
                s.state.waiting.reason in ("ErrImagePull", "ImagePullBackOff")]

    assert "busybox:1.36" in wait_for(waiting, what="ErrImagePull")[0].message
    assert pod_phase(core, namespace, "alien") == "Pending"


def test_pod_reaches_api_server_with_in_cluster_config(namespace, core):
    """What an operator Deployment does: service env + projected service-account token and CA."""
    script = "\n".join([
        "from kubernetes import client, config",
        "from kubernetes.client.exceptions import ApiException",
        "config.load_incluster_config()",
        "try:",
        "    client.CoreV1Api().list_namespaced_pod(open('/var/run/secrets/kubernetes.io/serviceaccount/namespace').read())",
        "except ApiException as err:",
        "    print(err.status, err.body)",
    ])
    core.create_namespaced_pod(namespace, pod_body("incluster", script))
    wait_for(lambda: pod_phase(core, namespace, "incluster") in ("Succeeded", "Failed"), what="pod finished")
    log = core.read_namespaced_pod_log("incluster", namespace)
    # Authenticated as the pod's service account (TLS verified against the CA), then denied by RBAC.
    assert log.startswith("403 ") and f"system:serviceaccount:{namespace}:default" in log, log


def test_deleted_running_pod_ends_failed_and_a_job_with_pod_failure_policy_replaces_it(namespace, batch, core):
    """A real kubelet puts a deleted pod into a terminal phase; with a podFailurePolicy the Job controller
    waits for that before it creates the replacement (a preempted training pod must be retried)."""
    job = job_body("retried", "import time, signal, sys\n"
                   "signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))\n"
                   "print('started', flush=True); time.sleep(600)")
    job["spec"]["backoffLimit"] = 2
    job["spec"]["podFailurePolicy"] = {"rules": [{"action": "FailJob", "onExitCodes": {
        "containerName": "main", "operator": "In", "values": [2]}}]}
    batch.create_namespaced_job(namespace, job)

    def running_pods():
        pods = core.list_namespaced_pod(namespace, label_selector="job-name=retried").items
        return [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]

    first = wait_for(running_pods, what="the first pod running")[0]
    core.delete_namespaced_pod(first.metadata.name, namespace)
    second = wait_for(lambda: [p for p in running_pods() if p.metadata.uid != first.metadata.uid],
                      timeout=60, what="a replacement pod")
    assert second
