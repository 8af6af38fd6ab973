"""The termination message: one JSON line of at most 4 KB that every stage writes where Kubernetes reads it.

Models of each stage's summary (docs/contracts.md, "Exit codes and termination message"): camelCase on the
wire, snake_case in Python, and extra keys allowed (a stage may add keys; a reader keeps what it knows).
`wire()` gives the dict to serialise: the keys set, in the order below, then the extras.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

# The kubelet truncates termination messages at 4 KB (4096 bytes).
MAX_TERMINATION_BYTES = 4096
# Where the summary goes when no --termination-log is given: this variable, else the kubelet's file.
TERMINATION_LOG_ENV = "QURANFT_TERMINATION_LOG"
KUBELET_TERMINATION_LOG = "/dev/termination-log"


class StageSummary(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    ok: bool
    stage: str

    def model_post_init(self, context: Any) -> None:
        # Every summary names its outcome and stage, also when they came from a subclass's default.
        self.__pydantic_fields_set__.update({"ok", "stage"})

    def wire(self) -> dict[str, Any]:
        """The JSON document: camelCase keys, every field that was set (None included), extras last."""
        return self.model_dump(by_alias=True, exclude_unset=True)


class PrepareSummary(StageSummary):
    ok: Literal[True] = True
    stage: Literal["prepare"] = "prepare"
    data_spec_hash: str
    data_dir: str
    reused: bool
    stats: dict[str, Any]


class TrainSummary(StageSummary):
    ok: Literal[True] = True
    stage: Literal["train"] = "train"
    step: int
    model_path: str
    size_bytes: int
    sha256: str
    data_spec_hash: str
    final_loss: float | None = None
    val_wer: float | None = None
    resumed_from_step: int | None = None
    world_size: int | None = None
    global_batch_size: int | None = None
    nodes: int | None = None
    devices_per_node: int | None = None


class BenchmarkSummary(StageSummary):
    """The verdict (quranft.benchmark.verdict builds it). Parts are optional because an over-long message drops
    them least important first and names them in `truncated`."""
    ok: Literal[True] = True
    stage: Literal["benchmark"] = "benchmark"
    verdict: Literal["improvement", "regression", "neutral"]
    reason: str
    rule: str | None = None
    verdict_head: str | None = None
    primary_metric: str | None = None
    metrics: dict[str, Any]
    baseline: dict[str, Any] | None = None
    deltas: dict[str, Any] | None = None
    intervals: dict[str, Any] | None = None
    display: dict[str, Any] | None = None
    sequence_test: dict[str, Any] | None = None
    required_clips: int | None = None
    paired_clips: int | None = None
    heads: dict[str, Any] | None = None
    targets: dict[str, Any] | None = None
    results_path: str | None = None
    truncated: list[str] | None = None


class FailureSummary(StageSummary):
    """A failed (or preempted: reason Preempted, exit 143) stage. `reason` is the failure class
    (ConfigError, DataError, TrainingError, EnvironmentError) or a more specific one (e.g. CorpusMismatch)."""
    ok: Literal[False] = False
    reason: str
    message: str


def fit_summary(summary: dict[str, Any], limit: int = MAX_TERMINATION_BYTES) -> str:
    """Serialise to one JSON line of at most `limit` bytes, shortening `message` if needed."""
    line = json.dumps(summary, separators=(",", ":"), ensure_ascii=False, default=str)
    if len(line.encode()) <= limit:
        return line
    trimmed = dict(summary)
    message = str(trimmed.get("message", ""))
    overflow = len(line.encode()) - limit + 16
    trimmed["message"] = message.encode()[: max(0, len(message.encode()) - overflow)].decode(errors="ignore") + "…"
    line = json.dumps(trimmed, separators=(",", ":"), ensure_ascii=False, default=str)
    if len(line.encode()) > limit:
        raise ValueError(f"summary does not fit {limit} bytes even without its message")
    return line


def default_termination_path() -> Path | None:
    env = os.environ.get(TERMINATION_LOG_ENV)
    if env:
        return Path(env)
    default = Path(KUBELET_TERMINATION_LOG)
    return default if default.exists() and os.access(default, os.W_OK) else None


def write_termination_message(summary: dict[str, Any], path: str | Path | None = None) -> str:
    """Write the summary line where Kubernetes reads it; returns the line (also for logs)."""
    line = fit_summary(summary)
    target = Path(path) if path else default_termination_path()
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(line)
    return line
