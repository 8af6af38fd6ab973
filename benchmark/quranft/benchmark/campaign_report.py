"""A campaign's comparison: its variants ranked, as a terminal table and as `report.md`.

The campaign controller hands the report Job one JSON document (`CampaignInput`, docs/contracts.md); each
variant's scores come from its child's results file (the candidate run the benchmark judged, whose `verdict`
field holds every head's paired comparison), else from what the input carries (the child's status: a stopped or
failed variant has no results file). Ranking (`rank_key`): verdict `improvement` first (then neutral, then
regression, then no verdict), then the primary metric (higher first), then model size, then average latency
(smaller first), then the name. `format_table` is pure and shared with `quranft campaign show`, which builds
its rows from the campaign's status (`rows_from_status`).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from .report import _fmt, _grid
from .report_files import LABELS
from .results import ResultsError, load_runs, pick_run, run_head
from .verdict import PRIMARY_METRICS, display, metrics_from_run

VERDICT_ORDER = {"improvement": 0, "neutral": 1, "regression": 2}
# Kubernetes object names (DNS-1123 subdomain): they name directories on the claim, so nothing else is let in.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
PRODUCTION_MARK = "*"


class CampaignInputError(ValueError):
    """The report Job's input document is unreadable or breaks the contract."""


class _Model(BaseModel):
    # camelCase on the wire like the CRD. Unknown keys are kept and reported (`unknown_keys`), not fatal: the
    # controller may add fields before this Job's image knows them, and a report is still worth writing.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


class CampaignRef(_Model):
    name: str = Field(pattern=NAME_PATTERN)
    namespace: str | None = None
    uid: str | None = None


class VariantInput(_Model):
    """One variant as the controller sees it (any value but the name may be null: stopped, failed, pending)."""

    name: str = Field(pattern=NAME_PATTERN)
    child: str | None = Field(None, pattern=NAME_PATTERN)
    phase: str | None = None
    verdict: str | None = None
    results_path: str | None = None
    model_path: str | None = None
    metrics: dict[str, Any] | None = None  # the contract's metrics object (recall, ..., avgLatency, modelSize)
    intervals: dict[str, Any] | None = None  # metric -> [low, high] of the delta against the baseline
    deltas: dict[str, Any] | None = None  # optional: metric -> delta (status.benchmark.deltas)
    # The metric's name, or the campaign status's object {name, value, delta, interval}.
    primary_metric: str | dict[str, Any] | None = None
    reason: str | None = None  # why the child failed (status), not the verdict's reason
    corpus_hash: str | None = None
    size_bytes: int | None = Field(None, ge=0)
    steps: int | None = Field(None, ge=0)
    gpu_hours: float | None = Field(None, ge=0)
    image_id: str | None = Field(None, alias="imageID")
    stopped_reason: str | None = None
    val_wer_history: list[Any] | None = None

    @property
    def primary_name(self) -> str | None:
        p = self.primary_metric
        return str(p.get("name")) if isinstance(p, dict) and p.get("name") else (p if isinstance(p, str) else None)


