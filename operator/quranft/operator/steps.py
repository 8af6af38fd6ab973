"""The derivation: ONE pure function from (spec, metadata, current status, observations) to the new status and
the next action, as a pipeline over the stage table (stages.PIPELINE): budget -> data -> train -> benchmark ->
verdict -> cleanup. No I/O: observe.py gathers the observations, handlers.apply carries out the plan.

Each step is a small function of the draft (status.Draft: spec, metadata, observations, the status so far): it
returns a decision (status.Derived: the pass ends with it) or None (its part is done: the next step goes on).
Phases: Pending -> Queued -> PreparingData -> Training -> Benchmarking -> Succeeded | Failed (Suspended while
spec.suspend holds the active Job; Stopped when a stop request, the annotation quranft.io/stop-requested, ends a
run before its training finished). Succeeded, Failed and Stopped are terminal and sticky: on an ended run only
the terminal rows of the table run (`derive_ended`, in a pass that begins terminal).
"""
from __future__ import annotations

import copy
import re
from datetime import datetime
from typing import Any, Callable, Mapping

from quranft.contract import workspace as layout
from quranft.contract.exits import FATAL_EXIT_CODES, ExitCode

from . import builders
from .observe import JobView, PodView, parse_time
from .stages import PIPELINE, STAGES, newest_first
from .status import (BENCHMARK_STATUS_KEYS, GROUP_STOP_WAIT, MAX_TRAINING_PODS, OBSERVATION_GRACE, PROGRESS_KEYS,
                     TERMINAL, TRAINING_SUMMARY_KEYS, Derived, Draft, Observed, _clip, _succeeded_pod,
                     classify_failure, condition_true, get_condition, now_iso, parse_summary, stop_request,
                     terminal_stop_notice)

Decision = Derived | None
StepFunction = Callable[[Draft], Decision]


def derive(spec: Mapping[str, Any], meta: Mapping[str, Any], status: Mapping[str, Any] | None,
           obs: Observed) -> Derived:
    """The new status and the next action for one resource, from what is observed right now."""
    p = Draft(spec, meta, status or {}, obs)
    if p.old.get("phase") in TERMINAL:
        return p.done()  # sticky: a verdict or a failure is never rewritten by later observations
    decided = begin(p)
    if decided is not None:
        return decided
    for step in PIPELINE:
        if not step.terminal:
            decided = STEP_FUNCTIONS[step.name](p)
            if decided is not None:
                return decided
    raise AssertionError("the verdict step always decides")  # pragma: no cover


def derive_ended(spec: Mapping[str, Any], meta: Mapping[str, Any], status: Mapping[str, Any],
                 now: datetime) -> Derived:
    """The plan for a pass that begins on an ended run: only the terminal rows of the table (the cleanup)."""
    p = Draft(spec, meta, status, Observed(now=now))
    p.new = copy.deepcopy(dict(status))  # only these steps change an ended run's status (not observedGeneration)
    for step in PIPELINE:
        if step.terminal:
            STEP_FUNCTIONS[step.name](p)
    return p.done()


def begin(p: Draft) -> Decision:
    """What every pass of a running run does first: a rejected spec, the Job names, progress, a stop request."""
    obs = p.obs
    p.new.setdefault("phase", "Pending")
    if obs.config_error:
        return p.fail("ConfigError", obs.config_error)
    for stage in STAGES:
        if stage in obs.jobs:
            p.job_name(stage, obs.jobs[stage].name)
    if "train" in obs.jobs:
        _training_started(p, obs.jobs["train"])
    if obs.progress:
        _progress(p, obs.progress)
    _startup_settled(p, obs.jobs)
    stop = stop_request(p.meta)
    if stop is not None:
        train = obs.jobs.get("train")
        if not condition_true(p.new, "Trained") and not (train and train.complete):
            return p.stop(stop)
        p.cond("Stopped", False, "StopIgnored", f"stop request ignored: training had finished, the run goes on to "
                                                f"its verdict (request: {stop})")
    return None


# --- the steps, in the order of stages.PIPELINE -------------------------------------------------------------

def budget(p: Draft) -> Decision:
    """The operator budget: a run holds a slot from data preparation to the end of training (FIFO)."""
    obs = p.obs
    holds_slot = "prepare" in obs.jobs or "train" in obs.jobs or condition_true(p.new, "DataReady")
    if condition_true(p.new, "QuotaAdmitted"):
        return None
    if not obs.admitted and not holds_slot:
        p.phase("Queued")
        p.cond("QuotaAdmitted", False, "OperatorBudget", obs.admission_message)
        return p.done()
    if not p.spec.get("queueName") or "train" in obs.jobs:
        p.cond("QuotaAdmitted", True, "Admitted", obs.admission_message or "within the operator's budget")
    return None


