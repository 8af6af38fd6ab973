"""Helpers for the cluster tests and the reliability/scale scripts: install, run the operator as a subprocess
under its ServiceAccount, stub stage commands, and waiting on conditions (never bare sleeps)."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from kubernetes import client

from quranft.operator import access
from quranft.operator.builders import COMMAND_ANNOTATION, LABEL_RUN, LABEL_STAGE

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "quranft.io", "v1alpha1", "quranfinetunes"
STUB_IMAGE = "ghcr.io/quran-finetune/stub-stage:test"

# A fast fake stage honouring the contract: progress lines and pushes (the trainer's own client,
# quranft.trainer.progress_push, when the operator gave the pod its endpoint), the termination-message JSON, exit
# codes. It imports the contract's pure-stdlib modules (not pydantic: scale tests start thousands of these), so
# every stub pod also proves that the embedded cluster's pods can import quranft.contract.
STUB = r"""
import json, sys, time
from quranft.contract.exits import REASON_BY_EXIT
from quranft.contract.workspace import data_dir, model_path
stage, seconds, code = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
steps = int(sys.argv[4]) if len(sys.argv) > 4 else 10
val_wer = float(sys.argv[5]) if len(sys.argv) > 5 else None  # each step then reports a validation WER
pusher = None
if stage == "train" and seconds > 0:  # a 0 s stage (the perf gate's stage hops) ends before any push could matter
    from quranft.trainer.progress_push import ProgressPusher
    pusher = ProgressPusher.from_env()
for i in range(1, steps + 1):
    time.sleep(seconds / steps)
    if stage == "train":
        doc = {"step": i, "maxSteps": steps, "loss": round(1.0 / i, 3), "epoch": 0,
               "updatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if val_wer is not None:
            doc.update(valWer=val_wer, valWerStep=i)
        print("QURANFT_PROGRESS " + json.dumps(doc), flush=True)
        if pusher:
            pusher.submit(doc)
if pusher:
    pusher.flush(2)
if code:
    msg = {"ok": False, "stage": stage, "reason": REASON_BY_EXIT.get(code, "TrainingError"),
           "message": "stub failure with exit code %d" % code}
elif stage == "prepare":
    msg = {"ok": True, "stage": "prepare", "dataSpecHash": "stub", "dataDir": str(data_dir("stub")),
           "reused": False, "stats": {"train": 8, "val": 2}}
elif stage == "train":
    msg = {"ok": True, "stage": "train", "step": steps, "modelPath": str(model_path("stub")),
           "sizeBytes": 1234, "sha256": "0" * 64, "dataSpecHash": "stub", "finalLoss": 0.1,
           "valWer": 0.2 if val_wer is None else val_wer,
           "resumedFromStep": None}
else:
    m = {"recall": 0.9, "precision": 0.9, "sequenceAccuracy": 0.8, "avgLatency": 0.1, "p50Latency": 0.1,
         "p90Latency": 0.2, "modelSize": 1234, "total": 10, "scored": 10}
    b = dict(m, recall=0.5, sequenceAccuracy=0.4)
    msg = {"ok": True, "stage": "benchmark", "verdict": "improvement", "metrics": m, "baseline": b,
           "deltas": {k: round(m[k] - b[k], 6) for k in m}, "targets": {}, "resultsPath": "/workspace/x.json"}
open("/dev/termination-log", "w").write(json.dumps(msg))
sys.exit(code)
"""


def stub_commands(train_seconds: float = 3.0, prepare_seconds: float = 0.5, bench_seconds: float = 0.5,
                  exit_codes: dict[str, int] | None = None) -> dict[str, list[str]]:
    codes = exit_codes or {}
    return {stage: ["python", "-c", STUB, stage, str(seconds), str(codes.get(stage, 0))]
            for stage, seconds in (("prepare", prepare_seconds), ("train", train_seconds),
                                   ("benchmark", bench_seconds))}


def train_stub(seconds: float, steps: int, val_wer: float) -> list[str]:
    """A training stage of `steps` steps over `seconds` s, each reporting `val_wer` (campaigns' early stopping)."""
    return ["python", "-c", STUB, "train", str(seconds), "0", str(steps), str(val_wer)]


def resource(name: str, *, claim: str | None = "ws", size: str | None = None, gpus: int = 0,
             commands: dict | None = None, **spec) -> dict:
    storage = {"existingClaim": claim} if claim and not size else {"size": size}
    body = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "QuranFineTune",
        "metadata": {"name": name, "annotations": {COMMAND_ANNOTATION: json.dumps(commands or stub_commands())}},
        "spec": {"data": {"source": "local", "localPath": "/workspace/synth"},
                 "training": {"baseModel": "tiny", "maxSteps": 10},
                 "storage": storage, "resources": {"gpus": gpus, "cpu": "100m", "memory": "256Mi"},
                 "images": {"trainer": STUB_IMAGE}, "startupDeadlineSeconds": 120},
    }
    body["spec"].update(spec)
    body["spec"] = {k: v for k, v in body["spec"].items() if v is not None}  # e.g. startupDeadlineSeconds=None: unset
    return body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Env:
    """One cluster + namespace: clients, installs, and the operator process."""

    def __init__(self, cluster, namespace: str, workdir: Path):
        self.cluster, self.ns, self.workdir = cluster, namespace, workdir
        self.api = cluster.api_client()
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "operator.log"
        self.metrics_port = free_port()

    def close(self) -> None:
        self.stop_operator()
        self.api.close()

    # --- operator ------------------------------------------------------------------------------------------
    def start_operator(self, *extra: str) -> None:
        kubeconfig = access.service_account_kubeconfig(self.cluster.kubeconfig, self.workdir / "sa.kubeconfig")
        env = dict(os.environ, KUBECONFIG=str(kubeconfig), PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(str(ROOT / d) for d in ("contract", "operator", "trainer", "benchmark")))
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "quranft.cli", "operator", "--namespace", self.ns,
             "--metrics-port", str(self.metrics_port), "--allow-command-overrides", *extra],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)

    def kill_operator(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop_operator(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill_operator()

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:]) \
            if self.log_path.exists() else ""

    # --- objects ---------------------------------------------------------------------------------------
    def create(self, body: dict) -> dict:
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, body)

    def get(self, name: str) -> dict:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    def claim(self, name: str = "ws") -> None:
        self.core.create_namespaced_persistent_volume_claim(self.ns, {
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})

    def jobs(self, run: str | None = None, stage: str | None = None) -> list:
        selector = ",".join(s for s in (f"{LABEL_RUN}={run}" if run else LABEL_RUN,
                                        f"{LABEL_STAGE}={stage}" if stage else "") if s)
        return self.batch.list_namespaced_job(self.ns, label_selector=selector).items

    def pods(self, run: str | None = None) -> list:
        selector = f"{LABEL_RUN}={run}" if run else LABEL_RUN
        return self.core.list_namespaced_pod(self.ns, label_selector=selector).items

    def wait(self, predicate, timeout: float, what: str, interval: float = 0.5):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            if self.proc and self.proc.poll() is not None:
                raise AssertionError(f"operator exited ({self.proc.returncode}) while waiting for {what}\n"
                                     f"{self.log_tail()}")
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last={last!r}\n{self.log_tail()}")

    def events_once(self, name: str, reasons: set[str], kind: str | None = None, timeout: float = 30) -> list:
        """The events of object `name` once every one of `reasons` is among them. kopf posts events from its own
        queue after a pass's status patch, so a test that waited for a phase can read the events before they
        land (CI: a campaign's Promoted event missing right after its phase Succeeded)."""
        selector = f"involvedObject.name={name}" + (f",involvedObject.kind={kind}" if kind else "")

        def all_there():
            events = self.core.list_namespaced_event(self.ns, field_selector=selector).items
            return events if reasons <= {e.reason for e in events} else None
        return self.wait(all_there, timeout, f"events {sorted(reasons)} of {name}")

    def wait_phase(self, name: str, phases: str | tuple, timeout: float = 120) -> dict:
        phases = (phases,) if isinstance(phases, str) else phases

        def check():
            obj = self.get(name)
            return obj if (obj.get("status") or {}).get("phase") in phases else None
        return self.wait(check, timeout, f"{name} phase in {phases}")


