"""campaign_plan: template + variants/search -> child QuranFineTune bodies (pure)."""
from __future__ import annotations

import json

import pytest
from campaignkit import campaign, template

from quranft.operator import builders
from quranft.operator.campaign_plan import (PlanError, apply_overrides, campaign_pvc, plan, trainer_problem,
                                            trial_variants)
from quranft.operator.campaign_spec import CampaignSpec, Search


def test_children_are_named_owned_labelled_and_share_the_claim_and_baseline():
    spec, meta = campaign(variants=[{"name": "v2", "overrides": {"training.freeze.encoderLayers": 4}},
                                    {"name": "v5", "remove": ["data.blend"],
                                     "overrides": {"data.maxTrainSamples": 100}}],
                          baseline={"promoted": "prod"})
    children = plan(spec, meta)
    assert [(c.variant, c.child) for c in children] == [("v2", "c-v2"), ("v5", "c-v5")]
    body = children[0].body
    assert body["kind"] == "QuranFineTune" and body["metadata"]["namespace"] == "team-a"
    assert body["metadata"]["ownerReferences"] == [{"apiVersion": "quranft.io/v1alpha1",
                                                    "kind": "QuranFineTuneCampaign", "name": "c", "uid": "uid-c",
                                                    "controller": True, "blockOwnerDeletion": True}]
    assert body["metadata"]["labels"]["quranft.io/campaign"] == "c"
    assert body["metadata"]["labels"]["quranft.io/variant"] == "v2"
    assert body["spec"]["training"]["freeze"] == {"preprocessor": True, "encoderLayers": 4, "rnntDecoder": True}
    for c in children:
        assert c.body["spec"]["storage"] == {"existingClaim": "ws"}
        assert c.body["spec"]["benchmark"]["baseline"] == {
            "resultsPath": "/workspace/models/production/prod/results.json"}
        assert c.body["spec"]["benchmark"]["corpus"] == spec.template["benchmark"]["corpus"]
    assert children[1].body["spec"]["data"]["maxTrainSamples"] == 100
    # Same data spec -> same data hash (the QuranFineTune operator's sibling reuse); a data override -> another.
    assert builders.spec_data_hash(children[0].body["spec"]) == builders.spec_data_hash(spec.template)
    assert builders.spec_data_hash(children[1].body["spec"]) != builders.spec_data_hash(spec.template)