def data(p: Draft) -> Decision:
    """The data: prepared by this run's Job, or reused from a sibling that prepared the same data on the same
    claim (or waits while one is preparing it)."""
    if condition_true(p.new, "DataReady"):
        return None
    job = p.obs.jobs.get("prepare")
    if job is None:
        if "prepare" in p.obs.lost:
            return p.lost("prepare")
        ready, preparing = sibling_data(p.spec, p.meta["name"], p.obs.runs)
        if ready:
            p.cond("DataReady", True, "ReusedFromSibling", f"data already prepared by {ready} on the same claim")
            p.new.setdefault("data", {})["reusedFrom"] = ready
            return None
        if preparing:
            p.phase("PreparingData")
            p.cond("DataReady", False, "WaitingForSibling",
                   f"{preparing} is preparing the same data on the same claim")
            return p.done()
        p.cond("DataReady", False, "Preparing", "creating the data preparation Job")
        return p.create("prepare", "PreparingData")
    if job.complete:
        pod = _succeeded_pod(job)
        summary, _ = parse_summary(pod.message if pod else None)
        if summary:
            prepared = p.new.setdefault("data", {})
            if summary.get("stats") is not None:
                prepared["stats"] = summary["stats"]
        p.cond("DataReady", True, "Prepared", f"Job {job.name} prepared the data")
        return None
    if job.failed_reason:
        return p.finished_failed(job)
    return p.in_progress(job, "PreparingData", "DataReady", "Preparing", "preparing the data")


def sibling_data(spec: Mapping[str, Any], name: str,
                 runs: tuple[Mapping[str, Any], ...]) -> tuple[str | None, str | None]:
    """(a sibling whose data is ready, a sibling preparing it): another run of the namespace with the same claim and
    data hash (handlers.run_entry). The first ready one wins; of those preparing, the last."""
    claim, data_hash = builders.claim_name(spec, name), builders.spec_data_hash(spec)
    preparing = None
    for e in runs:
        if e["name"] == name or e["claim"] != claim or e["dataHash"] != data_hash:
            continue
        if e["dataReady"]:
            return e["name"], preparing
        if e["preparing"]:
            preparing = e["name"]
    return None, preparing


def train(p: Draft) -> Decision:
    """Training: create the Job (unless spec.suspend), follow it, record the model; a failed multi-node attempt
    restarts the whole group."""
    if condition_true(p.new, "Trained"):
        return None
    obs, spec = p.obs, p.spec
    job = obs.jobs.get("train")
    if job is None:
        if "train" in obs.lost:
            return p.lost("train")
        if spec.get("suspend"):
            p.phase("Suspended")
            p.cond("Suspended", True, "SuspendedBySpec", "spec.suspend is true; no training Job is created")
            return p.done()
        if get_condition(p.new, "Suspended"):
            p.cond("Suspended", False, "Resumed", "spec.suspend is false")
        p.cond("Trained", False, "Training", "creating the training Job")
        # Re-creating the attempt the status names (an index that lags) is answered 409 and adopted.
        p.attempt = int((p.new.get("training") or {}).get("groupRestarts") or 0)
        p.group_failures = int((p.new.get("training") or {}).get("groupFailures") or 0)
        return p.create("train", "Training")
    _resumes(p, job)
    if not job.complete:
        if job.failed_reason and job.indexed:
            return _group_failed(p, job)
        if job.failed_reason:
            return p.finished_failed(job)
        return p.in_progress(job, "Training", "Trained", "Training", "training")
    pod = _succeeded_pod(job)
    if pod is None and job.completion_time and obs.now - job.completion_time < OBSERVATION_GRACE:
        return p.done()
    summary, _ = parse_summary(pod.message if pod else None)
    _training_summary(p, summary)
    _tracking(p, "train", summary)
    p.training_clock(job.completion_time or obs.now)
    p.new["model"] = _model(spec, p.meta, summary)
    if p.new.get("progress"):
        p.new["progress"]["step"] = p.new["model"].get("step") or p.new["progress"].get("step")
        if "eta" in p.new["progress"]:  # trained: no time left, whatever the last record estimated (eta.py)
            p.new["progress"].update(eta="0s", etaSeconds=0)
        _display(p.new["progress"])
    p.cond("Trained", True, "Trained", f"Job {job.name} wrote {p.new['model']['path']}")
    return None


