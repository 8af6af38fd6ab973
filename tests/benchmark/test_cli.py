"""`quranft benchmark score` and `quranft benchmark run` through main(argv)."""

import json
import os

import pytest
from corpus_helpers import entry, make_corpus

from quranft.benchmark.cli import main

V = lambda s, a: {"surah": s, "ayah": a}  # noqa: E731


def old_team_file(path):
    """The team's historical shape: a list of runs, stale aggregates, per-sample expected/predicted."""
    runs = [
        {"name": "nvidia-fastconformer-quran-ft-v1", "recall": 0.5, "precision": 0.5, "sequence_accuracy": 0.5,
         "total": 3, "avg_latency": 0.35, "model_size": 459_000_000, "per_sample": [
             {"id": "a", "expected": [V(1, 1)], "predicted": [V(1, 1)], "recall": 0, "precision": 0,
              "sequence_accuracy": 0, "latency": 0.3, "transcript": "..."},
             {"id": "b", "expected": [V(112, 2), V(112, 3)], "predicted": [V(112, 3), V(112, 2)],
              "recall": 0, "precision": 0, "sequence_accuracy": 0, "latency": 0.4, "transcript": "..."},
             {"id": "c", "expected": [V(3, 23)], "predicted": [V(4, 44)], "also_accept": [[V(4, 44)]],
              "recall": 0, "precision": 0, "sequence_accuracy": 0, "latency": 0.35, "transcript": "..."},
         ]},
        {"name": "nvidia-fastconformer", "recall": 0.9, "precision": 0.9, "sequence_accuracy": 0.9, "total": 1,
         "avg_latency": 0.33, "model_size": 115_000_000, "per_sample": [
             {"id": "a", "expected": [[1, 1]], "predicted": [[1, 1], [1, 2]], "recall": 0, "precision": 0,
              "sequence_accuracy": 0, "latency": 0.33, "transcript": "..."}]},
    ]
    path.write_text(json.dumps(runs))
    return runs


