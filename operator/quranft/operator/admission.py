"""Operator-wide budget: max concurrent trainings and max GPUs per namespace, admitted FIFO.

A run holds a slot from data preparation to the end of training and is charged the GPUs its training Job
holds: nodes x GPUs per node (`charged_gpus`), as a namespace ResourceQuota or Kueue counts its pods.
`decide` is pure; `Admission` adds the one piece of in-process memory the indexes cannot give: slots granted
in this process whose status has not come back through the watch yet (without it, two passes in the same
second could both be admitted).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterable

from .builders import total_gpus as charged_gpus  # the one definition: resources.nodes x resources.gpus

__all__ = ["Admission", "Entry", "charged_gpus", "decide"]

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class Entry:
    namespace: str
    name: str
    created: str  # RFC 3339 creationTimestamp: sorts chronologically as text
    gpus: int  # charged_gpus: nodes x GPUs per node
    holding: bool  # admitted and not done training
    finished: bool  # trained, failed or succeeded: holds nothing, waits for nothing

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)


def decide(key: Key, entries: Iterable[Entry], max_trainings: int, max_gpus_per_ns: int,
           granted: frozenset[Key] = frozenset()) -> tuple[bool, str]:
    """(admitted, message) for `key`: earlier-created waiting runs go first (head-of-line within a scope)."""
    entries = list(entries)
    holders = [e for e in entries if (e.holding or e.key in granted) and not e.finished]
    running = len(holders)
    gpus_used: dict[str, int] = {}
    for e in holders:
        gpus_used[e.namespace] = gpus_used.get(e.namespace, 0) + e.gpus
    if any(e.key == key for e in holders):
        return True, "already admitted"
    waiting = sorted((e for e in entries if not e.finished and not (e.holding or e.key in granted)),
                     key=lambda e: (e.created, e.namespace, e.name))
    blocked_ns: set[str] = set()
    for position, e in enumerate(waiting):
        if max_gpus_per_ns and e.namespace in blocked_ns:
            if e.key == key:
                return False, f"waiting behind earlier runs in namespace {e.namespace} for GPUs " \
                              f"({gpus_used.get(e.namespace, 0)}/{max_gpus_per_ns} in use)"
            continue
        fits_total = not max_trainings or running < max_trainings
        fits_ns = not max_gpus_per_ns or gpus_used.get(e.namespace, 0) + e.gpus <= max_gpus_per_ns
        if e.key == key:
            if fits_total and fits_ns:
                return True, "within the operator's budget"
            if not fits_total:
                return False, f"{running}/{max_trainings} trainings running; position {position + 1} in the queue"
            return False, f"namespace {e.namespace} uses {gpus_used.get(e.namespace, 0)}/{max_gpus_per_ns} GPUs; " \
                          f"this run needs {e.gpus}"
        if not fits_total:
            return False, f"{running}/{max_trainings} trainings running; waiting behind earlier runs"
        if fits_ns:
            running += 1  # an earlier run will take this slot first
            gpus_used[e.namespace] = gpus_used.get(e.namespace, 0) + e.gpus
        else:
            blocked_ns.add(e.namespace)
    return False, "not a known run yet"


class Admission:
    """Thread-safe wrapper over `decide` that remembers slots granted but not yet visible in the index."""

    def __init__(self, max_trainings: int, max_gpus_per_ns: int):
        self.max_trainings, self.max_gpus_per_ns = max_trainings, max_gpus_per_ns
        self._lock = threading.Lock()
        self._granted: set[Key] = set()

    @property
    def unlimited(self) -> bool:
        return not self.max_trainings and not self.max_gpus_per_ns

    def admit(self, key: Key, entries: Iterable[Entry]) -> tuple[bool, str]:
        entries = list(entries)
        with self._lock:
            live = {e.key: e for e in entries}
            # Forget grants the index now shows as holding, finished or deleted.
            self._granted = {k for k in self._granted if k in live and not live[k].holding and not live[k].finished}
            ok, message = decide(key, entries, self.max_trainings, self.max_gpus_per_ns, frozenset(self._granted))
            if ok and not any(e.key == key and e.holding for e in entries):
                self._granted.add(key)
            return ok, message

    def forget(self, key: Key) -> None:
        with self._lock:
            self._granted.discard(key)
