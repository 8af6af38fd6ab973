"""Issue 14 item 6: a checkout under /tmp. The stage pods mount an emptyDir at /tmp, which used to hide the
source roots the agent runs the project's images from (every prepare pod exited 1 with an import error).

A node agent is started from a copy of the source roots under /tmp (so its runtime lives there, as with a
clone in /tmp), its state dir there too (so the pod's volume sources do), and runs a pod shaped like a
stage pod: emptyDirs at /tmp and /dev/shm, HOME=/tmp, a ConfigMap volume, the trainer image."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from kubernetes import client
from test_cluster import pod_phase, wait_for

from quranft.cluster.kube import Kube, path_for

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]

STAGE_SCRIPT = """
import os, subprocess, sys
import quranft.cluster, quranft.contract.config
print(quranft.contract.config.__file__)
print(quranft.cluster.__file__)
subprocess.run(["quranft", "trainer", "--help"], check=True, stdout=subprocess.DEVNULL)
open("/tmp/scratch", "w").write("in the emptyDir")
print(sorted(os.listdir("/tmp")))
print(sorted(os.listdir(sys.argv[1])))
print(open("/etc/quranft/config.json").read())
"""


@pytest.fixture
def tmp_checkout():
    """The source roots copied to a fresh directory under /tmp (not the repository itself)."""
    root = Path(tempfile.mkdtemp(prefix="quranft-checkout-", dir="/tmp"))
    try:
        for name in ("contract", "operator", "trainer", "benchmark", "cluster"):
            shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        (root / "not-runtime.txt").write_text("the rest of the host's /tmp stays hidden")
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def agent_from_tmp(cluster, tmp_checkout):
    """A node agent process importing its code from the /tmp copy (its pods' runtime is that copy)."""
    node = f"quranft-tmp-{uuid.uuid4().hex[:6]}"
    state = tmp_checkout / "state"
    nodes_file = tmp_checkout / "nodes.json"
    nodes_file.write_text(json.dumps([{"name": node, "gpus": 0}]))
    log = open(tmp_checkout / "agent.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "quranft.cluster.nodeagent", "--kubeconfig", str(cluster.kubeconfig),
         "--state-dir", str(state), "--pki-dir", str(cluster.state_dir / "pki"), "--nodes-file", str(nodes_file),
         "--no-provision"],
        env={**os.environ, "PYTHONPATH": str(tmp_checkout / "cluster")}, stdout=log, stderr=subprocess.STDOUT)
    kube = Kube.from_kubeconfig(str(cluster.kubeconfig))
    try:
        wait_for(lambda: proc.poll() is not None or any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in ((kube.get(path_for("Node", name=node)) or {}).get("status") or {}).get("conditions") or []),
            timeout=30, what=f"node {node} Ready")
        assert proc.poll() is None, (tmp_checkout / "agent.log").read_text()
        yield node, state
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()
        kube.delete(path_for("Node", name=node))
        kube.delete(path_for("Lease", "kube-node-lease", node))


def test_stage_pod_runs_the_project_from_a_checkout_under_tmp(namespace, cluster, tmp_checkout, agent_from_tmp):
    node, state = agent_from_tmp
    api = cluster.api_client()
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"}, "data": {"config.json": '{"a": 1}'}})
    core.create_namespaced_pod(namespace, {"metadata": {"name": "prepare"}, "spec": {
        "nodeName": node, "restartPolicy": "Never",
        "containers": [{"name": "stage", "image": "ghcr.io/quran-finetune/trainer-cpu:test",
                        "command": ["python", "-c", STAGE_SCRIPT, str(tmp_checkout)],
                        "env": [{"name": "HOME", "value": "/tmp"}],
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                                         {"name": "dshm", "mountPath": "/dev/shm"},
                                         {"name": "cfg", "mountPath": "/etc/quranft", "readOnly": True}]}],
        "volumes": [{"name": "tmp", "emptyDir": {}},
                    {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                    {"name": "cfg", "configMap": {"name": "cfg"}}]}})
    try:
        wait_for(lambda: pod_phase(core, namespace, "prepare") in ("Succeeded", "Failed"), timeout=30,
                 what="the stage pod finished")
        log = core.read_namespaced_pod_log("prepare", namespace)
        assert pod_phase(core, namespace, "prepare") == "Succeeded", log
        uid = core.read_namespaced_pod("prepare", namespace).metadata.uid
        assert log.splitlines() == [
            f"{tmp_checkout}/contract/quranft/contract/config.py",
            f"{tmp_checkout}/cluster/quranft/cluster/__init__.py",
            str(sorted([tmp_checkout.name, "scratch"])),
            # The runtime's paths only: source roots and the agent's `quranft` shim (in its state dir).
            str(["benchmark", "cluster", "contract", "operator", "state", "trainer"]),
            '{"a": 1}']
        assert (state / "pods" / uid / "volumes" / "tmp" / "scratch").read_text() == "in the emptyDir"
    finally:
        core.delete_namespaced_pod("prepare", namespace, grace_period_seconds=0)
        wait_for(lambda: not core.list_namespaced_pod(namespace, field_selector="metadata.name=prepare").items,
                 timeout=30, what="the pod deleted")
        api.close()
