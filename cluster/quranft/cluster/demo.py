"""`quranft demo`: embedded cluster -> CRDs + RBAC -> operator under its own ServiceAccount -> workspace
seeded with the tiny base model and synthetic recitations -> the CPU-stub example (a QuranFineTune, or a
QuranFineTuneCampaign such as manifests/examples/cpu-stub-campaign.yaml) -> progress until the verdict (for a
campaign: every variant's, then the report and the promotion). Exit 0 when it Succeeded."""
from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from quranft.contract.keys import CAMPAIGN_KIND, CAMPAIGN_PLURAL, GROUP, KIND, PLURAL, VERSION
from quranft.contract.workspace import WORKSPACE

from quranft.operator import access
from quranft.operator.builders import RESTRICTED_CONTAINER_SECURITY, RESTRICTED_POD_SECURITY
from quranft.operator.settings import DEFAULT_TAG, IMAGE_REPO

EXAMPLE = access.MANIFESTS / "examples" / "cpu-stub-ctc.yaml"
SEED_SCRIPT = f"""set -e
mkdir -p {WORKSPACE}/models
[ -f {WORKSPACE}/models/tiny.nemo ] || quranft trainer tiny-model --out {WORKSPACE}/models/tiny.nemo
[ -d {WORKSPACE}/synth/benchmark-dataset ] || quranft trainer synth-data --out {WORKSPACE}/synth
ls -l {WORKSPACE}/models {WORKSPACE}/synth
"""


def seed_job(namespace: str, claim: str, image: str) -> dict[str, Any]:
    """A Job that writes the tiny base model and the synthetic data into the workspace (idempotent)."""
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "quranft-seed-workspace", "namespace": namespace,
                     "labels": {"app.kubernetes.io/name": "quran-finetune", "app.kubernetes.io/component": "seed"}},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False,
            "securityContext": copy.deepcopy(RESTRICTED_POD_SECURITY),
            "containers": [{"name": "seed", "image": image, "command": ["sh", "-c", SEED_SCRIPT],
                            "securityContext": copy.deepcopy(RESTRICTED_CONTAINER_SECURITY),
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                            "resources": {"requests": {"cpu": "1", "memory": "2Gi"},
                                          "limits": {"cpu": "2", "memory": "4Gi"}},
                            "volumeMounts": [{"name": "workspace", "mountPath": WORKSPACE}]}],
            "volumes": [{"name": "workspace", "persistentVolumeClaim": {"claimName": claim}}],
        }}},
    }


def summary_line(obj: dict[str, Any]) -> str:
    status = obj.get("status") or {}
    parts = [f"phase={status.get('phase', '-')}"]
    if status.get("progress"):
        parts.append(f"step={status['progress'].get('display')} loss={status['progress'].get('loss')}")
    for cond in status.get("conditions") or []:
        if cond["type"] in ("QuotaExceeded", "StartupBlocked", "Failed") and cond["status"] == "True":
            parts.append(f"{cond['type']}={cond['reason']}: {cond.get('message', '')[:200]}")
    if status.get("verdict"):
        metrics = (status.get("benchmark") or {}).get("metrics") or {}
        baseline = (status.get("benchmark") or {}).get("baseline") or {}
        bench = status.get("benchmark") or {}
        parts.append(f"verdict={status['verdict']} recall={metrics.get('recall')} (baseline {baseline.get('recall')})"
                     f" seqAcc={metrics.get('sequenceAccuracy')} (baseline {baseline.get('sequenceAccuracy')})"
                     + (f" delta={bench['deltaDisplay']} ({bench.get('reason')}, {bench.get('verdictHead')} head)"
                        if bench.get("deltaDisplay") else "")
                     + (f" report={bench['reportPath']}" if bench.get("reportPath") else ""))
    return " ".join(parts)


