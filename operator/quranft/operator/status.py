"""Status derivation: ONE pure function from (spec, metadata, current status, observed children) to the
new status and the next action. No I/O: the handlers gather the observations and apply the result.

Phases: Pending -> Queued -> PreparingData -> Training -> Benchmarking -> Succeeded | Failed
(Suspended while spec.suspend holds the active Job; Stopped when a stop request, the annotation
quranft.io/stop-requested, ends a run before its training finished). Succeeded, Failed and Stopped are
terminal and sticky.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Mapping

from quranft.contract import workspace as layout
from quranft.contract.exits import FATAL_EXIT_CODES, PREEMPTED_REASON, REASON_BY_EXIT, ExitCode
from quranft.contract.keys import STOP_ANNOTATION
from quranft.contract.summaries import MAX_TERMINATION_BYTES as MAX_MESSAGE_BYTES

from .builders import devices_per_node, nodes_of, total_gpus
from .observe import JobView, PodView, parse_time

TERMINAL = ("Succeeded", "Failed", "Stopped")
IMAGE_PULL_REASONS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
PERMANENT_WAIT_REASONS = {"InvalidImageName", "ErrImageNeverPull"}
# Bounds status.trainingPods (a run evicted more often than this counts further by the Job's failures only).
MAX_TRAINING_PODS = 100
# Conditions that call for the user's attention are emitted as Warning events.
WARNING_CONDITIONS = {"Failed", "QuotaExceeded", "StartupBlocked", "Preempted", "BenchmarkLeakage",
                      "TrackingDegraded"}
# The benchmark summary's keys kept in status.benchmark (docs/contracts.md, benchmark termination message).
BENCHMARK_STATUS_KEYS = ("metrics", "baseline", "deltas", "targets", "resultsPath", "reportPath", "reason", "rule",
                         "verdictHead", "primaryMetric", "intervals", "display", "sequenceTest", "requiredClips",
                         "pairedClips", "heads", "corpus", "leakage", "artifact", "throughput")
# A finished Job's pod status may reach us (separate watch) a moment after the Job's; wait this long.
OBSERVATION_GRACE = timedelta(seconds=20)
CONDITION_MESSAGE_LIMIT = 2048
# A failed multi-node attempt whose other ranks still run (an older Job controller sets Failed before its pods
# end) is restarted once they stopped, or after this long: two rank-0s never write one checkpoint directory.
GROUP_STOP_WAIT = timedelta(minutes=10)
# The progress line's keys kept in status.progress (docs/contracts.md); valWer is what early stopping reads.
PROGRESS_KEYS = ("step", "maxSteps", "loss", "valWer", "valWerStep", "samplesPerSecond", "worldSize", "updatedAt")
# The train summary's keys about the ranks, kept in status.training.
TRAINING_SUMMARY_KEYS = ("worldSize", "globalBatchSize", "nodes", "devicesPerNode")


@dataclass(frozen=True)
class Observed:
    """Everything the handlers looked up for one pass."""
    now: datetime
    jobs: Mapping[str, JobView] = field(default_factory=dict)  # stage -> this resource's Job
    config_error: str | None = None  # the trainer's schema rejected the spec
    admitted: bool = True  # operator budget (max trainings, GPUs per namespace)
    admission_message: str = ""
    sibling_data: str | None = None  # sibling with DataReady for the same claim + data hash
    sibling_preparing: str | None = None  # sibling preparing that same data right now
    baseline_results: str | None = None  # spec.benchmark.baseline.qftRef: its results file, once ready
    baseline_wait: str | None = None  # ... still running
    baseline_error: str | None = None  # ... failed or missing
    progress: Mapping[str, Any] | None = None  # last QURANFT_PROGRESS line of the training pod
    lost: frozenset[str] = frozenset()  # stages whose Job the status names but the API no longer has
    # Operator settings for a run without spec.startupDeadlineSeconds (see startup_problem).
    image_pull_deadline_s: int = 600
    default_startup_deadline_s: int = 300


@dataclass
class Derived:
    status: dict[str, Any]
    action: str | None = None  # stage whose Job must be created
    suspend: tuple[str, bool] | None = None  # (job name, desired spec.suspend) for an existing Job
    attempt: int = 0  # with action "train": the attempt of a multi-node group (its Job name, see builders)
    group_failures: int = 0  # ... and the group failures counted before it (carried on that Job)
    delete_jobs: tuple[str, ...] = ()  # Jobs to delete (a stopped run's Kueue-managed Job)


def now_iso(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(conditions: list[dict[str, Any]], ctype: str, status: str, reason: str, message: str,
                  generation: int, now: datetime) -> None:
    """Upsert a Kubernetes-style condition; lastTransitionTime moves only when `status` flips."""
    message = _clip(message, CONDITION_MESSAGE_LIMIT)
    for cond in conditions:
        if cond["type"] == ctype:
            if cond.get("status") != status:
                cond["lastTransitionTime"] = now_iso(now)
            cond.update(status=status, reason=reason, message=message, observedGeneration=generation)
            return
    conditions.append({"type": ctype, "status": status, "reason": reason, "message": message,
                       "observedGeneration": generation, "lastTransitionTime": now_iso(now)})


def get_condition(status: Mapping[str, Any], ctype: str) -> Mapping[str, Any] | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == ctype:
            return cond
    return None


def condition_true(status: Mapping[str, Any], ctype: str) -> bool:
    cond = get_condition(status, ctype)
    return bool(cond and cond.get("status") == "True")


def _clip(text: str, limit: int) -> str:
    data = (text or "").encode()
    return text if len(data) <= limit else data[: limit - 3].decode(errors="ignore") + "..."


# --- termination messages ---------------------------------------------------------------------------------

def parse_summary(message: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """(summary, problem): problem is VerdictTruncated (hit the 4 KB cut) or VerdictUnparseable."""
    if not message or not message.strip():
        return None, "VerdictUnparseable"
    text = message.strip().splitlines()[-1] if not message.strip().startswith("{") else message.strip()
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):  # garbage can also be a 5000-digit number or 10k nested brackets
        return None, "VerdictTruncated" if len(message.encode()) >= MAX_MESSAGE_BYTES else "VerdictUnparseable"
    if not isinstance(doc, dict):
        return None, "VerdictUnparseable"
    return doc, None


def _succeeded_pod(job: JobView) -> PodView | None:
    """The pod whose summary counts: the newest succeeded one; of a multi-node Job, rank 0's (completion index
    0), the only rank that writes the model and the summary."""
    for pod in reversed(job.pods):
        if pod.completion_index not in (None, 0):
            continue
        if pod.phase == "Succeeded" or (pod.exit_code == 0 and pod.terminated_reason):
            return pod
    return None


def current_pods(job: JobView) -> list[PodView]:
    """The newest pod of each completion index (of a one-pod Job: its newest pod), by index."""
    if not job.pods:
        return []
    if all(pod.completion_index is None for pod in job.pods):
        return [job.pods[-1]]
    latest: dict[int, PodView] = {}
    for pod in job.pods:  # oldest first
        latest[pod.completion_index or 0] = pod
    return [latest[i] for i in sorted(latest)]


def _last_failed_pod(job: JobView) -> PodView | None:
    for pod in reversed(job.pods):
        if pod.phase == "Failed" or (pod.exit_code not in (None, 0)):
            return pod
    return None


_EXIT_IN_MESSAGE = re.compile(r"exit code (\d+)")


def classify_failure(job: JobView, pod: PodView | None = None) -> tuple[str, str]:
    """(reason, message) for a failed Job (or the given pod of it), most specific first, so the user can act."""
    pod = pod or _last_failed_pod(job)
    if job.failed_reason == "DeadlineExceeded":
        return "DeadlineExceeded", job.failed_message or "the Job ran past activeDeadlineSeconds"
    if pod is not None:
        if pod.terminated_reason == "OOMKilled":
            return "OOMKilled", f"pod {pod.name} ran out of memory (OOMKilled); raise spec.resources.memory " \
                                "or lower training.batchSize"
        summary, _ = parse_summary(pod.message)
        if summary and summary.get("ok") is False and summary.get("reason"):
            return str(summary["reason"]), str(summary.get("message") or "")
        if pod.exit_code in REASON_BY_EXIT:
            return REASON_BY_EXIT[pod.exit_code], _clip(pod.message or f"exit code {pod.exit_code}", 1024)
        if pod.disrupted:
            return PREEMPTED_REASON, f"pod {pod.name} was preempted or evicted"
    match = _EXIT_IN_MESSAGE.search(job.failed_message or "")
    if match and int(match.group(1)) in REASON_BY_EXIT:
        return REASON_BY_EXIT[int(match.group(1))], job.failed_message or ""
    if job.failed_reason == "BackoffLimitExceeded":
        detail = f": last pod {pod.name} exit code {pod.exit_code}: {_clip(pod.message or '', 1024)}" if pod else ""
        return "BackoffLimitExceeded", f"the Job failed after its retries{detail}"
    return job.failed_reason or "JobFailed", job.failed_message or "the Job failed"


# Start-up waits that are not errors in themselves: at a deadline the run fails StartupDeadlineExceeded.
SCHEDULING_WAITS = ("WaitingForGPU", "Unschedulable")
# A GPU that is busy with another run is the normal course of a shared cluster: a Normal event, not a Warning.
NORMAL_WAITS = {"WaitingForGPU"}


def startup_problem(job: JobView, now: datetime, deadline_s: int | None, image_pull_deadline_s: int = 600,
                    default_deadline_s: int = 300) -> tuple[str, str, bool] | None:
    """(reason, message, fatal) when the newest pod cannot start.

    `deadline_s` is the run's spec.startupDeadlineSeconds: set, every wait fails once the pod is that old.
    Unset, a pod the scheduler cannot place (e.g. all GPUs busy: WaitingForGPU) waits indefinitely, as
    Kubernetes itself does; an image pull fails after `image_pull_deadline_s` and any other wait (secrets,
    volumes) after `default_deadline_s`, the operator's settings. An invalid image name fails at once.
    A wait that is no error in itself (scheduling, or no reason at all) fails as StartupDeadlineExceeded.
    """
    problems = [problem for pod in current_pods(job)
                if (problem := _pod_startup_problem(pod, now, deadline_s, image_pull_deadline_s, default_deadline_s))]
    # A fatal problem of any rank first (a multi-node Job waits for all of its pods).
    return next((problem for problem in problems if problem[2]), problems[0] if problems else None)


def _pod_startup_problem(pod: PodView, now: datetime, deadline_s: int | None, image_pull_deadline_s: int,
                         default_deadline_s: int) -> tuple[str, str, bool] | None:
    if pod.running or pod.terminated_reason or pod.phase in ("Running", "Succeeded", "Failed"):
        return None
    if pod.waiting_reason in IMAGE_PULL_REASONS:
        reason, message = "ImagePullFailure", pod.waiting_message or pod.waiting_reason
    elif pod.waiting_reason == "CreateContainerConfigError":
        reason, message = "ContainerConfigError", pod.waiting_message or pod.waiting_reason
    elif pod.unschedulable:
        reason, message = ("WaitingForGPU" if "nvidia.com/gpu" in pod.unschedulable else "Unschedulable"), \
            pod.unschedulable
    else:
        reason, message = "", ""
    limit: int | None
    if deadline_s is not None:
        limit, setting = deadline_s, "spec.startupDeadlineSeconds"
    elif reason == "ImagePullFailure":
        limit, setting = image_pull_deadline_s, "the operator's image pull deadline"
    elif reason in SCHEDULING_WAITS:
        limit, setting = None, ""
        message += " (waits until " + ("a GPU is free" if reason == "WaitingForGPU" else "the scheduler can place it") \
            + "; set spec.startupDeadlineSeconds to give up after a while)"
    else:
        limit, setting = default_deadline_s, "the operator's start-up deadline"
    # spec.startupDeadlineSeconds counts every wait, scheduling included; the operator's deadlines count the waits
    # after placement, so a pod that waited for a GPU still gets them once placed.
    since = pod.created if deadline_s is not None else (pod.scheduled or pod.created)
    age = (now - since).total_seconds() if since else 0.0
    expired = limit is not None and age > limit
    if not reason and not expired:
        return None
    if expired and reason in ("", *SCHEDULING_WAITS):
        detail = f": {message}" if message else ""
        return "StartupDeadlineExceeded", f"pod {pod.name} did not start within {limit}s ({setting}){detail}", True
    if expired:
        return reason, f"{message} (pod not running after {limit}s, {setting})", True
    return reason, message, pod.waiting_reason in PERMANENT_WAIT_REASONS


# --- the derivation -----------------------------------------------------------------------------------------

class _Pass:
    def __init__(self, spec: Mapping[str, Any], meta: Mapping[str, Any], status: Mapping[str, Any], obs: Observed):
        self.spec, self.meta, self.obs = spec, meta, obs
        self.generation = int(meta.get("generation") or 1)
        self.old = status
        self.new: dict[str, Any] = copy.deepcopy(dict(status))
        self.new.setdefault("conditions", [])
        self.new["observedGeneration"] = self.generation
        self.action: str | None = None
        self.suspend: tuple[str, bool] | None = None
        self.attempt = 0
        self.group_failures = 0
        self.delete_jobs: tuple[str, ...] = ()

    def cond(self, ctype: str, status: bool | str, reason: str, message: str = "") -> None:
        value = status if isinstance(status, str) else ("True" if status else "False")
        set_condition(self.new["conditions"], ctype, value, reason, message, self.generation, self.obs.now)

    def fail(self, reason: str, message: str) -> Derived:
        self.new["phase"] = "Failed"
        self.cond("Failed", True, reason, message)
        self.new.setdefault("completionTime", now_iso(self.obs.now))
        self.training_clock(self.obs.now)
        return self.done()

    def done(self) -> Derived:
        return Derived(self.new, self.action, self.suspend, self.attempt, self.group_failures, self.delete_jobs)

    def training_clock(self, end: datetime | None) -> None:
        """status.training.wallSeconds and gpuHours (wall x nodes x GPUs per node) up to `end`, while training."""
        training = self.new.get("training") or {}
        start = parse_time(training.get("startTime"))
        if start is None or end is None or condition_true(self.old, "Trained"):
            return
        wall = max(0.0, (end - start).total_seconds())
        training["wallSeconds"] = round(wall, 1)
        training["gpuHours"] = round(wall * total_gpus(self.spec) / 3600, 4)

    def stop(self, reason: str) -> Derived:
        """A stop request before training finished: the run ends Stopped, its active Job stops (a suspended
        Job's pods get SIGTERM and checkpoint; Kueue would re-admit a suspended Job it manages, so that one is
        deleted), and the last progress (metrics) stays in status."""
        for job in self.obs.jobs.values():
            if job.finished:
                continue
            if self.spec.get("queueName"):
                self.delete_jobs += (job.name,)
            elif not job.suspended:
                self.suspend = (job.name, True)
        self.new["phase"] = "Stopped"
        self.cond("Stopped", True, "StopRequested", reason)
        if get_condition(self.new, "Trained") or "train" in self.obs.jobs:
            self.cond("Trained", False, "Stopped", f"stopped before training finished: {reason}")
        self.new.setdefault("completionTime", now_iso(self.obs.now))
        self.training_clock(self.obs.now)
        return self.done()

    def phase(self, phase: str) -> None:
        self.new["phase"] = phase

    def job_name(self, stage: str, name: str) -> None:
        self.new.setdefault("jobs", {})[stage] = name
        self.new.setdefault("startTime", now_iso(self.obs.now))

    def create(self, stage: str, phase: str) -> Derived:
        self.action = stage
        self.phase(phase)
        self.new.setdefault("startTime", now_iso(self.obs.now))
        return self.done()

    def lost(self, stage: str) -> Derived:
        return self.fail("JobLost", f"the {stage} Job {self.new.get('jobs', {}).get(stage)} disappeared before "
                                    "its result was recorded (deleted, or removed by a TTL while the operator "
                                    "was down); create the resource again to rerun")

    def track_suspend(self, job: JobView) -> bool:
        """Keep an unfinished Job's suspend flag in line with spec.suspend; True while it is suspended."""
        want = bool(self.spec.get("suspend"))
        if job.finished:
            return False
        if want and not job.suspended:
            self.suspend = (job.name, True)
        elif not want and job.suspended and not self.spec.get("queueName"):
            self.suspend = (job.name, False)
        if want:
            self.phase("Suspended")
            self.cond("Suspended", True, "SuspendedBySpec", "spec.suspend is true; set it to false to resume "
                                                            "(training resumes from its last checkpoint)")
            return True
        if job.suspended and self.spec.get("queueName"):
            self.phase("Queued")
            if job.kueue_reason == "Preempted":
                self.cond("Preempted", True, "PreemptedByKueue",
                          f"Kueue: {job.kueue_message}; training resumes from its last checkpoint when re-admitted")
            detail = f": Kueue {job.kueue_reason}: {job.kueue_message}" if job.kueue_reason else ""
            self.cond("QuotaAdmitted", False, "WaitingForKueue",
                      f"Job {job.name} waits for Kueue queue {self.spec['queueName']} to admit it{detail}")
            return True
        preempted = get_condition(self.new, "Preempted")
        if preempted and preempted.get("reason") == "PreemptedByKueue" and preempted.get("status") == "True":
            self.cond("Preempted", False, "Readmitted", "Kueue admitted the Job again; training resumes from its "
                                                        "last checkpoint")
        if get_condition(self.new, "Suspended"):
            self.cond("Suspended", False, "Resumed", "spec.suspend is false")
        return False

    def running_stage(self, job: JobView, phase: str) -> Derived | None:
        """Shared handling of an unfinished Job: suspension, quota, start-up problems. None: keep going."""
        if self.track_suspend(job):
            return self.done()
        self.phase(phase)
        if job.quota_message and not job.pods:
            # Stay active: the Job controller retries, and the run proceeds by itself once quota frees.
            self.cond("QuotaExceeded", True, "QuotaExceeded", job.quota_message)
            return self.done()
        if get_condition(self.new, "QuotaExceeded") and (job.pods or not job.quota_message):
            self.cond("QuotaExceeded", False, "QuotaAvailable", "pods were created")
        deadline = self.spec.get("startupDeadlineSeconds")
        problem = startup_problem(job, self.obs.now, int(deadline) if deadline is not None else None,
                                  self.obs.image_pull_deadline_s, self.obs.default_startup_deadline_s)
        if problem:
            reason, message, fatal = problem
            if fatal:
                self.suspend = (job.name, True)  # stops the stuck pod; the Job stays for inspection
                return self.fail(reason, message)
            self.cond("StartupBlocked", True, reason, message)
        elif get_condition(self.new, "StartupBlocked"):
            self.cond("StartupBlocked", False, "Started", "the pod is running")
        return None

    def in_progress(self, job: JobView, phase: str, ctype: str, reason: str, doing: str) -> Derived:
        """An unfinished stage Job: running_stage's checks, else the stage's condition says what it is doing."""
        result = self.running_stage(job, phase)
        if result:
            return result
        if job.indexed:
            self.ranks_ready(job)
        self.cond(ctype, False, reason, f"Job {job.name} is {doing}")
        return self.done()

    def ranks_ready(self, job: JobView) -> None:
        """RanksReady: whether every pod of a multi-node group runs (until then the ranks wait at rendezvous)."""
        pods = {pod.completion_index: pod for pod in current_pods(job)}
        running = sum(1 for pod in pods.values() if pod.running)
        if running == job.completions:
            self.cond("RanksReady", True, "AllRanksRunning", f"{running}/{job.completions} pods of {job.name} run")
            return
        waiting = []
        for index in range(job.completions):
            pod = pods.get(index)
            if pod is None:
                waiting.append(f"index {index}: no pod yet")
            elif not pod.running:
                why = pod.waiting_reason or ("unschedulable" if pod.unschedulable else pod.phase)
                waiting.append(f"{pod.name}: {why}")
        self.cond("RanksReady", False, "WaitingForRanks",
                  f"{running}/{job.completions} pods of {job.name} run; waiting for {', '.join(waiting)} (ranks "
                  "that do not all arrive within resources.rendezvousTimeoutSeconds fail the run: RendezvousTimeout)")

    def finished_failed(self, job: JobView) -> Derived | None:
        """A failed Job fails the run, once its pods' final state reached us (or after a grace)."""
        reason, message = classify_failure(job)
        if _last_failed_pod(job) is None and reason in ("BackoffLimitExceeded", "JobFailed", "PodFailurePolicy"):
            # The pod's terminated state is still on its way; do not fix a vague reason forever.
            if job.created and self.obs.now - job.created < OBSERVATION_GRACE and not job.pods:
                return self.done()
        return self.fail(reason, f"{job.stage} Job {job.name}: {message}")


