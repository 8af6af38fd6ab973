"""A campaign's workspace as its children leave it: results files written by the real writer and judged by the
real paired rule, model files, training_metadata.json in the trainer's keys, progress histories."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from quranft.benchmark.results import write_results
from quranft.benchmark.verdict import judge

CLIPS = 60
BASE_RECALL = np.array([1.0] * 36 + [0.5] * 12 + [0.0] * 12)  # 70 % mean, the untrained baseline


def scored_run(name, recall, role, *, latency=0.30, size=2_000_000, sha=None):
    rows = [{"id": f"clip{i:03d}", "expected": [], "predicted": [], "recall": float(r), "precision": float(r),
             "sequence_accuracy": float(r == 1.0), "latency": latency + 0.001 * (i % 5), "transcript": ""}
            for i, r in enumerate(recall)]
    return {"name": name, "head": "ctc", "role": role, "recall": float(np.mean(recall)),
            "precision": float(np.mean(recall)), "sequence_accuracy": float(np.mean(np.equal(recall, 1.0))),
            "avg_latency": latency + 0.002, "total": len(rows), "scored": len(rows), "model_size": size,
            "model": {"sha256": sha}, "corpus": {"hash": "corpus-hash-1"}, "per_sample": rows}


def improved(k, seed=0):
    """The baseline's per-clip recall with `k` wrong clips made right (seeded)."""
    rng = np.random.default_rng(seed)
    out = BASE_RECALL.copy()
    wrong = np.flatnonzero(out < 1.0)
    out[rng.choice(wrong, size=min(k, wrong.size), replace=False)] = 1.0
    return out


def worse(k, seed=0):
    rng = np.random.default_rng(seed)
    out = BASE_RECALL.copy()
    right = np.flatnonzero(out == 1.0)
    out[rng.choice(right, size=k, replace=False)] = 0.0
    return out


def make_child(workspace: Path, child: str, recall, *, model_bytes: bytes | None = None, latency=0.30,
               steps=20, history=None):
    """runs/<child>/{model.nemo, training_metadata.json, progress_history.jsonl, benchmark/<stamp>.json}."""
    run_dir = workspace / "runs" / child
    run_dir.mkdir(parents=True, exist_ok=True)
    model_bytes = model_bytes if model_bytes is not None else f"nemo-weights-of-{child}".encode() * 1000
    (run_dir / "model.nemo").write_bytes(model_bytes)
    sha = hashlib.sha256(model_bytes).hexdigest()
    candidate = scored_run(child, recall, "candidate", latency=latency, size=len(model_bytes), sha=sha)
    baseline = scored_run("tiny", BASE_RECALL, "baseline", latency=0.30, size=2_000_000)
    judgement = judge({"ctc": (candidate, baseline)}, verdict_head="ctc", resamples=400)
    candidate["verdict"] = judgement.for_results()
    results = write_results(run_dir / "benchmark", [candidate, baseline])
    meta = {"ok": True, "stage": "train", "step": steps, "modelPath": str(run_dir / "model.nemo"),
            "sizeBytes": len(model_bytes), "sha256": sha, "dataSpecHash": "d5a7a0c0ffee", "finalLoss": 1.25,
            "valWer": 0.4, "resumedFromStep": None,
            "config": {"run": {"name": child, "namespace": "team-a", "workspace": str(workspace)},
                       "data": {"source": "local", "localPath": "/workspace/synth/dataset", "revision": None},
                       "training": {"baseModel": "tiny", "mode": "ctcOnly", "maxSteps": steps,
                                    "learningRate": 0.001},
                       "metrics": {"port": 0, "progressIntervalSeconds": 5}},
            "precision": "32", "device": "cpu", "parameters": {"total": 1000, "trainable": 800},
            "data": {"trainSamples": 8, "valSamples": 4, "stats": {
                "dataSpecHash": "d5a7a0c0ffee",
                "train": {"samples": 8, "sources": {"primary": {
                    "dataset": "rabah2026/Quran-Ayah-Corpus", "split": "train", "revision": "v1.2",
                    "resolvedRevision": "abc123commit", "kept": 8}}},
                "val": {"samples": 4, "sources": {"primary": {
                    "dataset": "rabah2026/Quran-Ayah-Corpus", "split": "validation", "revision": "v1.2",
                    "resolvedRevision": "abc123commit", "kept": 4}}},
                "vocabulary": {"tokenizer": {"baseModel": "tiny", "sha256": "70c" * 21 + "0", "pieces": 64,
                                             "characters": "ابت"}}}},
            "wallTimeSeconds": 12.5, "versions": {"python": "3.11"}}
    (run_dir / "training_metadata.json").write_text(json.dumps(meta))
    lines = history if history is not None else [
        {"step": s, "loss": 5.0 / (1 + s / 5), "valWer": None if s % 5 else 1.0 - s / 40, "lr": 1e-3,
         "samplesPerSecond": 3.0, "updatedAt": "2026-03-01T10:00:00Z"} for s in range(1, steps + 1)]
    (run_dir / "progress_history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    return {"name": child.rsplit("-", 1)[-1], "child": child, "phase": "Succeeded",
            "verdict": judgement.verdict, "resultsPath": str(results), "modelPath": str(run_dir / "model.nemo"),
            "metrics": {"recall": candidate["recall"]}, "intervals": None, "primaryMetric": "recall",
            "sizeBytes": len(model_bytes), "steps": steps, "gpuHours": 0.0, "imageID": "sha256:feedbeef",
            "stoppedReason": None, "valWerHistory": None}


def campaign_input(variants, *, promote=None, uid="uid-1", name="plan", reason="automatic: best improvement"):
    return {"campaign": {"name": name, "namespace": "team-a", "uid": uid}, "promote": promote,
            "promotionReason": reason if promote else "no variant is a real improvement",
            "baseline": {"baseModel": True}, "corpusHash": "corpus-hash-1", "variants": variants}


def four_variants(workspace: Path):
    """v2 clearly better, v3 slightly better (inconclusive), v4 worse, v5 stopped early (no results)."""
    v2 = make_child(workspace, "plan-v2", improved(20))
    v3 = make_child(workspace, "plan-v3", improved(2, seed=1), latency=0.31)
    v4 = make_child(workspace, "plan-v4", worse(15))
    v5 = {"name": "v5", "child": "plan-v5", "phase": "Stopped", "verdict": None, "resultsPath": None,
          "modelPath": None, "metrics": None, "intervals": None, "primaryMetric": None, "sizeBytes": None,
          "steps": 6, "gpuHours": 0.0, "imageID": None,
          "stoppedReason": "MedianStopping: val WER 0.98 > median 0.61 at step 6",
          "valWerHistory": [{"step": 2, "valWer": 1.0}, {"step": 4, "valWer": 0.99}, [6, 0.98]]}
    return [v4, v3, v5, v2]  # deliberately not in rank order
