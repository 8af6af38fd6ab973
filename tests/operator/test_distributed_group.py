"""Multi-node runs and stop requests on the embedded real cluster, with stub stages (no trainer): the API
server's CEL rules for resources.nodes, the Indexed Job + headless Service the operator creates, a group
restart after a rank dies (attempt <name>-train-r1), and a stop request that ends a training run Stopped.

The real trainer's rendezvous over these pods (gloo, SIGKILL of rank 1, resume) is the CPU e2e's part.
"""
from __future__ import annotations

import copy
import json

import pytest
from clusterkit import condition, resource, stub_commands
from kubernetes.client.exceptions import ApiException

from quranft.operator import builders

pytestmark = pytest.mark.cluster
PAIR = {"nodes": 2, "gpus": 0, "distributedBackend": "gloo", "cpu": "100m", "memory": "256Mi"}

# A rank of the stub group: rank 0 prints and pushes progress (the trainer's client, quranft.trainer.progress_push)
# and writes the train summary, every rank records the
# rendezvous environment it got in its termination message. Rank 1 of the first attempt kills itself once
# (SIGKILL, as the CPU e2e does to a real trainer); the marker on the claim makes the next attempt succeed.
RANK = r"""
import json, os, pathlib, signal, sys, time
run, seconds = sys.argv[1], float(sys.argv[2])
rank = int(os.environ["NODE_RANK"])
seen = {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK",
                                      "JOB_COMPLETION_INDEX", "HOSTNAME")}
marker = pathlib.Path(f"/workspace/{run}-rank1-killed")
if rank == 1 and run.startswith("group") and not marker.exists():
    marker.write_text("once")
    time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGKILL)
steps = max(1, int(seconds * 2))
pusher = None
if rank == 0:
    from quranft.trainer.progress_push import ProgressPusher
    pusher = ProgressPusher.from_env()
for step in range(1, steps + 1):
    time.sleep(0.5)
    if rank == 0:
        doc = {"step": step, "maxSteps": steps, "loss": 1.0 / step, "epoch": 0, "worldSize": 2, "valWer": 0.9,
               "samplesPerSecond": 10.0, "updatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        print("QURANFT_PROGRESS " + json.dumps(doc), flush=True)
        if pusher:
            pusher.submit(doc)
msg = {"ok": True, "stage": "train", "rank": rank, "seen": seen}
if rank == 0:
    msg.update(step=steps, modelPath=f"/workspace/runs/{run}/model.nemo", worldSize=2, globalBatchSize=16, nodes=2,
               devicesPerNode=1)
open("/dev/termination-log", "w").write(json.dumps(msg))
"""


def _group(name: str, seconds: float, **spec) -> dict:
    commands = dict(stub_commands(prepare_seconds=0.3, bench_seconds=0.3),
                    train=["python", "-c", RANK, name, str(seconds)])
    return resource(name, commands=commands, data={"source": "local", "localPath": f"/workspace/{name}"},
                    resources=dict(PAIR, backoffLimit=1), **spec)


def _rejected(env, body: dict) -> str | None:
    """The API server's message when it refuses `body` (a dry-run create), None when it accepts it."""
    try:
        env.custom.create_namespaced_custom_object("quranft.io", "v1alpha1", env.ns, "quranfinetunes", body,
                                                   dry_run="All")
    except ApiException as exc:
        return (json.loads(exc.body) if exc.body and exc.body.startswith("{") else {}).get("message", exc.body)
    return None


def _with(name: str, resources: dict | None = None, storage: dict | None = None) -> dict:
    body = resource(name)
    if resources is not None:
        body["spec"]["resources"] = resources
    if storage is not None:
        body["spec"]["storage"] = storage
    return body


CEL_CASES = [
    # (label, body, fragment of the refusal or None when accepted)
    ("cpu pair without gloo", _with("a", {"nodes": 2, "gpus": 0}), "set resources.distributedBackend: gloo"),
    ("cpu pair with gloo", _with("b", {"nodes": 2, "gpus": 0, "distributedBackend": "gloo"}), None),
    ("nccl on cpu", _with("c", {"gpus": 0, "distributedBackend": "nccl"}), "nccl needs GPUs"),
    ("over 128 ranks", _with("d", {"nodes": 16, "gpus": 16}), "exceeds 128 training ranks"),
    ("65 nodes", _with("e", {"nodes": 65, "gpus": 1}), "spec.resources.nodes"),
    ("2 x 8 gpus", _with("f", {"nodes": 2, "gpus": 8}), None),
    ("dotted multi-node name", _with("g.h", {"nodes": 2, "gpus": 1}), "needs a name that is a DNS label"),
    ("dotted one-node name", _with("g.i", {"nodes": 1, "gpus": 1}), None),
    ("created claim not RWX", _with("j", {"nodes": 2, "gpus": 1}, {"size": "1Gi"}), "ReadWriteMany"),
    ("created claim RWX", _with("k", {"nodes": 2, "gpus": 1}, {"size": "1Gi", "accessModes": ["ReadWriteMany"]}),
     None),
    ("access modes of an existing claim", _with("l", None, {"existingClaim": "ws", "accessModes": ["ReadWriteOnce"]}),
     "applies to the claim the operator creates"),
]


