"""The newest pushed progress record of each run, and when a pass may copy it into status.progress.

The trainer's rank 0 pushes its progress record to the operator (progress_server.py) instead of the operator
reading every training pod's log each progressIntervalSeconds (one pod-log API request per run per interval).
The endpoint stores the record here and wakes the run's pass (wakeups.py); the pass `take`s it at most once per
`interval`, so status.progress is written at most that often and lags the trainer by at most `interval` plus a
pass. A training pod that has pushed nothing for `stale_after` seconds (an image without the client, egress to
the operator blocked) falls back to the old log read, once per interval; the pass logs that once per pod and
counts each read (metrics.progress_log_reads). A read that finds no progress line yet (a trainer still importing
and loading its model: the real one took 90 s on a loaded 2-core box) doubles the wait before the next one, up
to MAX_EMPTY_READ_WAIT_S; a line found resets it.

All runs together write status.progress at most `rate` times a second (0: no limit; write_slots.py): each run
holds its next write slot, claimed when it writes, so up to rate x interval runs each is written every interval
and beyond that every runs / rate seconds, in turn: the API server's cost of idle training stays flat (1,000 runs
at the default 10/s: a write per run every 100 s, 0.6 requests per run per minute). `push_after` tells the pod
when its next record would be written (PUSH_LEAD_S before that slot), so it pushes about once per write and the
record written is fresh. A record with a new validation or checkpoint step (contract.push.news: what a campaign's
early stopping and a stop's resume point read) skips both the interval and the slots.

Shared between the operator's event loop (push) and kopf's executor threads (take), hence the lock. The clock is
injected (time.monotonic), so the unit tests drive it.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Mapping

from quranft.contract.push import news

from .eta import Anchor, anchor_of, with_eta
from .write_slots import WriteSlots

MAX_EMPTY_READ_WAIT_S = 120.0
PUSH_LEAD_S = 1.0  # a pod is asked to push this long before its write slot, so the record written is fresh
FRESH_S = 5.0  # a record pushed this close to its write is not pushed again before it: the next one is asked for
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Take:
    """What a pass gets: a pushed record to copy (with eta), or the order to read the log (`read_log`);
    `first_fallback` on the first log read for this pod (the pass logs it)."""
    record: dict[str, Any] | None = None
    read_log: bool = False
    first_fallback: bool = False


@dataclass
class _Run:
    pod: str | None = None  # the training pod the pass last saw running (rank 0)
    seen_at: float = 0.0  # when the pass first saw that pod
    pushed_pod: str | None = None  # the pod of the newest push ...
    pushed_at: float | None = None  # ... when it arrived ...
    pending: dict[str, Any] | None = None  # ... and its record, until a pass takes it
    taken_at: float = float("-inf")  # when a pass last took progress (pushed or read from the log)
    anchor: Anchor | None = None  # the attempt's first progress, for the eta
    anchor_pod: str | None = None
    fallback_pods: set[str] = field(default_factory=set)  # pods already logged as falling back
    wake_due: bool = False  # a delayed wake is scheduled for the pending record
    read_wait: float | None = None  # the wait before the next log read (doubled by reads that found nothing)
    slot: float | None = None  # the write slot this run holds (rate-limited stores only)
    last_taken: dict[str, Any] | None = None  # the record last taken, to tell news (contract.push.news)


class ProgressStore:
    def __init__(self, interval: float, stale_after: float, clock: Callable[[], float] = time.monotonic,
                 rate: float = 0.0):
        self.interval, self.stale_after, self._clock = interval, stale_after, clock
        self._slots = WriteSlots(rate)
        self._runs: dict[Hashable, _Run] = {}
        self._lock = threading.Lock()

    # --- the endpoint's side ------------------------------------------------------------------------------
    def push(self, run: Hashable, pod: str, record: Mapping[str, Any]) -> float | None:
        """Keep `record` as the run's newest (latest wins). Returns the seconds until its pass may take it
        (0: wake it now), or None when a wake for it is already scheduled."""
        now = self._clock()
        with self._lock:
            state = self._runs.setdefault(run, _Run())
            state.pushed_pod, state.pushed_at, state.pending = pod, now, dict(record)
            if self._news(state, pod):
                state.wake_due = False
                return 0.0  # a new validation or checkpoint result is written at once
            if state.wake_due:
                return None
            delay = max(0.0, self._due(state, state.taken_at + self.interval, now) - now)
            state.wake_due = delay > 0
            return delay

    def wake_fired(self, run: Hashable) -> None:
        with self._lock:
            if run in self._runs:
                self._runs[run].wake_due = False

    # --- the pass's side -----------------------------------------------------------------------------------
    def take(self, run: Hashable, pod: str) -> Take:
        """The pass of `run`, whose rank-0 training pod `pod` runs: what to copy into status.progress now."""
        now = self._clock()
        with self._lock:
            state = self._runs.setdefault(run, _Run())
            if state.pod != pod:
                state.pod, state.seen_at = pod, now
            urgent = self._news(state, pod)
            if now - state.taken_at < self.interval and not urgent:
                return Take()
            if state.pending is not None and state.pushed_pod == pod:
                if not urgent and now < self._due(state, state.taken_at + self.interval, now):
                    return Take()
                record, state.pending, state.taken_at = state.pending, None, now
                state.last_taken = record
                self._claim_next(state, now)
                state.read_wait = None
                return Take(record=self._with_eta(state, pod, record))
            reads_at = state.taken_at + (state.read_wait or self.interval)
            if self._stale(state, pod, now) and now >= reads_at and now >= self._due(state, reads_at, now):
                state.taken_at = now
                self._claim_next(state, now)
                first = pod not in state.fallback_pods
                state.fallback_pods.add(pod)
                return Take(read_log=True, first_fallback=first)
            return Take()

    def from_log(self, run: Hashable, pod: str, record: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """A record the fallback read from the log, with its eta."""
        with self._lock:
            state = self._runs.setdefault(run, _Run())
            if record is None:
                state.read_wait = min(MAX_EMPTY_READ_WAIT_S, 2 * (state.read_wait or self.interval))
                return None
            state.read_wait = None
            return self._with_eta(state, pod, record)

    def next_in(self, run: Hashable, pod: str) -> float | None:
        """Seconds until this run's pass has progress to take (a pending record once the write interval
        passed, or the fallback's next log read); None while it waits for a push (which wakes it)."""
        now = self._clock()
        with self._lock:
            state = self._runs.get(run)
            if state is None or state.pod != pod:
                return 0.0  # not seen yet: the next take registers the pod
            if state.pending is not None and state.pushed_pod == pod:
                if self._news(state, pod):
                    return 0.0
                return max(0.0, self._due(state, state.taken_at + self.interval, now) - now)
            reads_at = max(state.taken_at + (state.read_wait or self.interval),
                           self._last_heard(state, pod) + self.stale_after)
            if self._slots.gap:  # the read's slot, without claiming one for a read a push may make needless
                reads_at = max(reads_at, state.slot if state.slot is not None else self._slots.peek(reads_at, now))
            return max(0.0, reads_at - now)

    def push_after(self, run: Hashable) -> float:
        """Seconds the run's pod should wait before its next push: until shortly before its next write (the
        pending record's, or if that one is written right away, the one after)."""
        now = self._clock()
        with self._lock:
            state = self._runs.get(run)
            if state is None:
                return self.interval
            opens = state.taken_at + self.interval
            write = self._due(state, opens, now) if state.pending is not None else max(opens, state.slot or opens)
            if write - now <= FRESH_S:  # written soon enough: the pod's next record goes to the next slot,
                write = max(write, now)  # claimed at that write; while the slots are all held up to where it
                claim = self._slots.peek(write + self.interval, now)  # would go, more are claimed till then
                write = claim + (write - now if claim > write + self.interval else 0.0)
            return max(PUSH_LEAD_S, write - now - PUSH_LEAD_S)

    def forget(self, run: Hashable) -> None:
        with self._lock:
            state = self._runs.pop(run, None)
            if state is not None and state.slot is not None:
                self._slots.release(state.slot)

    # --- helpers ---------------------------------------------------------------------------------------------
    @staticmethod
    def _news(state: _Run, pod: str) -> bool:
        """A pending record of this pod with a validation or checkpoint step the last one written lacked: it
        skips the interval and the write slots (rare: once per validation or checkpoint)."""
        return state.pending is not None and state.pushed_pod == pod and news(state.pending, state.last_taken)

    def _due(self, state: _Run, opens: float, now: float) -> float:
        """When the run may write what is due at `opens`: then, or in a rate-limited store at its write slot
        (claimed here if it holds none: its first write, or it missed its turn)."""
        if not self._slots.gap:
            return opens
        if state.slot is not None and state.slot < now - PUSH_LEAD_S:  # missed (a late pod): a fresh turn, so
            self._slots.release(state.slot)  # the slots left unused while runs idled never add up to a burst
            state.slot = None
        if state.slot is None:
            state.slot = self._slots.claim(opens, now)
        return max(opens, state.slot)

    def _claim_next(self, state: _Run, now: float) -> None:
        """A write happened: its slot is spent, the run's next one claimed (rate-limited stores)."""
        if state.slot is not None:
            self._slots.release(state.slot)
            state.slot = None
        if self._slots.gap:
            state.slot = self._slots.claim(now + self.interval, now)

    def _stale(self, state: _Run, pod: str, now: float) -> bool:
        return now - self._last_heard(state, pod) >= self.stale_after

    @staticmethod
    def _last_heard(state: _Run, pod: str) -> float:
        """When this pod last pushed, or without a push since, when the pass first saw it."""
        return state.pushed_at if state.pushed_pod == pod and state.pushed_at is not None else state.seen_at

    @staticmethod
    def _with_eta(state: _Run, pod: str, record: Mapping[str, Any]) -> dict[str, Any]:
        if state.anchor_pod != pod or state.anchor is None:
            state.anchor, state.anchor_pod = anchor_of(record), pod
        return with_eta(state.anchor, record)


def progress_for_pass(store: ProgressStore, run: Hashable, pod: str,
                      read_log: Callable[[], Mapping[str, Any] | None],
                      count_log_read: Callable[[], None]) -> dict[str, Any] | None:
    """status.progress's new record for this pass, if one is due: the pushed one, else (a pod that pushes
    nothing) the last line of its log."""
    take = store.take(run, pod)
    if not take.read_log:
        return take.record
    if take.first_fallback:
        log.info("%s: training pod %s pushed no progress for %.0f s; reading its log every %.0f s instead",
                 "/".join(map(str, run)) if isinstance(run, tuple) else run, pod, store.stale_after, store.interval)
    count_log_read()
    return store.from_log(run, pod, read_log())