def benchmark(p: Draft) -> Decision:
    """The benchmark: waits for the baseline run's results (spec.benchmark.baseline.qftRef), creates the Job,
    follows it; None once its summary with a verdict arrived."""
    obs = p.obs
    job = obs.jobs.get("benchmark")
    if job is None:
        if "benchmark" in obs.lost:
            return p.lost("benchmark")
        results, wait, error = baseline(p.spec, p.meta["name"], obs.runs)
        if error:
            return p.fail("BaselineUnavailable", error)
        if wait:
            p.phase("Benchmarking")
            p.cond("Benchmarked", False, "WaitingForBaseline", wait)
            return p.done()
        p.baseline_results = results
        p.cond("Benchmarked", False, "Benchmarking", "creating the benchmark Job")
        return p.create("benchmark", "Benchmarking")
    if job.failed_reason:
        return p.finished_failed(job)
    if not job.complete:
        return p.in_progress(job, "Benchmarking", "Benchmarked", "Benchmarking", "benchmarking")
    pod = _succeeded_pod(job)
    if pod is None or pod.message is None:
        if job.completion_time is None or obs.now - job.completion_time < OBSERVATION_GRACE:
            return p.done()  # the pod's final status is still on its way
    summary, problem = parse_summary(pod.message if pod else None)
    if summary is None or "verdict" not in summary:
        problem = problem or "VerdictUnparseable"
        size = len((pod.message or "").encode()) if pod else 0
        message = (f"the benchmark's termination message ({size} bytes) "
                   f"{'was cut at the 4 KB limit' if problem == 'VerdictTruncated' else 'is not the expected JSON'}"
                   "; full results stay on the claim under runs/<name>/benchmark/")
        p.cond(problem, True, problem, message)
        p.cond("Benchmarked", False, problem, message)
        return p.fail(problem, message)
    return None


def baseline(spec: Mapping[str, Any], name: str,
             runs: tuple[Mapping[str, Any], ...]) -> tuple[str | None, str | None, str | None]:
    """(results file, why it waits, why it cannot be had) of the run named by spec.benchmark.baseline.qftRef, from
    the namespace's index entries; all None without a qftRef."""
    ref = (((spec.get("benchmark") or {}).get("baseline") or {}).get("qftRef") or {}).get("name")
    if not ref:
        return None, None, None
    match = next((e for e in runs if e["name"] == ref), None)
    if match is None:
        return None, None, f"baseline QuranFineTune {ref!r} not found in this namespace"
    if match["claim"] != builders.claim_name(spec, name):
        return None, None, f"baseline {ref!r} uses claim {match['claim']}; this run uses " \
                           f"{builders.claim_name(spec, name)}: results must be on the same claim"
    if match["phase"] == "Failed":
        return None, None, f"baseline {ref!r} failed, so it has no benchmark results"
    if match["phase"] == "Succeeded" and match["resultsPath"]:
        return match["resultsPath"], None, None
    return None, f"waiting for baseline {ref!r} (phase {match['phase'] or 'Pending'}) to finish its benchmark", None


def verdict(p: Draft) -> Decision:
    """The verdict of the benchmark's summary: status.benchmark, Benchmarked, Improved; the run Succeeded."""
    pod = _succeeded_pod(p.obs.jobs["benchmark"])
    summary, _ = parse_summary(pod.message if pod else None)
    assert summary is not None  # the benchmark step decided otherwise
    _tracking(p, "benchmark", summary)
    outcome = str(summary.get("verdict"))
    p.new["verdict"] = outcome
    bench = {k: summary[k] for k in BENCHMARK_STATUS_KEYS if summary.get(k) is not None}
    primary = str(summary.get("primaryMetric") or "recall")
    if (summary.get("display") or {}).get(primary):
        bench["deltaDisplay"] = str(summary["display"][primary])
    p.new["benchmark"] = bench
    metrics = summary.get("metrics") or {}
    p.cond("Benchmarked", True, "Benchmarked",
           f"recall {metrics.get('recall')}, sequenceAccuracy {metrics.get('sequenceAccuracy')} "
           f"({summary.get('verdictHead') or 'ctc'} head)")
    reason = {"improvement": "Improvement", "regression": "Regression"}.get(outcome, "Neutral")
    if outcome == "neutral" and summary.get("reason") in ("Inconclusive", "NoBaseline"):
        reason = str(summary["reason"])
    p.cond("Improved", outcome == "improvement", reason, _verdict_message(outcome, summary, primary))
    leakage = summary.get("leakage") or {}
    leaked = int(leakage.get("exactAudio") or 0) + int(leakage.get("sameReciterVerse") or 0)
    if leaked:
        p.cond("BenchmarkLeakage", True, "BenchmarkLeakage",
               f"{leakage.get('exactAudio', 0)} corpus clip(s) are exact audio duplicates of training/validation "
               f"clips ({leakage.get('excluded', 0)} left out of the scores) and {leakage.get('sameReciterVerse', 0)} "
               "have the same reciter on the same verse there; the scores may be inflated")
    p.new["phase"] = "Succeeded"
    p.new["completionTime"] = now_iso(p.obs.now)
    return p.done()


