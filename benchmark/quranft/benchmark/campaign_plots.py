"""A campaign's PNGs: `metrics.png` (each variant's scores with interval whiskers, and latency) and
`curves.png` (training loss and validation WER over steps, per variant).

Whiskers follow the benchmark report's convention (report_files.py): a variant's whisker is the baseline's value
plus the 95 % paired interval of the delta, so a whisker clear of the grey baseline bar is a real difference.
Curves come from `runs/<child>/progress_history.jsonl` (one JSON object per progress report: step, loss, valWer,
lr, samplesPerSecond, updatedAt); a resumed run reports some steps twice, so the last report of a step wins.
Without that file (or without validation WER in it) the campaign's `valWerHistory` gives the WER curve.
Each variant keeps one colour in both figures. matplotlib is imported here only (Agg canvas, no pyplot).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quranft.contract import workspace as layout

from .campaign_report import Row
from .report_files import BASELINE_COLOURS, LABELS
from .verdict import PRIMARY_METRICS, display

METRICS_PNG = "metrics.png"
CURVES_PNG = "curves.png"
STOPPED_PHASES = ("Stopped", "Failed")


@dataclass(frozen=True)
class Curve:
    """One variant's curves: (steps, values) for the training loss and the validation WER."""

    variant: str
    loss: tuple[tuple[int, ...], tuple[float, ...]]
    val_wer: tuple[tuple[int, ...], tuple[float, ...]]
    source: str  # "progress history", "valWerHistory", both joined by " + ", or "none"
    ended_early: bool = False  # stopped or failed: the last point is marked


def read_progress_history(path: Path) -> list[dict[str, Any]]:
    """The reports of a progress history file; a torn or foreign line (a writer killed mid-line) is skipped."""
    entries = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, Mapping) and isinstance(entry.get("step"), (int, float)):
            entries.append(dict(entry))
    return entries


def series(entries: Sequence[Mapping[str, Any]], key: str) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """(steps, values) of `key`, sorted by step; the last report of a step wins (a resume repeats steps)."""
    by_step: dict[int, float] = {}
    for entry in entries:
        value = entry.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:  # not NaN
            by_step[int(entry["step"])] = float(value)
    steps = tuple(sorted(by_step))
    return steps, tuple(by_step[s] for s in steps)


def wer_history_entries(history: Sequence[Any] | None) -> list[dict[str, Any]]:
    """The campaign's `valWerHistory` as progress entries: `{step, valWer}` objects or `[step, wer]` pairs."""
    out = []
    for item in history or []:
        if isinstance(item, Mapping):
            step, wer = item.get("step"), item.get("valWer", item.get("wer"))
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            step, wer = item
        else:
            continue
        if isinstance(step, (int, float)) and isinstance(wer, (int, float)):
            out.append({"step": int(step), "valWer": float(wer)})
    return out


def load_curve(variant: str, child: str | None, workspace: Path, val_wer_history: Sequence[Any] | None,
               phase: str | None = None) -> Curve:
    entries = read_progress_history(layout.progress_history_path(child, workspace)) if child else []
    loss, wer = series(entries, "loss"), series(entries, "valWer")
    source = "progress history" if entries else "none"
    if not wer[0] and val_wer_history:  # no validation in the history (or no history): the campaign's record
        wer = series(wer_history_entries(val_wer_history), "valWer")
        if wer[0]:
            source = "progress history + valWerHistory" if loss[0] else "valWerHistory"
    return Curve(variant, loss, wer, source, phase in STOPPED_PHASES)


