"""The report next to the results JSON: `<stem>.report.md` and `<stem>.png`, plus `report.md`/`report.png`.

`<stem>` is the results file's stem (`2026-02-27_092540`), so a later run never overwrites an earlier report;
`report.md`/`report.png` are copies of the newest (like latest.json). Every file is written atomically.
The PNG's left panel shows recall, precision and sequence accuracy of model and baseline (per decoder head),
the model bar's whisker being the baseline plus the delta's 95 % paired interval; the right panel shows the
primary metric per `category` and `source` of the corpus rows (rows without one are "unknown").
matplotlib is imported here only (Agg canvas, no pyplot), when a report is written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .paired import GroupRow, breakdown
from .verdict import PRIMARY_METRICS, HeadResult, Judgement, Targets, check_targets, display

LABELS = {"recall": "recall", "precision": "precision", "sequenceAccuracy": "sequence acc."}
MODEL_COLOURS = ("#1f77b4", "#2ca02c")  # per head
BASELINE_COLOURS = ("#9e9e9e", "#c7c7c7")


def write_report(
    out_dir: str | Path,
    judgement: Judgement,
    runs: Sequence[Mapping[str, Any]],
    stem: str,
    *,
    extra: Mapping[str, Any] | None = None,
    targets: Targets | None = None,
) -> tuple[Path, Path]:
    """Write the markdown report and its PNG; returns (`<stem>.report.md`, `<stem>.png`).

    `runs` (the results file's runs) are listed in the report; `extra` (corpus, leakage, artifact, ...) and
    `targets` add sections."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, png_path = out_dir / f"{stem}.report.md", out_dir / f"{stem}.png"
    n = 1
    while md_path.exists() or png_path.exists():  # never overwrite an earlier report
        md_path, png_path = out_dir / f"{stem}-{n}.report.md", out_dir / f"{stem}-{n}.png"
        n += 1
    groups = _groups(judgement.head)
    png = render_png(judgement, groups)
    for target in (png_path, out_dir / "report.png"):
        _atomic_write(target, png)
    for target, image in ((md_path, png_path.name), (out_dir / "report.md", "report.png")):
        _atomic_write(target, report_markdown(judgement, image, groups, extra, targets, runs).encode())
    return md_path, png_path


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _groups(head: HeadResult) -> list[GroupRow]:
    if head.candidate_run is None:
        return []
    baseline = head.baseline_run if head.comparison is not None else None
    return breakdown(head.candidate_run, baseline)


def _name(run: Mapping[str, Any] | None, default: str) -> str:
    return str((run or {}).get("name") or default)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def _mb(x: float | None) -> str:
    return "-" if x is None else f"{x / 1e6:.1f} MB"


def _secs(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f} s"


def _pts(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:+.1f}"


def _scores(head: HeadResult) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """(model, baseline) per score metric: paired means when compared, else the runs' aggregates."""
    if head.comparison is not None:
        c = head.comparison.metrics
        return ({k: c[k].candidate for k in PRIMARY_METRICS}, {k: c[k].baseline for k in PRIMARY_METRICS})
    base = head.baseline or {}
    return ({k: head.metrics.get(k) for k in PRIMARY_METRICS}, {k: base.get(k) for k in PRIMARY_METRICS})


def report_markdown(
    judgement: Judgement,
    image: str,
    groups: list[GroupRow] | None = None,
    extra: Mapping[str, Any] | None = None,
    targets: Targets | None = None,
    runs: Sequence[Mapping[str, Any]] = (),
) -> str:
    h = judgement.head
    groups = _groups(h) if groups is None else groups
    model, baseline = _name(h.candidate_run, "model"), _name(h.baseline_run, "baseline")
    title = f"# Benchmark: {model}" + (f" vs {baseline}" if h.baseline is not None else "")
    out = [
        title,
        "",
        f"**Verdict: {judgement.verdict}** ({judgement.reason}): rule `{judgement.rule}`, primary metric "
        f"`{judgement.primary}`, verdict head `{judgement.verdict_head}`; tolerance "
        f"{judgement.tolerances.drop * 100:g} points, min gain {judgement.tolerances.min_gain * 100:g} points.",
        "",
        f"![model vs baseline]({image})",
    ]
    for name, head in judgement.heads.items():
        out += ["", f"## Metrics: head `{name}`", ""]
        out += _metrics_table(head)
        c = head.comparison
        if c is None:
            out += ["", "No baseline to compare with." if head.baseline is None
                    else "The runs share no sample id: aggregates only, no paired statistics."]
            continue
        t = c.sequence_test
        required = head.required_clips(judgement.tolerances)
        out += [
            "",
            f"Paired clips: {c.clips} (model {c.candidate_samples} samples, baseline {c.baseline_samples}). "
            f"Intervals: {c.confidence:.0%} paired bootstrap, {c.resamples} resamples, seed {c.seed}.",
            "",
            f"Sequence test (exact McNemar): only the model is right on {t.candidate_only} clip(s), only the "
            f"baseline on {t.baseline_only}; p = {t.p_value:.4g}.",
            "",
            "Paired clips needed to resolve the observed deltas (95 % interval, 80 % power): "
            + ", ".join(f"{LABELS[k]} {'-' if v is None else v}" for k, v in required.items()) + ".",
        ]
    out += ["", f"## Per category and source: head `{judgement.verdict_head}`", ""]
    out += _groups_table(groups, h.baseline is not None and h.comparison is not None) if groups else [
        "The rows carry no `category` or `source`."]
    if runs:
        out += ["", "## Runs", "", "| run | head | role | scored/total | model sha256 |", "|---|---|---|---|---|"]
        for run in runs:
            sha = str((run.get("model") or {}).get("sha256") or "-")[:12]
            scored = run.get("scored", len(run.get("per_sample") or []))
            out.append(f"| {run.get('name', '-')} | {run.get('head') or '-'} | {run.get('role') or '-'} | "
                       f"{scored}/{run.get('total', '-')} | {sha} |")
    if targets is not None:
        out += ["", "## Targets", "", "| target | value | goal | pass |", "|---|---|---|---|"]
        for key, t in check_targets(h.metrics, targets).items():
            kind = {"recall": _pct, "modelSize": _mb, "latency": _secs}[key]
            out.append(f"| {key} | {kind(t['value'])} | {kind(t['target'])} | {'yes' if t['pass'] else 'NO'} |")
    for key, value in (extra or {}).items():
        out += ["", f"## {key}", ""] + _render(value)
    return "\n".join(out) + "\n"


def _metrics_table(head: HeadResult) -> list[str]:
    rows = ["| metric | model | baseline | delta (points) | 95 % interval |", "|---|---|---|---|---|"]
    model, base = _scores(head)
    c = head.comparison
    for key in PRIMARY_METRICS:
        if c is not None:
            m = c.metrics[key]
            rows.append(f"| {LABELS[key]} | {_pct(m.candidate)} | {_pct(m.baseline)} | "
                        f"{display(m.delta, m.low, m.high)} | [{_pts(m.low)}, {_pts(m.high)}] |")
        else:
            delta = None if base[key] is None or model[key] is None else model[key] - base[key]
            rows.append(f"| {LABELS[key]} | {_pct(model[key])} | {_pct(base[key])} | {_pts(delta)} | - |")
    lat = None if c is None else c.metrics.get("avgLatency")
    if lat is not None:
        rows.append(f"| avg latency ({lat.clips} clips timed in both) | {lat.candidate:.3f}s | {lat.baseline:.3f}s "
                    f"| {lat.delta:+.3f}s | [{lat.low:+.3f}s, {lat.high:+.3f}s] |")
    else:
        a, b = head.metrics.get("avgLatency"), (head.baseline or {}).get("avgLatency")
        rows.append(f"| avg latency | {'-' if a is None else f'{a:.3f}s'} | {'-' if b is None else f'{b:.3f}s'} "
                    f"| {'-' if a is None or b is None else f'{a - b:+.3f}s'} | - |")
    return rows


def _groups_table(groups: list[GroupRow], with_baseline: bool) -> list[str]:
    if with_baseline:
        rows = ["| group | clips | model recall | baseline recall | delta | model seq. acc. | "
                "baseline seq. acc. | delta |", "|---|---|---|---|---|---|---|---|"]
    else:
        rows = ["| group | clips | recall | precision | seq. acc. |", "|---|---|---|---|---|"]
    for g in groups:
        label = f"{g.dimension}: {g.label}"
        if with_baseline and g.baseline is not None:
            rows.append(f"| {label} | {g.clips} | {_pct(g.candidate['recall'])} | {_pct(g.baseline['recall'])} | "
                        f"{_pts(g.candidate['recall'] - g.baseline['recall'])} | "
                        f"{_pct(g.candidate['sequenceAccuracy'])} | {_pct(g.baseline['sequenceAccuracy'])} | "
                        f"{_pts(g.candidate['sequenceAccuracy'] - g.baseline['sequenceAccuracy'])} |")
        else:
            rows.append(f"| {label} | {g.clips} | {_pct(g.candidate['recall'])} | "
                        f"{_pct(g.candidate['precision'])} | {_pct(g.candidate['sequenceAccuracy'])} |")
    return rows


def _render(value: Any) -> list[str]:
    if isinstance(value, Mapping):
        return [f"- {k}: {_inline(v)}" for k, v in value.items()] or ["(empty)"]
    if isinstance(value, (list, tuple)):
        return [f"- {_inline(v)}" for v in value] or ["(none)"]
    return [_inline(value)]


def _inline(value: Any) -> str:
    if isinstance(value, str):
        return value
    return "`" + json.dumps(value, ensure_ascii=False, default=str) + "`"


def render_png(judgement: Judgement, groups: list[GroupRow] | None = None) -> bytes:
    """The two-panel figure as PNG bytes."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = _groups(judgement.head) if groups is None else groups
    fig = Figure(figsize=(13, 5.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, width_ratios=(1.1, 1))
    _metrics_panel(left, judgement)
    _groups_panel(right, judgement, groups)
    fig.suptitle(f"verdict: {judgement.verdict} ({judgement.reason}), rule {judgement.rule}, "
                 f"primary {judgement.primary}, head {judgement.verdict_head}", fontsize=12)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _metrics_panel(ax: Any, judgement: Judgement) -> None:
    import numpy as np

    heads = list(judgement.heads.items())
    bars = []  # (label, values, colour, whisker (lo, hi) per metric or None, display per metric or None)
    for i, (name, head) in enumerate(heads):
        model, base = _scores(head)
        suffix = f" ({name})" if len(heads) > 1 else ""
        c = head.comparison
        whiskers = texts = None
        if c is not None:
            whiskers = [(c.metrics[k].baseline + c.metrics[k].low, c.metrics[k].baseline + c.metrics[k].high)
                        for k in PRIMARY_METRICS]
            texts = [display(c.metrics[k].delta, c.metrics[k].low, c.metrics[k].high) for k in PRIMARY_METRICS]
        bars.append((_name(head.candidate_run, "model") + suffix, [model[k] for k in PRIMARY_METRICS],
                     MODEL_COLOURS[i % 2], whiskers, texts))
        if head.baseline is not None:
            bars.append((_name(head.baseline_run, "baseline") + suffix, [base[k] for k in PRIMARY_METRICS],
                         BASELINE_COLOURS[i % 2], None, None))
    compared = any(b[3] is not None for b in bars)
    x = np.arange(len(PRIMARY_METRICS))
    width = 0.8 / len(bars)
    for j, (label, values, colour, whiskers, texts) in enumerate(bars):
        pos = x - 0.4 + width * (j + 0.5)
        heights = [100 * (v or 0.0) for v in values]
        ax.bar(pos, heights, width * 0.92, color=colour, label=label)
        if whiskers is not None:
            lo = [100 * w[0] for w in whiskers]
            hi = [100 * w[1] for w in whiskers]
            mid = np.array(heights)
            ax.errorbar(pos, mid, yerr=[np.maximum(mid - lo, 0), np.maximum(np.array(hi) - mid, 0)],
                        fmt="none", ecolor="black", elinewidth=1.2, capsize=4)
            for p, top, text in zip(pos, hi, texts or []):
                ax.annotate(text, (p, min(top, 100)), xytext=(0, 4), textcoords="offset points",
                            ha="center", va="bottom", fontsize=8, rotation=90 if len(bars) > 2 else 0)
        elif not compared:  # nothing to compare with: label the values
            for p, top in zip(pos, heights):
                ax.annotate(f"{top:.1f}%", (p, top), xytext=(0, 3), textcoords="offset points", ha="center",
                            va="bottom", fontsize=8)
    ax.set_xticks(x, [LABELS[k] for k in PRIMARY_METRICS])
    ax.set_ylim(0, 118)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("% of clips (mean per clip)")
    ax.set_title("model vs baseline; whisker: baseline + 95 % paired interval of the delta (points)" if compared
                 else "model scores (no paired baseline)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=min(len(bars), 4), fontsize=8, frameon=False)


def _groups_panel(ax: Any, judgement: Judgement, groups: list[GroupRow]) -> None:
    import numpy as np

    key = judgement.primary
    if not groups:
        ax.text(0.5, 0.5, "rows carry no category or source", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    h = judgement.head
    labels = [f"{g.dimension}: {g.label} (n={g.clips})" for g in groups]
    y = np.arange(len(groups))[::-1]
    with_base = any(g.baseline is not None for g in groups)
    height = 0.4 if with_base else 0.7
    model = [100 * g.candidate[key] for g in groups]
    ax.barh(y + (height / 2 if with_base else 0), model, height * 0.92, color=MODEL_COLOURS[0],
            label=_name(h.candidate_run, "model"))
    if with_base:
        base = [100 * (g.baseline or {}).get(key, 0.0) for g in groups]
        ax.barh(y - height / 2, base, height * 0.92, color=BASELINE_COLOURS[0], label=_name(h.baseline_run, "baseline"))
    for yy, g, value in zip(y, groups, model):
        text = f"{value:.0f}%"
        if g.baseline is not None:
            text += f" ({100 * (g.candidate[key] - g.baseline[key]):+.1f})"
            ax.annotate(f"{100 * g.baseline[key]:.0f}%", (100 * g.baseline[key], yy - height / 2), xytext=(3, 0),
                        textcoords="offset points", va="center", fontsize=7, color="#555555")
        ax.annotate(text, (value, yy + (height / 2 if with_base else 0)), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=7)
    for i in range(1, len(groups)):  # a line between the category and the source blocks
        if groups[i].dimension != groups[i - 1].dimension:
            ax.axhline(y[i] + 0.5, color="black", linewidth=0.8, alpha=0.5)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlim(0, 118)
    ax.set_xticks(range(0, 101, 20))
    ax.set_xlabel(f"{LABELS[key]} (%)")
    ax.set_title(f"{LABELS[key]} per category and source, head {judgement.verdict_head}"
                 + (" (model: delta in points)" if with_base else ""), fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, fontsize=8, frameon=False)
