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
    if message.get("reason"):
        out.append(f"reason: {message['reason']} (rule {message.get('rule')}, head {message.get('verdictHead')}, "
                   f"primary {message.get('primaryMetric')})")
    for key, text in (message.get("display") or {}).items():
        out.append(f"delta {key}: {text} points (95% paired interval)")
    if message.get("requiredClips") is not None:
        out.append(f"paired clips: {message.get('pairedClips')}; "
                   f"clips to resolve the {message.get('primaryMetric')} delta: {message['requiredClips']}")
    for key, t in message["targets"].items():
        kind = {"recall": "pct", "modelSize": "bytes", "latency": "s"}[key]
        op = {"recall": ">=", "modelSize": "<=", "latency": "<"}[key]
        status = "pass" if t["pass"] else "FAIL"
        out.append(f"target {key}: {_fmt(t['value'], kind)} {op} {_fmt(t['target'], kind)}: {status}")
    return "\n".join(out)


def comparison_table(judgement: Any) -> str:
    """`quranft benchmark compare`: each head's paired comparison, then the verdict (a verdict.Judgement)."""
    from .verdict import display

    out: list[str] = []
    for name, head in judgement.heads.items():
        c = head.comparison
        mark = " (verdict head)" if name == judgement.verdict_head and len(judgement.heads) > 1 else ""
        cand = (head.candidate_run or {}).get("name", "candidate")
        base = (head.baseline_run or {}).get("name", "baseline")
        out.append(f"head {name}{mark}: {cand} vs {base}")
        if c is None:
            out.append("  no paired comparison (no baseline, or no shared sample id)")
            continue
        out.append(f"  {c.clips} paired clips (candidate {c.candidate_samples} samples, "
                   f"baseline {c.baseline_samples}); {c.confidence:.0%} paired bootstrap, "
                   f"{c.resamples} resamples, seed {c.seed}")
        rows = [["metric", "candidate", "baseline", "delta", "interval"]]
        for key, label in (("recall", "recall"), ("precision", "precision"),
                           ("sequenceAccuracy", "sequence acc.")):
            m = c.metrics[key]
            rows.append([label, _fmt(m.candidate, "pct"), _fmt(m.baseline, "pct"),
                         display(m.delta, m.low, m.high), f"[{m.low * 100:+.1f}, {m.high * 100:+.1f}] points"])
        lat = c.metrics.get("avgLatency")
        if lat is not None:
            rows.append([f"avg latency ({lat.clips} clips)", _fmt(lat.candidate, "s"), _fmt(lat.baseline, "s"),
                         f"{lat.delta:+.3f}s", f"[{lat.low:+.3f}, {lat.high:+.3f}] s"])
        out += ["  " + line for line in _grid(rows).splitlines()]
        t = c.sequence_test
        out.append(f"  sequence test (exact McNemar): only candidate right on {t.candidate_only}, only baseline "
                   f"on {t.baseline_only}: p = {t.p_value:.4g}")
        required = head.required_clips(judgement.tolerances)
        out.append("  clips to resolve the observed deltas: "
                   + ", ".join(f"{k} {'-' if v is None else v}" for k, v in required.items()))
    out.append(f"verdict: {judgement.verdict} ({judgement.reason}; rule {judgement.rule}, primary "
               f"{judgement.primary}, head {judgement.verdict_head})")
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