def cleanup(p: Draft) -> Decision:
    """An ended run: a stop request after the end is said once to change nothing; once spec.ttlSecondsAfterFinished
    passed, status.cleanedUp and (cleanup policy DeleteJobs) the stage Jobs to delete."""
    notice = terminal_stop_notice(p.meta, p.old, p.obs.now)
    if notice is not None:
        p.new = notice
    spec, status = p.spec, p.old
    ttl = spec.get("ttlSecondsAfterFinished")
    if ttl is None or status.get("cleanedUp"):
        return None
    done = parse_time(status.get("completionTime"))
    if done is None or (p.obs.now - done).total_seconds() < int(ttl):
        return None
    policy = (spec.get("cleanup") or {}).get("onSuccess" if status["phase"] == "Succeeded" else "onFailure", "Keep")
    if policy == "DeleteJobs":
        jobs = set((status.get("jobs") or {}).values())
        restarts = int((status.get("training") or {}).get("groupRestarts") or 0)
        nodes = builders.nodes_of(spec)
        jobs |= {builders.train_job_name(p.meta["name"], attempt, nodes) for attempt in range(restarts)}
        p.clean_up = tuple(sorted(jobs))  # pods go with them; models and the claim stay
    p.new["cleanedUp"] = True
    return None


# The one function per row of stages.PIPELINE (checked at import: the table and this mapping name the same steps).
STEP_FUNCTIONS: dict[str, StepFunction] = {"budget": budget, "data": data, "train": train, "benchmark": benchmark,
                                           "verdict": verdict, "cleanup": cleanup}
assert list(STEP_FUNCTIONS) == [step.name for step in PIPELINE], "stages.PIPELINE and STEP_FUNCTIONS differ"


# --- helpers of the steps ----------------------------------------------------------------------------------
def _verdict_message(verdict: str, summary: Mapping[str, Any], primary: str) -> str:
    shown = (summary.get("display") or {}).get(primary)
    detail = f"; {primary} {shown} points (95% paired interval)" if shown else ""
    if summary.get("reason") == "Inconclusive" and summary.get("requiredClips"):
        detail += f"; about {summary['requiredClips']} paired clips would resolve a difference of this size"
    return f"verdict {verdict} against the baseline ({summary.get('rule') or 'threshold'} rule){detail}"


def _model(spec: Mapping[str, Any], meta: Mapping[str, Any], summary: Mapping[str, Any] | None) -> dict[str, Any]:
    summary = summary or {}
    model = {"path": summary.get("modelPath") or str(layout.model_path(meta["name"]))}
    for src, dst in (("sizeBytes", "sizeBytes"), ("sha256", "sha256"), ("dataSpecHash", "dataSpecHash"),
                     ("step", "step"), ("finalLoss", "finalLoss"), ("valWer", "valWer")):
        if summary.get(src) is not None:
            model[dst] = summary[src]
    return model


def _startup_settled(p: Draft, jobs: Mapping[str, JobView]) -> None:
    """StartupBlocked=True ends once the latest stage's pod has started, including one that waited, started and
    finished between two passes (running_stage only sees unfinished Jobs)."""
    if not condition_true(p.new, "StartupBlocked"):
        return
    latest = next(iter(newest_first(jobs)), None)
    if latest and (latest.complete or any(pod.running or pod.terminated_reason for pod in latest.pods[-1:])):
        p.cond("StartupBlocked", False, "Started", f"the {latest.stage} pod started")


