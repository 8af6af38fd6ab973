"""A campaign's ranked table, report rows from real results files, the PNGs, and `campaign show` (issue 15)."""

import json

import numpy as np
import pytest
from campaign_helpers import campaign_input, four_variants
from PIL import Image

from quranft.benchmark import campaign_show
from quranft.benchmark.campaign_plots import (colours, load_curve, read_progress_history, render_curves_png,
                                              render_metrics_png, series)
from quranft.benchmark.campaign_report import (COLUMNS, CampaignInput, CampaignInputError, Cell, Row, VariantInput,
                                               build_row, format_table, load_input, rank, rows_from_status,
                                               unknown_keys)
from quranft.benchmark.results import load_runs
from quranft.benchmark.verdict import display


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp("ws")
    return ws, four_variants(ws)


def ranked_rows(ws, variants, production=None):
    return rank([build_row(VariantInput.model_validate(v), ws) for v in variants], production)


def test_rows_come_from_the_results_files_and_rank_improvement_first(workspace):
    ws, variants = workspace
    rows = ranked_rows(ws, variants, production="v2")
    assert [r.variant for r in rows] == ["v2", "v3", "v4", "v5"]
    assert [r.verdict for r in rows] == ["improvement", "neutral", "regression", None]
    assert [r.source for r in rows] == ["results", "results", "results", "input"]
    assert [r.promoted for r in rows] == [True, False, False, False]
    # The interval is the benchmark's own paired comparison, as written in the child's results file.
    v2 = next(v for v in variants if v["name"] == "v2")
    runs, _ = load_runs(v2["resultsPath"])
    recall = runs[0]["verdict"]["heads"]["ctc"]["comparison"]["metrics"]["recall"]
    cell = rows[0].scores["recall"]
    assert (cell.value, cell.delta, cell.low, cell.high, cell.baseline) == (
        recall["candidate"], recall["delta"], recall["low"], recall["high"], recall["baseline"])
    assert cell.low > 0.01  # a real improvement: the interval clears min-gain
    v3 = rows[1].scores["recall"]
    assert rows[1].reason == "Inconclusive" and v3.low < 0.01 < v3.high  # does not clear min-gain

    text = format_table(rows)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["#", "variant", "verdict"]
    assert lines[1].split()[:4] == ["1", "v2", "*", "improvement"]
    assert f"{cell.value * 100:.1f}% ({display(cell.delta, cell.low, cell.high)})" in lines[1]
    assert "- (Stopped)" in lines[4] and lines[4].split()[-2:] == ["6", "0.00"]
    assert "* production model" in text


def test_rank_breaks_ties_by_primary_metric_then_size_then_latency():
    def row(name, verdict, recall, size, latency):
        return Row(name, None, "Succeeded", verdict, None, "recall",
                   {k: Cell(recall) for k in ("recall", "precision", "sequenceAccuracy")}, Cell(latency), size,
                   10, 0.1)

    rows = [row("slow", "improvement", 0.9, 100, 0.5), row("big", "improvement", 0.9, 200, 0.1),
            row("best", "improvement", 0.95, 300, 0.9), row("fast", "improvement", 0.9, 100, 0.2),
            row("neutral", "neutral", 0.99, 1, 0.1), row("no-score", "improvement", None, 1, 0.1),
            row("stopped", None, 0.99, 1, 0.1), row("worse", "regression", 0.99, 1, 0.1)]
    assert [r.variant for r in rank(rows)] == ["best", "fast", "slow", "big", "no-score", "neutral", "worse",
                                               "stopped"]


def test_unreadable_results_fall_back_to_the_status_values(tmp_path):
    v = VariantInput.model_validate({
        "name": "v3", "child": "plan-v3", "phase": "Succeeded", "verdict": "neutral",
        "resultsPath": "runs/plan-v3/benchmark/gone.json", "metrics": {"recall": 0.8, "avgLatency": 0.25},
        "intervals": {"recall": [-0.01, 0.03]}, "sizeBytes": 5_000_000, "steps": 40, "gpuHours": 0.5})
    row = build_row(v, tmp_path)
    assert row.source == "input" and "gone.json" in row.notes[0]
    assert row.scores["recall"] == Cell(0.8, None, -0.01, 0.03)
    line = format_table([row]).splitlines()[1]
    assert "80.0% [-1.0, +3.0]" in line and "0.250s" in line and "5.0MB" in line and "0.50" in line