def colours(variants: Sequence[str]) -> dict[str, Any]:
    """One colour per variant (ranked order), the same in every figure."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {name: cmap(i % 10) for i, name in enumerate(variants)}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _label(row: Row) -> str:
    verdict = row.verdict or (row.phase or "no verdict").lower()
    return f"{row.variant} ({verdict})" + (" ★ production" if row.promoted else "")


def _baseline_value(rows: Sequence[Row], key: str) -> float | None:
    for row in rows:
        cell = row.scores[key] if key in row.scores else row.latency
        if cell.baseline is not None:
            return cell.baseline
        if cell.value is not None and cell.delta is not None:
            return cell.value - cell.delta
    return None


def _whisker(cell, base: float | None) -> tuple[float, float] | None:
    if cell.value is None or cell.low is None or cell.high is None:
        return None
    anchor = cell.baseline if cell.baseline is not None else (
        cell.value - cell.delta if cell.delta is not None else base)
    return None if anchor is None else (anchor + cell.low, anchor + cell.high)


def render_metrics_png(rows: Sequence[Row], title: str) -> bytes:
    """Scores (left) and average latency (right): one bar per variant, the baseline in grey, whiskers."""
    import numpy as np

    palette = colours([r.variant for r in rows])
    fig = _figure(13, 5.5)
    left, right = fig.subplots(1, 2, width_ratios=(3.2, 1))
    keys = list(PRIMARY_METRICS)
    base = {k: _baseline_value(rows, k) for k in keys}
    has_base = any(v is not None for v in base.values())
    bars = len(rows) + (1 if has_base else 0)
    width = 0.84 / max(bars, 1)
    x = np.arange(len(keys))
    for j, row in enumerate(rows):
        pos = x - 0.42 + width * (j + 0.5)
        values = [row.scores[k].value for k in keys]
        heights = [100 * (v or 0.0) for v in values]
        left.bar(pos, heights, width * 0.9, color=palette[row.variant], label=_label(row),
                 edgecolor="black" if row.promoted else "none", linewidth=1.6 if row.promoted else 0)
        for p, k, h in zip(pos, keys, heights):
            w = _whisker(row.scores[k], base[k])
            cell = row.scores[k]
            if w is not None:
                lo, hi = 100 * w[0], 100 * w[1]
                left.errorbar([p], [h], yerr=[[max(h - lo, 0)], [max(hi - h, 0)]], fmt="none", ecolor="black",
                              elinewidth=1.1, capsize=3)
                if cell.delta is not None:  # the delta and its half-width, in points, above the whisker
                    left.annotate(display(cell.delta, cell.low, cell.high), (p, max(hi, h)), xytext=(0, 3),
                                  textcoords="offset points", ha="center", va="bottom", fontsize=7, rotation=90)
            elif cell.value is None:
                left.annotate((row.phase or "no score").lower(), (p, 1), ha="center", va="bottom", fontsize=7,
                              rotation=90, color="#555555")
    if has_base:
        pos = x - 0.42 + width * (len(rows) + 0.5)
        left.bar(pos, [100 * (base[k] or 0.0) for k in keys], width * 0.9, color=BASELINE_COLOURS[0],
                 label="baseline")
    left.set_xticks(x, [LABELS[k] for k in keys])
    left.set_ylim(0, 130)
    left.set_yticks(range(0, 101, 20))
    left.set_ylabel("% (mean per clip)")
    left.set_title("scores; whisker: baseline + 95 % paired interval of the delta", fontsize=9)
    left.grid(axis="y", alpha=0.3)
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=min(bars, 4), fontsize=8, frameon=False)

    lat_base = _baseline_value(rows, "avgLatency")
    names = [r.variant for r in rows] + (["baseline"] if lat_base is not None else [])
    values = [r.latency.value for r in rows] + ([lat_base] if lat_base is not None else [])
    ypos = np.arange(len(names))[::-1]
    right.barh(ypos, [v or 0.0 for v in values], 0.7,
               color=[palette[r.variant] for r in rows] + ([BASELINE_COLOURS[0]] if lat_base is not None else []))
    for yy, row in zip(ypos, rows):
        w = _whisker(row.latency, lat_base)
        if w is not None and row.latency.value is not None:
            v = row.latency.value
            right.errorbar([v], [yy], xerr=[[max(v - w[0], 0)], [max(w[1] - v, 0)]], fmt="none", ecolor="black",
                           elinewidth=1.1, capsize=3)
    right.set_yticks(ypos, names, fontsize=8)
    right.set_xlabel("average latency per clip (s)")
    right.set_title("latency (batch 1)", fontsize=9)
    right.grid(axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=12)
    return _png(fig)


def render_curves_png(curves: Sequence[Curve], palette: Mapping[str, Any], title: str) -> bytes:
    """Training loss (left) and validation WER (right) over steps, one line per variant."""
    fig = _figure(13, 4.8)
    loss_ax, wer_ax = fig.subplots(1, 2)
    for ax, attr, label in ((loss_ax, "loss", "training loss"), (wer_ax, "val_wer", "validation WER")):
        drawn = 0
        for curve in curves:
            steps, values = getattr(curve, attr)
            if not steps:
                continue
            colour = palette.get(curve.variant, "black")
            ax.plot(steps, values, color=colour, linewidth=1.4, marker="o" if len(steps) < 30 else None,
                    markersize=3, label=curve.variant + (" (ended early)" if curve.ended_early else ""))
            if curve.ended_early:
                ax.plot([steps[-1]], [values[-1]], marker="x", markersize=9, color=colour, markeredgewidth=2)
            drawn += 1
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, f"no {label} history", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.set_title(label + " per variant", fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=12)
    return _png(fig)
