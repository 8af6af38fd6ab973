"""The one table of a run's steps, in order: budget -> data -> train -> benchmark -> verdict -> cleanup.

Everything that needs the stage order reads it from here: the derivation's pipeline (steps.py runs one function
per row), the Job names (builders.STAGE_SUFFIX), which stage a status is at (observation, wake-ups), which Job
counts last. Three rows run a Job (the stage label `job` of builders.run_labels); the others decide from
observations alone. No imports of the operator's modules: builders and settings read it too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class Step:
    name: str
    job: str | None = None  # the stage (label quranft.io/stage) whose Job this step runs; None: no Job of its own
    job_suffix: str = ""  # `<run>-<suffix>`, the Job's name (builders.job_name)
    phase: str | None = None  # the run's phase while the Job works
    condition: str | None = None  # the condition that is True once the step is done
    terminal: bool = False  # runs on an ended run only (the others never rewrite one)


PIPELINE: tuple[Step, ...] = (
    Step("budget", condition="QuotaAdmitted"),
    Step("data", job="prepare", job_suffix="prepare", phase="PreparingData", condition="DataReady"),
    Step("train", job="train", job_suffix="train", phase="Training", condition="Trained"),
    Step("benchmark", job="benchmark", job_suffix="bench", phase="Benchmarking", condition="Benchmarked"),
    Step("verdict", condition="Improved"),
    Step("cleanup", terminal=True),
)
JOB_STEPS: tuple[Step, ...] = tuple(step for step in PIPELINE if step.job)
STAGES: tuple[str, ...] = tuple(step.job for step in JOB_STEPS if step.job)  # ("prepare", "train", "benchmark")
STAGE_SUFFIX: dict[str, str] = {step.job: step.job_suffix for step in JOB_STEPS if step.job}
BY_STAGE: dict[str, Step] = {step.job: step for step in JOB_STEPS if step.job}


def current_stage(status: Mapping[str, Any]) -> str:
    """The stage a run with this status is at: the first whose condition is not True (the last once all are)."""
    done = {c.get("type") for c in status.get("conditions") or [] if c.get("status") == "True"}
    return next((step.job for step in JOB_STEPS if step.condition not in done and step.job), STAGES[-1])


def newest_first(jobs: Mapping[str, Any]) -> list[Any]:
    """The values of a stage -> Job mapping, latest stage first."""
    return [jobs[stage] for stage in reversed(STAGES) if stage in jobs]
