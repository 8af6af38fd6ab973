"""Human output: a progress bar on a TTY (periodic log lines otherwise) and the end-of-run tables."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import IO, Any

from .scoring import parse_verses


class Progress:
    """tqdm on a terminal; in a pod log, one line every `interval` seconds and at the end."""

    def __init__(self, total: int, label: str, stream: IO[str] | None = None, interval: float = 10.0):
        self.total, self.label, self.interval = total, label, interval
        self.stream = stream or sys.stderr
        self.done = 0
        self._start = self._last = time.monotonic()
        self._bar = None
        if self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=label, unit="sample", file=self.stream)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= self.interval or self.done >= self.total:
            self._last = now
            rate = self.done / max(now - self._start, 1e-9)
            print(f"benchmark {self.label}: {self.done}/{self.total} samples ({rate:.2f}/s)",
                  file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{value * 100:.1f}%"
    if kind == "s":
        return f"{value:.3f}s"
    if kind == "bytes":
        return f"{value / 1e6:.1f}MB"
    return str(value)


_ROWS = (
    ("recall", "recall", "pct"),
    ("precision", "precision", "pct"),
    ("sequence acc.", "sequence_accuracy", "pct"),
    ("avg latency", "avg_latency", "s"),
    ("p50 latency", "p50_latency", "s"),
    ("p90 latency", "p90_latency", "s"),
    ("model size", "model_size", "bytes"),
    ("scored/total", None, ""),
)


def _signed(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    sign = "+" if value >= 0 else "-"
    return sign + _fmt(abs(value), kind)


def runs_table(runs: Sequence[dict[str, Any]]) -> str:
    """Aggregates side by side; with two runs, a delta column (first minus second)."""
    headers = ["metric", *[str(r.get("name", f"run {i}")) for i, r in enumerate(runs)]]
    if len(runs) == 2:
        headers.append("delta")
    lines = []
    for label, key, kind in _ROWS:
        if key is None:
            cells = [f"{r.get('scored', len(r.get('per_sample', [])))}/{r.get('total', '-')}" for r in runs]
        else:
            cells = [_fmt(r.get(key), kind) for r in runs]
        row = [label, *cells]
        if len(runs) == 2:
            a, b = (runs[0].get(key), runs[1].get(key)) if key else (None, None)
            row.append(_signed(a - b, kind) if a is not None and b is not None else "-")
        lines.append(row)
    return _grid([headers, *lines])


def verdict_lines(message: dict[str, Any]) -> str:
    out = [f"verdict: {message['verdict']}"]
    for key, t in message["targets"].items():
        kind = {"recall": "pct", "modelSize": "bytes", "latency": "s"}[key]
        op = {"recall": ">=", "modelSize": "<=", "latency": "<"}[key]
        status = "pass" if t["pass"] else "FAIL"
        out.append(f"target {key}: {_fmt(t['value'], kind)} {op} {_fmt(t['target'], kind)}: {status}")
    return "\n".join(out)


def per_sample_table(run: dict[str, Any]) -> str:
    rows = [["id", "expected", "predicted", "recall", "precision", "seq"]]
    for r in run.get("per_sample", []):
        rows.append([
            str(r.get("id")),
            _refs(r.get("expected")),
            _refs(r.get("predicted")) + (" (error)" if r.get("error") else ""),
            _fmt(r.get("recall"), "pct"),
            _fmt(r.get("precision"), "pct"),
            _fmt(r.get("sequence_accuracy"), "pct"),
        ])
    return _grid(rows)


def _refs(value: Any) -> str:
    try:
        verses = parse_verses(value)
    except (ValueError, KeyError, TypeError):
        return str(value)
    return " ".join(f"{s}:{a}" for s, a in verses) or "-"


def _grid(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
