"""`quranft benchmark compare RESULTS BASELINE`: any two results files, old ones too, paired by sample id."""

import json

import pytest

from quranft.benchmark.cli import main
from quranft.benchmark.results import rescore_run
from quranft.benchmark.verdict import Tolerances, decide, metrics_from_run

V = lambda s, a: {"surah": s, "ayah": a}  # noqa: E731


def row(i, outcome, latency=0.3):
    """A per-sample row in the team's shape; its stored scores are stale zeros (compare re-scores)."""
    expected = [V(2, i + 1)]
    predicted = {"right": expected, "wrong": [], "extra": expected + [V(2, i + 2)]}[outcome]
    return {"id": f"clip{i:03d}", "expected": expected, "predicted": predicted, "recall": 0, "precision": 0,
            "sequence_accuracy": 0, "latency": latency, "transcript": "..."}


def team_run(name, outcomes, start=0, **extra):
    """A run as the team's old files hold it: no head, no role, stale aggregates."""
    return {"name": name, "recall": 0.5, "precision": 0.5, "sequence_accuracy": 0.5, "total": len(outcomes),
            "avg_latency": 0.3, "model_size": 459_000_000,
            "per_sample": [row(start + i, o) for i, o in enumerate(outcomes)], **extra}


def write(path, runs):
    path.write_text(json.dumps(runs))
    return str(path)


def v1_files(tmp_path):
    """53 clips in each file, 50 shared; on the shared ones the model is wrong on 2 more clips."""
    shared = ["right"] * 42 + ["wrong"] * 8
    model = ["wrong", "wrong"] + shared[2:]
    results = write(tmp_path / "2026-02-27_092540.json", [team_run("v1", model + ["right"] * 3)])
    baseline_run = team_run("base", shared)
    baseline_run["per_sample"] += [row(900 + i, "right") for i in range(3)]  # clips only the baseline has
    baseline = write(tmp_path / "2026-01-10_080000.json", [baseline_run])
    return results, baseline