def campaign_summary_line(obj: dict[str, Any]) -> str:
    """One line for a campaign: phase, variants ended, best, each variant's phase/verdict, then the outcome."""
    status = obj.get("status") or {}
    parts = [f"campaign phase={status.get('phase', '-')} done={status.get('done', '-')}"]
    if status.get("best"):
        parts.append(f"best={status['best']} ({status.get('verdict')})")
    for v in status.get("variants") or []:
        pm = v.get("primaryMetric") or {}
        parts.append(f"{v['name']}={v.get('phase')}" + (f"/{v['verdict']}" if v.get("verdict") else "")
                     + (f" {pm.get('name')}={pm.get('value')}" if pm.get("value") is not None else "")
                     + (" (stopped early)" if v.get("stoppedReason") else ""))
    for cond in status.get("conditions") or []:
        if cond["type"] in ("Failed", "CorpusMismatch", "Promoted", "InvalidVariants") and \
                (cond["status"] == "True" or cond["type"] == "Promoted"):
            parts.append(f"{cond['type']}={cond['status']} {cond['reason']}: {cond.get('message', '')[:200]}")
    if status.get("production"):
        parts.append(f"production={status['production'].get('variant')} {status['production'].get('modelPath')}")
    if (status.get("report") or {}).get("path"):
        parts.append(f"report={status['report']['path']}")
    return " | ".join(parts)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="quranft demo", description=__doc__)
    p.add_argument("--example", type=Path, default=EXAMPLE, help="manifest with the claim and the QuranFineTune or QuranFineTuneCampaign")
    p.add_argument("--namespace", default="quranft-demo")
    p.add_argument("--timeout", type=float, default=1200, help="seconds to wait for the verdict")
    p.add_argument("--image-tag", default=DEFAULT_TAG)
    p.add_argument("--down", action="store_true", help="stop the embedded cluster at the end")
    args = p.parse_args(argv)

    from kubernetes import client

    from quranft.cluster import controlplane

    t0 = time.monotonic()
    say = lambda msg: print(f"[{time.monotonic() - t0:6.1f}s] {msg}", flush=True)  # noqa: E731
    cluster = controlplane.attach() or controlplane.up(log=say)
    kubectl = cluster.bin_dir / "kubectl"
    say(f"cluster up; kubeconfig {cluster.kubeconfig}")
    access.install(kubectl, cluster.kubeconfig)
    say("CRDs and RBAC installed")

    api = cluster.api_client()
    core, batch, custom = client.CoreV1Api(api), client.BatchV1Api(api), client.CustomObjectsApi(api)
    ns = args.namespace
    _apply(kubectl, cluster.kubeconfig, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": ns, "labels": {"pod-security.kubernetes.io/enforce": "restricted",
                               "pod-security.kubernetes.io/warn": "restricted"}}}], None)
    docs = [d for d in yaml.safe_load_all(args.example.read_text()) if d]
    claims = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    runs = [d for d in docs if d["kind"] in (KIND, CAMPAIGN_KIND)]
    _apply(kubectl, cluster.kubeconfig, claims, ns)
    followed = runs[0]
    is_campaign = followed["kind"] == CAMPAIGN_KIND
    run_spec = followed["spec"]["template"] if is_campaign else followed["spec"]
    plural, line_of = (CAMPAIGN_PLURAL, campaign_summary_line) if is_campaign else (PLURAL, summary_line)
    claim = run_spec["storage"].get("existingClaim") or claims[0]["metadata"]["name"]

    # Seed the workspace: tiny base model + synthetic recitations, by the trainer's own CLIs in a Job.
    seed = seed_job(ns, claim, f"{IMAGE_REPO}/trainer-cpu:{args.image_tag}")
    try:
        batch.create_namespaced_job(ns, seed)
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    say("seeding the workspace (tiny model + synthetic recitations)")
    while True:
        job = batch.read_namespaced_job(seed["metadata"]["name"], ns)
        if job.status.succeeded:
            break
        if job.status.failed:
            say("seed Job failed:\n" + _pod_logs(core, ns, "job-name=quranft-seed-workspace"))
            return 1
        time.sleep(2)
    say("workspace seeded")

    # The operator, as its own ServiceAccount (not admin).
    log_path = Path(cluster.state_dir) / "logs" / "operator-demo.log"
    kubeconfig = access.service_account_kubeconfig(cluster.kubeconfig, Path(cluster.state_dir) / "operator.kubeconfig")
    src = access.MANIFESTS.parent
    env = dict(os.environ, KUBECONFIG=str(kubeconfig), PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(str(src / d) for d in ("contract", "operator", "trainer", "benchmark")))
    with open(log_path, "a") as log:
        operator = subprocess.Popen([sys.executable, "-m", "quranft.cli", "operator", "--namespace", ns,
                                     "--metrics-port", "0", "--image-tag", args.image_tag],
                                    env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=_stop_with_parent)
    say(f"operator running as system:serviceaccount:{access.SA_NAMESPACE}:{access.SA_NAME} (log {log_path})")
    try:
        _apply(kubectl, cluster.kubeconfig, runs, ns)
        name = followed["metadata"]["name"]
        say(f"applied {followed['kind']} {name}; following it (kubectl get {'qftc,' if is_campaign else ''}qft -n {ns})")
        deadline, last = time.monotonic() + args.timeout, ""
        phase = None
        while time.monotonic() < deadline:
            if operator.poll() is not None:
                say(f"operator exited with {operator.returncode}; see {log_path}")
                return 1
            obj = custom.get_namespaced_custom_object(GROUP, VERSION, ns, plural, name)
            line = line_of(obj)
            if line != last:
                say(line)
                last = line
            phase = (obj.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed", "Stopped"):
                break
            time.sleep(2)
        if is_campaign:
            print(access.kubectl(kubectl, cluster.kubeconfig, "get", "qftc", "-n", ns, "-o", "wide"))
        print(access.kubectl(kubectl, cluster.kubeconfig, "get", "qft", "-n", ns, "-o", "wide"))
        if phase != "Succeeded":
            say(f"run ended in phase {phase}")
            return 1
        say(f"done: the verdict is in the status (kubectl get {plural} -n {ns} -o yaml)")
        return 0
    finally:
        operator.terminate()
        try:
            operator.wait(15)
        except subprocess.TimeoutExpired:
            operator.kill()
        api.close()
        if args.down:
            controlplane.down(log=say)


def _stop_with_parent() -> None:
    """In the operator's child, before exec: SIGTERM when the demo dies, even killed (its `finally` stops the
    operator otherwise; a killed demo, e.g. a test's timeout, left the operator running)."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1  # prctl(2)
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _apply(kubectl: Path, kubeconfig: Path, docs: list[dict], namespace: str | None) -> None:
    cmd = [str(kubectl), "--kubeconfig", str(kubeconfig), "apply", "--server-side", "--field-manager=quranft-demo",
           "-f", "-"]
    if namespace:
        cmd[3:3] = ["-n", namespace]
    out = subprocess.run(cmd, input=yaml.safe_dump_all(docs), text=True, capture_output=True)
    if out.returncode:  # e.g. the API server refused the example (schema, CEL): say why
        raise SystemExit(f"kubectl apply failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")


def _pod_logs(core, namespace: str, selector: str) -> str:
    out = []
    for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
        try:
            out.append(core.read_namespaced_pod_log(pod.metadata.name, namespace, tail_lines=40))
        except Exception as exc:  # noqa: BLE001 - best effort diagnostics
            out.append(f"{pod.metadata.name}: {exc}")
    return "\n".join(out)
