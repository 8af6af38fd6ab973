"""Real Kueue on the embedded cluster: the controller manager of sigs.k8s.io/kueue v0.17.0, built from its Go
module (tests/cluster/kueue/build.sh) and run by quranft.cluster.kueue with the release's CRDs and webhooks,
admits the operator's Jobs. No step here plays Kueue's part.

1. Kueue's mutating webhook is reached through the API server: an unsuspended Job with the queue label is
   stored suspended, and Kueue creates its Workload. The admin examples (manifests/examples/kueue/) and the
   chart's Kueue objects pass Kueue's own validating webhooks.
2. A ClusterQueue of 1 GPU (the examples' objects, quota cut to 1) and two 1-GPU runs: the second waits in
   Queued, its Workload saying why in Kueue's words, and its training starts only after the first's ends;
   both Succeed and neither is ever Failed.
3. Preemption: a higher-priority run arrives while a training holds the only GPU; Kueue evicts that Workload
   (Evicted/Preempted), suspends the Job, the stub trainer saves its step on SIGTERM, the run shows Queued,
   and it resumes from the saved step when re-admitted. Both Succeed, neither is ever Failed.

Stage commands are the cluster kit's stubs (tests/support/clusterkit.py); the preempted one is a stub that
checkpoints its step on SIGTERM like the trainer does.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from clusterkit import ROOT, condition, resource, stub_commands
from quranft.operator.builders import LABEL_STAGE
from kubernetes import client

pytestmark = [pytest.mark.cluster]

EXAMPLES = ROOT / "manifests" / "examples" / "kueue"
CHART = ROOT / "charts" / "quran-finetune"
KUEUE = ("kueue.x-k8s.io", "v1beta2")
QUEUE = "gpus"  # the LocalQueue name of the examples

# A training stub that honours SIGTERM as the trainer does: it saves its step and exits 143; started again, it
# resumes from the saved step. Progress (lines and pushes) and the termination message follow docs/contracts.md.
RESUMABLE_TRAIN = r"""
import json, os, signal, sys, time
from quranft.trainer.progress_push import ProgressPusher
pusher = ProgressPusher.from_env()
steps, seconds = int(sys.argv[1]), float(sys.argv[2])
path = "/workspace/runs/%s/stub-step" % os.environ["QURANFT_RUN"]
os.makedirs(os.path.dirname(path), exist_ok=True)
start = int(open(path).read()) if os.path.exists(path) else 0
step = start
def checkpoint(*_):
    open(path, "w").write(str(step))
    print("SIGTERM at step %d: saved" % step, flush=True)
    sys.exit(143)
