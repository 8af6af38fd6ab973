"""When a resource's next reconcile pass runs: the wake-up registry of the per-resource pass loops, and the
clock a pass still needs (the few decisions that depend on elapsed time rather than on a change we watch).

Passes are event-driven (handlers.py): a change of the resource or of one of its children wakes its loop at once.
Time alone also changes some decisions, though no watch event says so; `next_pass_in` names each of them, so a
loop sleeps exactly until the earliest, and otherwise until the slow safety resync.
"""
from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, Hashable, Mapping

from . import status as st
from .observe import JobView

# Until a Job has pods, the Job controller's FailedCreate event (ResourceQuota) is the only news, and an Event is not
# a change of any object we watch; the same for a Kueue Workload's reason while Kueue holds a Job suspended.
UNWATCHED_RECHECK_S = 5.0
# The operator reads the Job controller's FailedCreate event once the Job is older than this without pods.
FAILED_CREATE_AFTER_S = 1.0
SLACK_S = 0.25  # a deadline is checked just after it, not just before


class Wake:
    """One loop's wake-up: an asyncio.Event, and a count of the wakes so a pass knows which ones it has seen.

    A pass reads `count` when it really starts (in the executor, maybe long after it was queued): a wake that came
    while the pass waited for a thread is seen by that pass and costs no second one. Set and slept on only on the
    event loop; the count is read from the pass's thread (an int read)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.count = 0

    def set(self) -> None:
        self.count += 1
        self.event.set()

    async def sleep(self, seconds: float | None, seen: int) -> bool:
        """Unless a wake came after the pass that saw `seen` began, wait for one at most `seconds` (None: no
        limit); True when woken."""
        if self.count != seen:
            return True
        self.event.clear()
        return await sleep_until_woken(self.event, seconds)


class Wakeups:
    """key -> the Wakes of the loops passing that resource. Only used on the operator's event loop.

    A key can have two loops for a moment: a resource deleted and re-created with the same name (another uid)
    while the old one's loop exits; waking both is harmless."""

    def __init__(self) -> None:
        self._wakes: dict[Hashable, set[Wake]] = defaultdict(set)

    def register(self, key: Hashable) -> Wake:
        wake = Wake()
        self._wakes[key].add(wake)
        return wake

    def unregister(self, key: Hashable, wake: Wake) -> None:
        wakes = self._wakes.get(key)
        if wakes is not None:
            wakes.discard(wake)
            if not wakes:
                del self._wakes[key]

    def wake(self, key: Hashable) -> bool:
        """Wake the loops of `key`; False when there is none (not spawned yet: its first pass comes anyway)."""
        wakes = self._wakes.get(key)
        for wake in wakes or ():
            wake.set()
        return bool(wakes)

    def __len__(self) -> int:
        return len(self._wakes)


Topic = tuple  # what a waiting run waits on: ("budget",), ("data", ns, claim, dataHash) or ("run", ns, name)
BUDGET_FIELDS = ("holding", "finished", "gpus")
DATA_FIELDS = ("dataReady", "preparing", "claim", "dataHash")
RUN_FIELDS = ("phase", "resultsPath", "claim")
CHANGE_MEMORY_S = 300.0  # how long a topic's last change is remembered (far longer than any pass)


class Waiters:
    """Runs whose next step waits on another run, by what they wait on, and when each topic last changed.

    Only the runs waiting on the topic a change touches are woken: a sibling's data becoming ready wakes the runs
    waiting for that data, not every waiting run (a burst of N same-data runs costs O(N) passes, not O(N^2)).
    kopf gives each resource a shallow copy of the operator's memo: shared state lives in mutable objects like
    this one, never in a plain attribute a handler would rebind. Used only on the event loop."""

    def __init__(self) -> None:
        self.topic_of: dict[Hashable, Topic] = {}
        self.by_topic: dict[Topic, set[Hashable]] = defaultdict(set)
        self.last_change: dict[Topic, float] = {}

    def wait(self, key: Hashable, topic: Topic | None) -> None:
        """`key` now waits on `topic` (None: on nothing)."""
        old = self.topic_of.pop(key, None)
        if old is not None:
            self.by_topic[old].discard(key)
            if not self.by_topic[old]:
                del self.by_topic[old]
        if topic is not None:
            self.topic_of[key] = topic
            self.by_topic[topic].add(key)

    def changed(self, key: Hashable, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None,
                now: float) -> list[Hashable]:
        """Run `key`'s index entry went from `old` to `new` (None: absent): the waiters to wake."""
        topics = changed_topics(old, new)
        for topic in topics:
            self.last_change[topic] = now
        if len(self.last_change) > 1024:
            self.last_change = {t: at for t, at in self.last_change.items() if now - at < CHANGE_MEMORY_S}
        return [waiter for topic in topics for waiter in self.by_topic.get(topic, ()) if waiter != key]

    def changed_since(self, topic: Topic | None, moment: float) -> bool:
        return topic is not None and self.last_change.get(topic, float("-inf")) >= moment