def test_markdown_table_escapes_and_has_every_column(workspace):
    ws, variants = workspace
    md = format_table(ranked_rows(ws, variants, production="v2"), markdown=True)
    lines = md.splitlines()
    assert lines[0] == "| " + " | ".join(COLUMNS) + " |" and lines[1] == "|" + "---|" * len(COLUMNS)
    assert lines[2].startswith("| 1 | v2 \\* | improvement |")
    assert all(line.count("|") == len(COLUMNS) + 1 for line in lines[2:6])
    assert "\\* production model" in md


def test_input_contract_is_checked(tmp_path):
    base = campaign_input([{"name": "v2"}, {"name": "v3", "extraThing": 1}], promote="v2")
    path = tmp_path / "in.json"
    path.write_text(json.dumps({**base, "newField": True}))
    doc = load_input(path)
    assert doc.promote == "v2" and unknown_keys(doc) == ["newField", "variants[1].extraThing"]
    for bad, words in (({**base, "variants": [{"name": "v2"}, {"name": "v2"}]}, "duplicate variant names"),
                       ({**base, "promote": "v9"}, "not a variant"),
                       ({**base, "variants": [{"name": "../../etc"}], "promote": None}, "name"),
                       ({**base, "campaign": {"name": "Bad/Name"}}, "campaign.name")):
        path.write_text(json.dumps(bad))
        with pytest.raises(CampaignInputError, match=words.replace(".", r"\.")):
            load_input(path)
    path.write_text("{not json")
    with pytest.raises(CampaignInputError):
        load_input(path)
    assert CampaignInput.model_validate({"campaign": {"name": "c"}, "promotionReason": None}).promotion_reason == ""


def _pixels(png: bytes, tmp_path, name):
    (tmp_path / name).write_bytes(png)
    with Image.open(tmp_path / name) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def test_metrics_png_draws_every_variant_and_the_baseline(workspace, tmp_path):
    ws, variants = workspace
    rows = ranked_rows(ws, variants, production="v2")
    px = _pixels(render_metrics_png(rows, "campaign plan"), tmp_path, "metrics.png")
    assert px.shape == (605, 1430, 3)  # 13 x 5.5 inches at 110 dpi
    assert len(np.unique(px.reshape(-1, 3), axis=0)) > 50  # drawn, not blank
    palette = colours([r.variant for r in rows])
    for name in ("v2", "v3", "v4"):  # a bar of each scored variant's own colour
        rgb = np.round(np.array(palette[name][:3]) * 255)
        assert (np.abs(px.astype(int) - rgb).sum(axis=2) < 6).sum() > 500, name
    grey = np.array([0x9e, 0x9e, 0x9e])
    assert (np.abs(px.astype(int) - grey).sum(axis=2) < 6).sum() > 500  # the baseline bars


def test_curves_from_progress_history_and_the_fallback(workspace, tmp_path):
    ws, variants = workspace
    history = ws / "runs" / "plan-v2" / "progress_history.jsonl"
    # A resume repeats steps (the last report wins); a writer killed mid-line leaves a torn line (skipped).
    with history.open("a") as fh:
        fh.write(json.dumps({"step": 20, "loss": 0.5, "valWer": 0.3}) + "\n" + '{"step": 21, "lo')
    entries = read_progress_history(history)
    steps, loss = series(entries, "loss")
    assert steps == tuple(range(1, 21)) and loss[-1] == 0.5
    assert series(entries, "valWer") == ((5, 10, 15, 20), (0.875, 0.75, 0.625, 0.3))

    stopped = next(v for v in variants if v["name"] == "v5")
    curve = load_curve("v5", "plan-v5", ws, stopped["valWerHistory"], "Stopped")
    assert curve.source == "valWerHistory" and curve.ended_early
    assert curve.val_wer == ((2, 4, 6), (1.0, 0.99, 0.98)) and curve.loss == ((), ())
    assert load_curve("v9", None, ws, None).source == "none"

    curves = [load_curve(v["name"], v["child"], ws, v["valWerHistory"], v["phase"]) for v in variants]
    palette = colours([v["name"] for v in variants])
    px = _pixels(render_curves_png(curves, palette, "campaign plan"), tmp_path, "curves.png")
    assert px.shape == (528, 1430, 3)
    rgb = np.round(np.array(palette["v5"][:3]) * 255)
    assert (np.abs(px.astype(int) - rgb).sum(axis=2) < 6).sum() > 100  # the stopped variant's WER line