signal.signal(signal.SIGTERM, checkpoint)
print("resuming from step %d" % start if start else "starting", flush=True)
while step < steps:
    time.sleep(seconds / steps)
    step += 1
    doc = {"step": step, "maxSteps": steps, "loss": round(1.0 / step, 3), "epoch": 0,
           "updatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print("QURANFT_PROGRESS " + json.dumps(doc), flush=True)
    if pusher:
        pusher.submit(doc)
open("/dev/termination-log", "w").write(json.dumps({"ok": True, "stage": "train", "step": steps,
    "modelPath": "/workspace/runs/stub/model.nemo", "sizeBytes": 1234, "sha256": "0" * 64, "dataSpecHash": "stub",
    "finalLoss": 0.1, "valWer": 0.2, "resumedFromStep": start or None}))
"""


@pytest.fixture(scope="module")
def kueue(cluster):
    """Kueue running on the session's cluster: the one `quranft cluster up --with kueue` started, or one
    started here (built on first use) and stopped after the module."""
    from quranft.cluster import kueue as addon

    running = addon.attach(cluster)
    handle = running or addon.start(cluster, log=print)
    yield handle
    if running is None:
        addon.stop(cluster.state_dir, log=print)
        # Kueue's Job webhooks have failurePolicy Fail: one left behind (stop's own delete can miss under load)
        # refuses every later Job of the session. Delete through the session's handle until they are gone.
        for _ in range(20):
            addon.remove_webhooks(cluster)
            left = cluster.kubectl("get", "validatingwebhookconfiguration", addon.VALIDATING, check=False)
            if left.returncode != 0:
                break
            time.sleep(1)
        else:
            raise AssertionError(f"Kueue's webhook configuration {addon.VALIDATING} could not be removed")


# --------------------------------------------------------------------------------------------- helpers


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _kubectl(cluster, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(cluster.bin_dir / "kubectl"), "--kubeconfig", str(cluster.kubeconfig), *args],
                          input=stdin, capture_output=True, text=True, timeout=60)


def _apply(cluster, docs: list[dict], *extra: str) -> str:
    out = _kubectl(cluster, "apply", *extra, "-f", "-", stdin=yaml.safe_dump_all(docs))
    assert out.returncode == 0, out.stderr + out.stdout
    return out.stdout


def _queue_objects(namespace: str, gpus: int) -> tuple[list[dict], list[dict], str]:
    """The examples' flavors and ClusterQueue (renamed per test, GPU quota set, outside the cohort so no other
    queue lends it quota) and a LocalQueue `gpus` in `namespace`: (cluster objects, namespaced, CQ name)."""
    examples = _docs(EXAMPLES / "cluster-queue.yaml")
    flavors = [d for d in examples if d["kind"] == "ResourceFlavor"]
    cq = next(d for d in examples if d["kind"] == "ClusterQueue")
    cq["metadata"]["name"] = f"{namespace}-gpus"
    cq["spec"].pop("cohortName")
    cq["spec"]["preemption"] = {"withinClusterQueue": cq["spec"]["preemption"]["withinClusterQueue"]}
    for flavor in cq["spec"]["resourceGroups"][0]["flavors"]:
        for res in flavor["resources"]:
            res.pop("borrowingLimit", None)
            if flavor["name"] == "gpu" and res["name"] == "nvidia.com/gpu":
                res["nominalQuota"] = gpus
    lq = _docs(EXAMPLES / "team-queues.yaml")[0]
    lq["metadata"]["namespace"] = namespace
    lq["spec"]["clusterQueue"] = cq["metadata"]["name"]
    return flavors + [cq], [lq], cq["metadata"]["name"]


@pytest.fixture
def gpu_queue(kueue, env):
    """A 1-GPU ClusterQueue with the LocalQueue `gpus` in the test namespace; deleted afterwards."""
    cluster_objs, ns_objs, cq_name = _queue_objects(env.ns, gpus=1)
    _apply(env.cluster, cluster_objs)
    _apply(env.cluster, ns_objs)
    def active():
        cq = env.custom.get_cluster_custom_object(*KUEUE, "clusterqueues", cq_name)
        return (condition(cq, "Active") or {}).get("status") == "True"
    env.wait(active, 30, f"ClusterQueue {cq_name} Active")
    yield cq_name
    _kubectl(env.cluster, "delete", "--ignore-not-found", "--wait=false", "clusterqueue", cq_name)


def _workload(env, job_name: str) -> dict | None:
    """Kueue's Workload of a Job (owned by it)."""
    items = env.custom.list_namespaced_custom_object(*KUEUE, env.ns, "workloads")["items"]
    return next((w for w in items if any(o.get("kind") == "Job" and o.get("name") == job_name
                                         for o in w["metadata"].get("ownerReferences") or [])), None)


def _train_job(env, run: str):
    jobs = env.jobs(run, "train")
    return jobs[0] if jobs else None


def _phase(obj: dict | None) -> str | None:
    return ((obj or {}).get("status") or {}).get("phase")


class PhaseLog:
    """Every phase each run showed, sampled while waiting (a Failed phase would be sticky anyway)."""

    def __init__(self, env, names: tuple[str, ...]):
        self.env, self.names = env, names
        self.seen: dict[str, list[str]] = {n: [] for n in names}

    def sample(self) -> dict[str, dict]:
        objs = {}
        for n in self.names:
            try:
                objs[n] = self.env.get(n)
            except client.ApiException as err:  # not created yet
                if err.status != 404:
                    raise
        for n, obj in objs.items():
            phase = _phase(obj)
            if phase and (not self.seen[n] or self.seen[n][-1] != phase):
                self.seen[n].append(phase)
        return objs

    def wait(self, predicate, timeout: float, what: str):
        return self.env.wait(lambda: predicate(self.sample()), timeout, what)


# ------------------------------------------------------------------------------------------------ tests


