"""observe.gather: one pass's observations from the indexes, with the API asked only where they cannot answer."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from specs import body

from quranft.operator.admission import Admission
from quranft.operator.observe import JobView, PodView, gather
from quranft.operator.settings import OperatorSettings

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
B = body()
SPEC, META = B["spec"], B["metadata"]
KEY = (META["namespace"], META["name"])
READY = {"type": "DataReady", "status": "True", "reason": "Prepared"}


class Kube:
    """Records the API reads; answers get_job from `jobs` (name -> object)."""

    def __init__(self, jobs=None):
        self.jobs, self.reads = jobs or {}, []

    def get_job(self, namespace, name):
        self.reads.append(("get_job", name))
        return self.jobs.get(name)

    def failed_create_message(self, namespace, name):
        self.reads.append(("failed_create", name))
        return "exceeded quota"

    def kueue_workload(self, namespace, uid):
        self.reads.append(("workload", uid))
        return None


def view(stage, name=None, **kw) -> JobView:
    kw.setdefault("created", NOW - timedelta(minutes=1))
    kw.setdefault("owner_uid", META["uid"])
    return JobView(name=name or f"v3-{stage}", stage=stage, **kw)


def run(status, jobs=(), pods=None, kube=None, runs=None, spec=None, progress=None):
    kube = kube or Kube()
    if pods is None:  # the pods index, from the views' pods
        pods = {}
        for job in jobs:
            pods.setdefault((*KEY, job.stage), []).extend(job.pods)
    obs = gather(spec or SPEC, META, status, NOW, kube, OperatorSettings(), Admission(0, 0), {KEY: list(jobs)},
                 pods, runs or {}, None, lambda found: progress)
    return obs, kube


@pytest.mark.parametrize("status,jobs,stages,lost,reads", [
    # Nothing yet: no API read.
    ({}, (), set(), set(), []),
    # The index has the Job: no API read; a Job of a deleted predecessor (another owner) is not ours.
    ({}, (view("prepare", pods=(PodView("p"),)),), {"prepare"}, set(), []),
    ({}, (view("prepare", owner_uid="other"),), set(), set(), []),
    # The status names a Job the index does not have: the API decides whether it is lost.
    ({"jobs": {"prepare": "v3-prepare"}}, (), set(), {"prepare"}, [("get_job", "v3-prepare")]),
    # Of the training attempts the newest counts.
    ({"conditions": [READY]}, (view("train", "v3-train", attempt=0, pods=(PodView("a"),)),
                               view("train", "v3-train-r1", attempt=1, pods=(PodView("b"),))), {"train"}, set(), []),
])
def test_jobs_come_from_the_index(status, jobs, stages, lost, reads):
    obs, kube = run(status, jobs)
    assert set(obs.jobs) == stages and obs.lost == lost and kube.reads == reads
    if "train" in stages:
        assert obs.jobs["train"].name == "v3-train-r1"


def test_a_job_without_pods_reads_the_failed_create_event_and_pods_come_from_their_index():
    obs, kube = run({}, (view("prepare", uid="j1"),))
    assert obs.jobs["prepare"].quota_message == "exceeded quota" and kube.reads == [("failed_create", "v3-prepare")]
    mine, other = PodView("mine", job_uid="j1"), PodView("old", job_uid="j0")
    obs, _ = run({}, (view("prepare", uid="j1"),), pods={(*KEY, "prepare"): [mine, other]})
    assert [p.name for p in obs.jobs["prepare"].pods] == ["mine"]


def test_the_runs_of_the_namespace_progress_and_a_rejected_spec_are_observed():
    entries = [{"name": "v2", "namespace": META["namespace"]}]
    obs, _ = run({}, runs={META["namespace"]: entries, "elsewhere": [{"name": "x"}]}, progress={"step": 3})
    assert obs.runs == tuple(entries) and obs.progress == {"step": 3} and obs.admitted and obs.config_error is None
    bad = {**SPEC, "training": {**SPEC["training"], "maxSteps": -1}}
    assert run({}, spec=bad)[0].config_error
