"""The progress record: what the trainer reports while it trains and the operator copies into status.progress.

The trainer prints it as one stdout line, `QURANFT_PROGRESS {json}`, at most every progressIntervalSeconds (at
once when `lastCheckpointStep` changed), and writes the same JSON to runs/<name>/progress.json; the operator
reads the last such line from the training pod's log (docs/contracts.md, "Progress").
"""
from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

PROGRESS_PREFIX = "QURANFT_PROGRESS "


class ProgressRecord(BaseModel):
    """camelCase on the wire; extra keys allowed (the operator keeps the ones it knows)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    step: int
    max_steps: int
    loss: float | None = None  # the last optimiser step's total loss
    lr: float | None = None
    epoch: int
    updated_at: str  # RFC 3339, UTC
    last_checkpoint_step: int | None = None  # the newest complete checkpoint; omitted until one exists
    world_size: int | None = None
    samples_per_second: float | None = None
    val_wer: float | None = None  # the latest validation WER of the CTC head ...
    val_wer_step: int | None = None  # ... and the step it was measured at

    def wire(self) -> dict[str, Any]:
        """The JSON document: camelCase keys, every field that was set (None included), extras last."""
        return self.model_dump(by_alias=True, exclude_unset=True)


def progress_line(doc: dict[str, Any]) -> str:
    """The stdout line for one record's JSON document."""
    return PROGRESS_PREFIX + json.dumps(doc, separators=(",", ":"))


def parse_progress(log_text: str) -> dict[str, Any] | None:
    """The JSON object of the last progress line in a log (the prefix may follow a log prefix on its line);
    None when there is none. Lenient: a line that is not a JSON object is skipped, keys are not checked."""
    for line in reversed(log_text.splitlines()):
        at = line.find(PROGRESS_PREFIX)
        if at < 0:
            continue
        try:
            doc = json.loads(line[at + len(PROGRESS_PREFIX):])
        except (ValueError, RecursionError):
            continue
        if isinstance(doc, dict):
            return doc
    return None
