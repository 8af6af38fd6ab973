"""CRD sanity without a cluster: structural, documented, and in step with the trainer's config schema."""
from __future__ import annotations

from specs import apply_defaults, crd, schema

from quranft.trainer.config import BlendSpec, DataSpec, FreezeSpec, TrainingSpec


def _walk(node, path="spec"):
    yield path, node
    for key, sub in (node.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{key}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")


def _aliases(model) -> set[str]:
    return {f.alias or n for n, f in model.model_fields.items()}


def test_names_and_printer_columns():
    doc = crd()
    names = doc["spec"]["names"]
    assert (doc["spec"]["group"], names["kind"], names["plural"], names["shortNames"]) == \
        ("quranft.io", "QuranFineTune", "quranfinetunes", ["qft"])
    version = doc["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:7] == ["Phase", "Progress", "Verdict", "Recall", "SeqAcc", "Delta", "Age"]


def test_every_spec_field_is_described_and_typed():
    spec = schema()["properties"]["spec"]
    missing = [path for path, node in _walk(spec) if not node.get("description") and not path.endswith("[]")]
    assert missing == []
    untyped = [path for path, node in _walk(spec)
               if "type" not in node and not node.get("x-kubernetes-int-or-string")]
    assert untyped == []


def test_data_and_training_match_the_trainer_config_field_names():
    props = schema()["properties"]["spec"]["properties"]
    assert set(props["data"]["properties"]) == _aliases(DataSpec)
    assert set(props["data"]["properties"]["blend"]["properties"]) == _aliases(BlendSpec)
    assert set(props["training"]["properties"]) == _aliases(TrainingSpec)
    assert set(props["training"]["properties"]["freeze"]["properties"]) == _aliases(FreezeSpec)


def test_crd_defaults_equal_trainer_defaults():
    """A default that differs between CRD and trainer would make the data hash or the run drift."""
    props = schema()["properties"]["spec"]["properties"]
    for section, model in (("data", DataSpec), ("training", TrainingSpec)):
        for key, sub in props[section]["properties"].items():
            if "default" not in sub or sub.get("type") == "object":
                continue
            field = next(f for n, f in model.model_fields.items() if (f.alias or n) == key)
            assert sub["default"] == field.get_default(call_default_factory=True), f"{section}.{key}"
    defaulted = apply_defaults(props["training"], {"baseModel": "tiny"})
    assert TrainingSpec.model_validate(defaulted).model_dump(by_alias=True) == \
        TrainingSpec.model_validate({"baseModel": "tiny"}).model_dump(by_alias=True)


def test_immutability_rules_present():
    props = schema()["properties"]["spec"]["properties"]
    for section in ("data", "training", "storage", "benchmark", "images"):
        rules = [r["rule"] for r in props[section].get("x-kubernetes-validations", [])]
        assert "self == oldSelf" in rules, section


def test_benchmark_corpus_matches_the_benchmark_corpus_spec():
    """spec.benchmark.corpus is handed to the benchmark as JSON: same field names, same defaults."""
    from quranft.benchmark.corpus_source import CorpusSpec

    corpus = schema()["properties"]["spec"]["properties"]["benchmark"]["properties"]["corpus"]["properties"]
    assert set(corpus) == _aliases(CorpusSpec)
    for key, sub in corpus.items():
        if "default" in sub:
            field = next(f for n, f in CorpusSpec.model_fields.items() if (f.alias or n) == key)
            assert sub["default"] == field.get_default(call_default_factory=True), key
