"""Kueue (sigs.k8s.io/kueue, the controller manager built by tests/cluster/kueue/build.sh) as an add-on
process of the embedded cluster: `quranft cluster up --with kueue`, and the Kueue test fixture.

What `start` does, in order: install Kueue's CRDs (from the release's own config/components/crd), its
manager ClusterRole bound to a client-certificate identity of ours, then run the manager with a
Configuration written here (only the batch/job integration, internalCertManagement disabled, webhook and
metrics TLS from our CA, leader election off, health/metrics/webhook on free loopback ports), wait for its
/readyz, install the webhook configurations and prove the path with a server-side dry-run Job.

Why webhook `clientConfig.url` (and CRD conversion webhooks by url): a `service` reference makes
kube-apiserver resolve the Service to an endpoint (it routes to the Service's endpoints, or to its
ClusterIP); this cluster has no kube-proxy or network plugin, and 127.0.0.1 is not a valid Endpoints
address (see controlplane.py's --endpoint-reconciler-type=none), so the API server could reach neither.
A url config names https://127.0.0.1:<port>/<path> directly, with caBundle = our cluster CA (pki.py).

Only the webhooks Kueue serves for batch/job and for its own kinds are installed: the release's file also
has pod, deployment and statefulset webhooks with failurePolicy Fail, which would put every pod creation
of the cluster behind Kueue for integrations we do not enable.

Kueue reads its metrics-serving certificate from a fixed path when internal cert management is off
(cmd/kueue/main.go: /etc/kueue/metrics/certs); the manager runs in a private mount namespace with our
cert dir bound there, so several clusters' Kueues on one machine never share or write that path (the
empty mount point is created on the host, as the pod sandbox does for its mount points).

State: <cluster state>/kueue/ (state.json, config.yaml, kubeconfig, certs/, manifests/ as applied) and the
log in <cluster state>/logs/kueue.log.
"""
from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import addon, pki
from .addon import AddonFiles, AddonState, http_status
from .binaries import REPO_ROOT
from .controlplane import Cluster, StateDir, free_ports, write_kubeconfig
from .procs import Proc

BUILD_SCRIPT = REPO_ROOT / "tests" / "cluster" / "kueue" / "build.sh"
NAMESPACE = "kueue-system"
USER = "kueue-controller-manager"
IDENTITY = pki.Identity("kueue-client", USER)
SERVING = pki.Identity("kueue-serving", "kueue-webhook", server=True, dns=("localhost",), ips=("127.0.0.1",))
METRICS_CERT_PATH = Path("/etc/kueue/metrics/certs")  # fixed in Kueue's main.go
INTEGRATIONS = ("batch/job",)
# config/components/crd/kustomization.yaml: the CRDs its release patches with a conversion webhook.
CONVERSION_CRDS = ("localqueues.kueue.x-k8s.io", "clusterqueues.kueue.x-k8s.io", "cohorts.kueue.x-k8s.io",
                   "workloads.kueue.x-k8s.io", "multikueueclusters.kueue.x-k8s.io")
ROLE_FILES = ("manager-role.yaml", "metrics-auth-role.yaml", "manager-secrets-role.yaml")
MUTATING, VALIDATING = "kueue-mutating-webhook-configuration", "kueue-validating-webhook-configuration"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


class KueueError(RuntimeError):
    pass


@dataclass(frozen=True)
class KueueBuild:
    bin: Path            # the manager binary
    manifests: Path      # crds/*.yaml, webhooks.yaml and the RBAC files ROLE_FILES


@dataclass
class KueueState(AddonState):
    ports: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Kueue:
    """A running Kueue manager of one cluster."""

    root: Path
    log: Path
    ports: dict[str, int]

    @property
    def metrics_url(self) -> str:
        return f"https://127.0.0.1:{self.ports['metrics']}/metrics"


# ------------------------------------------------------------------------------------------------ build


