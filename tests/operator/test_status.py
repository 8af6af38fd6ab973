"""Status derivation from observed children: a table of situations, no cluster."""
from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone

import pytest
from specs import body

from quranft.operator.observe import JobView, PodView, job_view, pod_view
from quranft.operator import builders
from quranft.operator.status import Observed, now_iso, parse_summary, status_patch, transition_events
from quranft.operator.steps import derive

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
EARLIER = NOW - timedelta(minutes=5)
B = body()
SPEC, META = B["spec"], B["metadata"]
READY = {"type": "DataReady", "status": "True", "reason": "Prepared"}
ADMITTED = {"type": "QuotaAdmitted", "status": "True", "reason": "Admitted"}
TRAINED = {"type": "Trained", "status": "True", "reason": "Trained"}


def pod(name="p", **kw) -> PodView:
    kw.setdefault("created", EARLIER)
    return PodView(name=name, **kw)


def job(stage, **kw) -> JobView:
    kw.setdefault("created", EARLIER)
    kw.setdefault("start_time", EARLIER)
    return JobView(name=f"v3-{stage}", stage=stage, **kw)


def ok_pod(message: dict | str) -> PodView:
    text = message if isinstance(message, str) else json.dumps(message)
    return pod(phase="Succeeded", exit_code=0, terminated_reason="Completed", message=text)


def failed_pod(code: int, message: str = "", reason: str = "Error", **kw) -> PodView:
    return pod(phase="Failed", exit_code=code, terminated_reason=reason, message=message, **kw)


def status(*conditions, **fields) -> dict:
    return {"phase": fields.pop("phase", "Training"), "conditions": [dict(c) for c in conditions], **fields}


def entry(name: str, spec: dict | None = None, **fields) -> dict:
    """Another run's index entry (handlers.run_entry): by default on this run's claim with the same data."""
    spec = SPEC if spec is None else spec
    return {"name": name, "namespace": META["namespace"], "claim": builders.claim_name(spec, name),
            "dataHash": builders.spec_data_hash(spec), "phase": "Training", "dataReady": False, "preparing": False,
            "resultsPath": None, **fields}


def cond(st: dict, ctype: str) -> dict | None:
    return next((c for c in st.get("conditions", []) if c["type"] == ctype), None)


VERDICT = {"ok": True, "stage": "benchmark", "verdict": "improvement",
           "metrics": {"recall": 0.9, "sequenceAccuracy": 0.8}, "baseline": {"recall": 0.5},
           "deltas": {"recall": 0.4}, "targets": {"recall": {"target": 0.95, "value": 0.9, "pass": False}},
           "resultsPath": "/workspace/runs/v3/benchmark/latest.json"}

PAIRED_NEUTRAL = {**VERDICT, "verdict": "neutral", "reason": "Inconclusive", "rule": "paired", "verdictHead": "rnnt",
                  "primaryMetric": "recall", "display": {"recall": "+1.9 ±3.8"}, "requiredClips": 212,
                  "intervals": {"recall": [-0.019, 0.057]}, "leakage": {"exactAudio": 3, "sameReciterVerse": 0,
                                                                         "excluded": 3}}

NO_GPU = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 nodes are available: " \
         "1 No preemption victims found for incoming pod."
NO_NODE = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."

