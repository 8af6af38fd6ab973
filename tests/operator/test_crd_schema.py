"""CRD sanity without a cluster: structural, documented, and in step with the trainer's config schema."""
from __future__ import annotations

from specs import apply_defaults, crd, schema

from quranft.contract.config import BlendSpec, DataSpec, FreezeSpec, TrainingSpec


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
    assert columns[:8] == ["Phase", "Progress", "ETA", "Verdict", "Recall", "SeqAcc", "Delta", "Age"]


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


# --- distributed training, stop requests -----------------------------------------------------------------------

def _rules(node) -> list[str]:
    return [r["rule"] for r in node.get("x-kubernetes-validations", [])]


def test_distributed_fields_default_to_one_pod_and_match_the_trainer_section():
    """resources.{nodes, gpus, distributedBackend, rendezvousTimeoutSeconds} become the trainer's `distributed`
    section (builders.distributed_doc); the bounds agree with the trainer's DistributedSpec and the builders."""
    from quranft.operator import builders
    from quranft.contract.config import DistributedSpec

    resources = schema()["properties"]["spec"]["properties"]["resources"]
    props = resources["properties"]
    nodes, backend = props["nodes"], props["distributedBackend"]
    assert (nodes["default"], nodes["minimum"], nodes["maximum"]) == (1, 1, builders.MAX_NODES)
    assert backend["enum"] == list(builders.BACKENDS) and backend["default"] == "auto"
    assert "default" not in props["rendezvousTimeoutSeconds"]  # unset: the trainer's default
    fields = DistributedSpec.model_fields
    assert [m.le for m in fields["nodes"].metadata if hasattr(m, "le")] == [builders.MAX_NODES]
    assert [m.le for m in fields["devices_per_node"].metadata if hasattr(m, "le")] == [props["gpus"]["maximum"]]
    defaulted = {"resources": apply_defaults(resources, {})}
    doc = builders.distributed_doc(defaulted)
    assert DistributedSpec.model_validate(doc).model_dump(by_alias=True) == DistributedSpec().model_dump(by_alias=True)
    rules = _rules(schema()["properties"]["spec"])
    assert any("self.resources.distributedBackend == 'gloo'" in r for r in rules)
    assert any(f"<= {builders.MAX_RANKS}" in r for r in rules)
    for key in ("nodes", "gpus", "distributedBackend"):
        assert _rules(props[key]) == ["self == oldSelf"], key


def test_multi_node_rules_cover_the_claim_and_the_name():
    root = schema()
    assert any("self.metadata.name.matches" in r and "resources.nodes == 1" in r for r in _rules(root))
    spec = root["properties"]["spec"]
    assert any("'ReadWriteMany' in self.storage.accessModes" in r for r in _rules(spec))
    modes = spec["properties"]["storage"]["properties"]["accessModes"]
    assert "ReadWriteMany" in modes["items"]["enum"] and "default" not in modes


def test_status_schema_keeps_what_the_operator_writes():
    """Status fields missing from the schema are pruned by the API server: every key status.py writes is there."""
    from quranft.operator import status as st

    props = schema()["properties"]["status"]["properties"]
    assert set(st.PROGRESS_KEYS) | {"display"} <= set(props["progress"]["properties"])
    training = set(props["training"]["properties"])
    assert set(st.TRAINING_SUMMARY_KEYS) | {"startTime", "wallSeconds", "gpuHours", "groupRestarts",
                                            "groupFailures", "lastRestart"} <= training
    assert set(props["training"]["properties"]["lastRestart"]["properties"]) == {"attempt", "reason", "message",
                                                                                 "counted"}
    assert set(st.TERMINAL) <= set(props["phase"]["enum"]) and "Stopped" in st.TERMINAL


def test_printer_columns_show_ranks_and_gpu_hours_in_wide_output():
    columns = {c["name"]: c for c in crd()["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert columns["Ranks"]["jsonPath"] == ".status.training.worldSize" and columns["Ranks"]["priority"] == 1
    assert columns["GPU-Hours"]["jsonPath"] == ".status.training.gpuHours"
