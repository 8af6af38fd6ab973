"""The QuranFineTune CRD is generated from quranft.operator.resource (scripts/gen_crd.py), never hand-edited:
the checked-in CRDs and the chart's copies are the generator's output, and the models read a stored spec the
way the API server defaulted it."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import yaml
from specs import apply_defaults, body, schema

from quranft.operator.resource import QuranFineTuneSpec, QuranFineTuneStatus, parse_spec
from quranft.contract.config import ConfigError, DataSpec, TrainingSpec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "manifests" / "examples"


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("gen_crd", ROOT / "scripts" / "gen_crd.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _aliases(model) -> set[str]:
    return {f.alias or n for n, f in model.model_fields.items()}


def test_checked_in_crds_and_chart_copies_are_the_generators_output(gen):
    assert sorted(p.relative_to(ROOT).as_posix() for p in gen.outputs()) == [
        "charts/quran-finetune/files/crds/quranfinetunecampaigns.quranft.io.yaml",
        "charts/quran-finetune/files/crds/quranfinetunes.quranft.io.yaml",
        "manifests/crd/quranfinetunecampaigns.quranft.io.yaml",
        "manifests/crd/quranfinetunes.quranft.io.yaml"]
    assert gen.stale() == [], "run python scripts/gen_crd.py"


def test_a_hand_edit_of_any_copy_is_caught(gen, tmp_path, monkeypatch):
    manifests, chart = tmp_path / "manifests", tmp_path / "chart"
    for folder, source in ((manifests, gen.MANIFESTS), (chart, gen.CHART_CRDS)):
        folder.mkdir()
        for name in (gen.QFT_FILE, gen.CAMPAIGN_FILE):
            shutil.copy(source / name, folder / name)
    monkeypatch.setattr(gen, "MANIFESTS", manifests)
    monkeypatch.setattr(gen, "CHART_CRDS", chart)
    assert gen.stale() == []
    edited = chart / gen.QFT_FILE
    edited.write_text(edited.read_text().replace("maximum: 16\n", "maximum: 32\n", 1))
    assert gen.stale() == [edited]
    assert gen.main(["--check"]) == 1


def test_schema_properties_are_the_models_fields():
    props = schema()["properties"]
    assert set(props["spec"]["properties"]) == _aliases(QuranFineTuneSpec)
    assert set(props["status"]["properties"]) == _aliases(QuranFineTuneStatus)
    assert props["spec"]["required"] == ["data", "training", "storage"]


def test_data_and_training_are_the_trainers_models():
    """The CRD's data/training models narrow the run config's (quranft.contract.config): same fields, same checks."""
    spec_fields = QuranFineTuneSpec.model_fields
    assert issubclass(spec_fields["data"].annotation, DataSpec)
    assert issubclass(spec_fields["training"].annotation, TrainingSpec)
    with pytest.raises(ConfigError, match="warmupSteps must be below maxSteps"):
        parse_spec(body(spec_overrides={"training": {"baseModel": "tiny", "maxSteps": 5, "warmupSteps": 5}})["spec"])


def test_spec_benchmark_is_the_run_configs_benchmark_model():
    """One model for spec.benchmark and the run config's `benchmark` section: the CRD's subclasses it (for its CEL
    rules and the typed corpus), so the fields, defaults and checks are the same; the section adds only what the
    operator fixes per run and the stage's own knobs."""
    from quranft.contract.config import BenchmarkConfig, BenchmarkSpec
    from quranft.operator.resource import Benchmark

    assert issubclass(QuranFineTuneSpec.model_fields["benchmark"].annotation, BenchmarkSpec)
    assert list(Benchmark.model_fields) == list(BenchmarkSpec.model_fields)
    assert set(BenchmarkConfig.model_fields) - set(BenchmarkSpec.model_fields) == {
        "model", "name", "out", "training_data", "mode", "baseline_model", "baseline_name", "baseline_run",
        "resamples", "also_accept", "device"}
    with pytest.raises(ConfigError, match="verdictHead must be one of the heads decoder scores"):
        parse_spec(body(spec_overrides={"benchmark": {"decoder": "ctc", "verdictHead": "rnnt"}})["spec"])


def test_model_defaults_are_the_crd_defaults():
    """A spec defaulted by the API server (the CRD's defaults) and the same spec defaulted by the model agree, to
    the nested sections ({} defaults filled in by their own fields' defaults)."""
    minimal = {"data": {}, "training": {"baseModel": "tiny"}, "storage": {"size": "10Gi"}}
    by_server = apply_defaults(schema()["properties"]["spec"], minimal)
    assert QuranFineTuneSpec.model_validate(minimal).model_dump(by_alias=True, exclude_none=True) == by_server
    assert parse_spec(by_server).model_dump(by_alias=True, exclude_none=True) == by_server


def _example_specs():
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "QuranFineTune":
                yield pytest.param(doc["spec"], id=f"{path.stem}/{doc['metadata']['name']}")


@pytest.mark.parametrize("spec", list(_example_specs()))
def test_every_example_parses_as_stored(spec):
    stored = apply_defaults(schema()["properties"]["spec"], spec)
    assert parse_spec(stored).model_dump(by_alias=True, exclude_none=True) == stored


@pytest.mark.parametrize("spec", list(_example_specs()))
def test_every_example_makes_a_run_config_every_stage_accepts(spec):
    """The ConfigMap document of each example, as stored, validates with the run config (benchmark section too)."""
    from quranft.operator import builders

    stored = apply_defaults(schema()["properties"]["spec"], spec)
    cfg = builders.validate_run_config(builders.run_config_doc(stored, {"name": "x", "namespace": "ns"}))
    assert cfg.benchmark.model == "/workspace/runs/x/model.nemo" and cfg.benchmark.training_data


def test_bad_specs_name_the_field():
    spec = body()["spec"]
    with pytest.raises(ConfigError, match=r"resources\.gpus: Input should be less than or equal to 16"):
        parse_spec({**spec, "resources": {**spec["resources"], "gpus": 17}})
    with pytest.raises(ConfigError, match=r"storage\.sizee: Extra inputs are not permitted"):
        parse_spec({**spec, "storage": {"sizee": "1Gi"}})
    with pytest.raises(ConfigError, match=r"training\.baseModel: Field required"):
        parse_spec({**spec, "training": {"maxSteps": 40}})
