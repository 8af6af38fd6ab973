"""The QuranFineTune CRD is generated from quranft.operator.resource (scripts/gen_crd.py): the schema the
generator writes accepts and refuses what the hand-kept CRD did."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "manifests" / "crd" / "quranfinetunes.quranft.io.yaml"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_crd", ROOT / "scripts" / "gen_crd.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _differences(want, got, path="") -> list[str]:
    """Where two parsed YAML documents differ; numbers compare by value (1 and 1.0 are one JSON number), a bool
    is never a number."""
    if isinstance(want, bool) or isinstance(got, bool):
        return [] if type(want) is type(got) and want == got else [f"{path}: {want!r} != {got!r}"]
    if isinstance(want, (int, float)) and isinstance(got, (int, float)):
        return [] if want == got else [f"{path}: {want!r} != {got!r}"]
    if isinstance(want, dict) and isinstance(got, dict):
        out = [f"{path}.{k}: missing" for k in want if k not in got]
        out += [f"{path}.{k}: extra" for k in got if k not in want]
        return out + [d for k in want if k in got for d in _differences(want[k], got[k], f"{path}.{k}")]
    if isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            return [f"{path}: {len(want)} items != {len(got)}"]
        return [d for i, (w, g) in enumerate(zip(want, got)) for d in _differences(w, g, f"{path}[{i}]")]
    return [] if type(want) is type(got) and want == got else [f"{path}: {want!r} != {got!r}"]


def test_the_generated_crd_equals_the_hand_kept_one():
    assert _differences(yaml.safe_load(CRD.read_text()), _generator().crd()) == []