CASES = [
    # (id, old status, observed kwargs, expected phase, expected action, {condition: (status, reason)})
    ("fresh", {}, {}, "PreparingData", "prepare", {"DataReady": ("False", "Preparing"),
                                                    "QuotaAdmitted": ("True", "Admitted")}),
    ("config-error", {}, {"config_error": "training.maxSteps: too big"}, "Failed", None,
     {"Failed": ("True", "ConfigError")}),
    ("queued", {}, {"admitted": False, "admission_message": "2/2 trainings running"}, "Queued", None,
     {"QuotaAdmitted": ("False", "OperatorBudget")}),
    ("sibling-data", status(ADMITTED, phase="PreparingData"), {"runs": (entry("v2", dataReady=True),)}, "Training", "train",
     {"DataReady": ("True", "ReusedFromSibling")}),
    ("sibling-preparing", status(ADMITTED, phase="PreparingData"), {"runs": (entry("v2", preparing=True),)}, "PreparingData",
     None, {"DataReady": ("False", "WaitingForSibling")}),
    ("prepare-running", status(ADMITTED), {"jobs": {"prepare": job("prepare", active=1, pods=(pod(running=True,
     phase="Running"),))}}, "PreparingData", None, {"DataReady": ("False", "Preparing")}),
    ("prepare-done", status(ADMITTED), {"jobs": {"prepare": job("prepare", complete=True, pods=(ok_pod(
        {"ok": True, "stage": "prepare", "stats": {"train": 10}}),))}}, "Training", "train",
     {"DataReady": ("True", "Prepared")}),
    ("data-error", status(ADMITTED), {"jobs": {"prepare": job("prepare", failed_reason="BackoffLimitExceeded",
     pods=(failed_pod(3, json.dumps({"ok": False, "stage": "prepare", "reason": "DataError",
                                     "message": "no clips"})),))}}, "Failed", None, {"Failed": ("True", "DataError")}),
    ("config-exit-code", status(ADMITTED, READY), {"jobs": {"train": job("train", failed_reason="PodFailurePolicy",
     failed_message="Container train for pod x failed with exit code 2 matching FailJob rule at index 0",
     pods=(failed_pod(2, "Traceback ... bad"),))}}, "Failed", None, {"Failed": ("True", "ConfigError")}),
    ("oom", status(ADMITTED, READY), {"jobs": {"train": job("train", failed_reason="BackoffLimitExceeded",
     pods=(failed_pod(137, reason="OOMKilled"),))}}, "Failed", None, {"Failed": ("True", "OOMKilled")}),
    ("deadline", status(ADMITTED, READY), {"jobs": {"train": job("train", failed_reason="DeadlineExceeded",
     failed_message="Job was active longer than specified deadline")}}, "Failed", None,
     {"Failed": ("True", "DeadlineExceeded")}),
    ("backoff", status(ADMITTED, READY), {"jobs": {"train": job("train", failed_reason="BackoffLimitExceeded",
     pods=(failed_pod(1, "segfault"),))}}, "Failed", None, {"Failed": ("True", "BackoffLimitExceeded")}),
    ("quota", status(ADMITTED, READY), {"jobs": {"train": job("train", quota_message=
     'pods "v3-train-x" is forbidden: exceeded quota: gpu, requested: requests.nvidia.com/gpu=1')}},
     "Training", None, {"QuotaExceeded": ("True", "QuotaExceeded")}),
    ("quota-freed", status(ADMITTED, READY, {"type": "QuotaExceeded", "status": "True", "reason": "QuotaExceeded"}),
     {"jobs": {"train": job("train", active=1, pods=(pod(running=True, phase="Running"),))}}, "Training", None,
     {"QuotaExceeded": ("False", "QuotaAvailable")}),
    ("image-pull-waiting", status(ADMITTED, READY), {"jobs": {"train": job("train", active=1, pods=(pod(
        created=NOW - timedelta(seconds=30), waiting_reason="ImagePullBackOff", waiting_message="not found"),))}},
     "Training", None, {"StartupBlocked": ("True", "ImagePullFailure")}),
    ("image-pull-deadline", status(ADMITTED, READY), {"jobs": {"train": job("train", active=1, pods=(pod(
        created=NOW - timedelta(seconds=601), waiting_reason="ErrImagePull", waiting_message="nope"),))}},
     "Failed", None, {"Failed": ("True", "ImagePullFailure")}),
    ("invalid-image-now", status(ADMITTED, READY), {"jobs": {"train": job("train", active=1, pods=(pod(
        created=NOW, waiting_reason="InvalidImageName"),))}}, "Failed", None, {"Failed": ("True", "ImagePullFailure")}),
    # No spec.startupDeadlineSeconds: a pod the scheduler cannot place waits however long it takes.
    ("gpu-wait-no-deadline", status(ADMITTED, READY), {"jobs": {"train": job("train", active=1, pods=(pod(
        created=NOW - timedelta(hours=5), unschedulable=NO_GPU),))}},
     "Training", None, {"StartupBlocked": ("True", "WaitingForGPU")}),
    ("unschedulable-no-deadline", status(ADMITTED, READY), {"jobs": {"train": job("train", active=1, pods=(pod(
        created=NOW - timedelta(hours=5), unschedulable=NO_NODE),))}},
     "Training", None, {"StartupBlocked": ("True", "Unschedulable")}),
    ("gpu-freed", status(ADMITTED, READY, {"type": "StartupBlocked", "status": "True", "reason": "WaitingForGPU"}),
     {"jobs": {"train": job("train", active=1, pods=(pod(running=True, phase="Running"),))}}, "Training", None,
     {"StartupBlocked": ("False", "Started")}),
    ("gpu-wait-over-pod-done-between-passes", status(ADMITTED, READY, TRAINED, {"type": "StartupBlocked",
     "status": "True", "reason": "WaitingForGPU"}), {"jobs": {"benchmark": job("benchmark", complete=True,
     completion_time=NOW, pods=(ok_pod(VERDICT),))}}, "Succeeded", None, {"StartupBlocked": ("False", "Started")}),
    ("container-creating-past-default", status(ADMITTED, READY), {"jobs": {"train": job("train", active=1, pods=(
        pod(created=NOW - timedelta(seconds=301), waiting_reason="ContainerCreating"),))}},
     "Failed", None, {"Failed": ("True", "StartupDeadlineExceeded")}),
    ("preempted-resumes", status(ADMITTED, READY), {"jobs": {"train": job("train", active=1, pods=(
        failed_pod(143, disrupted=True, created=EARLIER), pod("p2", running=True, phase="Running", created=NOW)))}},
     "Training", None, {"Preempted": ("True", "Preempted")}),
    ("trained", status(ADMITTED, READY), {"jobs": {"train": job("train", complete=True, completion_time=NOW,
     pods=(ok_pod({"ok": True, "stage": "train", "step": 40, "modelPath": "/workspace/runs/v3/model.nemo",
                   "sizeBytes": 123, "sha256": "ab", "dataSpecHash": "h"}),))}}, "Benchmarking", "benchmark",
     {"Trained": ("True", "Trained")}),
    ("verdict", status(ADMITTED, READY, TRAINED), {"jobs": {"benchmark": job("benchmark", complete=True,
     completion_time=NOW, pods=(ok_pod(VERDICT),))}}, "Succeeded", None,
     {"Benchmarked": ("True", "Benchmarked"), "Improved": ("True", "Improvement")}),
    ("verdict-inconclusive-leaked", status(ADMITTED, READY, TRAINED), {"jobs": {"benchmark": job("benchmark",
     complete=True, completion_time=NOW, pods=(ok_pod(PAIRED_NEUTRAL),))}}, "Succeeded", None,
     {"Improved": ("False", "Inconclusive"), "BenchmarkLeakage": ("True", "BenchmarkLeakage")}),
    ("baseline-on-another-corpus", status(ADMITTED, READY, TRAINED), {"jobs": {"benchmark": job("benchmark",
     failed_reason="PodFailurePolicy", pods=(failed_pod(2, json.dumps(
         {"ok": False, "stage": "benchmark", "reason": "CorpusMismatch", "message": "other corpus"})),))}},
     "Failed", None, {"Failed": ("True", "CorpusMismatch")}),
    ("verdict-unparseable", status(ADMITTED, READY, TRAINED), {"jobs": {"benchmark": job("benchmark",
     complete=True, completion_time=NOW, pods=(ok_pod("all good, no json"),))}}, "Failed", None,
     {"VerdictUnparseable": ("True", "VerdictUnparseable")}),
    ("verdict-truncated", status(ADMITTED, READY, TRAINED), {"jobs": {"benchmark": job("benchmark",
     complete=True, completion_time=NOW, pods=(ok_pod('{"ok": true, "x": "' + "a" * 5000),))}}, "Failed", None,
     {"VerdictTruncated": ("True", "VerdictTruncated")}),
    ("verdict-not-yet-observed", status(ADMITTED, READY, TRAINED), {"jobs": {"benchmark": job("benchmark",
     complete=True, completion_time=NOW, pods=(pod(running=True, phase="Running"),))}}, "Training", None, {}),
    ("train-job-lost", status(ADMITTED, READY, jobs={"train": "v3-train"}), {"lost": frozenset({"train"})},
     "Failed", None, {"Failed": ("True", "JobLost")}),
    ("terminal-is-sticky", status(ADMITTED, phase="Succeeded", verdict="neutral"), {"config_error": "x"},
     "Succeeded", None, {}),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_derive(case):
    _, old, observed, phase, action, conditions = case
    derived = derive(SPEC, META, old, Observed(now=NOW, **observed))
    assert derived.status["phase"] == phase
    assert derived.action == action
    for ctype, (value, reason) in conditions.items():
        got = cond(derived.status, ctype)
        assert got is not None, ctype
        assert (got["status"], got["reason"]) == (value, reason), got
        assert got["observedGeneration"] == 1 and got["lastTransitionTime"]


def test_verdict_fields_and_model():
    old = status(ADMITTED, READY, TRAINED, model={"path": "/m"})
    d = derive(SPEC, META, old, Observed(now=NOW, jobs={"benchmark": job("benchmark", complete=True,
                                                                         completion_time=NOW,
                                                                         pods=(ok_pod(VERDICT),))}))
    assert d.status["verdict"] == "improvement"
    assert d.status["benchmark"]["metrics"]["recall"] == 0.9
    assert d.status["benchmark"]["resultsPath"].endswith("latest.json")
    assert d.status["completionTime"] == "2026-01-01T12:00:00Z"


def test_suspend_stops_the_active_job_and_resume_restarts_it():
    running = job("train", active=1, pods=(pod(running=True, phase="Running"),))
    spec = dict(SPEC, suspend=True)
    d = derive(spec, META, status(ADMITTED, READY), Observed(now=NOW, jobs={"train": running}))
    assert d.status["phase"] == "Suspended" and d.suspend == ("v3-train", True)
    suspended = job("train", suspended=True)
    d2 = derive(SPEC, META, d.status, Observed(now=NOW, jobs={"train": suspended}))
    assert d2.suspend == ("v3-train", False) and d2.status["phase"] == "Training"
    assert cond(d2.status, "Suspended")["status"] == "False"


def test_kueue_suspended_job_is_queued_not_finished():
    spec = dict(SPEC, queueName="q")
    d = derive(spec, META, status(READY), Observed(now=NOW, jobs={"train": job("train", suspended=True)}))
    assert d.status["phase"] == "Queued" and d.suspend is None and d.action is None
    assert cond(d.status, "QuotaAdmitted")["reason"] == "WaitingForKueue"


def test_kueue_reasons_reach_the_status_and_a_kueue_preemption_is_no_failure():
    spec = dict(SPEC, queueName="q")
    waiting = job("train", suspended=True, kueue_reason="Pending",
                  kueue_message="couldn't assign flavors: insufficient unused quota for nvidia.com/gpu")
    d = derive(spec, META, status(READY), Observed(now=NOW, jobs={"train": waiting}))
    assert d.status["phase"] == "Queued"
    assert "insufficient unused quota for nvidia.com/gpu" in cond(d.status, "QuotaAdmitted")["message"]
    assert cond(d.status, "Preempted") is None
    preempted = job("train", suspended=True, kueue_reason="Preempted", kueue_message="Preempted to accommodate a "
                    "workload (UID: x) due to prioritization in the ClusterQueue")
    d = derive(spec, META, status(ADMITTED, READY), Observed(now=NOW, jobs={"train": preempted}))
    assert d.status["phase"] == "Queued" and cond(d.status, "Preempted")["reason"] == "PreemptedByKueue"
    assert cond(d.status, "Failed") is None
    readmitted = job("train", active=1, pods=(pod(running=True, phase="Running"),))
    d2 = derive(spec, META, d.status, Observed(now=NOW, jobs={"train": readmitted}))
    assert d2.status["phase"] == "Training"
    assert cond(d2.status, "Preempted")["status"] == "False" and cond(d2.status, "Preempted")["reason"] == "Readmitted"


def test_kueue_state_reads_eviction_before_quota():
    from quranft.operator.observe import kueue_state

    assert kueue_state(None) is None
    assert kueue_state({"status": {"conditions": [{"type": "QuotaReserved", "status": "True"},
                                                  {"type": "Admitted", "status": "True"}]}}) is None
    assert kueue_state({"status": {"conditions": [{"type": "QuotaReserved", "status": "False", "reason": "Pending",
                                                   "message": "insufficient quota"}]}}) == ("Pending",
                                                                                           "insufficient quota")
    assert kueue_state({"status": {"conditions": [
        {"type": "QuotaReserved", "status": "False", "reason": "Pending", "message": "q"},
        {"type": "Evicted", "status": "True", "reason": "Preempted", "message": "by a higher priority"}]}}) == (
        "Preempted", "by a higher priority")


def test_progress_from_log_line():
    line = {"step": 12, "maxSteps": 40, "loss": 1.5, "updatedAt": "2026-01-01T12:00:00Z", "lr": 0.1}
    d = derive(SPEC, META, status(ADMITTED, READY), Observed(now=NOW, progress=line, jobs={"train": job(
        "train", active=1, pods=(pod(running=True, phase="Running"),))}))
    assert d.status["progress"] == {"step": 12, "maxSteps": 40, "loss": 1.5, "updatedAt": "2026-01-01T12:00:00Z",
                                    "display": "12/40"}


def test_resume_count_counts_restarted_pods_and_never_decreases():
    pods = (failed_pod(143, created=EARLIER), failed_pod(143, created=EARLIER + timedelta(seconds=1)),
            pod("p3", running=True, phase="Running", created=NOW))
    d = derive(SPEC, META, status(ADMITTED, READY), Observed(now=NOW, jobs={"train": job("train", active=1,
                                                                                         pods=pods)}))
    assert d.status["resumeCount"] == 2
    d2 = derive(SPEC, META, d.status, Observed(now=NOW, jobs={"train": job("train", active=1, pods=pods[2:])}))
    assert d2.status["resumeCount"] == 2


def test_resume_count_also_counts_failures_whose_pods_are_gone():
    """A deleted (preempted) pod disappears once the Job controller has counted it in `failed`."""
    running = (pod("p2", running=True, phase="Running", created=NOW),)
    d = derive(SPEC, META, status(ADMITTED, READY), Observed(now=NOW, jobs={"train": job(
        "train", active=1, failed=1, pods=running)}))
    assert d.status["resumeCount"] == 1


def test_resume_count_counts_an_evicted_pod_that_vanished():
    """An eviction is ignored by the podFailurePolicy (not in `failed`) and the evicted pod is deleted: only
    the names the operator saw tell that the pod running now is the second one."""
    first = (pod("p1", running=True, phase="Running", created=EARLIER),)
    d = derive(SPEC, META, status(ADMITTED, READY), Observed(now=NOW, jobs={"train": job("train", active=1,
                                                                                         pods=first)}))
    assert d.status["trainingPods"] == ["p1"] and not d.status.get("resumeCount")
    second = (pod("p2", running=True, phase="Running", created=NOW),)
    d2 = derive(SPEC, META, d.status, Observed(now=NOW, jobs={"train": job("train", active=1, pods=second)}))
    assert d2.status["trainingPods"] == ["p1", "p2"] and d2.status["resumeCount"] == 1
    # Seeing the same pod again changes nothing; a deleted pod also counted in `failed` is not counted twice.
    d3 = derive(SPEC, META, d2.status, Observed(now=NOW, jobs={"train": job("train", active=1, failed=1,
                                                                              pods=second)}))
    assert d3.status["resumeCount"] == 1


def test_last_transition_time_moves_only_on_status_flip():
    old = status(ADMITTED, dict(READY, lastTransitionTime="2020-01-01T00:00:00Z"))
    d = derive(SPEC, META, old, Observed(now=NOW))
    assert cond(d.status, "DataReady")["lastTransitionTime"] == "2020-01-01T00:00:00Z"


def test_unchanged_pass_gives_empty_patch_and_no_events():
    first = derive(SPEC, META, {}, Observed(now=NOW)).status
    second = derive(SPEC, META, first, Observed(now=NOW + timedelta(seconds=5),
                                                jobs={"prepare": job("prepare", active=1)})).status
    third = derive(SPEC, META, second, Observed(now=NOW + timedelta(seconds=10),
                                                jobs={"prepare": job("prepare", active=1)})).status
    assert status_patch(second, third) == {}
    assert transition_events(second, third) == []
    events = transition_events({}, first)
    assert ("Normal", "PhasePreparingData", "phase - -> PreparingData") in events


@pytest.mark.parametrize("message,problem", [
    (None, "VerdictUnparseable"), ("", "VerdictUnparseable"), ("plain text", "VerdictUnparseable"),
    ('{"a": ' + "1" * 5000, "VerdictTruncated"), ("[1, 2]", "VerdictUnparseable"), ('{"ok": true}', None),
    ("log line\n" + '{"ok": true}', None),
])
def test_parse_summary(message, problem):
    assert parse_summary(message)[1] == problem


def test_views_parse_api_objects():
    p = pod_view({"metadata": {"name": "x", "creationTimestamp": "2026-01-01T00:00:00Z",
                               "ownerReferences": [{"controller": True, "uid": "job-uid"}]},
                  "status": {"phase": "Failed", "conditions": [{"type": "DisruptionTarget", "status": "True"}],
                             "containerStatuses": [{"state": {"terminated": {"exitCode": 137,
                                                                             "reason": "OOMKilled"}}}]}})
    assert (p.exit_code, p.terminated_reason, p.disrupted, p.job_uid) == (137, "OOMKilled", True, "job-uid")
    j = job_view({"metadata": {"name": "v3-train", "uid": "u", "labels": {"quranft.io/stage": "train",
                                                                           "quranft.io/generation": "2"}},
                  "spec": {"suspend": False},
                  "status": {"active": 1, "conditions": [{"type": "Failed", "status": "True",
                                                          "reason": "DeadlineExceeded"}]}})
    assert (j.stage, j.generation, j.failed_reason, j.finished) == ("train", 2, "DeadlineExceeded", True)


def test_paired_verdict_lands_in_status_with_its_interval_and_leak_warning():
    done = job("benchmark", complete=True, completion_time=NOW, pods=(ok_pod(PAIRED_NEUTRAL),))
    out = derive(SPEC, META, status(ADMITTED, READY, TRAINED), Observed(now=NOW, jobs={"benchmark": done})).status
    bench = out["benchmark"]
    assert bench["deltaDisplay"] == "+1.9 ±3.8" and bench["verdictHead"] == "rnnt"
    assert bench["leakage"]["excluded"] == 3 and bench["requiredClips"] == 212
    assert "212 paired clips" in cond(out, "Improved")["message"]
    kinds = {reason: kind for kind, reason, _ in transition_events(status(ADMITTED, READY, TRAINED), out)}
    assert kinds["BenchmarkLeakage"] == "Warning"


def _startup(spec: dict, pod_view: PodView, **observed) -> dict:
    jobs = {"train": job("train", active=1, pods=(pod_view,))}
    return derive({**SPEC, **spec}, META, status(ADMITTED, READY), Observed(now=NOW, jobs=jobs, **observed)).status


def test_crd_has_no_startup_deadline_default():
    """Only a deadline the user set fails a run waiting for the scheduler, so the API server must not fill one in."""
    assert "startupDeadlineSeconds" not in SPEC


@pytest.mark.parametrize("spec,age,view,observed,expected", [
    # A user-set deadline fails every wait, scheduling included, once the pod is that old.
    ({"startupDeadlineSeconds": 60}, 59, {"unschedulable": NO_GPU}, {}, ("Training", "StartupBlocked", "WaitingForGPU")),
    ({"startupDeadlineSeconds": 60}, 61, {"unschedulable": NO_GPU}, {}, ("Failed", "Failed", "StartupDeadlineExceeded")),
    ({"startupDeadlineSeconds": 60}, 61, {"unschedulable": NO_NODE}, {}, ("Failed", "Failed", "StartupDeadlineExceeded")),
    ({"startupDeadlineSeconds": 60}, 61, {"waiting_reason": "ErrImagePull"}, {}, ("Failed", "Failed", "ImagePullFailure")),
    ({"startupDeadlineSeconds": 60}, 61, {"waiting_reason": "CreateContainerConfigError"}, {},
     ("Failed", "Failed", "ContainerConfigError")),
    # Without one, the operator's settings bound image pulls and the other waits, never scheduling.
    ({}, 31, {"waiting_reason": "ImagePullBackOff"}, {"image_pull_deadline_s": 30}, ("Failed", "Failed", "ImagePullFailure")),
    ({}, 29, {"waiting_reason": "ImagePullBackOff"}, {"image_pull_deadline_s": 30},
     ("Training", "StartupBlocked", "ImagePullFailure")),
    ({}, 11, {"waiting_reason": "ContainerCreating"}, {"default_startup_deadline_s": 10},
     ("Failed", "Failed", "StartupDeadlineExceeded")),
    ({}, 11, {"waiting_reason": "CreateContainerConfigError"}, {"default_startup_deadline_s": 10},
     ("Failed", "Failed", "ContainerConfigError")),
    ({}, 10**6, {"unschedulable": NO_GPU}, {"default_startup_deadline_s": 10, "image_pull_deadline_s": 10},
     ("Training", "StartupBlocked", "WaitingForGPU")),
])
def test_startup_deadlines(spec, age, view, observed, expected):
    out = _startup(spec, pod(created=NOW - timedelta(seconds=age), **view), **observed)
    phase, ctype, reason = expected
    assert out["phase"] == phase
    assert (cond(out, ctype)["status"], cond(out, ctype)["reason"]) == ("True", reason), cond(out, ctype)


def test_waiting_for_gpu_is_a_normal_event_with_the_schedulers_message():
    old = status(ADMITTED, READY)
    out = _startup({}, pod(created=NOW - timedelta(hours=1), unschedulable=NO_GPU))
    blocked = cond(out, "StartupBlocked")
    assert "Insufficient nvidia.com/gpu" in blocked["message"] and "startupDeadlineSeconds" in blocked["message"]
    kinds = {reason: kind for kind, reason, _ in transition_events(old, out)}
    assert kinds["WaitingForGPU"] == "Normal"
    other = _startup({}, pod(created=NOW - timedelta(hours=1), unschedulable=NO_NODE))
    assert {r: k for k, r, _ in transition_events(old, other)}["Unschedulable"] == "Warning"
    failed = _startup({"startupDeadlineSeconds": 60}, pod(created=NOW - timedelta(seconds=61), unschedulable=NO_GPU))
    message = cond(failed, "Failed")["message"]
    assert "60s (spec.startupDeadlineSeconds)" in message and "Insufficient nvidia.com/gpu" in message
    assert {r: k for k, r, _ in transition_events(old, failed)}["StartupDeadlineExceeded"] == "Warning"


# --- multi-node groups ------------------------------------------------------------------------------------------

from quranft.operator.status import TERMINAL, terminal_stop_notice  # noqa: E402

PAIR = body(spec_overrides={"resources": {"nodes": 2, "gpus": 0, "distributedBackend": "gloo", "backoffLimit": 2}})
PAIR_SPEC = PAIR["spec"]
POLICY = "Container train for pod team-a/{pod} failed with exit code {code} matching FailJob rule at index {rule}"
DISRUPTED = "Pod team-a/{pod} has condition DisruptionTarget matching FailJob rule at index 1"


def rank(index: int, name: str | None = None, **kw) -> PodView:
    return pod(name or f"v3-train-{index}-x", completion_index=index, **kw)


def group(attempt: int = 0, failures: int = 0, **kw) -> JobView:
    kw.setdefault("created", EARLIER)
    kw.setdefault("start_time", EARLIER)
    name = builders.train_job_name("v3", attempt, 2)
    return JobView(name=name, stage="train", indexed=True, completions=2, attempt=attempt, group_failures=failures,
                   **kw)


def killed_group(attempt=0, failures=0, failed_time=NOW - timedelta(seconds=1)) -> JobView:
    """Rank 1 SIGKILLed (137); the Job controller then stopped rank 0 (SIGTERM -> checkpoint -> 143)."""
    return group(attempt, failures, failed_reason="PodFailurePolicy", failed_time=failed_time,
                 failed_message=POLICY.format(pod="v3-train-1-x", code=137, rule=2),
                 pods=(rank(0, phase="Failed", exit_code=143, terminated_reason="Error"),
                       rank(1, phase="Failed", exit_code=137, terminated_reason="Error")))


def derive_pair(old, spec=PAIR_SPEC, meta=META, **observed):
    return derive(spec, meta, old, Observed(now=NOW, **observed))


def test_a_failed_rank_restarts_the_whole_group_as_the_next_attempt():
    d = derive_pair(status(ADMITTED, READY), jobs={"train": killed_group()})
    assert (d.action, d.attempt, d.group_failures) == ("train", 1, 1)
    assert d.status["phase"] == "Training"
    training = d.status["training"]
    assert training["groupRestarts"] == 1 and training["groupFailures"] == 1
    assert training["lastRestart"] == {"attempt": 1, "reason": "RankFailed", "counted": True,
                                       "message": "rank 1 (pod v3-train-1-x) of v3-train failed with exit code 137"}
    trained = cond(d.status, "Trained")
    assert (trained["status"], trained["reason"]) == ("False", "GroupRestarting")
    assert "attempt 1" in trained["message"] and "1/2 counted" in trained["message"]


def test_a_disrupted_rank_restarts_the_group_without_counting():
    job = group(1, 1, failed_reason="PodFailurePolicy", failed_time=NOW,
                failed_message=DISRUPTED.format(pod="v3-train-r1-0-x"),
                pods=(rank(0, "v3-train-r1-0-x", phase="Failed", exit_code=143, disrupted=True),
                      rank(1, "v3-train-r1-1-x", phase="Failed", exit_code=143)))
    d = derive_pair(status(ADMITTED, READY), jobs={"train": job})
    assert (d.action, d.attempt, d.group_failures) == ("train", 2, 1)
    assert d.status["training"]["lastRestart"]["reason"] == "RankDisrupted"
    assert cond(d.status, "Preempted")["status"] == "True"


def test_group_failures_past_the_backoff_limit_fail_the_run():
    d = derive_pair(status(ADMITTED, READY), jobs={"train": killed_group(attempt=2, failures=2)})
    assert d.status["phase"] == "Failed" and d.action is None
    failed = cond(d.status, "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert "group failed 3 times" in failed["message"] and "rank 1" in failed["message"]


@pytest.mark.parametrize("code,summary,reason", [
    (5, {"ok": False, "stage": "train", "reason": "RendezvousTimeout", "message": "1/2 clients joined"},
     "RendezvousTimeout"),
    (2, None, "ConfigError"),
])
def test_a_fatal_exit_of_any_rank_ends_the_run(code, summary, reason):
    message = json.dumps(summary) if summary else "Traceback ... bad config"
    job = group(failed_reason="PodFailurePolicy", failed_time=NOW,
                failed_message=POLICY.format(pod="v3-train-0-x", code=code, rule=0),
                pods=(rank(0, phase="Failed", exit_code=code, message=message),
                      rank(1, phase="Failed", exit_code=143)))
    d = derive_pair(status(ADMITTED, READY), jobs={"train": job})
    assert d.status["phase"] == "Failed" and d.action is None
    assert cond(d.status, "Failed")["reason"] == reason


def test_the_restart_waits_until_the_other_ranks_stopped_and_their_states_arrived():
    running = group(failed_reason="PodFailurePolicy", failed_time=NOW - timedelta(seconds=5),
                    failed_message=POLICY.format(pod="v3-train-1-x", code=1, rule=2),
                    pods=(rank(0, running=True, phase="Running"), rank(1, phase="Failed", exit_code=1)))
    d = derive_pair(status(ADMITTED, READY), jobs={"train": running})
    assert d.action is None and cond(d.status, "Trained")["reason"] == "GroupRestarting"
    # ...but not forever (a node that never reports its pod stopped).
    stale = dataclasses.replace(running, failed_time=NOW - timedelta(minutes=11))
    assert derive_pair(status(ADMITTED, READY), jobs={"train": stale}).action == "train"
    unseen = group(failed_reason="BackoffLimitExceeded", failed_time=NOW - timedelta(seconds=2))
    d = derive_pair(status(ADMITTED, READY), jobs={"train": unseen})
    assert d.action is None and d.status["phase"] == "Training"


def test_the_summary_and_metrics_come_from_rank_zero():
    rank0 = {"ok": True, "stage": "train", "step": 40, "modelPath": "/workspace/runs/v3/model.nemo", "worldSize": 2,
             "globalBatchSize": 16, "nodes": 2, "devicesPerNode": 1, "valWer": 0.4}
    job = group(complete=True, completion_time=EARLIER + timedelta(hours=1), start_time=EARLIER,
                pods=(rank(0, phase="Succeeded", exit_code=0, terminated_reason="Completed", message=json.dumps(rank0)),
                      rank(1, phase="Succeeded", exit_code=0, terminated_reason="Completed", message="rank 1 done",
                           created=EARLIER + timedelta(seconds=1))))
    d = derive_pair(status(ADMITTED, READY), jobs={"train": job})
    assert d.action == "benchmark" and d.status["model"]["valWer"] == 0.4
    training = d.status["training"]
    assert (training["worldSize"], training["globalBatchSize"], training["nodes"], training["devicesPerNode"]) == \
        (2, 16, 2, 1)
    assert training["wallSeconds"] == 3600.0 and training["gpuHours"] == 0  # gpus 0: CPU time is no GPU time
    assert d.status["trainingPods"] == ["v3-train-0-x"] and not d.status.get("resumeCount")


def test_gpu_hours_are_wall_time_times_nodes_times_gpus():
    spec = body(spec_overrides={"resources": {"nodes": 2, "gpus": 8}})["spec"]
    start = NOW - timedelta(minutes=90)
    job = group(active=2, start_time=start, pods=(rank(0, running=True, phase="Running"),
                                                  rank(1, running=True, phase="Running")))
    line = {"step": 10, "maxSteps": 40, "loss": 1.0, "worldSize": 16, "globalBatchSize": 192}
    d = derive_pair(status(ADMITTED, READY), spec=spec, jobs={"train": job}, progress=line)
    training = d.status["training"]
    assert training["startTime"] == now_iso(start) and training["wallSeconds"] == 5400.0
    assert training["gpuHours"] == 24.0  # 1.5 h x 2 nodes x 8 GPUs
    assert (training["worldSize"], training["globalBatchSize"]) == (16, 192)
    assert cond(d.status, "RanksReady")["reason"] == "AllRanksRunning"


def test_ranks_ready_names_the_pods_still_waiting():
    job = group(active=2, pods=(rank(0, running=True, phase="Running"), rank(1, unschedulable=NO_GPU)))
    d = derive_pair(status(ADMITTED, READY), jobs={"train": job})
    ranks = cond(d.status, "RanksReady")
    assert (ranks["status"], ranks["reason"]) == ("False", "WaitingForRanks")
    assert "1/2 pods" in ranks["message"] and "v3-train-1-x: unschedulable" in ranks["message"]
    # The waiting rank's own start-up problem is reported too (any rank can block the group).
    assert cond(d.status, "StartupBlocked")["reason"] == "WaitingForGPU"


def test_an_attempt_newer_than_the_status_is_adopted_with_its_counts():
    """The operator died between creating <name>-train-r1 and writing the status: the Job itself says."""
    job = group(1, 1, active=2, pods=(rank(0, "v3-train-r1-0-x", running=True, phase="Running"),))
    d = derive_pair(status(ADMITTED, READY, jobs={"train": "v3-train"}), jobs={"train": job})
    assert d.status["jobs"]["train"] == "v3-train-r1"
    assert (d.status["training"]["groupRestarts"], d.status["training"]["groupFailures"]) == (1, 1)
    assert d.status["resumeCount"] == 1


def test_policy_messages_of_the_job_controller_parse():
    from quranft.operator.steps import _group_cause

    job = killed_group()
    assert _group_cause(job)[0] == "failed" and _group_cause(job)[1].name == "v3-train-1-x"
    disrupted = group(failed_message=DISRUPTED.format(pod="v3-train-0-x"), pods=(rank(0), rank(1)))
    assert _group_cause(disrupted) == ("disrupted", disrupted.pods[0])
    no_message = group(pods=(rank(0, phase="Failed", exit_code=143), rank(1, phase="Failed", exit_code=4)))
    assert _group_cause(no_message) == ("failed", no_message.pods[1])


def test_views_parse_the_completion_index_and_the_attempt():
    p = pod_view({"metadata": {"name": "x", "annotations": {"batch.kubernetes.io/job-completion-index": "1"}},
                  "status": {"phase": "Running"}})
    assert p.completion_index == 1
    assert pod_view({"metadata": {"name": "y"}, "status": {}}).completion_index is None
    j = job_view({"metadata": {"name": "v3-train-r2",
                               "labels": {"quranft.io/stage": "train", "quranft.io/attempt": "2"},
                               "annotations": {"quranft.io/group-failures": "1"}},
                  "spec": {"completionMode": "Indexed", "completions": 2},
                  "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
                                             "lastTransitionTime": "2026-01-01T12:00:00Z"}]}})
    assert (j.indexed, j.completions, j.attempt, j.group_failures, j.failed_time) == (True, 2, 2, 1, NOW)


