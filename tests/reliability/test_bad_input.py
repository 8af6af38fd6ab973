"""Item 4: bad input. At least 30 invalid resources and edits: each is rejected by the API server with a
clear message, or accepted and then failed by the operator with a clear condition; no Job is created for
any of them, and a valid run created in the middle still reaches its verdict.

The operator tests' list of invalid specs is reused (imported) and extended here.
"""
from __future__ import annotations

import json

import pytest
from clusterkit import GROUP, PLURAL, VERSION, condition, resource, stub_commands
from kubernetes.client.exceptions import ApiException
from test_cluster_operator import INVALID, _set

pytestmark = pytest.mark.cluster
API = "api"  # rejected by the API server (422) with this text in its message
CONDITION = "condition"  # accepted, then Failed with reason ConfigError and this text in its message

MORE = [
    ("negative batch", _set("spec.training.batchSize", -5), API, "spec.training.batchSize"),
    ("zero train samples", _set("spec.data.maxTrainSamples", 0), API, "spec.data.maxTrainSamples"),
    ("ctc weight above 1", _set("spec.training.ctcWeight", 1.5), API, "spec.training.ctcWeight"),
    ("unknown data source", _set("spec.data.source", "s3"), API, 'Unsupported value: "s3"'),
    ("unicode name", _set("metadata.name", "تدريب-قرآن"), API, "metadata.name"),
    ("garbage name", _set("metadata.name", "UPPER_case!"), API, "metadata.name"),
    ("control chars in name", _set("metadata.name", "a\x00b"), API, "metadata.name"),
    ("oversized localPath", _set("spec.data.localPath", "/x" * 2000), API, "spec.data.localPath"),
    ("too many tolerations", _set("spec.resources.tolerations", [{"key": f"k{i}", "operator": "Exists"}
                                                                for i in range(40)]), API, "spec.resources.tolerations"),
    ("bad shm size", _set("spec.resources.shmSize", "2GB"), API, "spec.resources.shmSize"),
    ("bad storage size", _set("spec.storage", {"size": "lots"}), API, "spec.storage.size"),
    ("backoff beyond 20", _set("spec.resources.backoffLimit", 50), API, "spec.resources.backoffLimit"),
    ("zero startup deadline", _set("spec.startupDeadlineSeconds", 0), API, "spec.startupDeadlineSeconds"),
    ("unknown pull policy", _set("spec.images.pullPolicy", "Sometimes"), API, 'Unsupported value: "Sometimes"'),
    ("unknown cleanup", _set("spec.cleanup", {"onSuccess": "Explode"}), API, 'Unsupported value: "Explode"'),
    ("zero cpu", _set("spec.resources.cpu", 0), API, "spec.resources.cpu"),
    ("freeze not an object", _set("spec.training.freeze", "yes"), API, "spec.training.freeze"),
    ("hour-long clips", _set("spec.data.maxDurationSeconds", 5000), API, "spec.data.maxDurationSeconds"),
    ("oversized annotation", _set("metadata.annotations", {"big": "x" * 300_000}), API, "metadata.annotations"),
    ("steps beyond max", _set("spec.training.maxSteps", 10**12), API, "spec.training.maxSteps"),
    # Accepted by the schema, refused by the trainer's own config schema or the operator's budget.
    ("empty base model", _set("spec.training.baseModel", ""), API, "spec.training.baseModel"),
    ("zero min duration", _set("spec.data.minDurationSeconds", 0), API, "spec.data.minDurationSeconds"),
    ("more GPUs than the operator allows", _set("spec.resources.gpus", 8), CONDITION, "GPUs per namespace"),
]
IMMUTABLE_EDITS = [
    ("training", {"baseModel": "tiny", "maxSteps": 20}, "spec.training is immutable"),
    ("data", {"source": "hub"}, "spec.data is immutable"),
    ("storage", {"existingClaim": "other"}, "spec.storage is immutable"),
    ("hubTokenSecretRef", {"name": "late-token"}, None),  # adding one is allowed (see CRD); changing is not
]


def _cases():
    yield from ((label, mutate, API, expected) for label, mutate, expected in INVALID)
    yield from MORE


def test_invalid_resources_rejected_or_failed_with_no_jobs_while_a_valid_one_succeeds(env):
    env.claim()
    env.start_operator("--max-gpus-per-namespace", "4")
    cases = list(_cases())
    outcomes, problems, accepted = {}, [], {}
    for i, (label, mutate, where, expected) in enumerate(cases):
        if i == len(cases) // 2:  # a valid run in the middle of the garbage
            env.create(resource("good", commands=stub_commands(train_seconds=4)))
        body = resource(f"bad-{i}")
        mutate(body)
        try:
            env.create(body)
        except ApiException as exc:
            message = (json.loads(exc.body) if exc.body and exc.body.startswith("{") else {}).get("message", exc.body)
            outcomes[label] = f"{exc.status}: {message[:160]}"
            if where != API or exc.status not in (400, 413, 422) or expected not in message:
                problems.append(f"{label}: rejected {exc.status} {message[:300]}")
            continue
        accepted[label] = (body["metadata"]["name"], expected)
        if where != CONDITION:
            problems.append(f"{label}: accepted by the API server")

    for label, (name, expected) in accepted.items():
        obj = env.wait_phase(name, ("Failed", "Succeeded"), 60)
        failed = condition(obj, "Failed") or {}
        outcomes[label] = f"{obj['status']['phase']}/{failed.get('reason')}: {failed.get('message', '')[:160]}"
        if obj["status"]["phase"] != "Failed" or failed.get("reason") != "ConfigError" or \
                expected not in failed.get("message", ""):
            problems.append(f"{label}: {outcomes[label]}")

    # Spec edits: refused with a clear message (the fields that may change do). Made on the resource the
    # operator failed, so an allowed edit cannot disturb the valid run.
    target = accepted["more GPUs than the operator allows"][0]
    for field, value, message in IMMUTABLE_EDITS:
        label = f"edit spec.{field}"
        try:
            env.custom.patch_namespaced_custom_object(GROUP, VERSION, env.ns, PLURAL, target, {"spec": {field: value}})
            outcomes[label] = "allowed"
            if message:
                problems.append(f"{label}: allowed")
        except ApiException as exc:
            text = json.loads(exc.body)["message"]
            outcomes[label] = f"{exc.status}: {text[:160]}"
            if not message or message not in text:
                problems.append(f"{label}: {exc.status} {text[:300]}")
    with pytest.raises(ApiException) as err:  # ... and once set, the secret ref may not change
        env.custom.patch_namespaced_custom_object(GROUP, VERSION, env.ns, PLURAL, target,
                                                  {"spec": {"hubTokenSecretRef": {"name": "other-token"}}})
    outcomes["edit spec.hubTokenSecretRef again"] = f"{err.value.status}: {json.loads(err.value.body)['message'][:160]}"

    good = env.wait_phase("good", ("Succeeded", "Failed"), 180)
    refused_edits = sum(1 for _, _, message in IMMUTABLE_EDITS if message) + 1
    print(f"\nbad input: {len(cases)} invalid resources + {refused_edits} refused edits "
          f"({len(cases) - len(accepted)} rejected by the API server, {len(accepted)} failed by the operator)")
    for label, outcome in outcomes.items():
        print(f"  {label:38s} {outcome}")
    assert problems == []
    assert len(cases) + refused_edits >= 30
    assert good["status"]["phase"] == "Succeeded", good["status"]
    runs_with_jobs = sorted({j.metadata.labels["quranft.io/run"] for j in env.jobs()})
    assert runs_with_jobs == ["good"]
