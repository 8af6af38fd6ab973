"""lineage.json: base model, data and its revisions, tokenizer, full config, verdict with intervals (issue 15)."""

import json

import pytest
from campaign_helpers import improved, make_child

from quranft.benchmark.campaign_report import judged_run
from quranft.benchmark.lineage import (SCHEMA, LineageError, benchmarked_sha256, build_lineage, promotion_id,
                                       read_training_metadata)
from quranft.benchmark.results import load_runs


def test_lineage_names_everything_the_model_came_from(tmp_path):
    v = make_child(tmp_path, "plan-v2", improved(20))
    meta = read_training_metadata(tmp_path, "plan-v2")
    runs, _ = load_runs(v["resultsPath"])
    judged = judged_run(runs)
    assert judged["role"] == "candidate" and judged["name"] == "plan-v2"
    sha = benchmarked_sha256(judged, meta)
    assert sha == meta["sha256"]  # the benchmark measured the file the trainer wrote
    doc = build_lineage(
        promotion=promotion_id("uid-1", "plan", "v2"), promoted_at="2026-03-01T10:00:00Z",
        campaign={"name": "plan", "namespace": "team-a", "uid": "uid-1"}, variant="v2", child="plan-v2",
        reason="automatic", metadata=meta, judged_run=judged, results_path=v["resultsPath"],
        model={"path": "/w/models/production/plan/model.nemo", "sha256": sha, "bytes": 1}, image_id="sha256:beef",
        baseline={"baseModel": True}, corpus_hash="corpus-hash-1")
    assert doc["schema"] == SCHEMA and doc["promotionId"] == "uid-1/v2" and doc["promotedAt"].endswith("Z")
    assert doc["campaign"]["uid"] == "uid-1" and doc["image"] == {"id": "sha256:beef"}
    assert doc["baseModel"] == {"name": "tiny", "revision": None}
    assert doc["datasets"]["dataSpecHash"] == "d5a7a0c0ffee"
    assert [(s["manifest"], s["dataset"], s["revision"], s["resolvedRevision"]) for s in doc["datasets"]["sources"]] \
        == [("train", "rabah2026/Quran-Ayah-Corpus", "v1.2", "abc123commit"),
            ("val", "rabah2026/Quran-Ayah-Corpus", "v1.2", "abc123commit")]
    assert doc["tokenizer"]["sha256"] == meta["data"]["stats"]["vocabulary"]["tokenizer"]["sha256"]
    assert doc["config"] == meta["config"]  # the full resolved config, verbatim
    assert doc["training"]["step"] == 20 and doc["training"]["device"] == "cpu"
    recall = doc["verdict"]["heads"]["ctc"]["comparison"]["metrics"]["recall"]
    assert doc["verdict"]["verdict"] == "improvement" and recall["low"] > 0.01 and recall["high"] > recall["low"]
    assert doc["benchmark"]["corpusHash"] == "corpus-hash-1" and doc["benchmark"]["modelSha256"] == sha
    json.dumps(doc)  # serialisable as is


def test_promotion_id_is_the_campaign_object_and_the_variant():
    assert promotion_id("uid-1", "plan", "v2") == "uid-1/v2"
    assert promotion_id(None, "plan", "v2") == "plan/v2"
    assert promotion_id("uid-2", "plan", "v2") != promotion_id("uid-1", "plan", "v2")


def test_missing_or_foreign_training_metadata_is_refused(tmp_path):
    with pytest.raises(LineageError, match="training_metadata.json"):
        read_training_metadata(tmp_path, "plan-v9")
    (tmp_path / "runs" / "plan-v9").mkdir(parents=True)
    (tmp_path / "runs" / "plan-v9" / "training_metadata.json").write_text('{"step": 3}')
    with pytest.raises(LineageError, match="no `config`"):
        read_training_metadata(tmp_path, "plan-v9")
