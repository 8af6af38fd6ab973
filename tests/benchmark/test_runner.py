"""The evaluation loop with a scripted stand-in for the ASR model (the real model runs in test_cli.py)."""

import numpy as np
import pytest
from corpus_helpers import entry, make_corpus

from quranft.benchmark.corpus import decode_audio, load_corpus
from quranft.benchmark.quran_text import load_quran
from quranft.benchmark.runner import RunOptions, decode_clips, default_run_name, evaluate, latency_sample
from quranft.benchmark.transcribe import ModelInfo


def verse_text(refs):
    q = load_quran()
    index = {r: i for i, r in enumerate(q.refs)}
    return " ".join(q.texts[index[r]] for r in refs)


class ScriptedModel:
    """Answers each clip (recognised by its decoded length) with a fixed transcript; records calls."""

    def __init__(self, script: dict[int, str], batch_size: int = 2):
        self.script, self.batch_size, self.device = script, batch_size, "cpu"
        self.info = ModelInfo(ref="scripted", path="/nowhere/scripted.nemo", size_bytes=1234, sha256=None,
                              model_class="Scripted", decoder="ctc")
        self.calls: list[int] = []

    def transcribe(self, audios):
        self.calls.append(len(audios))
        return [self.script[len(a)] for a in audios]


@pytest.fixture()
def small_corpus(tmp_path, recitations):
    root = make_corpus(tmp_path / "corpus", [
        entry("imran_23", "nisa_51.m4a", [(3, 23)], copy_from="nisa_51.m4a", also_accept=[[{"surah": 4, "ayah": 44}]]),
        entry("ikhlas", "ikhlas_2_3.m4a", [(112, 2), (112, 3)], copy_from="ikhlas_2_3.m4a"),
        entry("fatiha_1", "001001.mp3", [(1, 1)], copy_from="001001.mp3"),
        entry("yasin", "multi.wav", [(36, a) for a in range(1, 6)], copy_from="multi_036_001_005.wav"),
        entry("gone", "gone.wav", [(1, 2)]),
        entry("broken", "broken.mp3", [(1, 3)]),
    ])
    (root / "broken.mp3").write_bytes(b"\x00not audio" * 64)
    return root


def script_for(root, texts):
    return {len(decode_audio(root / name)): text for name, text in texts.items()}


def test_evaluate_scores_missing_errors_and_also_accept(small_corpus, matcher):
    script = script_for(small_corpus, {
        "nisa_51.m4a": verse_text([(4, 44)]),  # the near-identical verse: accepted via also_accept
        "ikhlas_2_3.m4a": verse_text([(112, 2), (112, 3)]),
        "001001.mp3": "",  # the model heard nothing
        "multi.wav": verse_text([(36, a) for a in range(1, 4)]),  # 3 of 5 verses
    })
    model = ScriptedModel(script, batch_size=2)
    corpus = load_corpus(small_corpus)
    clips = decode_clips(corpus.samples)
    timed = latency_sample([c.sample.id for c in clips if c.error is None], 3, seed=0)
    run = evaluate(model, clips, matcher, "scripted", head="ctc", latency_ids=timed, total=corpus.total,
                   missing=corpus.missing)
    rows = {r["id"]: r for r in run["per_sample"]}

    assert run["missing"] == ["gone"] and "gone" not in rows
    assert run["total"] == 6 and run["scored"] == 5 and run["errors"] == 1
    assert rows["broken"]["predicted"] == [] and rows["broken"]["recall"] == 0 and "error" in rows["broken"]
    assert rows["broken"]["latency"] is None

    assert rows["imran_23"]["predicted"] == [{"surah": 4, "ayah": 44}]
    assert rows["imran_23"]["recall"] == 1.0 and rows["imran_23"]["accepted"] == 1
    assert rows["ikhlas"]["sequence_accuracy"] == 1.0
    assert rows["fatiha_1"]["predicted"] == [] and rows["fatiha_1"]["recall"] == 0.0
    assert rows["yasin"]["recall"] == pytest.approx(0.6) and rows["yasin"]["precision"] == 1.0

    assert run["recall"] == pytest.approx((1 + 1 + 0 + 0.6 + 0) / 5)
    assert run["sequence_accuracy"] == pytest.approx(2 / 5)
    assert run["model_size"] == 1234 and run["settings"]["batch_size"] == 2
    # one untimed warm-up call, batches of two over the four decodable clips, then the 3 timed clips alone
    assert model.calls == [1, 2, 2, 1, 1, 1]
    lat = {r["id"]: r["latency"] for r in run["per_sample"] if r["latency"] is not None}
    assert set(lat) == set(timed) and run["avg_latency"] == pytest.approx(np.mean(list(lat.values())))
    assert run["p50_latency"] <= run["p90_latency"]
    assert run["head"] == "ctc"
    t = run["throughput"]
    assert t["clips"] == 4 and t["batchSize"] == 2 and t["clipsPerSecond"] > 0 and 0 <= t["matcherShare"] <= 1
    assert t["rtfx"] > 0 and t["audioSeconds"] == pytest.approx(sum(c.seconds for c in clips), abs=1e-3)
    for key in ("name", "recall", "precision", "sequence_accuracy", "total", "avg_latency", "model_size"):
        assert key in run
    for key in ("id", "expected", "predicted", "recall", "precision", "sequence_accuracy", "latency", "transcript"):
        assert key in rows["ikhlas"]


def test_no_also_accept_reproduces_old_scoring(small_corpus, matcher):
    script = script_for(small_corpus, {name: verse_text([(4, 44)]) for name in
                                       ("nisa_51.m4a", "ikhlas_2_3.m4a", "001001.mp3", "multi.wav")})
    clips = decode_clips(load_corpus(small_corpus).samples)
    run = evaluate(ScriptedModel(script), clips, matcher, "x", RunOptions(also_accept=False))
    row = next(r for r in run["per_sample"] if r["id"] == "imran_23")
    assert row["recall"] == 0.0 and "accepted" not in row and row["also_accept"]


@pytest.mark.parametrize(("ref", "name"), [("/w/runs/v3-hybrid/model.nemo", "v3-hybrid"), ("/m/base.nemo", "base"),
                                           ("nvidia/stt_ar_fastconformer_hybrid_large_pcd_v1.0",
                                            "nvidia/stt_ar_fastconformer_hybrid_large_pcd_v1.0")])
def test_default_run_name(ref, name):
    assert default_run_name(ref) == name


def test_latency_sample_is_seeded_and_independent_of_order():
    ids = [f"clip{i}" for i in range(50)]
    a = latency_sample(ids, 10, seed=3)
    assert a == latency_sample(list(reversed(ids)), 10, seed=3) and len(a) == 10
    assert a != latency_sample(ids, 10, seed=4)
    assert latency_sample(ids[:5], 10, seed=3) == frozenset(ids[:5])
