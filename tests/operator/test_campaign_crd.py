"""The QuranFineTuneCampaign CRD: generated (never hand-edited), documented, typed, its template the
QuranFineTune spec schema."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

from quranft.operator.campaign_spec import CampaignSpec, CampaignStatus

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "manifests" / "crd" / "quranfinetunecampaigns.quranft.io.yaml"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_campaign_crd", ROOT / "scripts" / "gen_campaign_crd.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _schema() -> dict:
    return yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _walk(node, path):
    yield path, node
    for key, sub in (node.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{key}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from _walk(node[key], f"{path}[]")


def test_the_checked_in_crd_is_the_generators_output():
    assert CRD.read_text() == _generator().render(), "run python scripts/gen_crd.py"


def test_the_template_is_the_quranfinetune_spec_schema():
    qft = yaml.safe_load((ROOT / "manifests" / "crd" / "quranfinetunes.quranft.io.yaml").read_text())
    qft_spec = qft["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    template = _schema()["properties"]["spec"]["properties"]["template"]
    assert {k: v for k, v in template.items() if k != "description"} == \
        {k: v for k, v in qft_spec.items() if k != "description"}


def test_names_columns_and_status_subresource():
    doc = yaml.safe_load(CRD.read_text())
    names = doc["spec"]["names"]
    assert (doc["spec"]["group"], names["kind"], names["plural"], names["shortNames"]) == \
        ("quranft.io", "QuranFineTuneCampaign", "quranfinetunecampaigns", ["qftc"])
    version = doc["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]][:5] == ["Phase", "Done", "Best", "Verdict", "Age"]


def test_every_campaign_field_is_described_and_typed():
    root = _schema()
    own = {k: v for k, v in root["properties"]["spec"]["properties"].items() if k != "template"}
    nodes = [x for key, sub in own.items() for x in _walk(sub, f"spec.{key}")]
    nodes += list(_walk(root["properties"]["status"], "status"))
    missing = [p for p, n in nodes if not n.get("description") and not p.endswith("[]")]
    assert missing == []
    untyped = [p for p, n in nodes if "type" not in n and not n.get("x-kubernetes-preserve-unknown-fields")]
    assert untyped == []
    # The spec and status schemas are the pydantic models' fields, by their wire names.
    aliases = lambda model: {f.alias or n for n, f in model.model_fields.items()}  # noqa: E731
    assert set(root["properties"]["spec"]["properties"]) == aliases(CampaignSpec)
    assert set(root["properties"]["status"]["properties"]) == aliases(CampaignStatus)
