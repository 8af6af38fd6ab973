"""Promotion: atomic replacement, every earlier production model kept, idempotent after a crash (issue 15)."""

import hashlib
import json
import os

import pytest

from quranft.benchmark import promotion
from quranft.benchmark.promotion import ModelMismatch, archive, history, production_dir, promote, read_lineage


def source(tmp_path, name, payload):
    d = tmp_path / "runs" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.nemo").write_bytes(payload)
    (d / "results.json").write_text(json.dumps([{"name": name, "per_sample": []}]))
    return d / "model.nemo", d / "results.json", hashlib.sha256(payload).hexdigest()


def do_promote(ws, variant, model, results, sha, uid="uid-1", expected=None):
    pid = f"{uid}/{variant}"
    return promote(ws, "plan", variant=variant, model_source=model, results_source=results, promotion=pid,
                   expected_sha256=sha if expected is None else expected,
                   lineage=lambda m, at: {"promotionId": pid, "promotedAt": at, "variant": variant, "model": m})


def test_first_promotion_writes_model_results_and_lineage(tmp_path):
    model, results, sha = source(tmp_path, "plan-v2", b"v2-weights" * 5000)
    prod = do_promote(tmp_path, "v2", model, results, sha)
    root = production_dir(tmp_path, "plan")
    assert prod.model_path == root / "model.nemo" and not prod.already_promoted and prod.history == ()
    assert (root / "model.nemo").read_bytes() == model.read_bytes()
    assert (root / "results.json").read_bytes() == results.read_bytes()
    lineage = read_lineage(root / "lineage.json")
    assert lineage["model"] == {"path": str(root / "model.nemo"), "source": str(model), "sha256": sha,
                                "bytes": 50000}
    assert lineage["promotedAt"] == prod.promoted_at and prod.promoted_at.endswith("Z")
    assert sorted(p.name for p in root.iterdir()) == ["history", "lineage.json", "model.nemo", "results.json"]
    assert not model.samefile(root / "model.nemo")  # a copy: the run's own model stays the run's


def test_a_new_promotion_keeps_the_old_model_in_history(tmp_path):
    m2, r2, s2 = source(tmp_path, "plan-v2", b"v2-weights" * 100)
    first = do_promote(tmp_path, "v2", m2, r2, s2)
    m3, r3, s3 = source(tmp_path, "plan-v3", b"v3-weights" * 100)
    second = do_promote(tmp_path, "v3", m3, r3, s3)
    root = production_dir(tmp_path, "plan")
    stamp = first.promoted_at.replace("-", "").replace(":", "")
    assert [p.name for p in second.history] == [f"{stamp}-v2"]
    kept = second.history[0]
    assert (kept / "model.nemo").read_bytes() == m2.read_bytes()
    assert read_lineage(kept / "lineage.json")["promotionId"] == "uid-1/v2"
    assert (kept / "results.json").read_bytes() == r2.read_bytes()
    assert (root / "model.nemo").read_bytes() == m3.read_bytes()
    assert read_lineage(root / "lineage.json")["promotionId"] == "uid-1/v3"
    # Promoting v2 again (a manual choice) archives v3; both earlier ones stay.
    third = do_promote(tmp_path, "v2", m2, r2, s2, uid="uid-2")
    assert [p.name.split("-", 1)[1] for p in third.history] == ["v2", "v3"]
    assert (third.history[1] / "model.nemo").read_bytes() == m3.read_bytes()


def test_rerun_of_the_same_promotion_changes_nothing(tmp_path):
    m2, r2, s2 = source(tmp_path, "plan-v2", b"v2" * 1000)
    m3, r3, s3 = source(tmp_path, "plan-v3", b"v3" * 1000)
    do_promote(tmp_path, "v2", m2, r2, s2)
    first = do_promote(tmp_path, "v3", m3, r3, s3)
    root = production_dir(tmp_path, "plan")
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.iterdir() if p.is_file()}
    again = do_promote(tmp_path, "v3", m3, r3, s3)
    assert again.already_promoted and again.promoted_at == first.promoted_at and again.history == first.history
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.iterdir() if p.is_file()} == before