def changed_topics(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> set[Topic]:
    """The topics a change of one run's index entry (handlers.run_entry) touches. A new run frees no budget slot and
    brings no data unless it already has some (an operator restart sees every run anew)."""
    topics: set[Topic] = set()
    if old is None and new is None:
        return topics

    def differs(fields: tuple[str, ...]) -> bool:
        return old is None or new is None or any(old.get(f) != new.get(f) for f in fields)

    if old is not None and differs(BUDGET_FIELDS):
        topics.add(("budget",))
    if differs(DATA_FIELDS) and (old is not None or new.get("dataReady") or new.get("preparing")):  # type: ignore[union-attr]
        topics |= {("data", e["namespace"], e["claim"], e["dataHash"]) for e in (old, new) if e is not None}
    if differs(RUN_FIELDS):
        e = new if new is not None else old
        topics.add(("run", e["namespace"], e["name"]))  # type: ignore[index]
    return topics


def wait_topic(status: Mapping[str, Any], entry: Mapping[str, Any], baseline_ref: str | None) -> Topic | None:
    """What a run with this (new) status waits on; `entry` is its own index entry (handlers.run_entry)."""
    if _waiting(status, "QuotaAdmitted", "OperatorBudget"):
        return ("budget",)
    if _waiting(status, "DataReady", "WaitingForSibling"):
        return ("data", entry["namespace"], entry["claim"], entry["dataHash"])
    if _waiting(status, "Benchmarked", "WaitingForBaseline") and baseline_ref:
        return ("run", entry["namespace"], baseline_ref)
    return None


def _waiting(status: Mapping[str, Any], ctype: str, reason: str) -> bool:
    cond = st.get_condition(status, ctype)
    return bool(cond and cond.get("status") == "False" and cond.get("reason") == reason)


async def sleep_until_woken(event: asyncio.Event, seconds: float | None) -> bool:
    """Wait for `event` at most `seconds` (None: no limit); True when woken, False at the timeout."""
    if seconds is not None and seconds <= 0:
        return event.is_set()
    try:
        await asyncio.wait_for(event.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


def waits_on_others(status: Mapping[str, Any]) -> bool:
    """A run whose next step waits for another run's change: the operator budget (a slot frees when another run
    ends training or is deleted), a sibling preparing the same data, a baseline that has not finished."""
    return any(_waiting(status, ctype, reason) for ctype, reason in (
        ("QuotaAdmitted", "OperatorBudget"), ("DataReady", "WaitingForSibling"), ("Benchmarked", "WaitingForBaseline")))


def next_pass_in(spec: Mapping[str, Any], status: Mapping[str, Any], jobs: Mapping[str, JobView], now: datetime, *,
                 progress_in: float | None, image_pull_deadline_s: int, default_startup_deadline_s: int) -> float | None:
    """Seconds until the earliest time-based decision for this run, or None when only a change can alter it.

    `status` is the status this pass wrote; `jobs` the run's Jobs as observed; `progress_in` when the training
    log is due to be read again (None: no training pod runs). Waking early costs one idle pass; waking late would
    delay a decision, so each candidate is the exact moment a rule in status.derive turns.
    """
    due: list[float] = []

    def at(moment: datetime | None, after: timedelta | float = 0.0) -> None:
        if moment is None:
            return
        delta = after if isinstance(after, timedelta) else timedelta(seconds=after)
        seconds = (moment + delta - now).total_seconds()
        if seconds > -SLACK_S:  # a moment already passed was decided by this pass
            due.append(max(0.0, seconds) + SLACK_S)

    if status.get("phase") in st.TERMINAL:
        ttl = spec.get("ttlSecondsAfterFinished")
        done = st.parse_time(status.get("completionTime"))
        if ttl is not None and not status.get("cleanedUp") and done is not None:
            # The cleanup runs in a pass that begins terminal: one that just ended the run leaves it to the next,
            # so a moment already passed (ttl 0, a 1 s completionTime) is due at once, not "decided".
            return max(0.0, (done + timedelta(seconds=float(ttl)) - now).total_seconds()) + SLACK_S
        return None

    if progress_in is not None:
        due.append(max(0.0, progress_in))
    for job in jobs.values():
        if job.finished:
            # The pods' final states may still be on their way; derive decides without them after a grace.
            at(job.created, st.OBSERVATION_GRACE)
            at(job.completion_time, st.OBSERVATION_GRACE)
            at(job.failed_time, st.OBSERVATION_GRACE)
            at(job.failed_time, st.GROUP_STOP_WAIT)
            continue
        if job.suspended:
            if spec.get("queueName"):
                due.append(UNWATCHED_RECHECK_S)  # Kueue's Workload says why it waits; we do not watch Workloads
            continue
        if not job.pods:
            at(job.created, FAILED_CREATE_AFTER_S)
            if job.created is None or (now - job.created).total_seconds() >= FAILED_CREATE_AFTER_S:
                due.append(UNWATCHED_RECHECK_S)
        deadline = spec.get("startupDeadlineSeconds")
        for pod in st.current_pods(job):
            if pod.running or pod.terminated_reason or pod.phase in ("Running", "Succeeded", "Failed"):
                continue
            if deadline is not None:  # counts every wait (status.startup_problem)
                at(pod.created, float(deadline))
                continue
            for limit in (image_pull_deadline_s, default_startup_deadline_s):  # which applies depends on the wait
                at(pod.scheduled or pod.created, float(limit))
    finite = [d for d in due if math.isfinite(d)]
    return min(finite) if finite else None
