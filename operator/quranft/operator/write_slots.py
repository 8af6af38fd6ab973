"""Write slots: a timetable that spaces the status.progress writes of all runs to `rate` a second.

Slots lie on a grid of 1/rate s and each is held by one run at most; `claim(at, now)` hands out the earliest
free one at or after `at`. A run claims its next slot when its last write happens (progress_store.py), so with
more runs than rate x interval the slots fill a ring and each run comes round every runs / rate s, in turn, the
way client-go's token bucket spaces one controller's requests, but fair between runs. No rate: every slot is free.
"""
from __future__ import annotations

import math

PRUNE_AT = 1024  # held slots before the past ones are dropped (then twice what is left)


class WriteSlots:
    def __init__(self, rate: float):
        self.gap = 1.0 / rate if rate > 0 else 0.0
        self._held: set[int] = set()
        self._prune_at = PRUNE_AT

    def claim(self, at: float, now: float) -> float:
        """The earliest free slot at or after max(at, now), now held."""
        if not self.gap:
            return max(at, now)
        k = self._first_free(at, now)
        self._held.add(k)
        if len(self._held) >= self._prune_at:  # slots whose runs never wrote (ended, deleted) hold nothing
            floor = math.floor(now / self.gap)
            self._held = {held for held in self._held if held >= floor}
            self._prune_at = max(PRUNE_AT, 2 * len(self._held))
        return k * self.gap

    def peek(self, at: float, now: float) -> float:
        """What `claim` would hand out now, without holding it."""
        return max(at, now) if not self.gap else self._first_free(at, now) * self.gap

    def release(self, slot: float) -> None:
        if self.gap:
            self._held.discard(round(slot / self.gap))

    def _first_free(self, at: float, now: float) -> int:
        k = math.ceil(max(at, now) / self.gap - 1e-9)
        while k in self._held:
            k += 1
        return k
