"""On the embedded cluster: a real operator (subprocess, its own ServiceAccount and RBAC) and a stub trainer that
pushes its progress with the real client (quranft.trainer.progress_push) and prints NO progress line, so
status.progress can only have come from the push. It follows the trainer within 15 s, the operator reads no pod
log (the API server's own apiserver_request_total for pods/log, and the operator's fallback counter), and a
forged, an absent or a pod-less token is refused. A trainer that pushes nothing (an older image) still gets its
progress into the status, from its log, counted as a fallback."""
from __future__ import annotations

import json
import re
import ssl
import time
import urllib.error
import urllib.request
from datetime import datetime

import pytest
from clusterkit import resource, stub_commands

from quranft.operator.builders import LABEL_STAGE
from quranft.trainer import progress_push

pytestmark = pytest.mark.cluster

TRAIN_SECONDS = 36
# The stub trainer: one step a second, each record pushed (latest wins), nothing printed but a last line.
PUSHING_TRAINER = r"""
import json, sys, time
from datetime import datetime, timezone
from quranft.trainer.progress_push import ProgressPusher
pusher = ProgressPusher.from_env()
assert pusher is not None, "the operator gave this pod no progress endpoint"
steps = int(sys.argv[1])
for i in range(1, steps + 1):
    time.sleep(1.0)
    pusher.submit({"step": i, "maxSteps": steps, "loss": round(1.0 / i, 3), "epoch": 0,
                   "updatedAt": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")})
pusher.flush(5)
print("pushed %d records" % pusher.sent, flush=True)
msg = {"ok": True, "stage": "train", "step": steps, "modelPath": "/workspace/runs/stub/model/model.nemo",
       "sizeBytes": 1234, "sha256": "0" * 64, "dataSpecHash": "stub", "finalLoss": 0.1, "valWer": 0.2,
       "resumedFromStep": None}
open("/dev/termination-log", "w").write(json.dumps(msg))
"""


def log_requests(env) -> int:
    """pods/log requests the API server has served (its own counter, every client)."""
    response = env.api.call_api("GET", env.api.configuration.host + "/metrics")
    response.read()
    text = response.data.decode()
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("apiserver_request_total{") and 'resource="pods"' in line
                   and 'subresource="log"' in line))


