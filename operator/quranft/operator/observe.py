"""Compact, immutable views of the children we watch (Jobs, their pods), parsed from API objects.

kopf indexes keep these views instead of whole bodies, so memory stays small with hundreds of runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

from quranft.contract.keys import GROUP_FAILURES_ANNOTATION, LABEL_ATTEMPT, LABEL_GENERATION, LABEL_STAGE


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