def compare_json(capsys, *argv):
    capsys.readouterr()
    assert main(["compare", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_compare_old_files_pairs_by_id_and_rescores(tmp_path, capsys):
    results, baseline = v1_files(tmp_path)
    out = compare_json(capsys, results, baseline)
    assert (out["verdict"], out["reason"], out["rule"], out["verdictHead"]) == ("neutral", "Inconclusive",
                                                                                "paired", "ctc")
    assert out["runs"] == {"ctc": {"results": "v1", "baseline": "base"}}
    cmp = out["heads"]["ctc"]["comparison"]
    assert (cmp["pairedClips"], cmp["candidateSamples"], cmp["baselineSamples"]) == (50, 53, 53)
    # the stale stored scores (all 0) were replaced by today's scoring of expected/predicted
    recall = cmp["metrics"]["recall"]
    assert recall["candidate"] == pytest.approx(40 / 50) and recall["baseline"] == pytest.approx(42 / 50)
    assert recall["low"] < -0.01 < recall["high"]
    assert cmp["sequenceTest"] == {"candidateOnly": 0, "baselineOnly": 2, "pValue": 0.5}
    assert out["requiredClips"] > 50 and out["heads"]["ctc"]["requiredClips"]["recall"] == out["requiredClips"]


def test_compare_human_output(tmp_path, capsys):
    results, baseline = v1_files(tmp_path)
    capsys.readouterr()
    assert main(["compare", results, baseline]) == 0
    text = capsys.readouterr().out
    assert "50 paired clips (candidate 53 samples, baseline 53)" in text
    assert "-4.0 ±" in text and "sequence test (exact McNemar)" in text and "p = 0.5" in text
    assert text.rstrip().splitlines()[-1].startswith("verdict: neutral (Inconclusive; rule paired")


def test_compare_threshold_rule_reproduces_decide(tmp_path, capsys):
    results, baseline = v1_files(tmp_path)
    out = compare_json(capsys, results, baseline, "--rule", "threshold")
    cand = rescore_run(json.loads(open(results).read())[0])
    base = rescore_run(json.loads(open(baseline).read())[0])
    expected = decide(metrics_from_run(cand), metrics_from_run(base), Tolerances())
    assert out["verdict"] == expected == "regression" and out["reason"] == "Regression"
    loose = compare_json(capsys, results, baseline, "--rule", "threshold", "--tolerance", "10")
    assert (loose["verdict"], loose["reason"]) == ("neutral", "WithinTolerance")


def test_compare_seed_and_resamples(tmp_path, capsys):
    results = write(tmp_path / "r.json", [team_run("v1", ["right", "wrong", "extra"] * 20)])
    baseline = write(tmp_path / "b.json", [team_run("base", ["right"] * 30 + ["wrong"] * 30)])
    a = compare_json(capsys, results, baseline, "--seed", "4", "--resamples", "3000")
    b = compare_json(capsys, results, baseline, "--seed", "4", "--resamples", "3000")
    c = compare_json(capsys, results, baseline, "--seed", "5", "--resamples", "3000")
    assert a == b and a["resamples"] == 3000 and a["seed"] == 4
    ma, mc = a["heads"]["ctc"]["comparison"]["metrics"], c["heads"]["ctc"]["comparison"]["metrics"]
    assert ma["recall"]["delta"] == mc["recall"]["delta"] and ma != mc


def test_compare_files_sharing_no_id_is_a_config_error(tmp_path, capsys):
    results = write(tmp_path / "r.json", [team_run("v1", ["right"] * 4)])
    baseline = write(tmp_path / "b.json", [team_run("base", ["right"] * 6, start=100)])
    capsys.readouterr()
    assert main(["compare", results, baseline]) == 2
    err = capsys.readouterr().err
    assert "share no sample id" in err and "(4 samples)" in err and "(6 samples)" in err
    assert f"RESULTS {results} and BASELINE {baseline}" in err


@pytest.mark.parametrize("content", ["not json", '{"name": "x"}'])
def test_compare_unreadable_file_is_a_config_error(tmp_path, content, capsys):
    good = write(tmp_path / "good.json", [team_run("v1", ["right"])])
    (tmp_path / "bad.json").write_text(content)
    assert main(["compare", good, str(tmp_path / "bad.json")]) == 2
    assert main(["compare", str(tmp_path / "bad.json"), good]) == 2
    assert main(["compare", good, str(tmp_path / "missing.json")]) == 2
    assert "benchmark compare:" in capsys.readouterr().err


def test_compare_multi_run_files_need_a_run_name(tmp_path, capsys):
    shared = ["right"] * 10 + ["wrong"] * 10
    multi = write(tmp_path / "multi.json", [team_run("v1", shared), team_run("base", ["right"] * 20)])
    one = write(tmp_path / "one.json", [team_run("v2", ["right"] * 20)])
    capsys.readouterr()
    assert main(["compare", one, multi]) == 2
    assert "--baseline-run" in capsys.readouterr().err
    assert main(["compare", multi, one]) == 2
    assert "--results-run" in capsys.readouterr().err
    out = compare_json(capsys, one, multi, "--baseline-run", "v1")
    assert out["runs"]["ctc"]["baseline"] == "v1" and out["verdict"] == "improvement"
    out = compare_json(capsys, multi, one, "--results-run", "v1")
    assert out["verdict"] == "regression"


def test_compare_two_head_files(tmp_path, capsys):
    def file(name, ctc, rnnt, verdict_head=None):
        c = team_run(name, ctc, head="ctc", role="candidate")
        r = team_run(name, rnnt, head="rnnt", role="candidate")
        if verdict_head:
            r["verdict"] = {"verdict": "neutral", "verdictHead": verdict_head}
        return [c, team_run("ref", ["right"] * 40, head="ctc", role="baseline"), r]

    new = write(tmp_path / "new.json", file("v3", ["right"] * 40, ["right"] * 30 + ["wrong"] * 10, "rnnt"))
    old = write(tmp_path / "old.json", file("v2", ["right"] * 20 + ["wrong"] * 20, ["right"] * 40))
    out = compare_json(capsys, new, old)
    assert set(out["heads"]) == {"ctc", "rnnt"} and out["verdictHead"] == "rnnt"
    assert out["verdict"] == "regression"  # rnnt: 30/40 right against 40/40
    assert out["runs"] == {"ctc": {"results": "v3", "baseline": "v2"}, "rnnt": {"results": "v3", "baseline": "v2"}}
    ctc = compare_json(capsys, new, old, "--head", "ctc")
    assert set(ctc["heads"]) == {"ctc"} and ctc["verdict"] == "improvement"
    # an old single-head baseline (no `head`: CTC) judges the CTC head only
    v1 = write(tmp_path / "v1.json", [team_run("v1", ["right"] * 20 + ["wrong"] * 20)])
    out = compare_json(capsys, new, v1)
    assert set(out["heads"]) == {"ctc"} and out["verdictHead"] == "ctc" and out["verdict"] == "improvement"
    capsys.readouterr()
    assert main(["compare", new, v1, "--head", "rnnt"]) == 2
    assert "no run for head" in capsys.readouterr().err
