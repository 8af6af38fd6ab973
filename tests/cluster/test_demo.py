"""Pure parts of `quranft demo`: the seed Job and the progress line."""
from __future__ import annotations

import yaml

from quranft.cluster import demo
from quranft.operator import access


def test_seed_job_is_restricted_and_uses_the_trainer_clis():
    job = demo.seed_job("ns", "claim", "ghcr.io/quran-finetune/trainer-cpu:1")
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    script = container["command"][-1]
    assert "quranft trainer tiny-model --out /workspace/models/tiny.nemo" in script
    assert "quranft trainer synth-data --out /workspace/synth" in script


def test_examples_point_at_the_seeded_workspace():
    for name in ("cpu-stub-ctc.yaml", "cpu-stub-hybrid.yaml"):
        docs = [d for d in yaml.safe_load_all((access.MANIFESTS / "examples" / name).read_text()) if d]
        run = next(d for d in docs if d["kind"] == "QuranFineTune")
        assert run["spec"]["training"]["baseModel"] == "/workspace/models/tiny.nemo"
        assert run["spec"]["data"]["localPath"] == "/workspace/synth/dataset"
        assert run["spec"]["benchmark"]["corpus"]["localPath"] == "/workspace/synth/benchmark-dataset"
        assert run["spec"]["resources"]["gpus"] == 0


def test_summary_line_shows_progress_and_verdict():
    obj = {"status": {"phase": "Succeeded", "progress": {"display": "5/10", "loss": 0.5}, "verdict": "improvement",
                      "benchmark": {"metrics": {"recall": 0.4, "sequenceAccuracy": 0.3},
                                    "baseline": {"recall": 0.0, "sequenceAccuracy": 0.0}}}}
    line = demo.summary_line(obj)
    assert "phase=Succeeded" in line and "step=5/10" in line and "verdict=improvement recall=0.4 (baseline 0.0)" in line
