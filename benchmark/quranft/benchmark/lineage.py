"""`lineage.json`: where a production model came from, in one file next to it.

Built from the winner's `runs/<child>/training_metadata.json` (written by the trainer: `config` is the full
resolved trainer config, `data.stats` the prepared data's stats.json with each source's dataset, split, pinned
`revision` and `resolvedRevision`, and `vocabulary.tokenizer` the tokenizer's sha256), the candidate run of its
results file (its `verdict` field: every head's paired comparison with intervals; `model.sha256` of the model
the benchmark measured; the corpus hash) and the campaign (name, uid, image digest, baseline). Pure: the
caller reads the files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from quranft.contract import workspace as layout

SCHEMA = "quranft.io/lineage/v1"


class LineageError(ValueError):
    """The winner's training metadata is missing or unreadable: a model without lineage is not promoted."""


def promotion_id(campaign_uid: str | None, campaign_name: str, variant: str) -> str:
    """What makes one promotion the same promotion on a rerun: the campaign object (its uid) and the variant.

    A child's model is written once per campaign, so the pair names one model; a campaign recreated under the
    same name has another uid and promotes anew."""
    return f"{campaign_uid or campaign_name}/{variant}"


def read_training_metadata(workspace: Path, child: str) -> dict[str, Any]:
    path = layout.training_metadata_path(child, workspace)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LineageError(f"cannot read {path} (the trainer writes it when training ends): {exc}") from exc
    if not isinstance(doc, Mapping) or not isinstance(doc.get("config"), Mapping):
        raise LineageError(f"{path} has no `config` object: not a training metadata file")
    return dict(doc)


def dataset_sources(stats: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Every source read into the prepared data: manifest (train/val), source (primary/blend), dataset, split,
    the pinned revision and the commit actually read."""
    out = []
    for manifest in ("train", "val"):
        for name, src in (((stats or {}).get(manifest) or {}).get("sources") or {}).items():
            out.append({"manifest": manifest, "source": name, "dataset": src.get("dataset"),
                        "split": src.get("split"), "revision": src.get("revision"),
                        "resolvedRevision": src.get("resolvedRevision"), "kept": src.get("kept")})
    return out


def tokenizer(stats: Mapping[str, Any] | None) -> dict[str, Any] | None:
    tok = ((stats or {}).get("vocabulary") or {}).get("tokenizer")
    if not isinstance(tok, Mapping):
        return None
    return {k: tok.get(k) for k in ("sha256", "baseModel", "pieces")}


def build_lineage(
    *,
    promotion: str,
    promoted_at: str,
    campaign: Mapping[str, Any],
    variant: str,
    child: str | None,
    reason: str,
    metadata: Mapping[str, Any],
    judged_run: Mapping[str, Any],
    results_path: str,
    model: Mapping[str, Any],
    image_id: str | None,
    baseline: Mapping[str, Any] | None,
    corpus_hash: str | None,
) -> dict[str, Any]:
    """The lineage document. `model`: {path, source, sha256, bytes}; `judged_run`: the results file's
    candidate run (the one whose `verdict` decided)."""
    config = metadata.get("config") or {}
    training = config.get("training") or {}
    stats = (metadata.get("data") or {}).get("stats")
    verdict = judged_run.get("verdict") if isinstance(judged_run.get("verdict"), Mapping) else None
    return {
        "schema": SCHEMA,
        "promotionId": promotion,
        "promotedAt": promoted_at,
        "campaign": dict(campaign),
        "variant": variant,
        "child": child,
        "reason": reason,
        "model": dict(model),
        "baseModel": {
            "name": training.get("baseModel"),
            # The trainer records no hub commit of the base model yet: a pinned one would be named here.
            "revision": training.get("baseModelRevision"),
        },
        "datasets": {"dataSpecHash": metadata.get("dataSpecHash"), "sources": dataset_sources(stats)},
        "tokenizer": tokenizer(stats),
        "config": config,
        "training": {k: metadata.get(k) for k in ("step", "finalLoss", "valWer", "precision", "device",
                                                  "parameters", "wallTimeSeconds", "resumedFromStep",
                                                  "versions")},
        "verdict": verdict,
        "benchmark": {
            "resultsPath": results_path,
            "run": judged_run.get("name"),
            "head": judged_run.get("head"),
            "corpusHash": (judged_run.get("corpus") or {}).get("hash") or corpus_hash,
            "baseline": dict(baseline) if baseline is not None else None,
            "modelSha256": (judged_run.get("model") or {}).get("sha256"),
            "metrics": {k: judged_run.get(k) for k in ("recall", "precision", "sequence_accuracy",
                                                       "avg_latency", "model_size", "scored", "total")},
        },
        "image": {"id": image_id},
    }


def benchmarked_sha256(judged_run: Mapping[str, Any], metadata: Mapping[str, Any] | None) -> str | None:
    """The sha256 the promoted file must have: the benchmark's (what was judged), else the trainer's."""
    return (judged_run.get("model") or {}).get("sha256") or (metadata or {}).get("sha256")

