"""report.md and the PNG next to the results JSON (issue 11, part 6)."""

import os
import subprocess
import sys

import numpy as np
from PIL import Image

from quranft.benchmark.report_files import write_report
from quranft.benchmark.verdict import Targets, judge

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_run(name, recall, head="ctc", role="candidate", categories=None, sources=None):
    rows = []
    for i, r in enumerate(recall):
        row = {"id": f"c{i:03d}", "expected": [], "predicted": [], "recall": float(r), "precision": float(r),
               "sequence_accuracy": float(r == 1), "latency": 0.3 if i % 2 else None, "transcript": ""}
        if categories and categories[i]:
            row["category"] = categories[i]
        if sources and sources[i]:
            row["source"] = sources[i]
        rows.append(row)
    return {"name": name, "head": head, "role": role, "recall": float(np.mean(recall)),
            "precision": float(np.mean(recall)), "sequence_accuracy": float(np.mean(np.equal(recall, 1))),
            "avg_latency": 0.3, "total": len(rows), "model_size": 115_000_000, "per_sample": rows}


CATS = ["short", "medium", "long", "multi"] * 10
SRCS = ["user"] * 15 + ["reference"] * 20 + [None] * 5


def judged():
    rng = np.random.default_rng(2)
    base = rng.choice([0.0, 0.5, 1.0], size=40, p=[0.2, 0.2, 0.6])
    cand = np.where(rng.random(40) < 0.3, 1.0, base)
    heads = {h: (make_run("v3", cand, h, categories=CATS, sources=SRCS), make_run("base", base, h, "baseline"))
             for h in ("ctc", "rnnt")}
    return judge(heads, verdict_head="rnnt"), [r for pair in heads.values() for r in pair]


def test_write_report_files(tmp_path):
    j, runs = judged()
    extra = {"corpus": {"hash": "abc123", "clips": 40}, "leakage": {"exactAudio": ["c001"], "excluded": 1}}
    md, png = write_report(tmp_path, j, runs, "2026-02-27_092540", extra=extra, targets=Targets())
    assert (md.name, png.name) == ("2026-02-27_092540.report.md", "2026-02-27_092540.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2026-02-27_092540.png", "2026-02-27_092540.report.md",
                                                          "report.md", "report.png"]
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and (tmp_path / "report.png").read_bytes() == data
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width >= 1000 and im.height >= 400
        assert len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 20  # drawn, not blank

    text = md.read_text()
    assert "![model vs baseline](2026-02-27_092540.png)" in text
    assert "![model vs baseline](report.png)" in (tmp_path / "report.md").read_text()
    assert f"**Verdict: {j.verdict}** ({j.reason})" in text
    assert "| metric | model | baseline | delta (points) | 95 % interval |" in text
    m = j.head.comparison.metrics["recall"]
    recall_row = next(line for line in text.splitlines() if line.startswith("| recall |"))
    assert f"{m.candidate * 100:.1f}%" in recall_row and f"[{m.low * 100:+.1f}, {m.high * 100:+.1f}]" in recall_row
    assert "## Metrics: head `ctc`" in text and "## Metrics: head `rnnt`" in text
    assert "Sequence test (exact McNemar)" in text
    for group in ("category: short", "category: multi", "source: user", "source: reference", "source: unknown"):
        assert f"| {group} |" in text
    assert "| category: short | 10 |" in text and "| source: unknown | 5 |" in text
    assert "## corpus" in text and "- hash: abc123" in text and "## leakage" in text
    assert "## Targets" in text and "| recall |" in text
    assert "## Runs" in text and text.count("| v3 |") == 2


def test_earlier_reports_are_never_overwritten(tmp_path):
    j, runs = judged()
    first_md, first_png = write_report(tmp_path, j, runs, "2026-02-27_092540")
    before = first_md.read_text()
    no_base = judge({"ctc": (runs[0], None)}, verdict_head="ctc")
    md, png = write_report(tmp_path, no_base, runs[:1], "2026-02-27_092540")
    assert (md.name, png.name) == ("2026-02-27_092540-1.report.md", "2026-02-27_092540-1.png")
    assert first_md.read_text() == before and first_png.exists()
    latest = (tmp_path / "report.md").read_text()
    assert "No baseline to compare with." in latest and "NoBaseline" in latest
    assert (tmp_path / "report.png").read_bytes() == png.read_bytes()
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_rows_without_labels(tmp_path):
    cand, base = make_run("a", [1.0, 0.0, 1.0]), make_run("b", [1.0, 1.0, 0.0], role="baseline")
    md, png = write_report(tmp_path, judge({"ctc": (cand, base)}, verdict_head="ctc"), [cand, base], "x")
    assert "The rows carry no `category` or `source`." in md.read_text()
    assert png.read_bytes().startswith(PNG_SIGNATURE)


def test_cli_and_verdict_do_not_import_matplotlib_or_scipy():
    code = ("import sys, quranft.benchmark.cli, quranft.benchmark.verdict; "
            "bad = [m for m in ('matplotlib', 'scipy') if m in sys.modules]; sys.exit(1 if bad else 0)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0
