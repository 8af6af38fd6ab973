"""Node objects: registration, status and the lease heartbeat that keeps them Ready."""
from __future__ import annotations

import platform

from .kube import Kube, path_for
from .nodeconfig import NodeConfig
from .podstatus import now, now_micro

KUBELET_VERSION = "v1.37.2"
LEASE_SECONDS = 40  # the node lifecycle controller's grace period is longer than our renew interval


def node_object(node: NodeConfig, log_port: int) -> dict:
    labels = {"kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux",
              "kubernetes.io/arch": "amd64", "quranft.io/embedded-node": "true"}
    if node.gpus:
        labels["nvidia.com/gpu.present"] = "true"
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node.name, "labels": labels},
            "spec": {}, "status": node_status(node, log_port)}


def node_status(node: NodeConfig, log_port: int) -> dict:
    stamp = now()

    def cond(kind: str, ok: bool, reason: str, message: str) -> dict:
        return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message,
                "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}

    return {
        "capacity": node.capacity(), "allocatable": node.capacity(),
        "conditions": [
            cond("MemoryPressure", False, "KubeletHasSufficientMemory", "no memory pressure"),
            cond("DiskPressure", False, "KubeletHasNoDiskPressure", "no disk pressure"),
            cond("PIDPressure", False, "KubeletHasSufficientPID", "no PID pressure"),
            cond("Ready", True, "KubeletReady", "quranft node agent is posting ready status"),
        ],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": node.name}],
        # The API server fetches pod logs from here (see logserver.py).
        "daemonEndpoints": {"kubeletEndpoint": {"Port": log_port}},
        "nodeInfo": {"machineID": node.name, "systemUUID": node.name, "bootID": node.name,
                     "kernelVersion": platform.release(), "osImage": "quranft embedded node",
                     "containerRuntimeVersion": "quranft://0.1", "kubeletVersion": KUBELET_VERSION,
                     "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
    }


def register(kube: Kube, node: NodeConfig, log_port: int) -> None:
    """Create the Node, or take over an existing one (status and capacity rewritten)."""
    body = node_object(node, log_port)
    if kube.create(path_for("Node"), body) is None:
        kube.merge_patch(path_for("Node", name=node.name), {"metadata": body["metadata"]})
    heartbeat_status(kube, node, log_port)  # status sent on create may be dropped; set it explicitly


def heartbeat_status(kube: Kube, node: NodeConfig, log_port: int) -> None:
    kube.merge_patch(path_for("Node", name=node.name) + "/status", {"status": node_status(node, log_port)})


def renew_lease(kube: Kube, node: NodeConfig, node_uid: str | None) -> None:
    """Create or renew the node's Lease in kube-node-lease (the kubelet's heartbeat since 1.17)."""
    spec = {"holderIdentity": node.name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now_micro()}
    path = path_for("Lease", "kube-node-lease", node.name)
    if kube.get(path) is None:
        meta: dict = {"name": node.name, "namespace": "kube-node-lease"}
        if node_uid:
            meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": node.name, "uid": node_uid}]
        if kube.create(path_for("Lease", "kube-node-lease"), {"metadata": meta, "spec": spec}) is not None:
            return
    kube.merge_patch(path, {"spec": spec})
