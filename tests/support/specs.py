"""Shared test inputs: a minimal valid QuranFineTune as the API server would store it (defaults applied)."""
from __future__ import annotations

import copy
import functools
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "manifests" / "crd" / "quranfinetunes.quranft.io.yaml"


def crd() -> dict:
    return copy.deepcopy(_crd())  # callers may change it


@functools.lru_cache(maxsize=1)
def _crd() -> dict:  # ~1,650 lines of YAML: parsed once per session, not per body()
    return yaml.safe_load(CRD_PATH.read_text())


def schema() -> dict:
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def apply_defaults(node_schema: dict, value):
    """Structural-schema defaulting, as the API server does it (enough for our schema)."""
    if node_schema.get("type") == "object" or "properties" in node_schema:
        if not isinstance(value, dict):
            return value
        out = dict(value)
        for key, sub in (node_schema.get("properties") or {}).items():
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
            if key in out:
                out[key] = apply_defaults(sub, out[key])
        return out
    return value


def body(name: str = "v3", spec_overrides: dict | None = None, **meta) -> dict:
    spec = {
        "data": {"source": "local", "localPath": "/workspace/synth"},
        "training": {"baseModel": "tiny", "maxSteps": 40},
        "storage": {"existingClaim": "quran-workspace"},
        "resources": {"gpus": 0},
    }
    for key, value in (spec_overrides or {}).items():
        spec[key] = value
    spec = apply_defaults(schema()["properties"]["spec"], spec)
    metadata = {"name": name, "namespace": "team-a", "uid": "uid-" + name, "generation": 1,
                "creationTimestamp": "2026-01-01T00:00:00Z"}
    metadata.update(meta)
    return {"apiVersion": "quranft.io/v1alpha1", "kind": "QuranFineTune", "metadata": metadata, "spec": spec}