def _progress(p: Draft, line: Mapping[str, Any]) -> None:
    progress = {k: line[k] for k in PROGRESS_KEYS if line.get(k) is not None}
    old = p.old.get("progress") or {}
    if "valWer" not in progress and old.get("valWer") is not None:
        # Lines between validations may omit it; the last one measured stays (early stopping reads it).
        progress.update({k: old[k] for k in ("valWer", "valWerStep") if old.get(k) is not None})
    _display(progress)
    p.new["progress"] = progress
    step = line.get("lastCheckpointStep", line.get("checkpointStep"))
    if step is not None:
        p.new["lastCheckpoint"] = {"step": int(step), "updatedAt": str(line.get("updatedAt") or now_iso(p.obs.now))}
    training = p.new.get("training")
    if training is not None:
        for key in ("worldSize", "globalBatchSize"):
            if line.get(key) is not None:
                training[key] = line[key]
        p.training_clock(p.obs.now)


def _training_started(p: Draft, job: JobView) -> None:
    """status.training: the group's shape (from the spec) and when the first training Job started."""
    training = p.new.setdefault("training", {})
    training.setdefault("nodes", builders.nodes_of(p.spec))
    training.setdefault("devicesPerNode", builders.devices_per_node(p.spec))
    if job.start_time and not training.get("startTime"):
        training["startTime"] = now_iso(job.start_time)
    if job.attempt > int(training.get("groupRestarts") or 0):  # a restart whose status write was lost
        training["groupRestarts"] = job.attempt
        training["groupFailures"] = max(job.group_failures, int(training.get("groupFailures") or 0))


def _tracking(p: Draft, stage: str, summary: Mapping[str, Any] | None) -> None:
    """status.tracking {runId, uri} from a stage summary's `tracking` (quranft.trainer.tracking); the warning
    condition TrackingDegraded when the stage could not log everything. It is never set back to False: the
    MLflow run misses that stage's data for good. The run itself goes on."""
    tracking = (summary or {}).get("tracking")
    if not isinstance(tracking, Mapping):
        return
    status = p.new.setdefault("tracking", {})
    for key in ("runId", "uri"):
        if tracking.get(key):
            status[key] = str(tracking[key])
    if tracking.get("ok") is False:
        lost = tracking.get("lostSeconds")
        p.cond("TrackingDegraded", True, "TrackingDegraded",
               f"the {stage} stage could not log everything to MLflow"
               + (f" (its run {tracking['runId']} misses data)" if tracking.get("runId") else " (no run)")
               + (f"; {lost} s lost to failed calls" if lost else "")
               + f": {_clip(str(tracking.get('error') or 'unknown error'), 300)}")


def _training_summary(p: Draft, summary: Mapping[str, Any] | None) -> None:
    training = p.new.setdefault("training", {})
    for key in TRAINING_SUMMARY_KEYS:
        if (summary or {}).get(key) is not None:
            training[key] = summary[key]


_POLICY_RULE = re.compile(r"[Pp]od [^/\s]+/(\S+?)(?: failed with exit code (\d+)| has condition (\w+))? "
                          r"matching FailJob rule at index (\d+)")
# The multi-node Job's podFailurePolicy rules (builders.build_rank_job_fields), by index.
RULE_FATAL, RULE_DISRUPTION, RULE_FAILED = 0, 1, 2


def _group_cause(job: JobView) -> tuple[str, PodView | None]:
    """What ended a failed multi-node attempt: ("fatal" | "disrupted" | "failed", the pod that did it).

    The Job controller's Failed message names the pod and the podFailurePolicy rule it matched; without it
    (an older controller, or BackoffLimitExceeded) the pods' own states decide."""
    by_name = {pod.name: pod for pod in job.pods}
    match = _POLICY_RULE.search(job.failed_message or "")
    if match:
        pod, rule = by_name.get(match.group(1)), int(match.group(4))
        if rule in (RULE_FATAL, RULE_DISRUPTION, RULE_FAILED):
            return {RULE_FATAL: "fatal", RULE_DISRUPTION: "disrupted", RULE_FAILED: "failed"}[rule], pod
    failed = [pod for pod in job.pods if pod.disrupted or pod.exit_code not in (None, 0) or pod.phase == "Failed"]
    fatal = next((pod for pod in failed if pod.exit_code in FATAL_EXIT_CODES), None)
    if fatal:
        return "fatal", fatal
    disrupted = next((pod for pod in failed if pod.disrupted), None)
    if disrupted:
        return "disrupted", disrupted
    # 143 is a rank the Job controller stopped after another failed; the other exit code is the cause.
    cause = next((pod for pod in failed if pod.exit_code != ExitCode.PREEMPTED), failed[0] if failed else None)
    return "failed", cause


