"""Issue 16 item 3 on the embedded cluster: the pods of an Indexed Job find rank 0 by its stable hostname
through a headless Service, as multi-node training does (MASTER_ADDR=<job>-0.<subdomain>), and a pod that
asks for 2 GPUs is handed 2 devices."""
from __future__ import annotations

import uuid

import pytest
from clusterkit import free_port
from kubernetes import client
from test_cluster import PY, job_condition, pod_phase, wait_for

pytestmark = pytest.mark.cluster
INDEX = "batch.kubernetes.io/job-completion-index"

# Index 0 listens on the address its own name resolves to; index 1 connects to index 0's name (retrying
# while index 0 starts) and prints what it reads. Both exit 0.
RENDEZVOUS = """
import os, socket, sys, time
rank, addr, port = int(os.environ["NODE_RANK"]), os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
if rank == 0:
    server = socket.create_server((addr, port))
    server.settimeout(40)
    conn, _ = server.accept()
    conn.sendall(f"{os.environ['TOKEN']} from {os.environ['HOSTNAME']}".encode())
    conn.close()
    print("sent", flush=True)
else:
    deadline = time.monotonic() + 40
    while True:
        try:
            conn = socket.create_connection((addr, port), timeout=5)
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    print(conn.recv(4096).decode(), flush=True)
"""

GLOO = """
import os, torch, torch.distributed as dist
rank = int(os.environ["NODE_RANK"])
dist.init_process_group("gloo", rank=rank, world_size=int(os.environ["WORLD_SIZE"]))
total = torch.tensor([rank + 1.0])
dist.all_reduce(total)
print(f"rank {rank} of {dist.get_world_size()}: {total.item()}", flush=True)
dist.destroy_process_group()
"""


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


def run_indexed_job(core, batch, namespace: str, job: str, image: str, script: str, extra_env: list[dict]) -> dict:
    """A 2-pod Indexed Job with a headless Service as its pods' subdomain, run as multi-node training would
    be (MASTER_ADDR names index 0, NODE_RANK is the completion index); returns index -> (phase, log)."""
    service, labels = f"{job}-hs", {"app": job}
    core.create_namespaced_service(namespace, {"metadata": {"name": service},
                                               "spec": {"clusterIP": "None", "selector": labels}})
    env = [{"name": "NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX}']"}}},
           {"name": "MASTER_ADDR", "value": f"{job}-0.{service}"},
           {"name": "MASTER_PORT", "value": str(free_port())}, *extra_env]
    container = {"name": "main", "image": image, "command": ["python", "-c", script], "env": env}
    batch.create_namespaced_job(namespace, {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": job},
                                            "spec": {
        "completionMode": "Indexed", "completions": 2, "parallelism": 2, "backoffLimit": 0,
        "template": {"metadata": {"labels": labels},
                     "spec": {"restartPolicy": "Never", "subdomain": service, "containers": [container]}}}})
    wait_for(lambda: job_condition(batch, namespace, job, "Complete") or job_condition(batch, namespace, job, "Failed"),
             timeout=60, what="the Indexed Job finished")
    pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items
    return {p.metadata.annotations[INDEX]: (p.status.phase, core.read_namespaced_pod_log(p.metadata.name, namespace))
            for p in pods}


def test_indexed_job_ranks_reach_rank_zero_by_its_hostname(namespace, core, batch):
    token = uuid.uuid4().hex
    result = run_indexed_job(core, batch, namespace, "ranks", PY, RENDEZVOUS, [{"name": "TOKEN", "value": token}])
    assert result == {"0": ("Succeeded", "sent\n"), "1": ("Succeeded", f"{token} from ranks-0\n")}
    assert job_condition(batch, namespace, "ranks", "Complete")


def test_gloo_process_group_across_the_pods_of_an_indexed_job(namespace, core, batch):
    """torch.distributed's env:// rendezvous at MASTER_ADDR (rank 0's TCPStore), then a gloo all-reduce."""
    result = run_indexed_job(core, batch, namespace, "gloo", "ghcr.io/quran-finetune/trainer-cpu:test", GLOO,
                             [{"name": "WORLD_SIZE", "value": "2"}])
    assert result == {"0": ("Succeeded", "rank 0 of 2: 3.0\n"), "1": ("Succeeded", "rank 1 of 2: 3.0\n")}


def test_pod_without_its_service_gets_no_subdomain_names(namespace, core):
    """Without the headless Service, cluster DNS has no `<hostname>.<subdomain>` record; neither has the
    hosts file (an operator that forgets the Service fails here as it would on a real cluster)."""
    script = ("import socket\nprint(socket.gethostbyname('solo'))\n"
              "try:\n    socket.gethostbyname('solo.missing')\nexcept socket.gaierror:\n    print('unresolved')")
    core.create_namespaced_pod(namespace, {"metadata": {"name": "solo-pod"}, "spec": {
        "restartPolicy": "Never", "hostname": "solo", "subdomain": "missing",
        "containers": [{"name": "main", "image": PY, "command": ["python", "-c", script]}]}})
    wait_for(lambda: pod_phase(core, namespace, "solo-pod") in ("Succeeded", "Failed"), timeout=30, what="pod finished")
    assert core.read_namespaced_pod_log("solo-pod", namespace) == "127.0.0.1\nunresolved\n"
    events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=solo-pod").items
    assert [e for e in events if e.reason == "SubdomainNotPublished"]


def test_two_gpu_pod_gets_two_devices(cluster, namespace, core):
    assert max(n.gpus for n in cluster.nodes) >= 2, "the cluster must advertise 2 nvidia.com/gpu per node"
    script = "import os; print(os.environ['CUDA_VISIBLE_DEVICES'], os.environ['NVIDIA_VISIBLE_DEVICES'])"
    core.create_namespaced_pod(namespace, {"metadata": {"name": "two-gpus"}, "spec": {
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": PY, "command": ["python", "-c", script],
                        "resources": {"limits": {"nvidia.com/gpu": "2"}}}]}})
    wait_for(lambda: pod_phase(core, namespace, "two-gpus") in ("Succeeded", "Failed"), timeout=30, what="pod finished")
    assert core.read_namespaced_pod_log("two-gpus", namespace) == "0,1 0,1\n"
