"""Item 6: waiting for a GPU is not a failure. On a node with one GPU, with no operator budget and no
ResourceQuota (only the scheduler holds the second run back), the second run waits `WaitingForGPU` past
the operator's default start-up deadline (set short here), then trains once the first run's pod is done."""
from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import pytest
from clusterkit import condition, resource, stub_commands

from quranft.cluster.kube import Kube, path_for
from quranft.cluster.nodeagent import NodeAgent
from quranft.cluster.nodeconfig import NodeConfig

pytestmark = pytest.mark.cluster
DEFAULT_DEADLINE = 5  # the operator's --startup-deadline-seconds (and image pull deadline) in this test
RELEASE = "release-gpu"


@pytest.fixture
def one_gpu_node(installed):
    """An extra node with exactly one nvidia.com/gpu, run by an in-process agent (the cluster's own node may
    advertise more); removed afterwards. Its state lives beside the cluster's, not under /tmp: a container's
    /tmp is an emptyDir mounted over the host's, which would hide the pod's other volume sources there."""
    name = f"quranft-gpu1-{uuid.uuid4().hex[:6]}"
    state = installed.state_dir / "extra-agents" / name
    kube = Kube.from_kubeconfig(str(installed.kubeconfig))
    agent = NodeAgent(kube, state, installed.state_dir / "pki", [NodeConfig(name, gpus=1)], provision=False).start()
    try:
        yield name
    finally:
        agent.stop(grace=5)
        kube.delete(path_for("Node", name=name))
        kube.delete(path_for("Lease", "kube-node-lease", name))
        shutil.rmtree(state, ignore_errors=True)


def _claim_dir(env, claim: str = "ws") -> Path:
    pvc = env.core.read_namespaced_persistent_volume_claim(claim, env.ns)
    return Path(env.core.read_persistent_volume(pvc.spec.volume_name).spec.host_path.path)


def _train_pod(env, run: str):
    pods = [p for p in env.pods(run) if p.metadata.labels.get("quranft.io/stage") == "train"]
    return pods[-1] if pods else None


def test_second_run_waits_for_the_gpu_then_trains(env, one_gpu_node):
    env.claim()
    env.start_operator("--startup-deadline-seconds", str(DEFAULT_DEADLINE),
                       "--image-pull-deadline-seconds", str(DEFAULT_DEADLINE))
    placement = {"gpus": 1, "cpu": "100m", "memory": "256Mi", "nodeSelector": {"kubernetes.io/hostname": one_gpu_node}}

    def run(name: str, index: int, hold: bool = False) -> dict:
        commands = stub_commands(train_seconds=1, prepare_seconds=0.3)
        if hold:  # the first run trains (holding the GPU) until the test lets it finish
            wait = f"import os, time\nwhile not os.path.exists('/workspace/{RELEASE}'): time.sleep(0.2)\n"
            commands["train"] = [*commands["train"][:2], wait + commands["train"][2], *commands["train"][3:]]
        return resource(name, resources=placement, startupDeadlineSeconds=None, commands=commands,
                        data={"source": "local", "localPath": f"/workspace/gpu-{index}"})

    t0 = time.monotonic()
    env.create(run("first", 0, hold=True))

    def training(name: str):
        pod = _train_pod(env, name)
        return pod if pod and pod.status.phase == "Running" else None
    env.wait(lambda: training("first"), 90, "the first run's training pod running (it holds the GPU)")
    env.create(run("second", 1))

    def second_waiting():
        obj = env.get("second")
        blocked = condition(obj, "StartupBlocked") or {}
        return obj if blocked.get("status") == "True" and blocked.get("reason") == "WaitingForGPU" else None
    waiting = env.wait(second_waiting, 90, "the second run WaitingForGPU")
    assert "Insufficient nvidia.com/gpu" in condition(waiting, "StartupBlocked")["message"]
    pod = _train_pod(env, "second")
    assert pod.status.phase == "Pending" and not pod.spec.node_name

    # Well past the operator's default start-up deadline (and a few reconcile passes): still waiting, not Failed.
    created = pod.metadata.creation_timestamp.timestamp()
    while time.time() - created < 3 * DEFAULT_DEADLINE + 5:
        obj = env.get("second")
        assert obj["status"]["phase"] == "Training", obj["status"]
        assert condition(obj, "StartupBlocked")["reason"] == "WaitingForGPU"
        time.sleep(1)
    waited = time.time() - created
    assert training("first"), "the first run should still hold the GPU"

    events = env.core.list_namespaced_event(env.ns, field_selector="involvedObject.name=second").items
    gpu_events = [e for e in events if e.reason == "WaitingForGPU"]
    assert gpu_events and gpu_events[0].type == "Normal", [(e.type, e.reason) for e in events]
    assert "nvidia.com/gpu" in gpu_events[0].message

    (_claim_dir(env) / RELEASE).touch()  # the first run finishes training and gives the GPU back

    first = env.wait_phase("first", ("Succeeded", "Failed"), 180)
    assert first["status"]["phase"] == "Succeeded", first["status"]
    second = env.wait_phase("second", ("Succeeded", "Failed"), 300)
    assert second["status"]["phase"] == "Succeeded", second["status"]
    assert condition(second, "StartupBlocked")["status"] == "False"
    assert condition(second, "Trained")["status"] == "True"
    # It trained on that node once the first run's training pod had given the GPU back.
    first_pod, second_pod = _train_pod(env, "first"), _train_pod(env, "second")
    assert second_pod.spec.node_name == one_gpu_node
    freed = first_pod.status.container_statuses[0].state.terminated.finished_at
    assert second_pod.status.container_statuses[0].state.terminated.started_at >= freed
    print(f"\ngpu wait: second run WaitingForGPU {waited:.0f} s past a {DEFAULT_DEADLINE} s default deadline, "
          f"then Succeeded; {time.monotonic() - t0:.0f} s in all")