def condition(obj: dict, ctype: str) -> dict | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == ctype), None)


# --- for scripts (chaos, soak, scale bench) -------------------------------------------------------------------

@contextlib.contextmanager
def script_cluster(log=print):
    """The running embedded cluster (`quranft cluster up`), or one started here and stopped on exit; with the
    CRD and the operator's RBAC installed."""
    from quranft.cluster import controlplane

    cluster = controlplane.attach()
    started_here = cluster is None
    cluster = cluster or controlplane.up(log=log)
    try:
        access.install(cluster.bin_dir / "kubectl", cluster.kubeconfig)
        yield cluster
    finally:
        if started_here:
            controlplane.down(log=lambda m: None)


def release_runs(envs, core, custom, log=print, timeout: float = 120) -> None:
    """Delete every run while the operator still runs (it removes its finalizers), stop the operator, strip
    whatever finalizer is left (it would block the namespace forever) and delete the namespaces."""
    for env in envs:
        try:
            custom.delete_collection_namespaced_custom_object(GROUP, VERSION, env.ns, PLURAL)
        except Exception as exc:  # noqa: BLE001  cleanup goes on; the namespace deletion below still runs
            log(f"delete runs in {env.ns}: {exc}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(  # limit=1: a full list of hundreds of runs is slow to serve
            custom.list_namespaced_custom_object(GROUP, VERSION, e.ns, PLURAL, limit=1)["items"] for e in envs):
        time.sleep(1)
    for env in envs:
        env.stop_operator()
        for item in custom.list_namespaced_custom_object(GROUP, VERSION, env.ns, PLURAL)["items"]:
            if item["metadata"].get("finalizers"):
                custom.patch_namespaced_custom_object(GROUP, VERSION, env.ns, PLURAL, item["metadata"]["name"],
                                                      {"metadata": {"finalizers": None}})
        core.delete_namespace(env.ns)
        env.api.close()


@contextlib.contextmanager
def scratch_env(cluster, prefix: str):
    """An Env in a fresh namespace `<prefix>-<random>` with the claim "ws"; on exit its runs are released and
    the namespace deleted."""
    from quranft.cluster import controlplane

    api = cluster.api_client()
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    ns = controlplane.create_ready_namespace(core, f"{prefix}-{uuid.uuid4().hex[:8]}")
    env = Env(cluster, ns, Path(tempfile.mkdtemp(prefix=f"quranft-{prefix}-")))
    try:
        env.claim()
        yield env
    finally:
        release_runs([env], core, custom)
        api.close()
