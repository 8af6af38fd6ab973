"""`quranft benchmark campaign-report` end to end on a temp workspace: report, PNGs, promotion, summary line,
exit codes (issue 15; the contract with the campaign controller)."""

import json

import numpy as np
import pytest
from campaign_helpers import campaign_input, four_variants
from PIL import Image

from quranft.benchmark.cli import main


@pytest.fixture
def campaign(tmp_path):
    ws = tmp_path / "workspace"
    return ws, four_variants(ws)


def run(tmp_path, ws, doc, capsys, name="in.json"):
    path, log = tmp_path / name, tmp_path / "termination-log"
    path.write_text(json.dumps(doc))
    rc = main(["campaign-report", "--input", str(path), "--workspace", str(ws), "--termination-log", str(log)])
    out = capsys.readouterr()
    return rc, out.out, out.err, log.read_text()


def test_report_and_promotion_end_to_end_and_rerun(tmp_path, campaign, capsys):
    ws, variants = campaign
    rc, out, err, log = run(tmp_path, ws, campaign_input(variants, promote="v2"), capsys)
    assert rc == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert log == out.splitlines()[-1] and len(log.encode()) <= 4096
    root = ws / "models" / "production" / "plan"
    assert summary == {
        "ok": True, "stage": "campaign-report", "reportPath": str(ws / "campaigns" / "plan" / "report.md"),
        "plots": [str(ws / "campaigns" / "plan" / "metrics.png"), str(ws / "campaigns" / "plan" / "curves.png")],
        "production": {"variant": "v2", "modelPath": str(root / "model.nemo"),
                       "lineagePath": str(root / "lineage.json"), "resultsPath": str(root / "results.json"),
                       "history": [], "promotedAt": summary["production"]["promotedAt"]}}
    v2 = next(v for v in variants if v["name"] == "v2")
    assert (root / "model.nemo").read_bytes() == (ws / "runs" / "plan-v2" / "model.nemo").read_bytes()
    assert (root / "results.json").read_text() == open(v2["resultsPath"]).read()
    lineage = json.loads((root / "lineage.json").read_text())
    assert lineage["campaign"] == {"name": "plan", "namespace": "team-a", "uid": "uid-1"}
    assert lineage["image"] == {"id": "sha256:feedbeef"} and lineage["verdict"]["verdict"] == "improvement"

    report = (ws / "campaigns" / "plan" / "report.md").read_text()
    assert "**Production: v2**" in report and "![metrics](metrics.png)" in report and "![curves](curves.png)" in report
    assert report.index("| 1 | v2 \\* | improvement") < report.index("| 2 | v3 | neutral") \
        < report.index("| 3 | v4 | regression") < report.index("| 4 | v5 | - (Stopped)")
    assert "MedianStopping" in report
    assert out.splitlines()[1].split()[:4] == ["1", "v2", "*", "improvement"]  # the table, in the log too
    for png in summary["plots"]:
        with Image.open(png) as im:
            assert im.format == "PNG" and im.width == 1430
            assert len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 50

    # The Job run again (a retry after a crash): the same summary, nothing new in history.
    rc, out2, _, _ = run(tmp_path, ws, campaign_input(variants, promote="v2"), capsys)
    assert rc == 0 and json.loads(out2.splitlines()[-1]) == summary
    assert "already promoted" in out2

    # A later choice (manual: v3) keeps v2 in history.
    rc, out3, _, _ = run(tmp_path, ws, campaign_input(variants, promote="v3", reason="manual"), capsys)
    history = json.loads(out3.splitlines()[-1])["production"]["history"]
    assert rc == 0 and len(history) == 1 and history[0].endswith("-v2")
    assert (ws / "runs" / "plan-v2" / "model.nemo").read_bytes() == open(f"{history[0]}/model.nemo", "rb").read()


def test_nothing_promoted_says_so(tmp_path, campaign, capsys):
    ws, variants = campaign
    rc, out, err, _ = run(tmp_path, ws, campaign_input(variants), capsys)
    assert rc == 0, err
    assert json.loads(out.splitlines()[-1])["production"] is None
    assert not (ws / "models").exists()
    report = (ws / "campaigns" / "plan" / "report.md").read_text()
    assert "**Nothing promoted**: no variant is a real improvement." in report
    assert "\\*" not in report


@pytest.mark.parametrize("change, rc_want, reason, words", [
    (lambda d: d["variants"].append(dict(d["variants"][0])), 2, "ConfigError", "duplicate variant names"),
    (lambda d: d.update(promote="v5"), 2, "ConfigError", "has no modelPath, resultsPath"),
    (lambda d: (d.update(promote="v2"), d.update(campaign={"name": "plan", "uid": "u"})), 3, "DataError",
     "training_metadata.json"),
])
def test_bad_input_exits_with_the_benchmark_codes(tmp_path, campaign, capsys, change, rc_want, reason, words):
    ws, variants = campaign
    doc = campaign_input(variants)
    change(doc)
    if reason == "DataError":
        (ws / "runs" / "plan-v2" / "training_metadata.json").unlink()
    rc, out, err, log = run(tmp_path, ws, doc, capsys)
    message = json.loads(log)
    assert rc == rc_want and message["ok"] is False and message["reason"] == reason
    assert message["stage"] == "campaign-report" and words in message["message"]
    assert not (ws / "models" / "production" / "plan" / "model.nemo").exists()


def test_unknown_flag_is_a_config_error(tmp_path, capsys):
    log = tmp_path / "log"
    assert main(["campaign-report", "--inptu", "x", "--termination-log", str(log)]) == 2
    assert json.loads(log.read_text())["reason"] == "ConfigError"