# --- stop requests ----------------------------------------------------------------------------------------------

def stopped_meta(reason="early stopping: val WER 0.93 > median 0.41 + 0.05 at step 20"):
    return {**META, "annotations": {builders.STOP_ANNOTATION: reason}}


TRAINING_JOB = job("train", active=1, pods=(pod(running=True, phase="Running"),))
LAST = {"step": 20, "maxSteps": 40, "loss": 2.0, "valWer": 0.93, "display": "20/40"}

STOP_CASES = [
    # (id, spec, old status, jobs, expected phase, suspend, delete, Stopped condition (status, reason))
    ("training", SPEC, status(ADMITTED, READY, progress=LAST), {"train": TRAINING_JOB}, "Stopped",
     ("v3-train", True), (), ("True", "StopRequested")),
    ("training-under-kueue", dict(SPEC, queueName="q"), status(ADMITTED, READY, progress=LAST),
     {"train": TRAINING_JOB}, "Stopped", None, ("v3-train",), ("True", "StopRequested")),
    ("preparing", SPEC, status(ADMITTED, phase="PreparingData"), {"prepare": job("prepare", active=1)}, "Stopped",
     ("v3-prepare", True), (), ("True", "StopRequested")),
    ("queued", SPEC, status(phase="Queued"), {}, "Stopped", None, (), ("True", "StopRequested")),
    ("suspended-already", dict(SPEC, suspend=True), status(ADMITTED, READY, phase="Suspended"),
     {"train": job("train", suspended=True)}, "Stopped", None, (), ("True", "StopRequested")),
    ("benchmarking", SPEC, status(ADMITTED, READY, TRAINED, phase="Benchmarking"),
     {"benchmark": job("benchmark", active=1)}, "Benchmarking", None, (), ("False", "StopIgnored")),
    ("training-just-finished", SPEC, status(ADMITTED, READY), {"train": job("train", complete=True,
     completion_time=NOW, pods=(ok_pod({"ok": True, "stage": "train", "step": 40}),))}, "Benchmarking", None, (),
     ("False", "StopIgnored")),
]