def operator_metric(env, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{env.metrics_port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if re.match(rf"{name}(\{{.*\}})? ", line))


def post(url: str, ca_pem: str, token: str | None, doc: dict) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(url, data=json.dumps(doc).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10, context=ssl.create_default_context(cadata=ca_pem)) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_status_progress_follows_the_push_without_pod_log_reads(env):
    env.claim()
    env.start_operator("--progress-interval", "5")
    commands = dict(stub_commands(), train=["python", "-c", PUSHING_TRAINER, str(TRAIN_SECONDS)])
    env.create(resource("pushed", commands=commands, training={"baseModel": "tiny", "maxSteps": TRAIN_SECONDS}))
    env.wait_phase("pushed", "Training", timeout=120)
    reads_before = log_requests(env)

    # Poll status.progress while it trains: how far behind the trainer's newest record is the status?
    lags, seen = [], set()
    deadline = time.monotonic() + TRAIN_SECONDS + 60
    first_at = None
    while time.monotonic() < deadline:
        obj = env.get("pushed")
        progress = (obj.get("status") or {}).get("progress") or {}
        if (obj.get("status") or {}).get("phase") != "Training":
            break
        if progress.get("updatedAt"):
            first_at = first_at or time.monotonic()
            age = (datetime.now().astimezone() - datetime.fromisoformat(progress["updatedAt"].replace("Z", "+00:00")))
            lags.append(age.total_seconds())
            seen.add(progress["step"])
        time.sleep(0.5)
    print(f"status.progress age: max {max(lags):.1f} s over {len(lags)} polls; steps seen {sorted(seen)}")
    assert lags, "status.progress never appeared"
    assert max(lags) <= 15, lags  # the trainer pushes every second; status is at most ~5 s + a pass behind
    assert len(seen) >= 4  # it followed the training, not just one record
    done = env.wait_phase("pushed", ("Benchmarking", "Succeeded"), timeout=120)
    assert (done["status"]["progress"]["eta"], done["status"]["progress"]["etaSeconds"]) == ("0s", 0)  # trained

    assert operator_metric(env, "quranft_progress_log_reads_total") == 0
    assert operator_metric(env, "quranft_progress_pushes_total") >= 4
    assert log_requests(env) == reads_before, "the operator read a pod log"
    # The measurement can fail: this test's own log read shows in the API server's counter.
    pod = next(p for p in env.pods("pushed") if p.metadata.labels.get(LABEL_STAGE) == "train")
    assert "pushed" in env.core.read_namespaced_pod_log(pod.metadata.name, env.ns)
    assert log_requests(env) == reads_before + 1


def test_the_endpoint_refuses_forged_absent_and_pod_less_tokens(env):
    env.claim()
    env.start_operator()
    env.create(resource("refuse", commands=stub_commands(train_seconds=30)))
    env.wait_phase("refuse", "Training", timeout=120)
    job = env.jobs("refuse", "train")[0]
    pod_env = {e.name: e.value for e in job.spec.template.spec.containers[0].env}
    url, ca_pem = pod_env[progress_push.URL_ENV], pod_env[progress_push.CA_ENV]
    doc = {"step": 1, "maxSteps": 10, "epoch": 0, "updatedAt": "2026-01-01T00:00:00Z"}

    assert post(url, ca_pem, None, doc) == 401
    forged = "eyJhbGciOiJSUzI1NiIsImtpZCI6IngifQ.eyJhdWQiOlsicXVyYW5mdC1wcm9ncmVzcyJdfQ.c2lnbmF0dXJl"
    assert post(url, ca_pem, forged, doc) == 401
    # A real token of the namespace's ServiceAccount for the right audience, but bound to no pod: 403.
    unbound = env.core.create_namespaced_service_account_token("default", env.ns, {"spec": {
        "audiences": ["quranft-progress"], "expirationSeconds": 600}}).status.token
    assert post(url, ca_pem, unbound, doc) == 403
    # Bound to the training pod but for the API server's audience: not a progress token.
    pod = next(p for p in env.pods("refuse") if p.metadata.labels.get(LABEL_STAGE) == "train")
    wrong_audience = env.core.create_namespaced_service_account_token("default", env.ns, {"spec": {
        "expirationSeconds": 600, "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod.metadata.name,
                                                     "uid": pod.metadata.uid}}}).status.token
    assert post(url, ca_pem, wrong_audience, doc) == 401
    # The same pod's token for our audience is accepted; a body that is not a record is 400.
    right = env.core.create_namespaced_service_account_token("default", env.ns, {"spec": {
        "audiences": ["quranft-progress"], "expirationSeconds": 600, "boundObjectRef": {
            "kind": "Pod", "apiVersion": "v1", "name": pod.metadata.name, "uid": pod.metadata.uid}}}).status.token
    assert post(url, ca_pem, right, {"step": "many"}) == 400
    assert post(url, ca_pem, right, doc) == 204


# An older trainer image: progress lines only, no push.
PRINTING_TRAINER = r"""
import json, sys, time
from datetime import datetime, timezone
steps = int(sys.argv[1])
for i in range(1, steps + 1):
    time.sleep(1.0)
    print("QURANFT_PROGRESS " + json.dumps({"step": i, "maxSteps": steps, "epoch": 0,
          "updatedAt": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")}), flush=True)
msg = {"ok": True, "stage": "train", "step": steps, "modelPath": "/workspace/runs/stub/model/model.nemo",
       "sizeBytes": 1234, "sha256": "0" * 64, "dataSpecHash": "stub", "finalLoss": 0.1, "valWer": 0.2,
       "resumedFromStep": None}
open("/dev/termination-log", "w").write(json.dumps(msg))
"""


def test_a_trainer_that_pushes_nothing_falls_back_to_its_log(env):
    env.claim()
    env.start_operator("--progress-interval", "2", "--progress-stale-seconds", "4")
    commands = dict(stub_commands(), train=["python", "-c", PRINTING_TRAINER, "20"])
    env.create(resource("printing", commands=commands, training={"baseModel": "tiny", "maxSteps": 20}))
    env.wait_phase("printing", "Training", timeout=120)
    seen = env.wait(lambda: ((env.get("printing").get("status") or {}).get("progress") or {}).get("step"), 30,
                    "progress read from the log")
    assert 1 <= seen <= 20
    assert operator_metric(env, "quranft_progress_log_reads_total") >= 1
    assert "pushed no progress" in env.log_tail(200)