def test_kueue_webhook_suspends_a_labelled_job_and_accepts_the_examples(kueue, cluster, namespace):
    batch, custom = client.BatchV1Api(cluster.api_client()), client.CustomObjectsApi(cluster.api_client())
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "labelled", "labels": {"kueue.x-k8s.io/queue-name": "nowhere"}},
           "spec": {"suspend": False, "template": {"spec": {"restartPolicy": "Never", "containers": [
               {"name": "c", "image": "python:3", "command": ["python", "-c", "pass"]}]}}}}
    created = batch.create_namespaced_job(namespace, job)
    assert created.spec.suspend is True, "Kueue's mutating webhook did not suspend the Job"
    deadline = time.monotonic() + 30
    workload = None
    while time.monotonic() < deadline and not workload:
        items = custom.list_namespaced_custom_object(*KUEUE, namespace, "workloads")["items"]
        workload = next((w for w in items if w["spec"].get("queueName") == "nowhere"), None)
        time.sleep(0.3)
    assert workload, "Kueue's job controller created no Workload for the Job"
    print(f"\nKueue suspended the Job and created Workload {workload['metadata']['name']}")

    # The admin examples and the chart's objects pass Kueue's validating webhooks (server-side dry run).
    docs = _docs(EXAMPLES / "cluster-queue.yaml") + [
        dict(d, metadata=dict(d["metadata"], namespace=namespace)) for d in _docs(EXAMPLES / "team-queues.yaml")]
    out = _apply(cluster, docs, "--dry-run=server")
    assert out.count("created (server dry run)") == len(docs), out
    helm = cluster.bin_dir / "helm"
    rendered = subprocess.run(
        [str(helm), "template", "q", str(CHART), "--kube-version", "v1.37.2", "--show-only", "templates/kueue.yaml",
         "--set", "kueue.enabled=true", "--set", "kueue.cohort=ml", "--set", "kueue.cpuFlavor.name=cpu",
         "--set", "kueue.gpuBorrowingLimit=2", "--set", "kueue.priorityClasses[0].name=urgent",
         "--set", "kueue.priorityClasses[0].value=1000", "--set", "kueue.localQueues[0].name=gpus",
         "--set", f"kueue.localQueues[0].namespace={namespace}"], capture_output=True, text=True, check=True).stdout
    chart_docs = [d for d in yaml.safe_load_all(rendered) if d]
    assert {d["kind"] for d in chart_docs} == {"ResourceFlavor", "Cohort", "ClusterQueue", "WorkloadPriorityClass",
                                               "LocalQueue"}
    out = _apply(cluster, chart_docs, "--dry-run=server")
    assert out.count("created (server dry run)") == len(chart_docs), out
    # The validating webhook can refuse: borrowing without a cohort is invalid.
    bad = next(d for d in _docs(EXAMPLES / "cluster-queue.yaml") if d["kind"] == "ClusterQueue")
    bad["spec"].pop("cohortName")
    refused = _kubectl(cluster, "apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(bad))
    assert refused.returncode != 0 and "borrowingLimit" in refused.stderr, refused.stderr


def test_second_run_waits_for_the_only_gpu_then_both_succeed(kueue, gpu_queue, env):
    env.claim()
    env.start_operator()
    runs = PhaseLog(env, ("first", "second"))
    env.create(resource("first", gpus=1, queueName=QUEUE, commands=stub_commands(train_seconds=20)))
    first = env.wait(lambda: (j := _train_job(env, "first")) and j.spec.suspend is False and j, 90,
                     "Kueue to admit the first run's training Job")
    env.create(resource("second", gpus=1, queueName=QUEUE, commands=stub_commands(train_seconds=2)))
    second = env.wait(lambda: _train_job(env, "second"), 60, "the second run's training Job")

    # The first still trains: the second's Job stays suspended, its Workload says why, the run is Queued.
    def held(objs):
        wl = _workload(env, second.metadata.name)
        reserved = condition(wl or {}, "QuotaReserved")
        return (_phase(objs.get("second")) == "Queued" and reserved and reserved["status"] == "False"
                and (wl, reserved))
    wl, reserved = runs.wait(held, 30, "the second run Queued with Kueue's reason")
    assert "nvidia.com/gpu" in reserved["message"], reserved
    assert _train_job(env, "second").spec.suspend is True
    assert _train_job(env, "first").status.completion_time is None, "the first finished before the check"
    print(f"\nsecond run Queued; Kueue's Workload {wl['metadata']['name']}: {reserved['reason']}: "
          f"{reserved['message']}")
    # The operator reads the same Workload: Kueue's reason is in the run's own condition.
    operator_says = runs.wait(lambda o: (c := condition(o["second"], "QuotaAdmitted")) and "nvidia.com/gpu"
                              in c["message"] and c, 30, "Kueue's reason in the second run's QuotaAdmitted")
    assert operator_says["reason"] == "WaitingForKueue" and "Kueue" in operator_says["message"], operator_says
    print(f"operator's condition: {operator_says}")

    finals = runs.wait(lambda o: len(o) == 2 and all(_phase(r) in ("Succeeded", "Failed") for r in o.values()) and o,
                       150, "both runs to finish")
    assert {n: _phase(o) for n, o in finals.items()} == {"first": "Succeeded", "second": "Succeeded"}
    assert all("Failed" not in phases for phases in runs.seen.values()), runs.seen
    first, second = _train_job(env, "first"), _train_job(env, "second")
    assert second.status.start_time >= first.status.completion_time, (
        f"second training started {second.status.start_time}, first ended {first.status.completion_time}")
    print(f"first training ended {first.status.completion_time:%H:%M:%S}, second started "
          f"{second.status.start_time:%H:%M:%S}; phases {runs.seen}")


@pytest.fixture
def priority_classes(kueue, cluster):
    """The examples' WorkloadPriorityClasses (Kueue-only priorities: kube-scheduler never sees them, the node has
    room for both pods, only the queue's quota is short); spec.queuePriorityClass names them."""
    docs = [d for d in _docs(EXAMPLES / "cluster-queue.yaml") if d["kind"] == "WorkloadPriorityClass"]
    _apply(cluster, docs)
    return {d["metadata"]["name"]: d["value"] for d in docs}


def test_higher_priority_run_preempts_a_training_which_resumes(kueue, gpu_queue, env, priority_classes):
    env.claim()
    env.start_operator()
    runs = PhaseLog(env, ("background", "urgent"))
    low = stub_commands()
    low["train"] = ["python", "-c", RESUMABLE_TRAIN, "60", "30"]
    assert priority_classes["quranft-urgent"] > priority_classes["quranft-background"]
    env.create(resource("background", gpus=1, queueName=QUEUE, commands=low, queuePriorityClass="quranft-background"))

    def progress_at_least(n):
        return lambda objs: (((objs["background"].get("status") or {}).get("progress") or {}).get("step") or 0) >= n
    runs.wait(progress_at_least(3), 90, "the background run to train a few steps")
    bg_job = _train_job(env, "background")
    env.create(resource("urgent", gpus=1, queueName=QUEUE, commands=stub_commands(train_seconds=2),
                        queuePriorityClass="quranft-urgent"))

    # Kueue evicts the background training (its Workload: Evicted, reason Preempted) and suspends its Job.
    def evicted(objs):
        wl = _workload(env, bg_job.metadata.name)
        ev = condition(wl or {}, "Evicted")
        return ev and ev["status"] == "True" and _train_job(env, "background").spec.suspend and ev
    ev = runs.wait(evicted, 60, "Kueue to preempt the background training")
    assert ev["reason"] == "Preempted", ev
    print(f"\nKueue evicted the background training: {ev['reason']}: {ev['message']}")
    queued = runs.wait(lambda o: _phase(o["background"]) == "Queued" and (c := condition(o["background"],
                       "Preempted")) and c["status"] == "True" and o["background"], 30,
                       "the preempted run to show Queued with a Preempted condition")
    preempted = condition(queued, "Preempted")
    assert preempted["reason"] == "PreemptedByKueue" and ev["message"] in preempted["message"], preempted
    print(f"preempted run: phase Queued, Preempted={preempted}")

    finals = runs.wait(lambda o: len(o) == 2 and all(_phase(r) in ("Succeeded", "Failed") for r in o.values()) and o,
                       150, "both runs to finish")
    assert {n: _phase(o) for n, o in finals.items()} == {"background": "Succeeded", "urgent": "Succeeded"}
    assert all("Failed" not in phases for phases in runs.seen.values()), runs.seen
    assert "Queued" in runs.seen["background"][runs.seen["background"].index("Training"):], runs.seen

    # The background run resumed from the step it saved on SIGTERM: its last pod says so, and the step went on.
    pods = [p for p in env.pods("background") if p.metadata.labels.get(LABEL_STAGE) == "train"]
    done = next(p for p in pods if p.status.phase == "Succeeded")
    summary = json.loads(done.status.container_statuses[0].state.terminated.message)
    log = env.core.read_namespaced_pod_log(done.metadata.name, env.ns)
    steps = [json.loads(line.split(" ", 1)[1])["step"] for line in log.splitlines()
             if line.startswith("QURANFT_PROGRESS ")]
    assert summary["resumedFromStep"] and summary["resumedFromStep"] >= 3, summary
    assert steps and steps[0] == summary["resumedFromStep"] + 1 and steps[-1] == 60, steps[:3]
    status = finals["background"]["status"]
    assert (status.get("resumeCount") or 0) >= 1 and status["progress"]["step"] == 60, status
    bg = _train_job(env, "background")
    print(f"background resumed from step {summary['resumedFromStep']} (resumeCount {status.get('resumeCount')}, "
          f"train Job failed={bg.status.failed or 0}); phases {runs.seen}; "
          f"Preempted condition: {condition(finals['background'], 'Preempted')}")
    assert condition(finals["background"], "Preempted")["reason"] == "Readmitted"
