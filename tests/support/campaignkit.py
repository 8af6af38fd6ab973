"""Shared campaign test inputs: a QuranFineTuneCampaign as the API server stores it (the template defaulted by
the QuranFineTune schema), and fake child bodies / Job views for the pure derivation tests."""
from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone

from specs import apply_defaults, schema

from quranft.operator.campaign_spec import LABEL_CAMPAIGN, LABEL_VARIANT, CampaignSpec
from quranft.operator.observe import JobView, PodView

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
TEMPLATE = {
    "data": {"source": "local", "localPath": "/workspace/synth/dataset"},
    "training": {"baseModel": "tiny", "maxSteps": 40, "warmupSteps": 2},
    "storage": {"existingClaim": "ws"},
    "resources": {"gpus": 0, "cpu": "100m", "memory": "256Mi"},
    "benchmark": {"corpus": {"path": "/workspace/corpus"}},
}


def template(**overrides) -> dict:
    spec = copy.deepcopy(TEMPLATE)
    spec.update(overrides)
    return apply_defaults(schema()["properties"]["spec"], spec)


def campaign(name: str = "c", variants=("a", "b"), **spec) -> tuple[CampaignSpec, dict]:
    body = {"template": template(), "variants": [v if isinstance(v, dict) else {"name": v} for v in variants]}
    body.update(spec)
    meta = {"name": name, "namespace": "team-a", "uid": f"uid-{name}", "generation": 1}
    return CampaignSpec.model_validate(body), meta


def child(name: str, owner: str = "uid-c", phase: str | None = "Training", verdict: str | None = None,
          trained: bool = False, recall: float | None = None, corpus: str | None = "h1", size: int | None = 1000,
          latency: float = 0.1, progress: dict | None = None, stop: str | None = None, failed: str | None = None,
          interval=(0.02, 0.08)) -> dict:
    status: dict = {"phase": phase, "conditions": []}
    if trained or phase in ("Benchmarking", "Succeeded"):
        status["conditions"].append({"type": "Trained", "status": "True", "reason": "Trained"})
        status["model"] = {"path": f"/workspace/runs/{name}/model.nemo", "sizeBytes": size, "step": 40}
    if failed:
        status["conditions"].append({"type": "Failed", "status": "True", "reason": failed, "message": "boom"})
    if verdict:
        status["verdict"] = verdict
        status["benchmark"] = {
            "metrics": {"recall": recall, "sequenceAccuracy": recall, "avgLatency": latency, "modelSize": size},
            "intervals": {"recall": list(interval)}, "deltas": {"recall": 0.05}, "primaryMetric": "recall",
            "resultsPath": f"/workspace/runs/{name}/benchmark/latest.json"}
        if corpus:
            status["benchmark"]["corpus"] = {"hash": corpus, "clips": 10}
    if progress:
        status["progress"] = progress
    status["startTime"], status["completionTime"] = "2026-03-01T10:00:00Z", "2026-03-01T11:00:00Z"
    meta = {"name": name, "namespace": "team-a", "uid": f"uid-{name}",
            "labels": {LABEL_CAMPAIGN: "c", LABEL_VARIANT: name.split("-", 1)[-1]},
            "ownerReferences": [{"uid": owner, "controller": True, "kind": "QuranFineTuneCampaign", "name": "c"}]}
    if stop:
        meta["annotations"] = {"quranft.io/stop-requested": stop}
    return {"metadata": meta, "spec": {"resources": {"gpus": 1}}, "status": status}


def job(name: str, stage: str, summary: dict | None = None, failed: bool = False, running: bool = False) -> JobView:
    pods: tuple = ()
    if failed:
        pods = (PodView(name=f"{name}-x", phase="Failed", exit_code=1, terminated_reason="Error",
                        message=json.dumps({"ok": False, "reason": "ReportError", "message": "no plots"}),
                        created=NOW - timedelta(minutes=1), job_uid=f"uid-{name}"),)
    elif not running:
        pods = (PodView(name=f"{name}-x", phase="Succeeded", exit_code=0, terminated_reason="Completed",
                        message=json.dumps(summary or {"ok": True}), created=NOW - timedelta(minutes=1),
                        job_uid=f"uid-{name}"),)
    else:
        pods = (PodView(name=f"{name}-x", phase="Running", running=True, created=NOW - timedelta(minutes=1),
                        job_uid=f"uid-{name}"),)
    return JobView(name=name, stage=stage, uid=f"uid-{name}", owner_uid="uid-c", created=NOW - timedelta(minutes=2),
                   complete=not failed and not running, failed_reason="BackoffLimitExceeded" if failed else None,
                   completion_time=None if failed or running else NOW - timedelta(seconds=30), pods=pods,
                   active=1 if running else 0)