def ensure_build() -> KueueBuild:
    """The manager binary and the release's manifests: `QURANFT_KUEUE_DIR` (a directory with bin/kueue and
    manifests/) or build.sh's output (built once per version and go.sum, then a hash of three files)."""
    override = os.environ.get("QURANFT_KUEUE_DIR")
    root = Path(override) if override else addon.build_output(BUILD_SCRIPT, KueueError).parent  # it prints <root>/bin
    build = KueueBuild(root / "bin" / "kueue", root / "manifests")
    if not os.access(build.bin, os.X_OK) or not (build.manifests / "webhooks.yaml").exists():
        raise KueueError(f"{root} lacks bin/kueue or manifests/webhooks.yaml")
    return build


# ----------------------------------------------------------------------------- pure: objects from inputs


def _load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _wanted_webhook(hook: dict) -> bool:
    path = hook["clientConfig"]["service"]["path"]
    return "-batch-v1-job" in path or "-kueue-x-k8s-io-" in path


def webhook_configurations(docs: list[dict], base_url: str, ca_pem: bytes) -> list[dict]:
    """The release's Mutating/ValidatingWebhookConfigurations, keeping the batch/job and Kueue-kind
    webhooks, each pointed at `base_url` + its path (see the module docstring for why url)."""
    ca = _b64(ca_pem)
    names = {"MutatingWebhookConfiguration": MUTATING, "ValidatingWebhookConfiguration": VALIDATING}
    out = []
    for doc in docs:
        if doc["kind"] not in names:
            continue
        conf = copy.deepcopy(doc)
        conf["metadata"] = {"name": names[doc["kind"]], "labels": {"app.kubernetes.io/name": "kueue"}}
        conf["webhooks"] = []
        for hook in doc["webhooks"]:
            if not _wanted_webhook(hook):
                continue
            hook = copy.deepcopy(hook)
            hook["clientConfig"] = {"url": base_url + hook["clientConfig"]["service"]["path"], "caBundle": ca}
            conf["webhooks"].append(hook)
        out.append(conf)
    if sorted(c["kind"] for c in out) != sorted(names) or not all(c["webhooks"] for c in out):
        raise KueueError("the release's webhooks.yaml lacks the batch/job or Kueue webhooks")
    return out


def crds(docs: list[dict], base_url: str, ca_pem: bytes) -> list[dict]:
    """Kueue's CRDs; those its release serves through a conversion webhook get one by url."""
    out = []
    for doc in docs:
        crd = copy.deepcopy(doc)
        if crd["metadata"]["name"] in CONVERSION_CRDS:
            crd["spec"]["conversion"] = {"strategy": "Webhook", "webhook": {
                "conversionReviewVersions": ["v1"],
                "clientConfig": {"url": base_url + "/convert", "caBundle": _b64(ca_pem)}}}
        out.append(crd)
    return out


def rbac(role_docs: list[dict]) -> list[dict]:
    """The release's ClusterRoles and Roles (named kueue-<name>, as its kustomization prefixes them; Roles
    in Kueue's namespace), each bound to our manager identity (the client certificate's CN)."""
    out = []
    for role in role_docs:
        if role["kind"] not in ("ClusterRole", "Role"):
            continue
        role = copy.deepcopy(role)
        name = "kueue-" + role["metadata"]["name"]
        role["metadata"] = {"name": name} | ({"namespace": NAMESPACE} if role["kind"] == "Role" else {})
        out.append(role)
        out.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": role["kind"] + "Binding",
                    "metadata": dict(role["metadata"]),
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role["kind"], "name": name},
                    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}]})
    return out


def configuration(ports: dict[str, int], cert_dir: Path) -> dict:
    """Kueue's Configuration (config.kueue.x-k8s.io/v1beta2) for the embedded cluster."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2", "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{ports['health']}"},
        "metrics": {"bindAddress": f"127.0.0.1:{ports['metrics']}", "enableClusterQueueResources": True},
        "webhook": {"host": "127.0.0.1", "port": ports["webhook"], "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        # Our CA signs the serving cert and is every webhook's caBundle; Kueue's own rotator would want a
        # Secret and a Service to inject into.
        "internalCertManagement": {"enable": False},
        "manageJobsWithoutQueueName": False,
        "integrations": {"frameworks": list(INTEGRATIONS)},
        # The on-demand visibility API is an aggregated API server: it would need an APIService and a
        # Service this cluster cannot route to; nothing here reads it.
        "featureGates": {"VisibilityOnDemand": False},
        "clientConnection": {"qps": 50, "burst": 100},
    }


def command(build: KueueBuild, root: Path) -> list[str]:
    """The manager in a private mount namespace with our certs bound at Kueue's fixed metrics cert path."""
    script = 'mount --bind "$0" "$1" && shift && exec "$@"'  # sh -c: $0 is the first arg after the script
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script,
            str(root / "certs"), str(METRICS_CERT_PATH),
            str(build.bin), f"--config={root / 'config.yaml'}", "--zap-log-level=info"]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