def derive(spec: Mapping[str, Any], meta: Mapping[str, Any], status: Mapping[str, Any] | None,
           obs: Observed) -> Derived:
    """The new status and the next action for one resource, from what is observed right now."""
    p = _Pass(spec, meta, status or {}, obs)
    if p.old.get("phase") in TERMINAL:
        return p.done()  # sticky: a verdict or a failure is never rewritten by later observations
    p.new.setdefault("phase", "Pending")
    if obs.config_error:
        return p.fail("ConfigError", obs.config_error)
    for stage in ("prepare", "train", "benchmark"):
        if stage in obs.jobs:
            p.job_name(stage, obs.jobs[stage].name)
    if "train" in obs.jobs:
        _training_started(p, obs.jobs["train"])
    if obs.progress:
        _progress(p, obs.progress)
    _startup_settled(p, obs.jobs)
    stop = stop_request(meta)
    if stop is not None:
        train = obs.jobs.get("train")
        if not condition_true(p.new, "Trained") and not (train and train.complete):
            return p.stop(stop)
        p.cond("Stopped", False, "StopIgnored", f"stop request ignored: training had finished, the run goes on to "
                                                f"its verdict (request: {stop})")

    # 1. Operator budget: a run holds a slot from data preparation to the end of training (FIFO).
    holds_slot = "prepare" in obs.jobs or "train" in obs.jobs or condition_true(p.new, "DataReady")
    if not condition_true(p.new, "QuotaAdmitted"):
        if not obs.admitted and not holds_slot:
            p.phase("Queued")
            p.cond("QuotaAdmitted", False, "OperatorBudget", obs.admission_message)
            return p.done()
        if not spec.get("queueName") or "train" in obs.jobs:
            p.cond("QuotaAdmitted", True, "Admitted", obs.admission_message or "within the operator's budget")

    # 2. Data.
    if not condition_true(p.new, "DataReady"):
        job = obs.jobs.get("prepare")
        if job is None:
            if "prepare" in obs.lost:
                return p.lost("prepare")
            if obs.sibling_data:
                p.cond("DataReady", True, "ReusedFromSibling",
                       f"data already prepared by {obs.sibling_data} on the same claim")
                p.new.setdefault("data", {})["reusedFrom"] = obs.sibling_data
            elif obs.sibling_preparing:
                p.phase("PreparingData")
                p.cond("DataReady", False, "WaitingForSibling",
                       f"{obs.sibling_preparing} is preparing the same data on the same claim")
                return p.done()
            else:
                p.cond("DataReady", False, "Preparing", "creating the data preparation Job")
                return p.create("prepare", "PreparingData")
        elif job.complete:
            pod = _succeeded_pod(job)
            summary, _ = parse_summary(pod.message if pod else None)
            if summary:
                data = p.new.setdefault("data", {})
                if summary.get("stats") is not None:
                    data["stats"] = summary["stats"]
            p.cond("DataReady", True, "Prepared", f"Job {job.name} prepared the data")
        elif job.failed_reason:
            return p.finished_failed(job)
        else:
            return p.in_progress(job, "PreparingData", "DataReady", "Preparing", "preparing the data")

    # 3. Training.
    if not condition_true(p.new, "Trained"):
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
        if job.complete:
            pod = _succeeded_pod(job)
            if pod is None and job.completion_time and obs.now - job.completion_time < OBSERVATION_GRACE:
                return p.done()
            summary, _ = parse_summary(pod.message if pod else None)
            _training_summary(p, summary)
            _tracking(p, "train", summary)
            p.training_clock(job.completion_time or obs.now)
            p.new["model"] = _model(spec, meta, summary)
            if p.new.get("progress"):
                p.new["progress"]["step"] = p.new["model"].get("step") or p.new["progress"].get("step")
                _display(p.new["progress"])
            p.cond("Trained", True, "Trained", f"Job {job.name} wrote {p.new['model']['path']}")
        elif job.failed_reason and job.indexed:
            return _group_failed(p, job)
        elif job.failed_reason:
            return p.finished_failed(job)
        else:
            return p.in_progress(job, "Training", "Trained", "Training", "training")

    # 4. Benchmark and verdict.
    job = obs.jobs.get("benchmark")
    if job is None:
        if "benchmark" in obs.lost:
            return p.lost("benchmark")
        if obs.baseline_error:
            return p.fail("BaselineUnavailable", obs.baseline_error)
        if obs.baseline_wait:
            p.phase("Benchmarking")
            p.cond("Benchmarked", False, "WaitingForBaseline", obs.baseline_wait)
            return p.done()
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
    return _verdict(p, summary)


