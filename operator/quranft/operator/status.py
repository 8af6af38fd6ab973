"""What status derivation is made of: the observations (Observed), the plan (Derived), the draft a pass builds
(Draft), conditions, termination messages, failure and start-up classification, transition events. No I/O.

The derivation itself, one pure function from (spec, metadata, current status, observations) to the new status
and the next action, is steps.derive: a pipeline over the stage table (stages.PIPELINE). observe.py gathers the
observations; handlers.apply carries out the plan.

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
from typing import Any, Callable, Collection, Mapping

from quranft.contract.exits import PREEMPTED_REASON, REASON_BY_EXIT
from quranft.contract.keys import STOP_ANNOTATION
from quranft.contract.summaries import MAX_TERMINATION_BYTES as MAX_MESSAGE_BYTES

from .builders import total_gpus
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
PROGRESS_KEYS = ("step", "maxSteps", "loss", "valWer", "valWerStep", "samplesPerSecond", "worldSize", "updatedAt",
                 "eta", "etaSeconds")  # eta: the operator's estimate (eta.py), added to the pushed record
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
    # The index entries (handlers.run_entry) of the runs in this namespace: siblings' data, the baseline run.
    runs: tuple[Mapping[str, Any], ...] = ()
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
    baseline_results: str | None = None  # with action "benchmark": the baseline run's results file
    clean_up: tuple[str, ...] | None = None  # the TTL passed, cleanup policy DeleteJobs: the Jobs to delete


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

class Draft:
    """The status a pass is building, and the plan so far; the steps (steps.py) change it."""

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
        self.baseline_results: str | None = None
        self.clean_up: tuple[str, ...] | None = None

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
        return Derived(self.new, self.action, self.suspend, self.attempt, self.group_failures, self.delete_jobs,
                       self.baseline_results, self.clean_up)

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


def stop_request(meta: Mapping[str, Any]) -> str | None:
    """The reason of a stop request (annotation quranft.io/stop-requested), or None when there is none."""
    annotations = meta.get("annotations") or {}
    if STOP_ANNOTATION not in annotations:
        return None
    return str(annotations[STOP_ANNOTATION] or "").strip() or f"annotation {STOP_ANNOTATION} is set"


def terminal_stop_notice(meta: Mapping[str, Any], status: Mapping[str, Any], now: datetime) -> dict[str, Any] | None:
    """A stop request on a run that already ended: the new status saying it was ignored, or None (no request,
    a Stopped run, or already said). steps.derive never rewrites a terminal run; this adds only the condition."""
    stop = stop_request(meta)
    if stop is None or status.get("phase") == "Stopped" or get_condition(status, "Stopped"):
        return None
    new = copy.deepcopy(dict(status))
    set_condition(new.setdefault("conditions", []), "Stopped", "False", "StopIgnored",
                  f"stop request ignored: the run had already ended ({status.get('phase')}) (request: {stop})",
                  int(meta.get("generation") or 1), now)
    return new


# --- transitions -> events ------------------------------------------------------------------------------

def transition_events(old: Mapping[str, Any], new: Mapping[str, Any], warnings: Collection[str] = WARNING_CONDITIONS,
                      skip: Callable[[Mapping[str, Any]], bool] | None = None) -> list[tuple[str, str, str]]:
    """(type, reason, message) for each phase change and each condition whose status or reason changed.

    A Warning when a condition of the `warnings` set turns True or a condition's reason is in the set (a wait that
    is the normal course, NORMAL_WAITS, stays Normal); no event for the conditions `skip` returns True for (their
    own event says more). The runs' and the campaigns' (campaign_derive.WARNING_CONDITIONS) events alike."""
    events: list[tuple[str, str, str]] = []
    if old.get("phase") != new.get("phase"):
        events.append(("Normal", f"Phase{new.get('phase')}", f"phase {old.get('phase') or '-'} -> {new.get('phase')}"))
    before = {c["type"]: c for c in old.get("conditions") or []}
    for cond in new.get("conditions") or []:
        prev = before.get(cond["type"])
        if prev and prev.get("status") == cond.get("status") and prev.get("reason") == cond.get("reason"):
            continue
        if skip is not None and skip(cond):
            continue
        warning = ((cond["type"] in warnings and cond.get("status") == "True") or cond.get("reason") in warnings) \
            and cond.get("reason") not in NORMAL_WAITS
        events.append(("Warning" if warning else "Normal", cond.get("reason") or cond["type"],
                       f"{cond['type']}={cond.get('status')}: {cond.get('message', '')}"))
    return events


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning `old` into `new` at the top level (None removes a key); {} if equal."""
    patch: dict[str, Any] = {}
    for key in set(old) | set(new):
        if old.get(key) != new.get(key):
            patch[key] = copy.deepcopy(new.get(key))
    return patch
