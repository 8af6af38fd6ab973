"""The campaign examples: campaign-v2-v5 is the team's plan exactly; the CPU-stub campaign runs in the demo."""
from __future__ import annotations

import yaml
from specs import apply_defaults, schema

from quranft.cluster import demo
from quranft.operator import access, builders
from quranft.operator.campaign_plan import plan
from quranft.operator.campaign_spec import CampaignSpec


def _example(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((access.MANIFESTS / "examples" / name).read_text()) if d]


def _stored(kind_doc: dict, schema_node: dict) -> dict:
    """As the API server stores it: the schema's defaults applied."""
    return apply_defaults(schema_node, kind_doc)


def test_campaign_v2_v5_children_are_exactly_the_standalone_v2_to_v5_runs():
    qft_spec_schema = schema()["properties"]["spec"]
    docs = _example("campaign-v2-v5.yaml")
    body = next(d for d in docs if d["kind"] == "QuranFineTuneCampaign")
    body["spec"]["template"] = _stored(body["spec"]["template"], qft_spec_schema)
    spec = CampaignSpec.model_validate(body["spec"])
    meta = {"name": body["metadata"]["name"], "namespace": "team-a", "uid": "u"}
    children = {c.variant: c.body["spec"] for c in plan(spec, meta)}
    assert list(children) == ["v2-unfreeze-more", "v3-hybrid", "v4-longer-train", "v5-quran-only"]
    v1 = next(d for d in _example("v1-ctc-baseline.yaml") if d["kind"] == "QuranFineTune")
    assert _stored(v1["spec"], qft_spec_schema) == spec.template  # the template is V1
    for variant, child in children.items():
        standalone = next(d for d in _example(f"{variant}.yaml") if d["kind"] == "QuranFineTune")
        # as the API server stores each (defaults applied on create)
        assert _stored(child, qft_spec_schema) == _stored(standalone["spec"], qft_spec_schema), variant
    assert builders.spec_data_hash(children["v5-quran-only"]) != builders.spec_data_hash(spec.template)
    assert len({builders.spec_data_hash(children[v]) for v in ("v2-unfreeze-more", "v3-hybrid",
                                                                "v4-longer-train")}) == 1
    assert spec.effective_baseline() == {"baseModel": True} and spec.promotion.policy == "Automatic"


def test_cpu_stub_campaign_uses_the_seeded_workspace_and_one_variant_changes_the_data():
    docs = _example("cpu-stub-campaign.yaml")
    body = next(d for d in docs if d["kind"] == "QuranFineTuneCampaign")
    body["spec"]["template"] = _stored(body["spec"]["template"], schema()["properties"]["spec"])
    spec = CampaignSpec.model_validate(body["spec"])
    assert spec.template["training"]["baseModel"] == "/workspace/models/tiny.nemo"
    assert spec.template["data"]["localPath"] == "/workspace/synth/dataset"
    assert spec.template["resources"]["gpus"] == 0
    children = plan(spec, {"name": body["metadata"]["name"], "namespace": "d", "uid": "u"})
    hashes = [builders.spec_data_hash(c.body["spec"]) for c in children]
    assert len(children) == 4 and len(set(hashes)) == 2 and hashes.count(hashes[0]) == 3
    assert any(c.body["spec"]["training"]["learningRate"] >= 0.5 for c in children)  # the one to stop early


def test_demo_prints_each_variant_and_the_outcome_of_a_campaign():
    obj = {"status": {"phase": "Succeeded", "done": "2/2", "best": "a", "verdict": "improvement",
                      "variants": [{"name": "a", "phase": "Succeeded", "verdict": "improvement",
                                    "primaryMetric": {"name": "recall", "value": 0.9}},
                                   {"name": "b", "phase": "Stopped", "stoppedReason": "MedianStop"}],
                      "conditions": [{"type": "Promoted", "status": "True", "reason": "Promoted", "message": "a wins"}],
                      "production": {"variant": "a", "modelPath": "/workspace/models/production/c/model.nemo"},
                      "report": {"path": "/workspace/campaigns/c/report.md"}}}
    line = demo.campaign_summary_line(obj)
    for part in ("campaign phase=Succeeded done=2/2", "best=a (improvement)", "a=Succeeded/improvement recall=0.9",
                 "b=Stopped (stopped early)", "Promoted=True Promoted: a wins", "production=a",
                 "report=/workspace/campaigns/c/report.md"):
        assert part in line, (part, line)
