"""Start and stop the embedded cluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
the node agent, all on loopback with free ports, under one state directory.

State dir (`QURANFT_CLUSTER_DIR`, default ~/.cache/quranft/cluster):
  state.json          pids (+ start times), ports, bin dir, node config
  kubeconfig          admin kubeconfig (system:masters)
  pki/                CA, leaf certs, service-account keys (kept across up/down)
  etcd/               etcd data (wiped by `down`: every `up` is a fresh cluster)
  logs/<component>.log
  agent/              node agent state: pods, container logs, provisioned volumes
"""
from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import binaries, pki
from .procs import Proc, stop
from .nodeconfig import NodeConfig, default_nodes

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "node-agent")
# Clients of the API server that exit when it is not up yet at their start; restarted while we wait.
RESTARTABLE = ("kube-controller-manager", "kube-scheduler")
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CIDR = "10.96.0.0/24"
# cluster/quranft/cluster/controlplane.py -> cluster/ (the source root that holds quranft.cluster)
SOURCE_ROOT = Path(__file__).resolve().parents[2]


class ClusterError(RuntimeError):
    pass


def default_state_dir() -> Path:
    return Path(os.environ.get("QURANFT_CLUSTER_DIR") or Path.home() / ".cache/quranft/cluster")


@dataclass
class ClusterState:
    bin_dir: str = ""
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, dict] = field(default_factory=dict)
    nodes: list[dict] = field(default_factory=list)
    started_at: float = 0.0


@dataclass
class Cluster:
    """A handle on a running cluster: paths and clients for tests and the CLI."""

    state_dir: Path
    kubeconfig: Path
    bin_dir: Path
    nodes: list[NodeConfig]

    def api_client(self):
        """A fresh `kubernetes.client.ApiClient` for the admin kubeconfig."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
                              capture_output=True, text=True, check=check, timeout=timeout)


# ---------------------------------------------------------------------------------------------- state


class StateDir:
    def __init__(self, root: Path):
        self.root = root
        self.pki = root / "pki"
        self.logs = root / "logs"
        self.etcd = root / "etcd"
        self.agent = root / "agent"
        self.kubeconfig = root / "kubeconfig"
        self.state_file = root / "state.json"

    def load(self) -> ClusterState:
        try:
            return ClusterState(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return ClusterState()

    def save(self, state: ClusterState) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        tmp.replace(self.state_file)

    @contextlib.contextmanager
    def lock(self):
        """Serialise up/down between processes (e.g. two pytest sessions)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield


# ------------------------------------------------------------------------------------------ helpers


def create_ready_namespace(core, name: str, timeout: float = 60) -> str:
    """Create namespace `name` (a kubernetes CoreV1Api) and wait until pods can be admitted in it."""
    core.create_namespace({"metadata": {"name": name}})
    deadline = time.monotonic() + timeout
    # The serviceaccount controller creates `default` asynchronously; pod admission needs it.
    while not core.list_namespaced_service_account(name).items:
        if time.monotonic() > deadline:
            raise TimeoutError(f"namespace {name}: default ServiceAccount never appeared")
        time.sleep(0.1)
    return name


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (bound together so the kernel cannot hand out one twice)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, server: str, pki_dir: Path, identity: str, user: str) -> Path:
    """A kubeconfig with embedded credentials (JSON is valid YAML for every kubeconfig reader)."""
    cfg = {
        "apiVersion": "v1", "kind": "Config", "current-context": "quranft", "preferences": {},
        "clusters": [{"name": "quranft", "cluster": {
            "server": server, "certificate-authority-data": _b64(pki_dir / "ca.crt")}}],
        "users": [{"name": user, "user": {
            "client-certificate-data": _b64(pki_dir / f"{identity}.crt"),
            "client-key-data": _b64(pki_dir / f"{identity}.key")}}],
        "contexts": [{"name": "quranft", "context": {"cluster": "quranft", "user": user}}],
    }
    path.write_text(json.dumps(cfg, indent=2))
    path.chmod(0o600)
    return path


