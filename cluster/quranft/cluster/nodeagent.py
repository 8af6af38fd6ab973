"""The node agent: plays the kubelet for the embedded cluster.

It registers the configured Nodes, keeps them Ready (leases + status), runs the pods bound to them as
local processes (podworker.py) within their memory limits (memcg.py), serves their logs to the API server
(logserver.py) and provisions `local` PersistentVolumes (provisioner.py). `up` starts it as a daemon
(`python -m quranft.cluster.nodeagent ...`); tests may also run `NodeAgent` in-process.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from .gpus import GpuAllocator
from .images import write_shim
from .kube import Kube, path_for
from .logserver import LogServer
from .memcg import MemoryCgroups, detect
from .nodeconfig import NodeConfig, default_nodes
from .nodes import heartbeat_status, register, renew_lease
from .podprocs import ProcRegistry
from .podstatus import now
from .podworker import PodWorker
from .provisioner import Provisioner

log = logging.getLogger("quranft.nodeagent")
LEASE_RENEW_SECONDS = 10
STATUS_SECONDS = 60


class Lookup:
    """Object reads and token requests for volumes and env (volumes.Lookup)."""

    def __init__(self, kube: Kube):
        self.kube = kube

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        return self.kube.get(path_for(kind, namespace, name))

    def service_account_token(self, pod: dict, audience: str | None, expiration: int) -> str:
        meta = pod["metadata"]
        sa = pod["spec"].get("serviceAccountName") or "default"
        spec: dict = {"expirationSeconds": max(expiration, 600),
                      "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}}
        if audience:
            spec["audiences"] = [audience]
        path = path_for("ServiceAccount", meta["namespace"], sa) + "/token"
        return self.kube.request("POST", path, body={"apiVersion": "authentication.k8s.io/v1",
                                                     "kind": "TokenRequest", "spec": spec})["status"]["token"]


class NodeAgent:
    def __init__(self, kube: Kube, state_dir: Path, pki_dir: Path, nodes: list[NodeConfig], log_port: int = 0,
                 provision: bool = True):
        """`provision`: also be the cluster's volume provisioner (one agent only: an extra agent a test adds
        for its own nodes leaves claims to the cluster's)."""
        self.kube, self.state_dir, self.nodes, self.provision = kube, state_dir, nodes, provision
        self.lookup = Lookup(kube)
        self.registry = ProcRegistry(state_dir / "procs")
        self.shim_dir = state_dir / "runtime-bin"
        self.provisioner = Provisioner(kube, state_dir / "volumes")
        self.log_server = LogServer(log_port, pki_dir, self.log_source)
        host = urlsplit(kube.host)
        self.api_host_port = (host.hostname or "127.0.0.1", host.port or 443)
        self.workers: dict[str, PodWorker] = {}  # by pod uid
        self.capacity = nodes[0].capacity() if nodes else {}
        self.gpus = GpuAllocator({n.name: n.gpus for n in nodes})
        self.memcg: MemoryCgroups | None = None  # set by start(): None when limits cannot be enforced
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._node_uids: dict[str, str] = {}

    # ------------------------------------------------------------------------------------ lifecycle

    def start(self) -> "NodeAgent":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        write_shim(self.shim_dir)
        self.memcg = detect()
        self.log_server.start()
        if self.provision:
            self._retry(self.provisioner.ensure_storage_class, "create the local StorageClass")
        for node in self.nodes:
            self._retry(lambda n=node: register(self.kube, n, self.log_server.port), f"register {node.name}")
            self._node_uids[node.name] = (self.kube.get(path_for("Node", name=node.name)) or {}).get(
                "metadata", {}).get("uid")
        self._spawn(self._heartbeat, "heartbeat")
        for node in self.nodes:
            self._spawn(lambda n=node.name: self._watch_loop(
                "/api/v1/pods", {"fieldSelector": f"spec.nodeName={n}"}, self._on_pod), f"pods-{node.name}")
        if self.provision:
            self._spawn(lambda: self._watch_loop("/api/v1/persistentvolumeclaims", {},
                                                 self._on_claim), "claims")
            self._spawn(lambda: self._watch_loop("/api/v1/persistentvolumes", {},
                                                 self._on_volume), "volumes")
        log.info("node agent up: nodes %s, log port %d, memory limits: %s", [n.name for n in self.nodes],
                 self.log_server.port, self.memcg.describe if self.memcg else "not enforced")
        return self

    def stop(self, grace: float = 10.0) -> None:
        """Stop watching and stop every pod's processes (the pods stay in the API, as after a node crash)."""
        self._stop.set()
        with self._lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.gone = True  # do not confirm deletions or push status on the way out
            worker.request_delete(min(worker.grace, grace))
        for worker in workers:
            worker.join(grace + 5)
        self.registry.kill_all()
        if self.memcg:
            self.memcg.close()
        self.log_server.stop()

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _retry(self, action, what: str) -> None:
        """The API server may still be starting (the agent starts with it): retry until it answers."""
        delay = 0.2
        while not self._stop.is_set():
            try:
                action()
                return
            except Exception as err:  # noqa: BLE001
                log.debug("%s: %s (retrying)", what, err)
                self._stop.wait(delay)
                delay = min(delay * 1.5, 2.0)

    # ------------------------------------------------------------------------------------ heartbeat

    def _heartbeat(self) -> None:
        last_status = time.monotonic()
        while True:
            status_due = time.monotonic() - last_status > STATUS_SECONDS
            for node in self.nodes:
                try:
                    renew_lease(self.kube, node, self._node_uids.get(node.name))
                    if status_due:
                        heartbeat_status(self.kube, node, self.log_server.port)
                except Exception as err:  # noqa: BLE001 - retried on the next beat
                    log.warning("heartbeat for %s failed: %s", node.name, err)
            if status_due:
                last_status = time.monotonic()
            if self._stop.wait(LEASE_RENEW_SECONDS):
                return

    # ---------------------------------------------------------------------------------------- watch

    def _watch_loop(self, path: str, query: dict, handler) -> None:
        while not self._stop.is_set():
            try:
                for event in self.kube.watch(path, query, timeout_seconds=120):
                    if self._stop.is_set():
                        return
                    handler(event["type"], event["object"])
            except Exception as err:  # noqa: BLE001 - the API server restarted or the stream broke
                if not self._stop.is_set():
                    log.warning("watch %s: %s (restarting)", path, err)
                    self._stop.wait(1.0)

    def _on_pod(self, kind: str, pod: dict) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            worker = self.workers.get(uid)
            if kind == "DELETED":
                if worker:
                    worker.request_delete(0, gone=True)
                return
            if worker is None:
                if pod["metadata"].get("deletionTimestamp"):
                    # Not running here (never started, or its worker already stopped it): nothing to stop,
                    # just confirm the deletion. Never start a pod that is being deleted.
                    self.kube.delete(f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods/"
                                     f"{pod['metadata']['name']}",
                                     {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}})
                    return
                worker = PodWorker(self, pod)
                self.workers[uid] = worker
                worker.start()
        worker.on_update(pod)

    def worker_done(self, worker: PodWorker) -> None:
        with self._lock:
            if self.workers.get(worker.uid) is worker:
                del self.workers[worker.uid]

    def _on_claim(self, kind: str, pvc: dict) -> None:
        if kind != "DELETED":
            self.provisioner.on_claim(pvc)

    def _on_volume(self, kind: str, pv: dict) -> None:
        if kind != "DELETED":
            self.provisioner.on_volume(pv)

    # ----------------------------------------------------------------------------------- services

    def log_source(self, namespace: str, pod: str, container: str, previous: bool):
        with self._lock:
            workers = [w for w in self.workers.values() if w.ns == namespace and w.name == pod]
        for worker in workers:
            path = worker.log_file(container, previous)
            if path is not None:
                return path, (lambda w=worker: w.is_running(container))
        return None

    def event(self, pod: dict, kind: str, reason: str, message: str) -> None:
        """Best-effort core/v1 Event on the pod, as the kubelet records them."""
        meta = pod["metadata"]
        stamp = now()
        body = {"metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
                "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"],
                                   "namespace": meta["namespace"], "uid": meta["uid"]},
                "reason": reason, "message": message, "type": kind, "count": 1,
                "firstTimestamp": stamp, "lastTimestamp": stamp,
                "source": {"component": "kubelet", "host": pod["spec"].get("nodeName", "")}}
        try:
            self.kube.create(path_for("Event", meta["namespace"]), body)
        except Exception as err:  # noqa: BLE001 - events are informational
            log.debug("event %s on %s/%s not recorded: %s", reason, meta["namespace"], meta["name"], err)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quranft.cluster.nodeagent", description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--pki-dir", required=True, type=Path)
    parser.add_argument("--log-port", type=int, default=0)
    parser.add_argument("--nodes-file", type=Path, help="JSON list of NodeConfig fields (default: one node)")
    parser.add_argument("--no-provision", action="store_true",
                        help="leave volume provisioning to the cluster's own agent (for an extra agent)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
    nodes = ([NodeConfig(**n) for n in json.loads(args.nodes_file.read_text())] if args.nodes_file
             else default_nodes())
    agent = NodeAgent(Kube.from_kubeconfig(args.kubeconfig), args.state_dir, args.pki_dir, nodes, args.log_port,
                      provision=not args.no_provision)
    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: (stopped.set(), agent._stop.set()))  # also ends start()'s retries
    agent.start()
    while not stopped.wait(1.0):
        pass
    log.info("stopping: terminating pods")
    agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