def _verdict(p: _Pass, summary: Mapping[str, Any]) -> Derived:
    _tracking(p, "benchmark", summary)
    verdict = str(summary.get("verdict"))
    p.new["verdict"] = verdict
    bench = {k: summary[k] for k in BENCHMARK_STATUS_KEYS if summary.get(k) is not None}
    primary = str(summary.get("primaryMetric") or "recall")
    if (summary.get("display") or {}).get(primary):
        bench["deltaDisplay"] = str(summary["display"][primary])
    p.new["benchmark"] = bench
    metrics = summary.get("metrics") or {}
    p.cond("Benchmarked", True, "Benchmarked",
           f"recall {metrics.get('recall')}, sequenceAccuracy {metrics.get('sequenceAccuracy')} "
           f"({summary.get('verdictHead') or 'ctc'} head)")
    reason = {"improvement": "Improvement", "regression": "Regression"}.get(verdict, "Neutral")
    if verdict == "neutral" and summary.get("reason") in ("Inconclusive", "NoBaseline"):
        reason = str(summary["reason"])
    p.cond("Improved", verdict == "improvement", reason, _verdict_message(verdict, summary, primary))
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


def _startup_settled(p: _Pass, jobs: Mapping[str, JobView]) -> None:
    """StartupBlocked=True ends once the latest stage's pod has started, including one that waited, started and
    finished between two passes (running_stage only sees unfinished Jobs)."""
    if not condition_true(p.new, "StartupBlocked"):
        return
    latest = next((jobs[s] for s in ("benchmark", "train", "prepare") if s in jobs), None)
    if latest and (latest.complete or any(pod.running or pod.terminated_reason for pod in latest.pods[-1:])):
        p.cond("StartupBlocked", False, "Started", f"the {latest.stage} pod started")


