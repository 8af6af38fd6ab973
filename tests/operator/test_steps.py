"""The derivation's steps one by one (steps.py), each a table of situations, and the stage table they run in."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from specs import body

from quranft.operator import builders, stages, steps
from quranft.operator.observe import JobView, PodView
from quranft.operator.status import Draft, Observed

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
EARLIER = NOW - timedelta(minutes=5)
B = body()
SPEC, META = B["spec"], B["metadata"]
ADMITTED = {"type": "QuotaAdmitted", "status": "True", "reason": "Admitted"}
READY = {"type": "DataReady", "status": "True", "reason": "Prepared"}
TRAINED = {"type": "Trained", "status": "True", "reason": "Trained"}
BENCHED = {"type": "Benchmarked", "status": "True", "reason": "Benchmarked"}
VERDICT = {"ok": True, "stage": "benchmark", "verdict": "regression", "metrics": {"recall": 0.4},
           "resultsPath": "/workspace/runs/v3/benchmark/latest.json"}


def job(stage: str, **kw) -> JobView:
    kw.setdefault("created", EARLIER)
    return JobView(name=builders.job_name("v3", stage), stage=stage, **kw)


def done_pod(summary: dict | None) -> PodView:
    return PodView(name="p", phase="Succeeded", exit_code=0, terminated_reason="Completed", created=EARLIER,
                   message=None if summary is None else json.dumps(summary))


def entry(name: str, **fields) -> dict:
    """Another run's index entry (handlers.run_entry), on this run's claim with the same data unless told."""
    return {"name": name, "namespace": "team-a", "claim": builders.claim_name(SPEC, name),
            "dataHash": builders.spec_data_hash(SPEC), "phase": "Training", "dataReady": False, "preparing": False,
            "resultsPath": None, **fields}


def draft(*conditions, spec=None, meta=None, **observed) -> Draft:
    status = {"phase": "Training", "conditions": [dict(c) for c in conditions]}
    return Draft(spec or SPEC, meta or META, status, Observed(now=NOW, **observed))


def condition(p: Draft, ctype: str) -> tuple[str, str] | None:
    found = next((c for c in p.new["conditions"] if c["type"] == ctype), None)
    return (found["status"], found["reason"]) if found else None


def run_step(fn, p: Draft):
    """(decided, phase, action) of one step."""
    decided = fn(p)
    return decided is not None, p.new.get("phase"), p.action


def with_baseline(ref: str) -> dict:
    return {**SPEC, "benchmark": {**(SPEC.get("benchmark") or {}), "baseline": {"qftRef": {"name": ref}}}}


# --- the table ----------------------------------------------------------------------------------------------

def test_the_table_orders_every_step_once_and_names_the_job_stages():
    assert [s.name for s in stages.PIPELINE] == ["budget", "data", "train", "benchmark", "verdict", "cleanup"]
    assert list(steps.STEP_FUNCTIONS) == [s.name for s in stages.PIPELINE]
    assert stages.STAGES == ("prepare", "train", "benchmark")
    assert builders.STAGE_SUFFIX == {"prepare": "prepare", "train": "train", "benchmark": "bench"}
    assert [s.name for s in stages.PIPELINE if s.terminal] == ["cleanup"]


@pytest.mark.parametrize("conditions,stage", [
    ((), "prepare"),
    ((ADMITTED,), "prepare"),
    ((READY,), "train"),
    ((READY, TRAINED), "benchmark"),
    ((READY, TRAINED, BENCHED), "benchmark"),
    (({**READY, "status": "False"},), "prepare"),
])
def test_current_stage_is_the_first_not_done(conditions, stage):
    assert stages.current_stage({"conditions": list(conditions)}) == stage


# --- budget ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("conditions,observed,spec,decided,admitted", [
    ((), {}, SPEC, False, ("True", "Admitted")),
    ((), {"admitted": False, "admission_message": "2/2 trainings run"}, SPEC, True, ("False", "OperatorBudget")),
    # A run that already holds a slot (its prepare Job exists) keeps it.
    ((), {"admitted": False, "jobs": {"prepare": job("prepare", active=1)}}, SPEC, False, ("True", "Admitted")),
    ((ADMITTED,), {"admitted": False}, SPEC, False, ("True", "Admitted")),
    # Kueue admits a queued run's training Job; until it exists the condition stays unset.
    ((), {}, {**SPEC, "queueName": "q"}, False, None),
])
def test_budget(conditions, observed, spec, decided, admitted):
    p = draft(*conditions, spec=spec, **observed)
    assert (steps.budget(p) is not None) == decided
    assert condition(p, "QuotaAdmitted") == admitted
    if decided:
        assert p.new["phase"] == "Queued"


# --- data ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("observed,decided,phase,action,ready", [
    ({}, True, "PreparingData", "prepare", ("False", "Preparing")),
    ({"runs": (entry("v2", dataReady=True),)}, False, "Training", None, ("True", "ReusedFromSibling")),
    ({"runs": (entry("v2", preparing=True),)}, True, "PreparingData", None, ("False", "WaitingForSibling")),
    # Another claim or other data is no sibling; neither is the run itself.
    ({"runs": (entry("v2", dataReady=True, claim="other"),)}, True, "PreparingData", "prepare", ("False", "Preparing")),
    ({"runs": (entry("v2", dataReady=True, dataHash="x"),)}, True, "PreparingData", "prepare",
     ("False", "Preparing")),
    ({"runs": (entry("v3", dataReady=True),)}, True, "PreparingData", "prepare", ("False", "Preparing")),
    ({"jobs": {"prepare": job("prepare", active=1)}}, True, "PreparingData", None, ("False", "Preparing")),
    ({"jobs": {"prepare": job("prepare", complete=True, pods=(done_pod({"ok": True, "stats": {"train": 3}}),))}},
     False, "Training", None, ("True", "Prepared")),
    ({"lost": frozenset({"prepare"})}, True, "Failed", None, None),
])
def test_data(observed, decided, phase, action, ready):
    p = draft(ADMITTED, **observed)
    assert run_step(steps.data, p) == (decided, phase, action)
    assert condition(p, "DataReady") == ready
    if ready == ("True", "ReusedFromSibling"):
        assert p.new["data"]["reusedFrom"] == "v2"
    if ready == ("True", "Prepared"):
        assert p.new["data"]["stats"] == {"train": 3}


@pytest.mark.parametrize("runs,found", [
    ((), (None, None)),
    ((entry("a", preparing=True), entry("b", dataReady=True)), ("b", "a")),
    ((entry("a", preparing=True), entry("b", preparing=True)), (None, "b")),
])
def test_sibling_data(runs, found):
    assert steps.sibling_data(SPEC, "v3", runs) == found


# --- train ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,observed,decided,phase,action,trained", [
    (SPEC, {}, True, "Training", "train", ("False", "Training")),
    ({**SPEC, "suspend": True}, {}, True, "Suspended", None, None),
    (SPEC, {"jobs": {"train": job("train", active=1)}}, True, "Training", None, ("False", "Training")),
    (SPEC, {"jobs": {"train": job("train", complete=True, completion_time=NOW,
                                  pods=(done_pod({"ok": True, "modelPath": "/m", "step": 40}),))}},
     False, "Training", None, ("True", "Trained")),
    # Complete, but the pod's final status is still on its way: wait (not decide without the summary).
    (SPEC, {"jobs": {"train": job("train", complete=True, completion_time=NOW)}}, True, "Training", None, None),
    (SPEC, {"jobs": {"train": job("train", failed_reason="BackoffLimitExceeded", failed=4,
                                  pods=(PodView(name="p", phase="Failed", exit_code=1, created=EARLIER),))}},
     True, "Failed", None, None),
    (SPEC, {"lost": frozenset({"train"})}, True, "Failed", None, None),
])
def test_train(spec, observed, decided, phase, action, trained):
    p = draft(ADMITTED, READY, spec=spec, **observed)
    assert run_step(steps.train, p) == (decided, phase, action)
    assert condition(p, "Trained") == trained
    if trained == ("True", "Trained"):
        assert p.new["model"]["path"] == "/m"


# --- benchmark ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,observed,decided,phase,action,benchmarked", [
    (SPEC, {}, True, "Benchmarking", "benchmark", ("False", "Benchmarking")),
    (with_baseline("v1"), {"runs": (entry("v1"),)}, True, "Benchmarking", None, ("False", "WaitingForBaseline")),
    (with_baseline("v1"), {"runs": (entry("v1", phase="Succeeded", resultsPath="/r.json"),)}, True,
     "Benchmarking", "benchmark", ("False", "Benchmarking")),
    (with_baseline("v1"), {}, True, "Failed", None, None),
    (with_baseline("v1"), {"runs": (entry("v1", phase="Failed"),)}, True, "Failed", None, None),
    (with_baseline("v1"), {"runs": (entry("v1", claim="elsewhere", phase="Succeeded", resultsPath="/r"),)}, True,
     "Failed", None, None),
    (SPEC, {"jobs": {"benchmark": job("benchmark", active=1)}}, True, "Benchmarking", None,
     ("False", "Benchmarking")),
    (SPEC, {"jobs": {"benchmark": job("benchmark", complete=True, completion_time=NOW,
                                      pods=(done_pod(VERDICT),))}}, False, "Training", None, None),
    (SPEC, {"jobs": {"benchmark": job("benchmark", complete=True, completion_time=NOW - timedelta(minutes=1),
                                      pods=(done_pod({"ok": True}),))}}, True, "Failed", None,
     ("False", "VerdictUnparseable")),
])
def test_benchmark(spec, observed, decided, phase, action, benchmarked):
    p = draft(ADMITTED, READY, TRAINED, spec=spec, **observed)
    assert run_step(steps.benchmark, p) == (decided, phase, action)
    assert condition(p, "Benchmarked") == benchmarked
    assert p.baseline_results == ("/r.json" if action and spec is not SPEC else None)


@pytest.mark.parametrize("runs,expected", [
    ((entry("v1", phase="Succeeded", resultsPath="/r.json"),), ("/r.json", None, None)),
    ((entry("v1", phase="Succeeded"),), (None, "waiting for baseline 'v1' (phase Succeeded) to finish its benchmark",
                                         None)),
    ((entry("v1", phase=None),), (None, "waiting for baseline 'v1' (phase Pending) to finish its benchmark", None)),
    ((), (None, None, "baseline QuranFineTune 'v1' not found in this namespace")),
])
def test_baseline(runs, expected):
    assert steps.baseline(with_baseline("v1"), "v3", runs) == expected
    assert steps.baseline(SPEC, "v3", runs) == (None, None, None)


# --- verdict --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("summary,improved", [
    ({**VERDICT, "verdict": "improvement"}, ("True", "Improvement")),
    (VERDICT, ("False", "Regression")),
    ({**VERDICT, "verdict": "neutral", "reason": "NoBaseline"}, ("False", "NoBaseline")),
    ({**VERDICT, "verdict": "neutral"}, ("False", "Neutral")),
])
def test_verdict(summary, improved):
    p = draft(ADMITTED, READY, TRAINED, jobs={"benchmark": job("benchmark", complete=True, pods=(done_pod(summary),))})
    assert run_step(steps.verdict, p) == (True, "Succeeded", None)
    assert condition(p, "Improved") == improved
    assert condition(p, "Benchmarked") == ("True", "Benchmarked")
    assert p.new["verdict"] == summary["verdict"] and p.new["benchmark"]["resultsPath"] == VERDICT["resultsPath"]


# --- cleanup (a pass that begins on an ended run) -------------------------------------------------------------

ENDED = {"phase": "Succeeded", "completionTime": "2026-01-01T11:59:00Z", "observedGeneration": 1,
         "jobs": {"prepare": "v3-prepare", "train": "v3-train", "benchmark": "v3-bench"}, "conditions": []}


@pytest.mark.parametrize("spec,status,meta,clean_up,changed", [
    (SPEC, ENDED, META, None, {}),
    ({**SPEC, "ttlSecondsAfterFinished": 120}, ENDED, META, None, {}),
    ({**SPEC, "ttlSecondsAfterFinished": 30, "cleanup": {"onSuccess": "Keep"}}, ENDED, META, None,
     {"cleanedUp": True}),
    ({**SPEC, "ttlSecondsAfterFinished": 30, "cleanup": {"onSuccess": "DeleteJobs"}}, ENDED, META,
     ("v3-bench", "v3-prepare", "v3-train"), {"cleanedUp": True}),
    # A failed run follows onFailure; the attempts before a group restart go too.
    ({**SPEC, "ttlSecondsAfterFinished": 0, "cleanup": {"onSuccess": "DeleteJobs", "onFailure": "Keep"}},
     {**ENDED, "phase": "Failed"}, META, None, {"cleanedUp": True}),
    ({**SPEC, "ttlSecondsAfterFinished": 0, "cleanup": {"onFailure": "DeleteJobs"}},
     {**ENDED, "phase": "Failed", "jobs": {"train": "v3-train-r2"}, "training": {"groupRestarts": 2}}, META,
     ("v3-train", "v3-train-r1", "v3-train-r2"), {"cleanedUp": True}),
    ({**SPEC, "ttlSecondsAfterFinished": 0}, {**ENDED, "cleanedUp": True}, META, None, {}),
    # A later spec change (generation 2) is not observed on an ended run: nothing but these steps rewrites it.
    (SPEC, ENDED, {**META, "generation": 2}, None, {}),
])
def test_cleanup(spec, status, meta, clean_up, changed):
    ended = steps.derive_ended(spec, meta, status, NOW)
    assert ended.clean_up == clean_up
    assert {k: v for k, v in ended.status.items() if status.get(k) != v} == changed
    assert ended.action is None and not ended.delete_jobs


def test_a_stop_request_on_an_ended_run_is_said_once_and_changes_nothing_else():
    meta = {**META, "annotations": {"quranft.io/stop-requested": "too late"}}
    ended = steps.derive_ended(SPEC, meta, ENDED, NOW)
    stopped = [c for c in ended.status["conditions"] if c["type"] == "Stopped"]
    assert [(c["status"], c["reason"]) for c in stopped] == [("False", "StopIgnored")]
    assert steps.derive_ended(SPEC, meta, ended.status, NOW).status == ended.status
