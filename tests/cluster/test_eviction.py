"""Eviction on the embedded cluster: the API server marks the pod DisruptionTarget, and the node agent
must keep that condition in the status it writes when the pod ends, as the kubelet does. Otherwise a Job
whose podFailurePolicy ignores disruptions counts the evicted pod as a failure (found by
tests/reliability/test_preemption.py: with backoffLimit 0 the evicted training Job failed)."""
from __future__ import annotations

import queue
import threading

import pytest
from kubernetes import client, watch
from test_cluster import PY, job_body, wait_for

from quranft.cluster.podstatus import ContainerRecord, foreign_conditions, pod_status

DISRUPTED = {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
             "message": "Eviction API: evicting", "lastTransitionTime": "2026-01-01T00:00:00Z"}


def test_status_keeps_conditions_the_agent_does_not_own():
    server = [{"type": "Ready", "status": "True"}, DISRUPTED, {"type": "example.com/gate", "status": "True"}]
    keep = foreign_conditions(server)
    assert keep == [DISRUPTED, {"type": "example.com/gate", "status": "True"}]
    main = [ContainerRecord("main", PY, state={"terminated": {"exitCode": 143}})]
    status = pod_status("Failed", [], main, "2026-01-01T00:00:00Z", {}, keep_conditions=keep)
    types = [c["type"] for c in status["conditions"]]
    assert types.count("Ready") == 1 and "DisruptionTarget" in types and "example.com/gate" in types
    assert next(c for c in status["conditions"] if c["type"] == "DisruptionTarget") == DISRUPTED
    assert next(c for c in status["conditions"] if c["type"] == "Ready")["status"] == "False"


@pytest.mark.cluster
def test_evicted_pod_ends_failed_with_disruption_target_and_job_retries_uncounted(cluster, namespace):
    api = cluster.api_client()
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    job = job_body("evicted", "import time, signal, sys\n"
                   "signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))\n"
                   "print('started', flush=True); time.sleep(600)")
    # backoffLimit 0: one counted failure would fail the Job; only the Ignore rule can save it.
    job["spec"]["podFailurePolicy"] = {"rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}
    batch.create_namespaced_job(namespace, job)

    # Every state of the pods, from a watch: the evicted pod's final status may live only briefly.
    events: queue.Queue = queue.Queue()
    w = watch.Watch()

    def follow():
        try:
            for ev in w.stream(core.list_namespaced_pod, namespace, label_selector="job-name=evicted",
                               timeout_seconds=300):
                events.put(ev["object"])
        except Exception:  # noqa: BLE001 - the stream breaks when the test closes the client
            pass
    threading.Thread(target=follow, daemon=True).start()

    def running_pods():
        pods = core.list_namespaced_pod(namespace, label_selector="job-name=evicted").items
        return [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
    try:
        first = wait_for(running_pods, timeout=120, what="the first pod running")[0]
        core.create_namespaced_pod_eviction(first.metadata.name, namespace, client.V1Eviction(
            metadata=client.V1ObjectMeta(name=first.metadata.name, namespace=namespace)))
        second = wait_for(lambda: [p for p in running_pods() if p.metadata.uid != first.metadata.uid],
                          timeout=180, what="a replacement pod")[0]
        final = None
        while not events.empty():
            pod = events.get()
            if pod.metadata.uid == first.metadata.uid and pod.status.phase in ("Failed", "Succeeded"):
                final = pod
        assert final is not None, "never saw the evicted pod in a terminal phase"
        conds = {c.type: c for c in final.status.conditions or []}
        assert final.status.phase == "Failed"
        assert "DisruptionTarget" in conds and conds["DisruptionTarget"].status == "True", conds
        assert conds["DisruptionTarget"].reason == "EvictionByEvictionAPI"
        assert final.status.container_statuses[0].state.terminated.exit_code == 143
        status = batch.read_namespaced_job_status("evicted", namespace).status
        assert not any(c.type == "Failed" and c.status == "True" for c in status.conditions or []), status
        assert not status.failed, status  # ignored, not counted
        assert second.metadata.name != first.metadata.name
    finally:
        w.stop()
        api.close()