def _progress(p: _Pass, line: Mapping[str, Any]) -> None:
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


def stop_request(meta: Mapping[str, Any]) -> str | None:
    """The reason of a stop request (annotation quranft.io/stop-requested), or None when there is none."""
    annotations = meta.get("annotations") or {}
    if STOP_ANNOTATION not in annotations:
        return None
    return str(annotations[STOP_ANNOTATION] or "").strip() or f"annotation {STOP_ANNOTATION} is set"


def terminal_stop_notice(meta: Mapping[str, Any], status: Mapping[str, Any], now: datetime) -> dict[str, Any] | None:
    """A stop request on a run that already ended: the new status saying it was ignored, or None (no request,
    a Stopped run, or already said). derive() never rewrites a terminal run; this adds only the condition."""
    stop = stop_request(meta)
    if stop is None or status.get("phase") == "Stopped" or get_condition(status, "Stopped"):
        return None
    new = copy.deepcopy(dict(status))
    set_condition(new.setdefault("conditions", []), "Stopped", "False", "StopIgnored",
                  f"stop request ignored: the run had already ended ({status.get('phase')}) (request: {stop})",
                  int(meta.get("generation") or 1), now)
    return new


def _training_started(p: _Pass, job: JobView) -> None:
    """status.training: the group's shape (from the spec) and when the first training Job started."""
    training = p.new.setdefault("training", {})
    training.setdefault("nodes", nodes_of(p.spec))
    training.setdefault("devicesPerNode", devices_per_node(p.spec))
    if job.start_time and not training.get("startTime"):
        training["startTime"] = now_iso(job.start_time)
    if job.attempt > int(training.get("groupRestarts") or 0):  # a restart whose status write was lost
        training["groupRestarts"] = job.attempt
        training["groupFailures"] = max(job.group_failures, int(training.get("groupFailures") or 0))