def test_killed_after_the_lineage_a_rerun_finishes_with_one_history_entry(tmp_path, monkeypatch):
    m2, r2, s2 = source(tmp_path, "plan-v2", b"v2" * 1000)
    m3, r3, s3 = source(tmp_path, "plan-v3", b"v3" * 1000)
    do_promote(tmp_path, "v2", m2, r2, s2)
    root = production_dir(tmp_path, "plan")
    real_replace = os.replace

    def killed_before_model(src, dst):
        if str(dst).endswith("model.nemo"):
            raise KeyboardInterrupt("SIGKILL stand-in: the Job dies here")
        return real_replace(src, dst)

    monkeypatch.setattr(promotion.os, "replace", killed_before_model)
    with pytest.raises(KeyboardInterrupt):
        do_promote(tmp_path, "v3", m3, r3, s3)
    monkeypatch.setattr(promotion.os, "replace", real_replace)
    # The state the crash left: new lineage, old model, a staged temp file, the old model archived.
    assert read_lineage(root / "lineage.json")["promotionId"] == "uid-1/v3"
    assert (root / "model.nemo").read_bytes() == m2.read_bytes()
    assert any(p.name.startswith(".model.nemo.tmp-") for p in root.iterdir())

    prod = do_promote(tmp_path, "v3", m3, r3, s3)
    assert prod.already_promoted
    assert (root / "model.nemo").read_bytes() == m3.read_bytes()
    assert (root / "results.json").read_bytes() == r3.read_bytes()
    assert len(prod.history) == 1 and (prod.history[0] / "model.nemo").read_bytes() == m2.read_bytes()
    assert not [p for p in root.iterdir() if ".tmp-" in p.name]


def test_killed_after_archiving_the_rerun_reuses_the_archive(tmp_path):
    m2, r2, s2 = source(tmp_path, "plan-v2", b"v2" * 1000)
    m3, r3, s3 = source(tmp_path, "plan-v3", b"v3" * 1000)
    do_promote(tmp_path, "v2", m2, r2, s2)
    root = production_dir(tmp_path, "plan")
    archived = archive(root, read_lineage(root / "lineage.json"))  # what the killed Job got done
    (root / "history" / ".tmp-half-written-123").mkdir()  # and a temp archive it left
    prod = do_promote(tmp_path, "v3", m3, r3, s3)
    assert prod.history == (archived,)
    assert sorted(p.name for p in (root / "history").iterdir()) == [archived.name]


def test_a_model_that_is_not_the_benchmarked_one_is_refused(tmp_path):
    m2, r2, s2 = source(tmp_path, "plan-v2", b"v2" * 1000)
    do_promote(tmp_path, "v2", m2, r2, s2)
    m3, r3, _ = source(tmp_path, "plan-v3", b"v3" * 1000)
    root = production_dir(tmp_path, "plan")
    with pytest.raises(ModelMismatch, match="the benchmark judged"):
        do_promote(tmp_path, "v3", m3, r3, None, expected="0" * 64)
    assert (root / "model.nemo").read_bytes() == m2.read_bytes() and history(root) == ()
    assert read_lineage(root / "lineage.json")["promotionId"] == "uid-1/v2"
    assert not [p for p in root.iterdir() if ".tmp-" in p.name]
    with pytest.raises(promotion.DataError, match="does not exist"):
        do_promote(tmp_path, "v4", tmp_path / "nope.nemo", r3, None)


def test_a_model_placed_by_hand_is_archived_too(tmp_path):
    root = production_dir(tmp_path, "plan")
    root.mkdir(parents=True)
    (root / "model.nemo").write_bytes(b"hand-copied")
    m2, r2, s2 = source(tmp_path, "plan-v2", b"v2" * 10)
    prod = do_promote(tmp_path, "v2", m2, r2, s2)
    assert len(prod.history) == 1 and prod.history[0].name.endswith("-unknown")
    assert (prod.history[0] / "model.nemo").read_bytes() == b"hand-copied"
