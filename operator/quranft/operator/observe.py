"""What a pass observes: compact, immutable views of the children we watch (Jobs, their pods), parsed from API
objects, and `gather`, which collects one pass's observations (status.Observed) from kopf's indexes and the
few API reads they cannot answer.

kopf indexes keep these views instead of whole bodies, so memory stays small with hundreds of runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Mapping

from quranft.contract.config import ConfigError
from quranft.contract.keys import GROUP_FAILURES_ANNOTATION, LABEL_ATTEMPT, LABEL_GENERATION, LABEL_STAGE

from . import builders
from .admission import Admission, Entry, charged_gpus
from .settings import OperatorSettings
from .stages import current_stage

if TYPE_CHECKING:
    from .kube import Kube
    from .status import Observed


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@dataclass(frozen=True)
class PodView:
    name: str
    phase: str = "Pending"
    created: datetime | None = None
    exit_code: int | None = None
    terminated_reason: str | None = None
    message: str | None = None  # termination message (or log tail with FallbackToLogsOnError)
    waiting_reason: str | None = None
    waiting_message: str | None = None
    running: bool = False
    disrupted: bool = False  # DisruptionTarget condition: preemption, eviction, node drain
    job_uid: str = ""  # the Job that created it (a same-named Job of a deleted resource has another uid)
    unschedulable: str | None = None  # the scheduler's message while PodScheduled is False
    scheduled: datetime | None = None  # when PodScheduled turned True: a placed pod's start-up clock starts here
    completion_index: int | None = None  # rank of the pod in an Indexed (multi-node) Job; None otherwise


@dataclass(frozen=True)
class JobView:
    name: str
    stage: str
    generation: int = 1
    uid: str = ""
    owner_uid: str = ""  # the QuranFineTune that owns it
    created: datetime | None = None
    suspended: bool = False
    active: int = 0
    ready: int = 0
    succeeded: int = 0
    failed: int = 0
    complete: bool = False
    failed_reason: str | None = None  # Job condition Failed: BackoffLimitExceeded, DeadlineExceeded, PodFailurePolicy
    failed_message: str | None = None
    start_time: datetime | None = None
    completion_time: datetime | None = None
    pods: tuple[PodView, ...] = field(default_factory=tuple)
    quota_message: str | None = None  # FailedCreate event of the Job controller (ResourceQuota)
    indexed: bool = False  # completionMode Indexed: a multi-node group (builders.build_rank_job_fields)
    completions: int = 1
    attempt: int = 0  # which restart of the group this Job is (label quranft.io/attempt)
    group_failures: int = 0  # group failures counted before this attempt (its annotation)
    failed_time: datetime | None = None  # when the Failed condition was set
    kueue_reason: str | None = None  # a queued Job's Workload: Pending (quota), Preempted, ... (kueue_state)
    kueue_message: str | None = None

    @property
    def finished(self) -> bool:
        return self.complete or self.failed_reason is not None


def pod_view(pod: Mapping[str, Any]) -> PodView:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    view: dict[str, Any] = {"name": meta.get("name", ""), "phase": status.get("phase") or "Pending",
                            "created": parse_time(meta.get("creationTimestamp")),
                            "job_uid": _controller_uid(meta), "completion_index": _completion_index(meta)}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "DisruptionTarget" and cond.get("status") == "True":
            view["disrupted"] = True
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and \
                cond.get("reason") == "Unschedulable":
            view["unschedulable"] = cond.get("message") or "Unschedulable"
        if cond.get("type") == "PodScheduled" and cond.get("status") == "True":
            view["scheduled"] = parse_time(cond.get("lastTransitionTime"))
    statuses = status.get("containerStatuses") or []
    if statuses:
        state = statuses[0].get("state") or {}
        last = statuses[0].get("lastState") or {}
        term = state.get("terminated") or last.get("terminated")
        if term:
            view.update(exit_code=term.get("exitCode"), terminated_reason=term.get("reason"),
                        message=term.get("message"))
        if state.get("waiting"):
            view.update(waiting_reason=state["waiting"].get("reason"),
                        waiting_message=state["waiting"].get("message"))
        if state.get("running"):
            view["running"] = True
    return PodView(**view)


def job_view(job: Mapping[str, Any], pods: tuple[PodView, ...] = (), quota_message: str | None = None) -> JobView:
    meta, spec, status = job.get("metadata") or {}, job.get("spec") or {}, job.get("status") or {}
    labels = meta.get("labels") or {}
    complete, failed_reason, failed_message, failed_time = False, None, None, None
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            complete = True
        elif cond.get("type") == "Failed":
            failed_reason, failed_message = cond.get("reason") or "Failed", cond.get("message")
            failed_time = parse_time(cond.get("lastTransitionTime"))
    return JobView(
        name=meta.get("name", ""), stage=labels.get(LABEL_STAGE, ""),
        generation=int(labels.get(LABEL_GENERATION) or 1), uid=meta.get("uid", ""), owner_uid=_controller_uid(meta),
        created=parse_time(meta.get("creationTimestamp")), suspended=bool(spec.get("suspend")),
        active=int(status.get("active") or 0), ready=int(status.get("ready") or 0),
        succeeded=int(status.get("succeeded") or 0), failed=int(status.get("failed") or 0),
        complete=complete, failed_reason=failed_reason, failed_message=failed_message,
        start_time=parse_time(status.get("startTime")), completion_time=parse_time(status.get("completionTime")),
        pods=tuple(sorted(pods, key=lambda p: (p.created.timestamp() if p.created else 0.0, p.name))),
        quota_message=quota_message, indexed=spec.get("completionMode") == "Indexed",
        completions=int(spec.get("completions") or 1), attempt=_int(labels.get(LABEL_ATTEMPT)),
        group_failures=_int((meta.get("annotations") or {}).get(GROUP_FAILURES_ANNOTATION)), failed_time=failed_time,
    )


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):  # a hand-edited label is not a reason to stop reconciling
        return 0


def _completion_index(meta: Mapping[str, Any]) -> int | None:
    from .builders import COMPLETION_INDEX

    raw = (meta.get("annotations") or {}).get(COMPLETION_INDEX, (meta.get("labels") or {}).get(COMPLETION_INDEX))
    try:
        return int(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None


def _controller_uid(meta: Mapping[str, Any]) -> str:
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid", ""))
    return ""


def kueue_state(workload: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """(reason, message) of why Kueue holds a Workload back: Evicted (e.g. Preempted by a higher-priority
    Workload) first, else QuotaReserved=False (e.g. "insufficient unused quota ..."); None when admitted/unknown."""
    conds = {c.get("type"): c for c in ((workload or {}).get("status") or {}).get("conditions") or []}
    evicted, reserved = conds.get("Evicted"), conds.get("QuotaReserved")
    if evicted and evicted.get("status") == "True":
        return evicted.get("reason") or "Evicted", evicted.get("message") or ""
    if reserved and reserved.get("status") == "False":
        return reserved.get("reason") or "Pending", reserved.get("message") or ""
    return None


# --- gathering one pass's observations (handlers.reconcile) ---------------------------------------------------

def gather(spec: Mapping[str, Any], meta: Mapping[str, Any], status: Mapping[str, Any], now: datetime, kube: Kube,
           cfg: OperatorSettings, admission: Admission, run_jobs: Mapping[Any, Any], run_pods: Mapping[Any, Any],
           runs: Mapping[Any, Any], created: Mapping[str, Mapping[str, Any]] | None,
           read_progress: Callable[[Mapping[str, JobView]], Mapping[str, Any] | None]) -> Observed:
    """What exists for this run, from kopf's indexes (run_jobs, run_pods, runs: handlers.py) and the few API reads
    they cannot answer; `created`: Jobs this pass just created or adopted (stage -> object), which the index may
    not show yet; `read_progress`: the training pod's progress when it is due (handlers._read_progress)."""
    from . import status as st  # status.py imports this module's views
    ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
    config_error = _config_error(spec, meta, cfg)

    jobs: dict[str, JobView] = {}
    for view in run_jobs.get((ns, name), []):
        # A same-named Job of a deleted predecessor is not ours. Of a multi-node run's training attempts the
        # newest counts (attempts only go up; an older one is a failed group kept for its logs).
        if view.owner_uid == uid and (view.stage not in jobs or view.attempt > jobs[view.stage].attempt):
            jobs[view.stage] = view
    lost: set[str] = set()
    current = current_stage(status)
    named = (status.get("jobs") or {}).get(current) if current else None
    newest = jobs.get(current) if current else None
    if current and named and (newest is None or (newest.name != named
                                                 and newest.attempt <= _attempt_named(status, current))):
        # The index may simply lag behind our own create; ask the API before calling it lost. (An index newer
        # than the status is a restart whose status write was lost: the newer attempt counts.)
        raw = (created or {}).get(current)
        if raw is None or raw["metadata"]["name"] != named:
            raw = kube.get_job(ns, named)
        if raw is None or (raw["metadata"].get("ownerReferences") or [{}])[0].get("uid") != uid:
            lost.add(current)
            jobs.pop(current, None)
        else:
            jobs[current] = job_view(raw)
    jobs = {stage: _with_pods(view, run_pods.get((ns, name, stage), [])) for stage, view in jobs.items()}

    if current in jobs:
        job = jobs[current]
        if not job.finished and not job.suspended and not job.pods and job.created and \
                (now - job.created).total_seconds() > 1:
            jobs[current] = replace(job, quota_message=kube.failed_create_message(ns, job.name))
        # Kueue says why a queued Job waits (quota, preemption). A GET, not an index: without Kueue the
        # Workload CRD does not exist and a kopf index on it would fail to start.
        if spec.get("queueName") and job.suspended and not job.finished:
            state = kueue_state(kube.kueue_workload(ns, job.uid))
            if state:
                jobs[current] = replace(jobs[current], kueue_reason=state[0], kueue_message=state[1])

    entries = list(runs.get(ns, []))
    admitted, admission_message = True, ""
    if not config_error and not st.condition_true(status, "QuotaAdmitted") and not admission.unlimited:
        everyone = [e for key in runs for e in runs[key]]
        admitted, admission_message = admission.admit((ns, name), [_entry(e) for e in everyone])

    progress = read_progress(jobs)

    return st.Observed(now=now, jobs=jobs, config_error=config_error, admitted=admitted,
                       admission_message=admission_message, runs=tuple(entries), progress=progress,
                       lost=frozenset(lost), image_pull_deadline_s=cfg.image_pull_deadline_seconds,
                       default_startup_deadline_s=cfg.startup_deadline_seconds)