def _tracking(p: _Pass, stage: str, summary: Mapping[str, Any] | None) -> None:
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


def _training_summary(p: _Pass, summary: Mapping[str, Any] | None) -> None:
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


def _group_failed(p: _Pass, job: JobView) -> Derived:
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


def _resumes(p: _Pass, job: JobView) -> None:
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


# --- transitions -> events ------------------------------------------------------------------------------

def transition_events(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(type, reason, message) for each phase change and each condition whose status or reason changed."""
    events: list[tuple[str, str, str]] = []
    if old.get("phase") != new.get("phase"):
        events.append(("Normal", f"Phase{new.get('phase')}", f"phase {old.get('phase') or '-'} -> {new.get('phase')}"))
    before = {c["type"]: c for c in old.get("conditions") or []}
    for cond in new.get("conditions") or []:
        prev = before.get(cond["type"])
        if prev and prev.get("status") == cond.get("status") and prev.get("reason") == cond.get("reason"):
            continue
        kind = "Warning" if cond["type"] in WARNING_CONDITIONS and cond.get("status") == "True" and \
            cond.get("reason") not in NORMAL_WAITS else "Normal"
        events.append((kind, cond.get("reason") or cond["type"],
                       f"{cond['type']}={cond.get('status')}: {cond.get('message', '')}"))
    return events


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning `old` into `new` at the top level (None removes a key); {} if equal."""
    patch: dict[str, Any] = {}
    for key in set(old) | set(new):
        if old.get(key) != new.get(key):
            patch[key] = copy.deepcopy(new.get(key))
    return patch