def test_score_json_rescores_in_same_shape_and_order(tmp_path, capsys):
    original = old_team_file(tmp_path / "old.json")
    assert main(["score", str(tmp_path / "old.json"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in out] == [r["name"] for r in original]
    v1, base = out
    assert [r["recall"] for r in v1["per_sample"]] == [1.0, 0.5, 1.0]
    assert [r["precision"] for r in v1["per_sample"]] == [1.0, 0.5, 1.0]
    assert [r["sequence_accuracy"] for r in v1["per_sample"]] == [1.0, 0.0, 1.0]
    assert v1["per_sample"][2]["accepted"] == 1
    assert v1["recall"] == pytest.approx(2.5 / 3) and v1["sequence_accuracy"] == pytest.approx(2 / 3)
    assert (base["recall"], base["precision"], base["sequence_accuracy"]) == (1.0, 0.5, 0.0)
    # everything else is kept as it was
    assert v1["avg_latency"] == 0.35 and v1["model_size"] == 459_000_000 and v1["total"] == 3
    assert base["per_sample"][0]["expected"] == [[1, 1]]


def test_score_no_also_accept(tmp_path, capsys):
    old_team_file(tmp_path / "old.json")
    assert main(["score", str(tmp_path / "old.json"), "--json", "--no-also-accept"]) == 0
    v1 = json.loads(capsys.readouterr().out)[0]
    assert v1["per_sample"][2]["recall"] == 0.0 and v1["recall"] == pytest.approx(1.5 / 3)


def test_score_single_run_object_and_human_table(tmp_path, capsys):
    run = old_team_file(tmp_path / "old.json")[1]
    (tmp_path / "one.json").write_text(json.dumps(run))
    assert main(["score", str(tmp_path / "one.json"), "--json"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), dict)
    assert main(["score", str(tmp_path / "old.json")]) == 0
    text = capsys.readouterr().out
    assert "83.3%" in text and "100.0%" in text and "112:2 112:3" in text and "delta" in text


@pytest.mark.parametrize("content", ["not json", '{"name": "x"}', '[{"per_sample": [{"expected": ["x"]}]}]'])
def test_score_bad_file_is_config_error(tmp_path, content, capsys):
    (tmp_path / "bad.json").write_text(content)
    assert main(["score", str(tmp_path / "bad.json")]) == 2


def read_termination(path):
    line = path.read_text()
    assert "\n" not in line.strip() and len(line.encode()) <= 4096
    return json.loads(line)


def test_run_bad_flags_is_config_error(tmp_path):
    term = tmp_path / "term"
    assert main(["run", "--model", "x", "--termination-log", str(term)]) == 2
    assert read_termination(term) == {"ok": False, "stage": "benchmark", "reason": "ConfigError",
                                      "message": "invalid command-line flags"}
    assert main(["run", "--model", "a", "--corpus", "c", "--out", "o", "--baseline", "b",
                 "--baseline-model", "m"]) == 2


def test_run_missing_corpus_is_data_error(tmp_path):
    term = tmp_path / "term"
    rc = main(["run", "--model", str(tmp_path / "m.nemo"), "--corpus", str(tmp_path / "nope"),
               "--out", str(tmp_path / "out"), "--termination-log", str(term)])
    assert rc == 3 and read_termination(term)["reason"] == "DataError"


def test_run_missing_model_file_is_config_error(tmp_path, recitations):
    term = tmp_path / "term"
    rc = main(["run", "--model", str(tmp_path / "m.nemo"), "--corpus", str(recitations),
               "--out", str(tmp_path / "out"), "--termination-log", str(term)])
    msg = read_termination(term)
    assert rc == 2 and msg["reason"] == "ConfigError" and "m.nemo" in msg["message"]


def test_run_all_files_missing_is_data_error(tmp_path):
    root = make_corpus(tmp_path / "c", [entry("a", "a.wav", [(1, 1)])])
    rc = main(["run", "--model", "m.nemo", "--corpus", str(root), "--out", str(tmp_path / "o"),
               "--termination-log", str(tmp_path / "t")])
    assert rc == 3


def test_run_bad_baseline_file_is_config_error(tmp_path, recitations):
    (tmp_path / "b.json").write_text(json.dumps([{"name": "a", "per_sample": []}, {"name": "b", "per_sample": []}]))
    rc = main(["run", "--model", "m.nemo", "--corpus", str(recitations), "--out", str(tmp_path / "o"),
               "--baseline", str(tmp_path / "b.json"), "--termination-log", str(tmp_path / "t")])
    assert rc == 2 and "--baseline-run" in read_termination(tmp_path / "t")["message"]


# --- end to end with a real (untrained, tiny) NeMo model ------------------------------------------------

@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """An untrained tiny FastConformer hybrid .nemo, built once with `quranft trainer tiny-model`."""
    from quranft.trainer.cli import main as trainer_main

    folder = tmp_path_factory.mktemp("tiny")
    path = folder / "tiny.nemo"
    assert trainer_main(["tiny-model", "--out", str(path), "--termination-log", str(folder / "term")]) == 0
    return path


@pytest.mark.slow
def test_run_tiny_model_over_recitations(tmp_path, tiny_model, recitations, capsys):
    from quranft.benchmark.corpus import load_corpus

    term, out = tmp_path / "term.json", tmp_path / "out"
    rc = main(["run", "--model", str(tiny_model), "--corpus", str(recitations), "--out", str(out),
               "--termination-log", str(term), "--batch-size", "4", "--decoder", "ctc"])
    assert rc == 0
    msg = read_termination(term)
    assert msg["ok"] is True and msg["stage"] == "benchmark" and msg["baseline"] is None
    assert msg["verdict"] == "neutral"
    corpus = load_corpus(recitations)
    assert msg["metrics"]["total"] == corpus.total and msg["metrics"]["scored"] == len(corpus.samples)
    assert msg["metrics"]["modelSize"] == os.path.getsize(tiny_model)

    latest = json.loads((out / "latest.json").read_text())
    assert json.loads(open(msg["resultsPath"]).read()) == latest
    (run,) = latest
    assert run["errors"] == 0 and all("error" not in r for r in run["per_sample"])
    assert {r["id"] for r in run["per_sample"]} == {s.id for s in corpus.samples}
    # latency: transcription + matching at batch 1 on a seeded sample of 32 clips (the --latency-samples default)
    timed = [r["latency"] for r in run["per_sample"] if r["latency"] is not None]
    assert len(timed) == min(32, len(corpus.samples)) and all(t > 0 for t in timed)
    assert run["throughput"]["batchSize"] == 4 and run["throughput"]["rtfx"] > 0
    assert run["model"]["class"] == "EncDecHybridRNNTCTCBPEModel" and run["model"]["decoder"] == "ctc"
    # the re-scorer agrees with the run's own scores
    capsys.readouterr()
    assert main(["score", str(out / "latest.json"), "--json"]) == 0
    (rescored,) = json.loads(capsys.readouterr().out)
    for key in ("recall", "precision", "sequence_accuracy"):
        assert rescored[key] == pytest.approx(run[key])


@pytest.mark.slow
def test_run_side_by_side_and_saved_baseline(tmp_path, tiny_model, recitations, capsys, monkeypatch):
    monkeypatch.setenv("QURANFT_CACHE_DIR", str(tmp_path / "cache"))
    root = make_corpus(tmp_path / "c", [
        entry("fatiha", "001001.mp3", [(1, 1)], copy_from="001001.mp3"),
        entry("ikhlas", "ikhlas_2_3.m4a", [(112, 2), (112, 3)], copy_from="ikhlas_2_3.m4a"),
        entry("gone", "gone.wav", [(1, 2)]),
    ], source=recitations)
    term, out = tmp_path / "term.json", tmp_path / "out"
    # `tiny` is the trainer's untrained base model, the same weights as the `tiny_model` file
    rc = main(["run", "--model", str(tiny_model), "--baseline-model", "tiny", "--name", "cand",
               "--baseline-name", "base", "--corpus", str(root), "--out", str(out), "--termination-log", str(term),
               "--decoder", "ctc"])
    assert rc == 0
    msg = read_termination(term)
    assert msg["baseline"] is not None and msg["deltas"]["recall"] == 0
    assert (tmp_path / "cache" / "models" / "tiny-base.nemo").is_file()
    assert msg["verdict"] in {"neutral", "regression"}  # same model: only timing noise can differ
    runs = json.loads((out / "latest.json").read_text())
    assert [(r["name"], r["role"]) for r in runs] == [("cand", "candidate"), ("base", "baseline")]
    assert runs[0]["missing"] == ["gone"] and runs[0]["scored"] == 2
    assert runs[0]["verdict"]["verdict"] == msg["verdict"]

    # The saved file serves as the next run's baseline (its candidate run is picked).
    capsys.readouterr()
    rc = main(["run", "--model", str(tiny_model), "--baseline", msg["resultsPath"], "--corpus", str(root),
               "--out", str(out), "--termination-log", str(term), "--decoder", "ctc"])
    assert rc == 0
    again = read_termination(term)
    assert again["baseline"]["recall"] == msg["metrics"]["recall"]
    assert again["resultsPath"] != msg["resultsPath"]
    saved = json.loads(open(again["resultsPath"]).read())
    assert saved[1]["role"] == "baseline" and saved[1]["source"] == msg["resultsPath"]


def test_run_without_nemo_is_environment_error(tmp_path, recitations, monkeypatch):
    import sys

    model = tmp_path / "m.nemo"
    model.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "nemo.collections.asr.models", None)  # import now raises ImportError
    rc = main(["run", "--model", str(model), "--corpus", str(recitations), "--out", str(tmp_path / "o"),
               "--termination-log", str(tmp_path / "t")])
    assert rc == 5 and read_termination(tmp_path / "t")["reason"] == "EnvironmentError"


def test_run_corrupt_model_is_benchmark_error(tmp_path, recitations):
    model = tmp_path / "m.nemo"
    model.write_bytes(b"not a tar archive" * 10)
    rc = main(["run", "--model", str(model), "--corpus", str(recitations), "--out", str(tmp_path / "o"),
               "--termination-log", str(tmp_path / "t")])
    msg = read_termination(tmp_path / "t")
    assert rc == 4 and msg["reason"] == "TrainingError" and "cannot restore" in msg["message"]