class CampaignInput(_Model):
    campaign: CampaignRef
    promote: str | None = None
    promotion_reason: str = ""
    baseline: dict[str, Any] | None = None
    corpus_hash: str | None = None
    variants: list[VariantInput] = Field(default_factory=list)

    @field_validator("promotion_reason", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return "" if value is None else value

    @model_validator(mode="after")
    def _check(self) -> "CampaignInput":
        names = [v.name for v in self.variants]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate variant names {duplicates}")
        if self.promote is not None and self.promote not in names:
            raise ValueError(f"promote names {self.promote!r}, which is not a variant (have {names})")
        return self

    def variant(self, name: str) -> VariantInput:
        return next(v for v in self.variants if v.name == name)


def load_input(path: str | Path) -> CampaignInput:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CampaignInputError(f"cannot read the campaign input {path}: {exc}") from exc
    try:
        return CampaignInput.model_validate_json(text)
    except ValidationError as exc:
        raise CampaignInputError(f"campaign input {path}: {exc}") from exc


def unknown_keys(doc: BaseModel, prefix: str = "") -> list[str]:
    """Dotted paths of the keys the contract does not name (warned about, then ignored)."""
    out = [f"{prefix}{k}" for k in (doc.model_extra or {})]
    for name, value in doc:
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            if isinstance(item, BaseModel):
                where = f"{prefix}{name}[{i}]." if isinstance(value, list) else f"{prefix}{name}."
                out += unknown_keys(item, where)
    return out


@dataclass(frozen=True)
class Cell:
    """A metric of one variant: its value and, when judged, the delta against the baseline with its interval."""

    value: float | None
    delta: float | None = None
    low: float | None = None
    high: float | None = None
    baseline: float | None = None  # the baseline's value on the paired clips (plots put the whisker on it)


@dataclass(frozen=True)
class Row:
    variant: str
    child: str | None
    phase: str | None
    verdict: str | None
    reason: str | None
    primary: str
    scores: dict[str, Cell]  # PRIMARY_METRICS keys
    latency: Cell
    size_bytes: int | None
    steps: int | None
    gpu_hours: float | None
    stopped_reason: str | None = None
    results_path: str | None = None
    source: str = "input"  # "results" when read from the child's results file
    promoted: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def primary_value(self) -> float | None:
        return self.scores.get(self.primary, Cell(None)).value


def resolve(path: str | None, workspace: Path) -> Path | None:
    """A path from the input: relative ones are on the claim (the workspace)."""
    if not path:
        return None
    p = Path(path)
    return p if p.is_absolute() else workspace / p


def judged_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run a results file's verdict belongs to: the candidate carrying `verdict`, else the candidate."""
    with_verdict = [r for r in runs if isinstance(r.get("verdict"), Mapping)]
    if len(with_verdict) == 1:
        return with_verdict[0]
    return pick_run(with_verdict or runs)


def row_from_results(variant: VariantInput, runs: list[dict[str, Any]], path: str | None = None) -> Row:
    """A variant's row from its results file: the verdict head's paired comparison gives each interval."""
    run = judged_run(runs)
    verdict = run.get("verdict") if isinstance(run.get("verdict"), Mapping) else {}
    head = str(verdict.get("verdictHead") or run_head(run))
    comparison = ((verdict.get("heads") or {}).get(head) or {}).get("comparison") or {}
    paired = comparison.get("metrics") or {}
    metrics = metrics_from_run(run)

    def cell(key: str) -> Cell:
        m = paired.get(key)
        if not m:
            return Cell(metrics.get(key))
        return Cell(m.get("candidate"), m.get("delta"), m.get("low"), m.get("high"), m.get("baseline"))

    primary = str(verdict.get("primaryMetric") or variant.primary_name or "recall")
    size = variant.size_bytes if variant.size_bytes is not None else metrics.get("modelSize")
    return Row(variant.name, variant.child, variant.phase, verdict.get("verdict") or variant.verdict,
               verdict.get("reason"), primary, {k: cell(k) for k in PRIMARY_METRICS}, cell("avgLatency"), size,
               variant.steps, variant.gpu_hours, variant.stopped_reason, path, "results")


def row_from_variant(variant: VariantInput) -> Row:
    """A variant's row from the input (or status) alone: values, delta intervals, and deltas when given."""
    metrics, intervals, deltas = dict(variant.metrics or {}), dict(variant.intervals or {}), dict(variant.deltas or {})
    primary = variant.primary_name or "recall"
    if isinstance(variant.primary_metric, dict):  # the status's primary metric fills what the maps lack
        p = variant.primary_metric
        for target, key in ((metrics, "value"), (deltas, "delta"), (intervals, "interval")):
            if target.get(primary) is None and p.get(key) is not None:
                target[primary] = p[key]

    def cell(key: str) -> Cell:
        interval = intervals.get(key)
        low, high = (interval[0], interval[1]) if isinstance(interval, (list, tuple)) and len(interval) == 2 \
            else (None, None)
        return Cell(_number(metrics.get(key)), _number(deltas.get(key)), _number(low), _number(high))

    size = variant.size_bytes if variant.size_bytes is not None else _number(metrics.get("modelSize"))
    return Row(variant.name, variant.child, variant.phase, variant.verdict, variant.reason,
               primary, {k: cell(k) for k in PRIMARY_METRICS}, cell("avgLatency"),
               None if size is None else int(size), variant.steps, variant.gpu_hours, variant.stopped_reason,
               variant.results_path, "input")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def build_row(variant: VariantInput, workspace: Path) -> Row:
    """From the results file when it can be read; else from the input, with a note saying why."""
    path = resolve(variant.results_path, workspace)
    if path is None:
        return row_from_variant(variant)
    try:
        runs, _ = load_runs(path)
        return row_from_results(variant, runs, str(path))
    except (ResultsError, AttributeError, TypeError) as exc:  # unreadable, or a verdict of another shape
        row = row_from_variant(variant)
        return replace(row, notes=(f"results file not used ({exc}); values from the campaign status",))


def rank_key(row: Row) -> tuple[Any, ...]:
    """Verdict improvement first, then the primary metric (higher first), size, latency (smaller first)."""
    primary = row.primary_value
    return (VERDICT_ORDER.get(row.verdict or "", len(VERDICT_ORDER)),
            -primary if primary is not None else math.inf,
            row.size_bytes if row.size_bytes is not None else math.inf,
            row.latency.value if row.latency.value is not None else math.inf,
            row.variant)


def rank(rows: Iterable[Row], production: str | None = None) -> list[Row]:
    """Rows best first; the production variant (if any) is marked."""
    return [replace(r, promoted=r.variant == production) for r in sorted(rows, key=rank_key)]


# ---------------------------------------------------------------------------------------------- formatting

COLUMNS = ("#", "variant", "verdict", *(LABELS[k] for k in PRIMARY_METRICS), "latency", "size", "steps",
           "GPU-h")


def score_text(cell: Cell) -> str:
    """`85.0% (+2.1 ±1.4)`: the value, then the delta in points with its 95 % interval's half-width."""
    text = _fmt(cell.value, "pct")
    if cell.low is None or cell.high is None:
        return text
    if cell.delta is not None:
        return f"{text} ({display(cell.delta, cell.low, cell.high)})"
    return f"{text} [{cell.low * 100:+.1f}, {cell.high * 100:+.1f}]"


def latency_text(cell: Cell) -> str:
    text = _fmt(cell.value, "s")
    if cell.low is None or cell.high is None:
        return text
    if cell.delta is not None:
        return f"{text} ({cell.delta:+.3f} ±{(cell.high - cell.low) / 2:.3f})"
    return f"{text} [{cell.low:+.3f}, {cell.high:+.3f}]"


def verdict_text(row: Row) -> str:
    if row.verdict:
        return row.verdict + (f" ({row.reason})" if row.reason and row.reason.lower() != row.verdict else "")
    detail = ": ".join(filter(None, [row.phase, row.reason]))
    return f"- ({detail})" if detail else "-"


def table_rows(rows: Sequence[Row]) -> list[list[str]]:
    out = [list(COLUMNS)]
    for i, r in enumerate(rows, 1):
        out.append([
            str(i),
            r.variant + (f" {PRODUCTION_MARK}" if r.promoted else ""),
            verdict_text(r),
            *(score_text(r.scores[k]) for k in PRIMARY_METRICS),
            latency_text(r.latency),
            _fmt(r.size_bytes, "bytes"),
            "-" if r.steps is None else str(r.steps),
            "-" if r.gpu_hours is None else f"{r.gpu_hours:.2f}",
        ])
    return out


def format_table(rows: Sequence[Row], *, markdown: bool = False) -> str:
    """The ranked table (rows as given: rank them first). Plain aligned columns, or a markdown table."""
    cells = table_rows(rows)
    if markdown:
        escaped = [[c.replace("|", "\\|").replace(PRODUCTION_MARK, "\\" + PRODUCTION_MARK) for c in line]
                   for line in cells]
        lines = ["| " + " | ".join(line) + " |" for line in escaped]
        lines.insert(1, "|" + "---|" * len(COLUMNS))
        text = "\n".join(lines)
    else:
        text = _grid(cells)
    footer = []
    if any(r.promoted for r in rows):
        footer.append(("\\" if markdown else "") + f"{PRODUCTION_MARK} production model")
    if rows:
        footer.append("scores: value (delta vs baseline in points ±half-width of its 95 % paired interval); "
                      "latency: seconds per clip")
    return ("\n\n" if markdown else "\n").join([text, *footer])


def rows_from_status(status: Mapping[str, Any]) -> list[Row]:
    """Ranked rows from a campaign's `status`: `variants[]` in the report input's field names, and
    `production.variant`."""
    rows = []
    for entry in status.get("variants") or []:
        try:
            variant = VariantInput.model_validate(entry)
        except ValidationError as exc:
            raise CampaignInputError(f"status.variants entry {entry.get('name')!r}: {exc}") from exc
        rows.append(row_from_variant(variant))
    production = (status.get("production") or {}).get("variant")
    return rank(rows, production)


# ------------------------------------------------------------------------------------------------ report.md

def report_markdown(campaign: CampaignInput, rows: Sequence[Row], plots: Sequence[str],
                    production: Mapping[str, Any] | None) -> str:
    c = campaign.campaign
    out = [f"# Campaign {c.name}" + (f" (namespace {c.namespace})" if c.namespace else ""), ""]
    done = sum(1 for r in rows if r.verdict or (r.phase or "") in ("Succeeded", "Failed", "Stopped"))
    out.append(f"{len(rows)} variant(s), {done} ended; every variant judged against the same baseline"
               + (f" on corpus `{campaign.corpus_hash}`." if campaign.corpus_hash else "."))
    out.append("")
    if production:
        out.append(f"**Production: {production['variant']}** ({campaign.promotion_reason or 'promoted'}): "
                   f"`{production['modelPath']}`, lineage `{production['lineagePath']}`."
                   + (f" Earlier production models kept: {len(production.get('history') or [])}."))
    else:
        out.append(f"**Nothing promoted**: {campaign.promotion_reason or 'no variant is a real improvement'}.")
    out += ["", "## Ranking", "",
            "Verdict `improvement` first, then the primary metric, then model size, then latency.", "",
            format_table(rows, markdown=True), ""]
    for plot in plots:
        out += [f"![{Path(plot).stem}]({Path(plot).name})", ""]
    out += ["## Baseline", ""]
    out += [f"- {k}: `{json.dumps(v, ensure_ascii=False, default=str)}`" for k, v in (campaign.baseline or {}).items()]
    if not campaign.baseline:
        out.append("(not given)")
    out += ["", "## Variants", "", "| variant | child | phase | primary | scores from | results | note |",
            "|---|---|---|---|---|---|---|"]
    for r in rows:
        note = "; ".join(filter(None, [r.stopped_reason, *r.notes])) or "-"
        out.append(f"| {r.variant} | {r.child or '-'} | {r.phase or '-'} | {r.primary} | {r.source} | "
                   f"{r.results_path or '-'} | {note.replace('|', '/')} |")
    return "\n".join(out) + "\n"


def warn(message: str) -> None:
    print(f"campaign-report: {message}", file=sys.stderr)
