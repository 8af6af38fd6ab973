"""Exit codes of the stage containers (docs/contracts.md) and which of them the operator must not retry.

The operator's podFailurePolicy keys on these codes: a fatal code fails the Job at once, any other failure
counts against backoffLimit, and 143 (SIGTERM after a checkpoint) resumes from that checkpoint.
"""
from __future__ import annotations

from enum import IntEnum
from types import MappingProxyType
from typing import Mapping


class ExitCode(IntEnum):
    OK = 0
    CONFIG_ERROR = 2  # bad config or flags: the same input fails the same way, so never retried
    DATA_ERROR = 3
    TRAINING_ERROR = 4  # also the benchmark's BenchmarkError
    ENVIRONMENT_ERROR = 5  # the runtime cannot do what the config asks (e.g. hybrid without libnvvm): never retried
    PREEMPTED = 143  # 128 + SIGTERM, after a checkpoint was saved: the Job's retry resumes from it


# The failure reason each failure code stands for (a summary may name a more specific one, e.g. CorpusMismatch).
REASON_BY_EXIT: Mapping[int, str] = MappingProxyType({
    ExitCode.CONFIG_ERROR: "ConfigError",
    ExitCode.DATA_ERROR: "DataError",
    ExitCode.TRAINING_ERROR: "TrainingError",
    ExitCode.ENVIRONMENT_ERROR: "EnvironmentError",
})
# Retrying cannot help: podFailurePolicy FailJob on these (plain ints: they go into Job manifests).
FATAL_EXIT_CODES: tuple[int, ...] = (int(ExitCode.CONFIG_ERROR), int(ExitCode.ENVIRONMENT_ERROR))
PREEMPTED_REASON = "Preempted"


def is_fatal(code: int | None) -> bool:
    return code in FATAL_EXIT_CODES