def test_a_sized_template_gets_one_campaign_claim_that_every_child_uses():
    spec, meta = campaign()
    spec = CampaignSpec.model_validate({**spec.model_dump(by_alias=True, exclude_none=True),
                                        "template": template(storage={"size": "5Gi"})})
    pvc = campaign_pvc(spec, meta)
    assert pvc["metadata"]["name"] == "c-workspace" and "ownerReferences" not in pvc["metadata"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert {c.body["spec"]["storage"]["existingClaim"] for c in plan(spec, meta)} == {"c-workspace"}
    owned = CampaignSpec.model_validate({**spec.model_dump(by_alias=True, exclude_none=True),
                                         "template": template(storage={"size": "5Gi", "deleteClaimOnDelete": True})})
    assert campaign_pvc(owned, meta)["metadata"]["ownerReferences"][0]["kind"] == "QuranFineTuneCampaign"


@pytest.mark.parametrize("overrides, remove, expected", [
    ({"storage.existingClaim": "other"}, [], "storage.existingClaim is shared by every variant"),
    ({"benchmark.corpus": {"path": "/x"}}, [], "benchmark.corpus is shared by every variant"),
    ({"benchmark.baseline.resultsPath": "/x"}, [], "benchmark.baseline.resultsPath is shared"),
    ({"benchmark.tolerances.minGain": 0}, [], "benchmark.tolerances.minGain is shared"),
    ({"training..lr": 1}, [], "is not a dotted field path"),
    ({"metadata.name": "x"}, [], "variants change the spec only"),
    ({"training.maxSteps.x": 1}, [], "training.maxSteps is not an object"),
    ({}, ["storage"], "storage is shared by every variant"),
])
def test_overrides_of_the_shared_protocol_or_bad_paths_are_refused(overrides, remove, expected):
    with pytest.raises(PlanError, match=expected.replace(".", r"\.")):
        apply_overrides(template(), remove, overrides)


def test_trainer_schema_problems_and_base_models():
    spec, meta = campaign(variants=[{"name": "ok"}, {"name": "bad", "overrides": {"training.mode": "rnnt"}},
                                    {"name": "typo", "overrides": {"training.maxStep": 5}}])
    problems = {c.variant: trainer_problem(c) for c in plan(spec, meta)}
    assert problems["ok"] is None
    assert problems["bad"].startswith("the trainer would reject it") and "training.mode" in problems["bad"]
    assert "training.maxStep" in problems["typo"]
    spec, meta = campaign(variants=[{"name": "a"}, {"name": "b", "overrides": {"training.baseModel": "/m.nemo"}}])
    with pytest.raises(PlanError, match="different base models"):
        plan(spec, meta)
    spec, meta = campaign(variants=[{"name": "a"}, {"name": "b", "overrides": {"training.baseModel": "/m.nemo"}}],
                          baseline={"resultsPath": "/workspace/base.json"})
    assert len(plan(spec, meta)) == 2  # one stored baseline: different base models are fine


def test_a_child_name_over_52_characters_is_refused():
    spec, meta = campaign(name="x" * 40, variants=["y" * 12])
    with pytest.raises(PlanError, match="longer than 52"):
        plan(spec, meta)


def test_grid_search_walks_combinations_in_order_and_random_is_seeded():
    grid = Search(fields={"training.learningRate": [1e-4, 1e-3], "training.seed": [1, 2, 3]})
    trials = trial_variants(grid)
    assert [t.name for t in trials] == [f"trial-{i:02d}" for i in range(6)]
    assert [(t.overrides["training.learningRate"], t.overrides["training.seed"]) for t in trials] == \
        [(1e-4, 1), (1e-4, 2), (1e-4, 3), (1e-3, 1), (1e-3, 2), (1e-3, 3)]
    assert len(trial_variants(Search(fields=grid.fields, max_trials=4))) == 4
    draw = lambda seed: [t.overrides for t in trial_variants(Search(algorithm="random", seed=seed, max_trials=3,  # noqa: E731
                                                                    fields=grid.fields))]
    assert draw(7) == draw(7) and len({json.dumps(o, sort_keys=True) for o in draw(7)}) == 3
    assert any(draw(s) != draw(7) for s in range(8))
    # A huge grid is never materialised, and too many children are refused.
    huge = Search(algorithm="random", seed=1, max_trials=5, fields={f"training.f{i}": list(range(10)) for i in range(12)})
    assert len(trial_variants(huge)) == 5
    spec, meta = campaign(variants=[], search={"fields": {"training.seed": list(range(17)),
                                                          "training.learningRate": [1e-5, 1e-4, 1e-3, 1e-2]}})
    with pytest.raises(PlanError, match="68 combinations.*more than 64 children"):
        plan(spec, meta)


def test_search_trials_come_after_the_variants_and_names_must_not_clash():
    spec, meta = campaign(variants=["base"], search={"fields": {"training.learningRate": [1e-4, 1e-3]}})
    assert [c.child for c in plan(spec, meta)] == ["c-base", "c-trial-00", "c-trial-01"]
    spec, meta = campaign(variants=["trial-00"], search={"fields": {"training.seed": [1]}})
    with pytest.raises(PlanError, match="used twice"):
        plan(spec, meta)


def test_stage_command_annotations_are_merged_per_variant_for_the_children():
    spec, meta = campaign(variants=["a", "b"])
    meta["annotations"] = {
        builders.COMMAND_ANNOTATION: json.dumps({"train": ["t"], "report": ["r"]}),
        "quranft.io/variant-stage-commands": json.dumps({"b": {"benchmark": ["bench-b"]}})}
    a, b = plan(spec, meta)
    assert json.loads(a.body["metadata"]["annotations"][builders.COMMAND_ANNOTATION]) == {"train": ["t"],
                                                                                           "report": ["r"]}
    assert json.loads(b.body["metadata"]["annotations"][builders.COMMAND_ANNOTATION]) == {
        "train": ["t"], "report": ["r"], "benchmark": ["bench-b"]}
    spec, meta = campaign()
    assert "annotations" not in plan(spec, meta)[0].body["metadata"]