# ---------------------------------------------------------------------------------------------- process


class _Paths(AddonFiles[KueueState]):
    def __init__(self, cluster_root: Path):
        super().__init__(cluster_root, "kueue", KueueState)


def _handle(paths: _Paths, state: KueueState) -> Kueue:
    return Kueue(paths.root, paths.log, dict(state.ports))


def attach(cluster: Cluster) -> Kueue | None:
    """The cluster's running Kueue, or None."""
    paths = _Paths(cluster.state_dir)
    state = paths.running()
    if state is None:
        return None
    if http_status(f"http://127.0.0.1:{state.ports['health']}/readyz") != 200:
        return None
    return _handle(paths, state)


def start(cluster: Cluster, timeout: float = 120.0, log=print) -> Kueue:
    """Start Kueue on `cluster` (or return the one running); returns once its webhooks answer through the
    API server."""
    paths = _Paths(cluster.state_dir)
    with StateDir(cluster.state_dir).lock():
        running = attach(cluster)
        if running:
            log(f"kueue: already running (log {paths.log})")
            return running
        paths.stop()  # a manager left from a cluster that is gone
        return _start_locked(cluster, paths, timeout, log)


def _kubectl_apply(cluster: Cluster, docs: list[dict], what: str) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        yaml.safe_dump_all(docs, fh)
    try:
        out = cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=quranft-kueue",
                              "-f", fh.name, check=False, timeout=120)
    finally:
        os.unlink(fh.name)
    if out.returncode != 0:
        raise KueueError(f"kueue: applying {what} failed: {out.stderr.strip() or out.stdout.strip()}")


def _start_locked(cluster: Cluster, paths: _Paths, timeout: float, log) -> Kueue:
    build = ensure_build()
    t0 = time.monotonic()
    sd = StateDir(cluster.state_dir)
    root = paths.root
    (root / "certs").mkdir(parents=True, exist_ok=True)
    (root / "manifests").mkdir(exist_ok=True)
    ca_pem, ca_key = (sd.pki / "ca.crt").read_bytes(), (sd.pki / "ca.key").read_bytes()
    (root / "pki").mkdir(exist_ok=True)
    # Issued at every start (ECDSA: microseconds), so they are always of the cluster's current CA.
    for ident, crt, key in ((IDENTITY, root / "pki" / "kueue-client.crt", root / "pki" / "kueue-client.key"),
                            (SERVING, root / "certs" / "tls.crt", root / "certs" / "tls.key")):
        cert_pem, key_pem = pki.issue(ident, ca_pem, ca_key)
        _write(key, key_pem)
        _write(crt, cert_pem)
    _write(root / "pki" / "ca.crt", ca_pem)
    server = json.loads(cluster.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    write_kubeconfig(root / "kubeconfig", server, root / "pki", "kueue-client", USER)

    ports = dict(zip(("webhook", "metrics", "health"), free_ports(3)))
    base_url = f"https://127.0.0.1:{ports['webhook']}"
    (root / "config.yaml").write_text(yaml.safe_dump(configuration(ports, root / "certs"), sort_keys=False))

    crd_docs = crds([d for p in sorted((build.manifests / "crds").glob("*.yaml")) for d in _load_all(p)],
                    base_url, ca_pem)
    rbac_docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}] + rbac(
        [d for name in ROLE_FILES for d in _load_all(build.manifests / name)])
    hooks = webhook_configurations(_load_all(build.manifests / "webhooks.yaml"), base_url, ca_pem)
    for name, docs in (("crds", crd_docs), ("rbac", rbac_docs), ("webhooks", hooks)):
        (root / "manifests" / f"{name}.yaml").write_text(yaml.safe_dump_all(docs))

    # Webhook configurations of an earlier start point at its ports: gone before the CRDs are applied (the
    # conversion webhooks are rewritten by the apply itself).
    remove_webhooks(cluster)
    _kubectl_apply(cluster, crd_docs, "CRDs")
    _kubectl_apply(cluster, rbac_docs, "RBAC")
    out = cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                          *[f"crd/{d['metadata']['name']}" for d in crd_docs], check=False, timeout=90)
    if out.returncode != 0:
        raise KueueError(f"kueue: CRDs not established: {out.stderr.strip()}")

    METRICS_CERT_PATH.mkdir(parents=True, exist_ok=True)  # the empty mount point (see the docstring)
    paths.log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, KUBECONFIG=str(root / "kubeconfig"))
    with open(paths.log, "ab") as out_log:
        child = subprocess.Popen(command(build, root), stdin=subprocess.DEVNULL, stdout=out_log,
                                 stderr=subprocess.STDOUT, start_new_session=True, env=env, close_fds=True)
    state = KueueState(proc=Proc.of(child.pid).to_json(), ports=ports, started_at=time.time())
    paths.save(state)
    proc = Proc.from_json(state.proc)
    deadline = time.monotonic() + timeout
    try:
        _wait(lambda: http_status(f"http://127.0.0.1:{ports['health']}/readyz") == 200, deadline, proc, paths,
              "Kueue /readyz")
        _kubectl_apply(cluster, hooks, "webhook configurations")
        _wait(lambda: webhook_suspends_jobs(cluster), deadline, proc, paths,
              "Kueue's Job webhook through the API server")
    except KueueError:
        paths.stop()
        raise
    log(f"kueue: ready in {time.monotonic() - t0:.1f} s (webhooks {base_url}, log {paths.log})")
    return _handle(paths, state)