def _config_error(spec: Mapping[str, Any], meta: Mapping[str, Any], cfg: OperatorSettings) -> str | None:
    try:
        builders.validate_distributed(spec)
    except ConfigError as exc:
        return str(exc)
    try:
        builders.validate_run_config(builders.run_config_doc(spec, meta))
    except ConfigError as exc:
        return f"the trainer would reject this spec: {exc}"
    gpus = charged_gpus(spec)
    if cfg.max_gpus_per_namespace and gpus > cfg.max_gpus_per_namespace:
        shape = f"resources.nodes x gpus = {gpus}" if builders.nodes_of(spec) > 1 else f"resources.gpus: {gpus}"
        return f"{shape} exceeds the operator's limit of {cfg.max_gpus_per_namespace} GPUs per namespace"
    return None


def _attempt_named(status: Mapping[str, Any], stage: str) -> int:
    """The attempt of the Job the status names for `stage` (only training has more than one)."""
    return int((status.get("training") or {}).get("groupRestarts") or 0) if stage == "train" else 0


def _with_pods(job: JobView, pods: Any) -> JobView:
    mine = tuple(p for p in pods if not p.job_uid or p.job_uid == job.uid)
    return replace(job, pods=tuple(sorted(mine, key=lambda p: (p.created.timestamp() if p.created else 0.0, p.name))))


def _entry(e: Mapping[str, Any]) -> Entry:
    return Entry(namespace=e["namespace"], name=e["name"], created=e["created"], gpus=e["gpus"],
                 holding=e["holding"], finished=e["finished"])
