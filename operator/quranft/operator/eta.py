"""status.progress.eta: the time left to maxSteps at the step rate of the current training attempt.

The rate is measured on the trainer's own clock (the records' updatedAt), between the first record the operator
saw from the attempt's rank-0 pod and the newest one, so neither the operator's write throttle nor a resume from a
checkpoint (a new pod: a new anchor) distorts it. Pure functions.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

MIN_SPAN_S = 1.0  # a rate over less trainer time than this is noise


@dataclass(frozen=True)
class Anchor:
    """The first progress of an attempt: its step and the trainer's time of it."""
    step: int
    at: datetime


def parse_rfc3339(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def anchor_of(record: Mapping[str, Any]) -> Anchor | None:
    at, step = parse_rfc3339(record.get("updatedAt")), record.get("step")
    return Anchor(int(step), at) if at is not None and isinstance(step, int) else None


def eta_seconds(anchor: Anchor | None, record: Mapping[str, Any]) -> int | None:
    """Seconds until maxSteps at the attempt's mean step rate; None until two records span >= MIN_SPAN_S and
    some steps (0 once maxSteps is reached)."""
    now, step, max_steps = parse_rfc3339(record.get("updatedAt")), record.get("step"), record.get("maxSteps")
    if anchor is None or now is None or not isinstance(step, int) or not isinstance(max_steps, int):
        return None
    if step >= max_steps:
        return 0
    span, steps = (now - anchor.at).total_seconds(), step - anchor.step
    if span < MIN_SPAN_S or steps <= 0:
        return None
    return round((max_steps - step) * span / steps)


def duration_string(seconds: int) -> str:
    """Go's time.Duration style, whole seconds: 45s, 4m30s, 2h0m5s."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def with_eta(anchor: Anchor | None, record: Mapping[str, Any]) -> dict[str, Any]:
    """The record with `eta` and `etaSeconds` when they can be estimated."""
    out = dict(record)
    seconds = eta_seconds(anchor, record)
    if seconds is not None:
        out.update(eta=duration_string(seconds), etaSeconds=seconds)
    return out