def webhook_suspends_jobs(cluster: Cluster, namespace: str = NAMESPACE) -> bool:
    """A server-side dry-run create of an unsuspended Job with the queue label: True when the answer is
    suspended, i.e. the API server called Kueue's mutating webhook (dry-run calls side-effect-free webhooks
    and persists nothing)."""
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "kueue-webhook-probe", "namespace": namespace, "labels": {QUEUE_LABEL: "probe"}},
           "spec": {"suspend": False, "template": {"spec": {"restartPolicy": "Never", "containers": [
               {"name": "probe", "image": "python:3", "command": ["true"]}]}}}}
    out = subprocess.run([str(cluster.bin_dir / "kubectl"), "--kubeconfig", str(cluster.kubeconfig), "create",
                          "--dry-run=server", "-o", "json", "-f", "-"], input=json.dumps(job), capture_output=True,
                         text=True, timeout=30)
    return out.returncode == 0 and json.loads(out.stdout)["spec"].get("suspend") is True


def _wait(predicate, deadline: float, proc: Proc, paths: _Paths, what: str) -> None:
    while time.monotonic() < deadline:
        if predicate():
            return
        if not proc.alive():
            raise KueueError(f"kueue exited while waiting for {what}; last lines of {paths.log}:\n{paths.tail()}")
        time.sleep(0.3)
    raise KueueError(f"timed out waiting for {what}; log {paths.log}:\n{paths.tail()}")


def stop(cluster_root: Path, log=print) -> bool:
    """Stop the cluster's Kueue manager (if any); True when one was running.

    Its webhook configurations go first: with failurePolicy Fail and no manager behind them, every Job
    creation on the cluster would be refused. Its CRDs and objects stay until `cluster down` wipes etcd."""
    from . import controlplane

    paths = _Paths(cluster_root)
    cluster = controlplane.attach(cluster_root)
    if cluster is not None:
        remove_webhooks(cluster)
    with StateDir(cluster_root).lock():
        was = paths.stop()
    if was:
        log("kueue: stopped")
    return was


def remove_webhooks(cluster: Cluster) -> None:
    # type/name pairs: `delete TYPE A TYPE2 B` would read TYPE2 and B as more names of TYPE, and the validating
    # configuration (failurePolicy Fail) stayed behind, refusing every later Job.
    cluster.kubectl("delete", "--ignore-not-found", f"mutatingwebhookconfiguration/{MUTATING}",
                    f"validatingwebhookconfiguration/{VALIDATING}", check=False)
