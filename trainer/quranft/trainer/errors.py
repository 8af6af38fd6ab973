"""Failure classes, their exit codes, and the termination-message summary (docs/contracts.md).

The operator's podFailurePolicy keys on these exit codes (ConfigError is never retried), so they are
part of the contract, shared by the trainer and the benchmark.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from quranft.trainer.config import ConfigError

EXIT_OK = 0
EXIT_CONFIG_ERROR = 2
EXIT_DATA_ERROR = 3
EXIT_TRAINING_ERROR = 4
EXIT_ENVIRONMENT_ERROR = 5
MAX_TERMINATION_BYTES = 4096  # the kubelet truncates termination messages at 4 KB


class DataError(RuntimeError):
    """Input data is missing, unreadable or empty after filtering."""


class TrainingError(RuntimeError):
    """Training (or benchmarking) failed after the inputs were accepted."""


class EnvironmentProblem(RuntimeError):
    """The runtime cannot do what the config asks (e.g. hybrid on a GPU without libnvvm)."""


FAILURES: dict[type[BaseException], tuple[str, int]] = {
    ConfigError: ("ConfigError", EXIT_CONFIG_ERROR),
    DataError: ("DataError", EXIT_DATA_ERROR),
    TrainingError: ("TrainingError", EXIT_TRAINING_ERROR),
    EnvironmentProblem: ("EnvironmentError", EXIT_ENVIRONMENT_ERROR),
}


def classify(exc: BaseException) -> tuple[str, int]:
    """(reason, exit code) for an exception; anything unexpected is a TrainingError.

    A subclass may name a more specific reason in `failure_reason` (e.g. the benchmark's CorpusMismatch, a
    ConfigError): the exit code stays its family's, so the operator's retry policy is unchanged.
    """
    for cls, outcome in FAILURES.items():
        if isinstance(exc, cls):
            return getattr(exc, "failure_reason", None) or outcome[0], outcome[1]
    return FAILURES[TrainingError]


def default_termination_path() -> Path | None:
    env = os.environ.get("QURANFT_TERMINATION_LOG")
    if env:
        return Path(env)
    default = Path("/dev/termination-log")
    return default if default.exists() and os.access(default, os.W_OK) else None


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


def write_termination_message(summary: dict[str, Any], path: str | Path | None = None) -> str:
    """Write the summary line where Kubernetes reads it; returns the line (also for logs)."""
    line = fit_summary(summary)
    target = Path(path) if path else default_termination_path()
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(line)
    return line


def failure_summary(stage: str, exc: BaseException) -> dict[str, Any]:
    reason, _ = classify(exc)
    return {"ok": False, "stage": stage, "reason": reason, "message": str(exc)}