@pytest.mark.parametrize("case", STOP_CASES, ids=[c[0] for c in STOP_CASES])
def test_stop_request(case):
    _, spec, old, jobs, phase, suspend, delete, (value, reason) = case
    d = derive(spec, stopped_meta(), old, Observed(now=NOW, jobs=jobs))
    assert d.status["phase"] == phase
    assert (d.suspend, d.delete_jobs) == (suspend, delete)
    stopped = cond(d.status, "Stopped")
    assert (stopped["status"], stopped["reason"]) == (value, reason)
    assert "val WER 0.93" in stopped["message"]
    if phase == "Stopped":
        assert phase in TERMINAL and d.action is None and d.status["completionTime"]
        assert d.status.get("progress") == old.get("progress")  # the last metrics stay
        kinds = {r: k for k, r, _ in transition_events(old, d.status)}
        assert kinds["StopRequested"] == "Normal" and kinds["PhaseStopped"] == "Normal"


def test_a_stopped_run_stays_stopped_and_keeps_its_gpu_hours():
    spec = body(spec_overrides={"resources": {"gpus": 1}})["spec"]
    old = status(ADMITTED, READY, training={"startTime": now_iso(NOW - timedelta(hours=2))})
    d = derive(spec, stopped_meta(), old, Observed(now=NOW, jobs={"train": TRAINING_JOB}))
    assert d.status["training"]["gpuHours"] == 2.0
    later = Observed(now=NOW + timedelta(hours=1), jobs={"train": job("train", suspended=True)})
    again = derive(spec, META, d.status, later)
    assert again.status == d.status and again.suspend is None  # terminal: no resume, no rewrite