def test_the_api_server_enforces_the_distributed_rules(env):
    outcomes = {label: _rejected(env, copy.deepcopy(body)) for label, body, _ in CEL_CASES}
    print("\nCEL outcomes:", json.dumps(outcomes, indent=1))
    wrong = {label: outcomes[label] for label, _, fragment in CEL_CASES
             if (fragment is None) != (outcomes[label] is None) or (fragment and fragment not in outcomes[label])}
    assert wrong == {}
    # The world size is fixed once created (the run's config.json has it).
    env.create(_with("fixed", {"nodes": 1, "gpus": 0}))
    with pytest.raises(ApiException) as exc:
        env.custom.patch_namespaced_custom_object("quranft.io", "v1alpha1", env.ns, "quranfinetunes", "fixed",
                                                  {"spec": {"resources": {"nodes": 2, "distributedBackend": "gloo"}}})
    assert "immutable" in exc.value.body


def test_a_killed_rank_restarts_the_group_and_a_stop_request_ends_a_run(env):
    env.claim()
    env.start_operator()
    env.create(_group("group", seconds=3.0))
    env.create(_group("halt", seconds=600.0))

    # The stop request: once the pair trains, annotate it as the campaign controller would.
    env.wait(lambda: [p for p in env.pods("halt") if p.metadata.labels.get(builders.LABEL_STAGE) == "train"
                      and p.status.phase == "Running"], 120, "halt's training pods to run")
    env.wait(lambda: (env.get("halt")["status"].get("progress") or {}).get("valWer"), 60, "halt's progress")
    reason = "early stopping: val WER 0.90 > median 0.41 + 0.05 at step 2"
    env.custom.patch_namespaced_custom_object("quranft.io", "v1alpha1", env.ns, "quranfinetunes", "halt", {
        "metadata": {"annotations": {builders.STOP_ANNOTATION: reason}}})
    halted = env.wait_phase("halt", "Stopped", 60)
    stopped = condition(halted, "Stopped")
    assert (stopped["status"], stopped["reason"], stopped["message"]) == ("True", "StopRequested", reason)
    assert halted["status"]["progress"]["valWer"] == 0.9  # the last metrics stay
    assert env.batch.read_namespaced_job("halt-train", env.ns).spec.suspend is True
    env.wait(lambda: not [p for p in env.pods("halt") if p.metadata.labels.get(builders.LABEL_STAGE) == "train"
                          and p.status.phase in ("Pending", "Running")], 60, "halt's training pods to stop")

    done = env.wait_phase("group", ("Succeeded", "Failed"), 240)
    st = done["status"]
    print(f"\ngroup: {st['phase']}, jobs {st['jobs']}, training {st.get('training')}")
    assert st["phase"] == "Succeeded", st
    assert st["jobs"]["train"] == "group-train-r1"
    training = st["training"]
    assert (training["groupRestarts"], training["groupFailures"]) == (1, 1)
    assert training["lastRestart"]["reason"] == "RankFailed" and "exit code 137" in training["lastRestart"]["message"]
    assert (training["worldSize"], training["globalBatchSize"], training["nodes"]) == (2, 16, 2)
    assert st["model"]["path"] == "/workspace/runs/group/model.nemo"  # rank 0's summary

    jobs = {j.metadata.name: j for j in env.jobs("group", "train")}
    assert set(jobs) == {"group-train", "group-train-r1"}
    for name, job in jobs.items():
        assert (job.spec.completion_mode, job.spec.completions, job.spec.parallelism) == ("Indexed", 2, 2)
        assert job.spec.template.spec.subdomain == "group-ranks"
    svc = env.core.read_namespaced_service("group-ranks", env.ns)
    assert svc.spec.cluster_ip == "None" and svc.spec.publish_not_ready_addresses is True
    assert svc.spec.selector == {builders.LABEL_RUN: "group", builders.LABEL_STAGE: "train"}

    # Each rank of the second attempt got its place in the group from the operator and the Job controller.
    ranks = {}
    for p in env.pods("group"):
        if p.metadata.labels.get("job-name") == "group-train-r1" or \
                p.metadata.labels.get("batch.kubernetes.io/job-name") == "group-train-r1":
            term = p.status.container_statuses[0].state.terminated
            ranks[int(p.metadata.annotations[builders.COMPLETION_INDEX])] = json.loads(term.message)["seen"]
    assert sorted(ranks) == [0, 1]
    port = str(builders.rendezvous_port({"namespace": env.ns, "name": "group"}, 1))
    for index, seen in ranks.items():
        assert seen["MASTER_ADDR"] == "group-train-r1-0.group-ranks" and seen["MASTER_PORT"] == port
        assert (seen["WORLD_SIZE"], seen["NODE_RANK"]) == ("2", str(index))