def _tls_context(pki_dir: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
    ctx.load_cert_chain(str(pki_dir / "admin.crt"), str(pki_dir / "admin.key"))
    return ctx


def api_get(port: int, pki_dir: Path, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET on the API server as admin, without importing the kubernetes client (keeps the CLI fast)."""
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", timeout=timeout,
                                    context=_tls_context(pki_dir)) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (OSError, ssl.SSLError):
        return 0, b""


def node_ready(port: int, pki_dir: Path, name: str) -> bool:
    code, body = api_get(port, pki_dir, f"/api/v1/nodes/{name}")
    if code != 200:
        return False
    node = json.loads(body)
    conditions = node.get("status", {}).get("conditions") or []
    # New nodes get a not-ready taint at admission; the controller-manager lifts it once the node is
    # Ready, and only then can pods schedule.
    taints = node.get("spec", {}).get("taints") or []
    return (any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
            and not any(t["key"] == "node.kubernetes.io/not-ready" for t in taints))


# ------------------------------------------------------------------------------------- components


def component_commands(bin_dir: Path, sd: StateDir, ports: dict[str, int]) -> dict[str, list[str]]:
    """The command line of each component (pure apart from path formatting)."""
    p, b = sd.pki, bin_dir
    etcd_url, peer_url = f"http://127.0.0.1:{ports['etcd']}", f"http://127.0.0.1:{ports['etcd-peer']}"
    return {
        "etcd": [
            str(b / "etcd"), "--name=quranft", f"--data-dir={sd.etcd}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=quranft={peer_url}", "--log-level=warn",
            # A throwaway test cluster: fsync buys nothing and costs seconds on a shared disk.
            "--unsafe-no-fsync=true",
        ],
        "kube-apiserver": [
            str(b / "kube-apiserver"), f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={ports['apiserver']}",
            f"--tls-cert-file={p / 'apiserver.crt'}", f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,"
            "ResourceQuota,PodSecurity,NodeRestriction",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Pod logs: the API server calls the node agent's HTTPS log server as a kubelet client.
            f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={p / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP",
            # Loopback is not a valid Endpoints address, so the `kubernetes` Service keeps no endpoints.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true", "--profiling=false",
        ],
        "kube-controller-manager": [
            str(b / "kube-controller-manager"),
            f"--kubeconfig={sd.root / 'controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={sd.root / 'controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={sd.root / 'controller-manager.kubeconfig'}",
            "--bind-address=127.0.0.1", f"--secure-port={ports['controller-manager']}",
            # All default controllers: job, garbagecollector, resourcequota, namespace, serviceaccount(-token),
            # persistentvolume-binder, ttl-after-finished, disruption, podgc, replicaset, deployment, ...
            "--controllers=*", "--use-service-account-credentials=true",
            f"--service-account-private-key-file={p / 'sa.key'}", f"--root-ca-file={p / 'ca.crt'}",
            f"--cluster-signing-cert-file={p / 'ca.crt'}", f"--cluster-signing-key-file={p / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--leader-elect=false", "--profiling=false",
            # Lifts the not-ready taint of a new node sooner (default 5 s between passes).
            "--node-monitor-period=1s",
        ],
        "kube-scheduler": [
            str(b / "kube-scheduler"), f"--kubeconfig={sd.root / 'scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={sd.root / 'scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={sd.root / 'scheduler.kubeconfig'}",
            "--bind-address=127.0.0.1", f"--secure-port={ports['scheduler']}",
            "--leader-elect=false", "--profiling=false",
        ],
        "node-agent": [
            sys.executable, "-m", "quranft.cluster.nodeagent", f"--kubeconfig={sd.kubeconfig}",
            f"--state-dir={sd.agent}", f"--pki-dir={sd.pki}", f"--log-port={ports['node-agent']}",
            f"--nodes-file={sd.root / 'nodes.json'}",
        ],
    }


def _spawn(cmd: list[str], log: Path, env: dict | None = None) -> Proc:
    with open(log, "ab") as out:
        child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True, env=env, close_fds=True)
    return Proc.of(child.pid)


READY_PATIENCE_S = 30.0  # a loaded API server can miss a /readyz or two; restarting it would end every test on it


def _running(sd: StateDir, state: ClusterState, patience: float = READY_PATIENCE_S) -> bool:
    """All components alive and /readyz ok, asked again for up to `patience` s while the processes live."""
    procs = [Proc.from_json(state.procs[c]) for c in COMPONENTS if c in state.procs]
    deadline = time.monotonic() + patience
    while len(procs) == len(COMPONENTS) and all(p.alive() for p in procs):
        if api_get(state.ports["apiserver"], sd.pki, "/readyz")[0] == 200:
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    return False


def _handle(sd: StateDir, state: ClusterState) -> Cluster:
    return Cluster(sd.root, sd.kubeconfig, Path(state.bin_dir), [NodeConfig(**n) for n in state.nodes])


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def up(state_dir: Path | None = None, nodes: list[NodeConfig] | None = None, timeout: float = 120.0,
       log=print) -> Cluster:
    """Start the cluster, or reuse the one already running; returns when /readyz is ok and nodes are Ready."""
    sd = StateDir(state_dir or default_state_dir())
    with sd.lock():
        state = sd.load()
        if _running(sd, state):
            if nodes is not None and [asdict(n) for n in nodes] != state.nodes:
                log("cluster: already running with a different node config; keeping it "
                    "(run `quranft cluster down` first to change it)")
            log(f"cluster: already running (KUBECONFIG={sd.kubeconfig})")
            return _handle(sd, state)
        _stop_locked(sd, state, quiet=True)
        return _start_locked(sd, nodes or default_nodes(), timeout, log)


def _start_locked(sd: StateDir, nodes: list[NodeConfig], timeout: float, log) -> Cluster:
    bin_dir = binaries.ensure_binaries()
    t0 = time.monotonic()
    pki.ensure_pki(sd.pki)
    shutil.rmtree(sd.logs, ignore_errors=True)
    sd.logs.mkdir(parents=True)
    names = ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "node-agent")
    ports = dict(zip(names, free_ports(len(names))))
    server = f"https://127.0.0.1:{ports['apiserver']}"
    write_kubeconfig(sd.kubeconfig, server, sd.pki, "admin", "quranft-admin")
    write_kubeconfig(sd.root / "controller-manager.kubeconfig", server, sd.pki, "controller-manager",
                     "system:kube-controller-manager")
    write_kubeconfig(sd.root / "scheduler.kubeconfig", server, sd.pki, "scheduler", "system:kube-scheduler")
    (sd.root / "nodes.json").write_text(json.dumps([asdict(n) for n in nodes], indent=2))

    state = ClusterState(bin_dir=str(bin_dir), ports=ports, nodes=[asdict(n) for n in nodes],
                         started_at=time.time())
    commands = component_commands(bin_dir, sd, ports)
    agent_env = dict(os.environ)
    agent_env["PYTHONPATH"] = os.pathsep.join(
        [str(SOURCE_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])

    def start(names: tuple[str, ...]) -> None:
        for name in names:
            state.procs[name] = _spawn(commands[name], sd.logs / f"{name}.log",
                                       agent_env if name == "node-agent" else None).to_json()
        sd.save(state)

    # Everything starts at once: each component's own start-up (seconds on 2 cores) overlaps the API
    # server's. The controller-manager and the scheduler give up if the API server is not serving yet;
    # _wait starts them again (RESTARTABLE).
    start(COMPONENTS)
    deadline = time.monotonic() + timeout
    try:
        _wait(lambda: api_get(ports["apiserver"], sd.pki, "/readyz")[0] == 200, deadline, sd, state,
              "kube-apiserver /readyz", lambda name: start((name,)))
        log(f"cluster: kube-apiserver ready after {time.monotonic() - t0:.1f} s")
        for node in nodes:
            _wait(lambda: node_ready(ports["apiserver"], sd.pki, node.name), deadline, sd, state,
                  f"node {node.name} Ready", lambda name: start((name,)))
    except ClusterError:
        _stop_locked(sd, state, quiet=True)
        raise
    log(f"cluster: ready in {time.monotonic() - t0:.1f} s (start to ready; KUBECONFIG={sd.kubeconfig})")
    return _handle(sd, state)


def _wait(predicate, deadline: float, sd: StateDir, state: ClusterState, what: str, restart) -> None:
    restarts = 0
    while time.monotonic() < deadline:
        if predicate():
            return
        dead = [c for c, p in state.procs.items() if not Proc.from_json(p).alive()]
        if dead and all(c in RESTARTABLE for c in dead) and restarts < 10:
            for name in dead:
                restarts += 1
                restart(name)
            continue
        if dead:
            logs = "\n".join(f"--- {c} (last lines of {sd.logs / (c + '.log')}):\n{_tail(sd.logs / (c + '.log'))}"
                             for c in dead)
            raise ClusterError(f"waiting for {what}: {', '.join(dead)} exited\n{logs}")
        time.sleep(0.2)
    raise ClusterError(f"timed out waiting for {what}; logs in {sd.logs}")


def down(state_dir: Path | None = None, log=print) -> None:
    """Stop every component and every pod process; wipe etcd and agent state (certs and logs stay)."""
    sd = StateDir(state_dir or default_state_dir())
    with sd.lock():
        _stop_locked(sd, sd.load(), quiet=False, log=log)


def _stop_locked(sd: StateDir, state: ClusterState, quiet: bool, log=print) -> None:
    # The agent first: on SIGTERM it stops its pods. Then the control plane, top-down.
    for name in reversed(COMPONENTS):
        if name in state.procs:
            stop([Proc.from_json(state.procs[name])], grace=15.0 if name == "node-agent" else 10.0)
            if not quiet:
                log(f"cluster: stopped {name}")
    # Pod processes the agent could not stop (it was SIGKILLed or crashed) are recorded on disk.
    from .podprocs import ProcRegistry

    ProcRegistry(sd.agent / "procs").kill_all()
    _unmount_under(sd.agent)
    shutil.rmtree(sd.etcd, ignore_errors=True)
    shutil.rmtree(sd.agent, ignore_errors=True)
    sd.state_file.unlink(missing_ok=True)


def _unmount_under(root: Path) -> None:
    """Pod mounts live in private namespaces that die with the pods; tmpfs-backed emptyDirs are mounted
    inside those namespaces too. This only guards against anything left mounted in ours."""
    try:
        mounts = [line.split()[1] for line in open("/proc/self/mounts")]
    except OSError:
        return
    prefix = str(root.resolve()) + "/"
    for target in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)


def status(state_dir: Path | None = None) -> dict:
    sd = StateDir(state_dir or default_state_dir())
    state = sd.load()
    procs = {c: Proc.from_json(p).alive() for c, p in state.procs.items()}
    result: dict = {"stateDir": str(sd.root), "kubeconfig": str(sd.kubeconfig), "binDir": state.bin_dir,
                    "components": procs, "ready": False, "nodes": {}}
    if state.ports.get("apiserver"):
        port = state.ports["apiserver"]
        result["ready"] = api_get(port, sd.pki, "/readyz")[0] == 200
        result["server"] = f"https://127.0.0.1:{port}"
        for node in state.nodes:
            result["nodes"][node["name"]] = "Ready" if node_ready(port, sd.pki, node["name"]) else "NotReady"
    return result


def attach(state_dir: Path | None = None) -> Cluster | None:
    """The running cluster, or None."""
    sd = StateDir(state_dir or default_state_dir())
    state = sd.load()
    return _handle(sd, state) if _running(sd, state) else None