def _how_it_ended(pod: PodView | None, counted: bool) -> str:
    if not counted:
        return "was preempted or evicted"
    if pod and pod.terminated_reason == "OOMKilled":
        return "ran out of memory (OOMKilled)"
    return f"failed with exit code {pod.exit_code}" if pod and pod.exit_code is not None else "failed"


def _group_failed(p: Draft, job: JobView) -> Derived:
    """A multi-node attempt failed (builders.build_rank_job_fields): end the run, or restart the whole group
    from the last checkpoint as the next attempt."""
    if job.failed_reason == "DeadlineExceeded":
        return p.finished_failed(job)
    kind, pod = _group_cause(job)
    since = p.obs.now - job.failed_time if job.failed_time else None
    if pod is None and (since is None or since < OBSERVATION_GRACE):
        return p.done()  # the pods' final states are still on their way
    if kind == "fatal":
        reason, message = classify_failure(job, pod)
        return p.fail(reason, f"train Job {job.name}: {message}")
    if any(other.running for other in job.pods) and since is not None and since < GROUP_STOP_WAIT:
        p.cond("Trained", False, "GroupRestarting", f"Job {job.name} failed; waiting for its other ranks to stop "
                                                    "before the group restarts")
        return p.done()
    limit = int((p.spec.get("resources") or {}).get("backoffLimit", 3))
    counted = kind != "disrupted"
    failures = job.group_failures + (1 if counted else 0)
    rank = f"rank {pod.completion_index} (pod {pod.name})" if pod else "a rank"
    how = _how_it_ended(pod, counted)
    if counted and failures > limit:
        reason, message = classify_failure(job, pod)
        if reason in ("PodFailurePolicy", "BackoffLimitExceeded", "JobFailed"):
            reason, message = "BackoffLimitExceeded", f"{rank} {how}"
        return p.fail(reason, f"train Job {job.name}: {message}; the group failed {failures} times "
                              f"(resources.backoffLimit {limit})")
    attempt = job.attempt + 1
    training = p.new.setdefault("training", {})
    training.update(groupRestarts=attempt, groupFailures=failures)
    training["lastRestart"] = {"attempt": attempt, "reason": "RankFailed" if counted else "RankDisrupted",
                               "message": _clip(f"{rank} of {job.name} {how}", 1024), "counted": counted}
    if not counted:
        p.cond("Preempted", True, "Preempted", f"{rank} of {job.name} {how}; the group restarts from the last "
                                               "checkpoint")
    p.cond("Trained", False, "GroupRestarting",
           f"{rank} of {job.name} {how}: the whole group restarts from the last checkpoint as attempt {attempt} "
           f"({failures}/{limit} counted failures{'' if counted else '; a disruption is not counted'})")
    p.attempt, p.group_failures = attempt, failures
    return p.create("train", "Training")


def _display(progress: dict[str, Any]) -> None:
    if progress.get("step") is not None:
        progress["display"] = f"{progress['step']}/{progress.get('maxSteps', '?')}"


def _resumes(p: Draft, job: JobView) -> None:
    """Every training pod after the first resumed from a checkpoint (preemption, eviction, retry)."""
    # Evicted and deleted pods vanish, and an eviction is not in the Job's `failed` counter (podFailurePolicy
    # ignores it), so the names of the training pods seen so far are kept in the status. A pod deleted before
    # any pass saw it is still in `failed` (less the final failure when the Job itself failed).
    # A multi-node group is counted by its rank-0 pods: one per attempt.
    rank0 = [pod for pod in job.pods if pod.completion_index in (None, 0)]
    seen = list(p.new.get("trainingPods") or [])
    seen += [pod.name for pod in sorted(rank0, key=lambda pod: pod.created or p.obs.now) if pod.name not in seen]
    if seen:
        p.new["trainingPods"] = seen[:MAX_TRAINING_PODS]
    counted_failures = 0 if job.indexed else job.failed - (1 if job.failed_reason else 0)
    restarted = max(0, len(seen) - 1, counted_failures, int((p.new.get("training") or {}).get("groupRestarts") or 0))
    if restarted > int(p.new.get("resumeCount") or 0):
        p.new["resumeCount"] = restarted
    disrupted = [pod.name for pod in job.pods if pod.disrupted]
    if disrupted:
        p.cond("Preempted", True, "Preempted",
               f"pod {disrupted[-1]} was preempted or evicted; a new pod resumes from the last checkpoint")