def test_a_stop_request_after_the_end_is_ignored_and_said_once():
    done = status(ADMITTED, READY, TRAINED, phase="Succeeded", verdict="improvement")
    notice = terminal_stop_notice(stopped_meta(), done, NOW)
    assert notice["phase"] == "Succeeded" and notice["verdict"] == "improvement"
    ignored = cond(notice, "Stopped")
    assert (ignored["status"], ignored["reason"]) == ("False", "StopIgnored") and "Succeeded" in ignored["message"]
    assert terminal_stop_notice(stopped_meta(), notice, NOW) is None
    assert terminal_stop_notice(META, done, NOW) is None
    assert terminal_stop_notice(stopped_meta(), {"phase": "Stopped"}, NOW) is None


def test_progress_keeps_the_metrics_early_stopping_reads():
    line = {"step": 30, "maxSteps": 40, "loss": 1.2, "valWer": 0.5, "valWerStep": 25, "samplesPerSecond": 88.5,
            "worldSize": 2, "lr": 0.1, "updatedAt": "2026-01-01T12:00:00Z"}
    d = derive(SPEC, META, status(ADMITTED, READY), Observed(now=NOW, progress=line, jobs={"train": TRAINING_JOB}))
    assert d.status["progress"] == {k: v for k, v in line.items() if k != "lr"} | {"display": "30/40"}
    later = {"step": 35, "maxSteps": 40, "loss": 1.1, "updatedAt": "2026-01-01T12:00:10Z"}
    d2 = derive(SPEC, META, d.status, Observed(now=NOW, progress=later, jobs={"train": TRAINING_JOB}))
    assert (d2.status["progress"]["valWer"], d2.status["progress"]["valWerStep"]) == (0.5, 25)
    assert d2.status["progress"]["step"] == 35