# A status in the controller's shape (operator/quranft/operator/campaign_spec.py CampaignStatus).
STATUS = {
    "phase": "Succeeded", "done": "4/4", "report": {"path": "/workspace/campaigns/plan/report.md"},
    "production": {"variant": "v2", "modelPath": "/workspace/models/production/plan/model.nemo"},
    "variants": [
        {"name": "v3", "child": "plan-v3", "phase": "Succeeded", "verdict": "neutral",
         "primaryMetric": {"name": "recall", "value": 0.72, "delta": 0.025, "interval": [-0.008, 0.058]},
         "metrics": {"recall": 0.72, "precision": 0.7, "sequenceAccuracy": 0.6, "avgLatency": 0.31},
         "intervals": {"precision": [-0.01, 0.05]}, "deltas": {"precision": 0.02}, "sizeBytes": 2_000_000,
         "steps": 20, "gpuHours": 0.25, "corpusHash": "corpus-hash-1", "valWerHistory": [[5, 0.9], [10, 0.8]]},
        {"name": "v5", "child": "plan-v5", "phase": "Stopped", "stoppedReason": "MedianStopping", "steps": 6},
        {"name": "v4", "child": "plan-v4", "phase": "Failed", "reason": "OOMKilled"},
        {"name": "v2", "child": "plan-v2", "phase": "Succeeded", "verdict": "improvement",
         "primaryMetric": {"name": "recall", "value": 0.958, "delta": 0.258, "interval": [0.158, 0.358]},
         "sizeBytes": 2_000_000, "steps": 20, "gpuHours": 0.25},
    ]}


def test_campaign_show_prints_the_ranked_table_from_status(capsys):
    rows = rows_from_status(STATUS)
    assert [(r.variant, r.promoted) for r in rows] == [("v2", True), ("v3", False), ("v4", False), ("v5", False)]
    obj = {"metadata": {"name": "plan", "namespace": "team-a"}, "status": STATUS}
    asked = []

    def fetch(namespace, name):
        asked.append((namespace, name))
        return obj

    assert campaign_show.main(["show", "plan", "-n", "team-a"], fetch=fetch) == 0
    out = capsys.readouterr().out
    assert asked == [("team-a", "plan")]
    assert out.startswith("campaign team-a/plan: phase Succeeded, 4/4 variants ended\n"
                          "production: v2 (/workspace/models/production/")
    assert "report: /workspace/campaigns/plan/report.md" in out
    assert format_table(rows) in out
    table = out[out.index("#  variant"):].splitlines()
    assert table[1].split()[:4] == ["1", "v2", "*", "improvement"]
    # The primary metric from the status's primaryMetric object; the others from metrics/intervals/deltas.
    assert "95.8% (+25.8 ±10.0)" in table[1] and "72.0% (+2.5 ±3.3)" in table[2] and "0.310s" in table[2]
    assert "70.0% (+2.0 ±3.0)" in table[2]
    assert table[3].split()[:4] == ["3", "v4", "-", "(Failed:"] and "OOMKilled)" in table[3]
    assert table[4].split()[:4] == ["4", "v5", "-", "(Stopped)"]

    def missing(namespace, name):
        raise LookupError(f"no QuranFineTuneCampaign {name!r} in namespace {namespace!r}")

    assert campaign_show.main(["show", "nope", "-n", "x"], fetch=missing) == 1
    assert "no QuranFineTuneCampaign 'nope'" in capsys.readouterr().err
    empty = {"metadata": {"name": "new", "namespace": "x"}, "status": {}}
    assert campaign_show.show_text(empty).endswith("production: none promoted\nno variants in status yet")
    nothing = {"metadata": {"name": "c", "namespace": "x"}, "status": {
        "promotion": {"variant": None, "reason": "NoImprovement", "message": "no variant is a real improvement"}}}
    assert "production: none promoted (NoImprovement: no variant is a real improvement)" in \
        campaign_show.show_text(nothing)


def test_quranft_dispatches_campaign(capsys):
    from quranft.cli import COMMANDS, main

    assert COMMANDS["campaign"][0] == "quranft.benchmark.campaign_show"
    with pytest.raises(SystemExit) as exc:
        main(["campaign", "show", "--help"])
    assert exc.value.code == 0 and "-n NAMESPACE" in capsys.readouterr().out
