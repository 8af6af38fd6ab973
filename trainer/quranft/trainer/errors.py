"""Failure classes and how each maps to an exit code and a failure summary (docs/contracts.md).

The codes, the 4 KB limit and the summary models are the contract's (quranft.contract); this module maps the
trainer's and the benchmark's exceptions onto them. Names re-exported here keep their old import path.
"""
from __future__ import annotations

from typing import Any

from quranft.contract.exits import REASON_BY_EXIT, ExitCode
from quranft.contract.summaries import (  # noqa: F401  (re-exported)
    MAX_TERMINATION_BYTES,
    FailureSummary,
    default_termination_path,
    fit_summary,
    write_termination_message,
)
from quranft.contract.config import ConfigError

EXIT_OK = ExitCode.OK  # the old name, still imported by quranft.benchmark.cli


class DataError(RuntimeError):
    """Input data is missing, unreadable or empty after filtering."""


class TrainingError(RuntimeError):
    """Training (or benchmarking) failed after the inputs were accepted."""


class EnvironmentProblem(RuntimeError):
    """The runtime cannot do what the config asks (e.g. hybrid on a GPU without libnvvm)."""


# exception class -> (reason, exit code)
FAILURES: dict[type[BaseException], tuple[str, int]] = {
    cls: (REASON_BY_EXIT[code], code) for cls, code in (
        (ConfigError, ExitCode.CONFIG_ERROR), (DataError, ExitCode.DATA_ERROR),
        (TrainingError, ExitCode.TRAINING_ERROR), (EnvironmentProblem, ExitCode.ENVIRONMENT_ERROR))
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


def failure_summary(stage: str, exc: BaseException) -> dict[str, Any]:
    reason, _ = classify(exc)
    return FailureSummary(stage=stage, reason=reason, message=str(exc)).wire()