# --- transition events: the runs' rule and the campaigns' (one function, the warning set and a skip predicate) -----

def _c(ctype: str, value: str, reason: str) -> dict:
    return {"type": ctype, "status": value, "reason": reason, "message": "m"}


@pytest.mark.parametrize("old,new,expected", [
    ({}, {"phase": "Running", "conditions": [_c("Failed", "True", "InvalidBaseline")]},
     [("Normal", "PhaseRunning", "phase - -> Running"), ("Warning", "InvalidBaseline", "Failed=True: m")]),
    ({"phase": "Running"}, {"phase": "Running", "conditions": [_c("VariantsValid", "False", "InvalidVariants")]},
     [("Warning", "InvalidVariants", "VariantsValid=False: m")]),
    # Promoted=True has its own Event (with the model's path): no transition event
    ({"conditions": [_c("Promoted", "False", "Waiting")]}, {"conditions": [_c("Promoted", "True", "Promoted")]}, []),
    ({"conditions": [_c("Notified", "False", "x")]},
     {"conditions": [_c("Notified", "False", "NotifyFailed"), _c("Done", "True", "Done")]},
     [("Warning", "NotifyFailed", "Notified=False: m"), ("Normal", "Done", "Done=True: m")]),
])
def test_one_transition_events_function_serves_the_campaigns(old, new, expected):
    from quranft.operator import campaign_derive

    assert transition_events(old, new, campaign_derive.WARNING_CONDITIONS, skip=campaign_derive._promoted) == expected


@pytest.mark.parametrize("cond_,kind", [
    (_c("StartupBlocked", "True", "WaitingForGPU"), "Normal"),
    (_c("StartupBlocked", "True", "ImagePullFailure"), "Warning"),
    (_c("Preempted", "False", "Readmitted"), "Normal"),
    (_c("Trained", "False", "Training"), "Normal"),
])
def test_run_transition_events_warn_on_the_run_conditions(cond_, kind):
    assert transition_events({}, {"conditions": [cond_]}) == [(kind, cond_["reason"], f"{cond_['type']}="
                                                                                       f"{cond_['status']}: m")]
