"""A campaign's promotion in the MLflow model registry: the promoted model becomes a version of the registered
model `<namespace>.<campaign>` (namespaces hold no dots, so the name splits back unambiguously), carrying its
lineage (quranft.benchmark.lineage) as tags and as an artifact, and the alias `production` moves to it.

The version's source is `runs:/<run>/model` of the winner's own MLflow run (the run its training and benchmark
logged into: the training metadata's `tracking.runId`, else the newest run tagged with the child's namespace and
name, else a new run tagged with the campaign): the model file, lineage.json and results.json are uploaded there
first. MLflow refuses a local path as a version source unless it lies inside the run's artifact directory (its
path-traversal guard), and the claim's path means nothing to whoever reads the registry anyway.

Idempotent like the promotion itself: a version already tagged with this `promotionId` is reused (a campaign-report
Job run again uploads the same files and moves the alias to the same version). Never raises: a failure is logged
and returned as `{"ok": false, "error"}` in the campaign-report summary's `registry` object.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from quranft.trainer.tracking import (TAG_NAME, TAG_NAMESPACE, Guard, TrackingTarget, apply_client_env,
                                      target_from_env)

ALIAS = "production"
ARTIFACT_DIR = "model"
TAG_PROMOTION = "quranft.promotionId"
MAX_TAG_CHARS = 5000  # MLflow's limit on a model version tag value


def registered_model_name(namespace: str | None, campaign: str) -> str:
    return f"{namespace}.{campaign}" if namespace else campaign


def _tag(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    return text[:MAX_TAG_CHARS]


def version_tags(lineage: Mapping[str, Any]) -> dict[str, str]:
    """The model version's tags from a lineage document (None values left out; the full document is an
    artifact next to the model)."""
    campaign = lineage.get("campaign") or {}
    bench = lineage.get("benchmark") or {}
    verdict = lineage.get("verdict") or {}
    datasets = lineage.get("datasets") or {}
    sources = [f"{s.get('dataset')}@{s.get('resolvedRevision') or s.get('revision') or 'unpinned'}"
               f"[{s.get('split')}]" for s in datasets.get("sources") or []]
    tags = {
        TAG_PROMOTION: lineage.get("promotionId"),
        "quranft.promotedAt": lineage.get("promotedAt"),
        "quranft.campaign": campaign.get("name"),
        "quranft.campaignUid": campaign.get("uid"),
        TAG_NAMESPACE: campaign.get("namespace"),
        "quranft.variant": lineage.get("variant"),
        "quranft.child": lineage.get("child"),
        "quranft.reason": lineage.get("reason"),
        "quranft.baseModel": (lineage.get("baseModel") or {}).get("name"),
        "quranft.baseModelRevision": (lineage.get("baseModel") or {}).get("revision"),
        "quranft.dataSpecHash": datasets.get("dataSpecHash"),
        "quranft.datasets": ", ".join(sources) if sources else None,
        "quranft.tokenizerSha256": (lineage.get("tokenizer") or {}).get("sha256"),
        "quranft.modelSha256": (lineage.get("model") or {}).get("sha256"),
        "quranft.modelBytes": (lineage.get("model") or {}).get("bytes"),
        "quranft.verdict": verdict.get("verdict"),
        "quranft.verdictHead": verdict.get("verdictHead"),
        "quranft.corpusHash": bench.get("corpusHash"),
        "quranft.benchmarkMetrics": bench.get("metrics"),
        "quranft.image": (lineage.get("image") or {}).get("id"),
    }
    return {k: t for k, v in tags.items() if (t := _tag(v)) is not None}


def register_promotion(model_path: Path, lineage_path: Path, results_path: Path | None = None, *,
                       run_id: str | None = None, env: Mapping[str, str] | None = None,
                       log: Callable[[str], None] = print,
                       target: TrackingTarget | None = None) -> dict[str, Any] | None:
    """Register the promoted `model_path` with the lineage at `lineage_path` (see the module docstring).
    `run_id`: the winner's MLflow run when known; `target` overrides the environment's. Returns the summary's
    `registry` object, or None when tracking is off (no MLFLOW_TRACKING_URI). Never raises."""
    if target is None and target_from_env(None, None, env) is None:
        return None
    guard, out = Guard(log), {}
    guard.call("register the model", _register, target, env, Path(model_path), Path(lineage_path),
               results_path and Path(results_path), run_id, out)
    summary = guard.summary(out.pop("runId", None), out.pop("uri", None))
    return {**summary, **out}


def _register(target: TrackingTarget | None, env: Mapping[str, str] | None, model_path: Path, lineage_path: Path,
              results_path: Path | None, run_id: str | None, out: dict[str, Any]) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    lineage = json.loads(lineage_path.read_text(encoding="utf-8"))
    campaign = lineage.get("campaign") or {}
    name = out["registeredModel"] = registered_model_name(campaign.get("namespace"), str(campaign.get("name")))
    # The experiment defaults to the campaign's namespace, like its children's.
    target = target or target_from_env(campaign.get("namespace"), lineage.get("child"), env)
    out["uri"] = target.uri
    apply_client_env()
    client = MlflowClient(target.uri)
    run_id = out["runId"] = run_id or _winner_run(client, target, lineage)
    for path in (model_path, lineage_path, results_path):
        if path is not None:
            client.log_artifact(run_id, str(path), ARTIFACT_DIR)
    try:
        client.create_registered_model(name, tags={"quranft.campaign": str(campaign.get("name")),
                                                   TAG_NAMESPACE: str(campaign.get("namespace"))},
                                       description=f"Production models of campaign {campaign.get('name')} "
                                                   f"(namespace {campaign.get('namespace')}), promoted by quranft")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    promotion = lineage.get("promotionId")
    existing = [v for v in client.search_model_versions(f"name='{_quoted(name)}'")
                if promotion and (v.tags or {}).get(TAG_PROMOTION) == promotion]
    if existing:
        version = existing[0].version
    else:
        version = client.create_model_version(name, source=f"runs:/{run_id}/{ARTIFACT_DIR}", run_id=run_id,
                                              tags=version_tags(lineage), description=lineage.get("reason"),
                                              await_creation_for=60).version
    client.set_registered_model_alias(name, ALIAS, version)
    out.update(version=str(version), alias=ALIAS, reused=bool(existing))


def _winner_run(client, target: TrackingTarget, lineage: Mapping[str, Any]) -> str:
    """The winner's newest run tagged with its namespace and name, or a new run tagged with the campaign."""
    campaign = lineage.get("campaign") or {}
    child, namespace = lineage.get("child"), campaign.get("namespace")
    experiment = client.get_experiment_by_name(target.experiment)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(target.experiment)
    if child and namespace:
        found = client.search_runs([experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
                                   filter_string=f"tags.`{TAG_NAME}` = '{_quoted(child)}' and "
                                                 f"tags.`{TAG_NAMESPACE}` = '{_quoted(namespace)}'")
        if found:
            return found[0].info.run_id
    tags = {k: str(v) for k, v in {TAG_NAME: child, TAG_NAMESPACE: namespace,
                                   "quranft.campaign": campaign.get("name")}.items() if v}
    run = client.create_run(experiment_id, tags=tags, run_name=child or f"{campaign.get('name')} promotion")
    return run.info.run_id


def _quoted(value: str) -> str:
    if "'" in value or "\\" in value:
        raise ValueError(f"{value!r} cannot be used in an MLflow filter")
    return value
