"""Config contract: validation errors name the field path and the reason; --set overrides; the data hash."""
from __future__ import annotations

import json
import re

import pytest

from quranft.contract.config import (
    ConfigError,
    DataSpec,
    RunConfig,
    apply_overrides,
    data_spec_hash,
    dump_config,
    load_config,
)


def _error(overrides: list[str], path=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


def test_defaults_match_the_team_plan():
    cfg = load_config()
    assert cfg.data.dataset == "rabah2026/Quran-Ayah-Corpus"
    assert (cfg.data.min_duration_seconds, cfg.data.max_duration_seconds) == (0.6, 30.0)
    assert cfg.training.mode == "ctcOnly"
    assert cfg.metrics.port == 9400


def test_camel_case_file_round_trips(tmp_path):
    doc = {
        "run": {"name": "v3-hybrid", "namespace": "team-a", "workspace": str(tmp_path)},
        "data": {"source": "local", "localPath": str(tmp_path / "ds"), "maxTrainSamples": 100,
                 "blend": {"localPath": str(tmp_path / "retasy"), "maxSamples": 5}},
        "training": {"baseModel": "tiny", "mode": "hybrid", "maxSteps": 30, "warmupSteps": 3,
                     "freeze": {"encoderLayers": 2}},
        "metrics": {"port": 0},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    cfg = load_config(path)
    assert cfg.data.blend.max_samples == 5
    assert cfg.training.freeze.encoder_layers == 2
    assert cfg.data_dir == tmp_path / "data" / data_spec_hash(cfg.data)
    assert cfg.run_dir == tmp_path / "runs" / "v3-hybrid"
    # What the operator writes is what the CLI reads back.
    again = RunConfig.model_validate(json.loads(dump_config(cfg)))
    assert again == cfg


@pytest.mark.parametrize("override, expected", [
    ("data.bogus=1", "data.bogus: Extra inputs are not permitted"),
    ("training.freeze.everything=true", "training.freeze.everything: Extra inputs are not permitted"),
    ("training.batchSize=0", "training.batchSize: Input should be greater than or equal to 1"),
    ("training.ctcWeight=1.5", "training.ctcWeight: Input should be less than or equal to 1"),
    ("metrics.port=70000", "metrics.port: Input should be less than or equal to 65535"),
    ("data.blend.maxSamples=0", "data.blend.maxSamples: Input should be greater than or equal to 1"),
    ("data.maxTrainSamples=-3", "data.maxTrainSamples: Input should be greater than or equal to 1"),
    ("training.mode=rnnt", "training.mode: Input should be 'ctcOnly' or 'hybrid'"),
    ("training.precision=64", "training.precision: Input should be"),
    ("run.name=Bad_Name", "run.name: String should match pattern"),
    ("data.minDurationSeconds=40", "data: Value error, minDurationSeconds must be below maxDurationSeconds"),
    ("data.source=local", "data: Value error, source=local needs localPath"),
    ("training.warmupSteps=5000", "training: Value error, warmupSteps must be below maxSteps"),
])
def test_errors_name_the_field_path_and_reason(override, expected):
    assert expected in _error([override])


def test_every_problem_is_reported_one_per_line():
    message = _error(["training.batchSize=0", "metrics.port=-1", "data.bogus=x"])
    lines = message.splitlines()
    assert len(lines) == 3
    assert {line.split(":")[0] for line in lines} == {"training.batchSize", "metrics.port", "data.bogus"}


def test_set_overrides_accept_camel_and_snake_case_and_json_values():
    cfg = load_config(None, [
        "training.max_steps=50",
        "training.learningRate=3e-3",
        "training.freeze.rnntDecoder=false",
        "data.blend.excludeLabels=[\"in_correct\"]",
        "data.blend.maxSamples=10",
        "run.workspace=/tmp/ws",
        "data.maxValSamples=null",
    ])
    assert cfg.training.max_steps == 50
    assert cfg.training.learning_rate == pytest.approx(3e-3)
    assert cfg.training.freeze.rnnt_decoder is False
    # Setting one blend field creates the blend with the other fields at their defaults.
    assert cfg.data.blend.exclude_labels == ["in_correct"]
    assert cfg.data.blend.dataset == "RetaSy/quranic_audio_dataset"
    assert str(cfg.run.workspace) == "/tmp/ws"
    assert cfg.data.max_val_samples is None


def test_set_overrides_win_over_the_file_and_do_not_mutate_it(tmp_path):
    doc = {"training": {"maxSteps": 100, "warmupSteps": 10}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    assert load_config(path, ["training.maxSteps=20"]).training.max_steps == 20
    original = {"data": {"blend": None}}
    apply_overrides(original, ["data.blend.maxSamples=3"])
    assert original == {"data": {"blend": None}}


def test_set_can_remove_the_blend():
    assert load_config(None, ["data.blend.maxSamples=3", "data.blend=null"]).data.blend is None


@pytest.mark.parametrize("bad", ["noequals", "=3", "a..b=1", "training.max steps=1"])
def test_malformed_set_is_a_config_error(bad):
    assert "expected key.path=value" in _error([bad])


def test_set_below_a_scalar_is_a_config_error():
    assert "metrics is not an object" in _error(["metrics=3", "metrics.port=1"])


def test_unreadable_or_malformed_files(tmp_path):
    assert "cannot read config" in _error([], tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert "is not valid JSON" in _error([], bad)
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    assert "top level must be an object" in _error([], listing)


def test_data_spec_hash_is_the_stable_cache_key():
    base = load_config()
    key = data_spec_hash(base.data)
    assert re.fullmatch(r"[0-9a-f]{12}", key)
    # Same data, written differently (dict vs model, camel vs snake) -> same key.
    assert data_spec_hash(base.data.model_dump(by_alias=True)) == key
    assert data_spec_hash({"max_train_samples": None}) == key
    # Training knobs do not touch the data key (sibling experiments share prepared data).
    sibling = load_config(None, ["training.maxSteps=15000", "training.learningRate=3e-5", "run.name=v4"])
    assert data_spec_hash(sibling.data) == key
    # Any data field does.
    changed = {
        data_spec_hash(load_config(None, [o]).data)
        for o in ["data.maxTrainSamples=10", "data.minDurationSeconds=1.0", "data.blend.maxSamples=6000",
                  "data.valSplit=test", "data.textColumn=Aya"]
    }
    assert key not in changed and len(changed) == 5


def test_data_spec_hash_rejects_invalid_specs():
    with pytest.raises(Exception):
        data_spec_hash({"minDurationSeconds": 5, "maxDurationSeconds": 1})
    assert isinstance(DataSpec(), DataSpec)


def test_optional_id_columns_leave_existing_cache_keys_alone():
    # Pinned before reciterColumn/surahColumn/ayahColumn existed: prepared data on volumes stays reusable.
    assert data_spec_hash(DataSpec()) == "176aee83b17d"
    local = load_config(None, ["data.source=local", "data.localPath=/x", "data.blend=null"]).data
    assert data_spec_hash(local) == "7b5e95aa439a"
    assert data_spec_hash({"reciterColumn": None, "surahColumn": None, "ayahColumn": None}) == "176aee83b17d"
    # Set, they change what prepare writes, so they change the key.
    keys = {data_spec_hash(DataSpec(reciterColumn="reciter")),
            data_spec_hash(DataSpec(surahColumn="surah", ayahColumn="ayah"))}
    assert "176aee83b17d" not in keys and len(keys) == 2
    with pytest.raises(Exception, match="surahColumn and ayahColumn go together"):
        DataSpec(surahColumn="surah")


def test_a_pinned_revision_changes_the_data_hash_and_unset_leaves_it_alone():
    assert data_spec_hash({"revision": None, "maxUnkRate": 0.001}) == "176aee83b17d"
    pinned = data_spec_hash(load_config(None, ["data.revision=v1.0"]).data)
    other = data_spec_hash(load_config(None, ["data.revision=0123abcd"]).data)
    assert len({"176aee83b17d", pinned, other}) == 3
    assert data_spec_hash(load_config(None, ["data.revision=v1.0", "training.maxSteps=9"]).data) == pinned
    # The blend's revision is optional the same way, inside the nested spec.
    blend = load_config(None, ["data.blend.maxSamples=10"]).data
    blend_pinned = load_config(None, ["data.blend.maxSamples=10", "data.blend.revision=abc"]).data
    assert data_spec_hash({**blend.model_dump(by_alias=True), "blend": {**blend.blend.model_dump(by_alias=True),
                                                                      "revision": None}}) == data_spec_hash(blend)
    assert data_spec_hash(blend_pinned) != data_spec_hash(blend)
    with pytest.raises(ConfigError, match="data.revision"):
        load_config(None, ["data.revision="])


def test_max_unk_rate_is_a_threshold_outside_the_data_hash():
    assert DataSpec().max_unk_rate == 0.001
    assert data_spec_hash(load_config(None, ["data.maxUnkRate=0.2"]).data) == "176aee83b17d"
    with pytest.raises(ConfigError, match="data.maxUnkRate"):
        load_config(None, ["data.maxUnkRate=2"])


def test_num_workers_default_from_the_cpu_request(monkeypatch):
    import os

    from quranft.trainer.model import cpu_budget, data_workers

    assert load_config().training.num_workers is None
    assert load_config(None, ["training.numWorkers=0"]).training.num_workers == 0
    assert [data_workers(None, cpus) for cpus in (1, 2, 4, 9, 64)] == [0, 1, 3, 8, 8]
    assert data_workers(0, 16) == 0 and data_workers(12, 2) == 12  # an explicit value wins
    assert cpu_budget({"QURANFT_CPU_REQUEST": "6"}) == 6
    assert cpu_budget({}) == cpu_budget({"QURANFT_CPU_REQUEST": "0"}) == len(os.sched_getaffinity(0))
    assert cpu_budget({"QURANFT_CPU_REQUEST": "lots"}) == len(os.sched_getaffinity(0))
    monkeypatch.setenv("QURANFT_CPU_REQUEST", "3")
    assert data_workers(None) == 2


def test_precision_auto_prefers_bf16_where_the_gpu_has_it():
    from quranft.trainer.train import resolve_precision

    assert resolve_precision("auto", cuda=False) == "32"
    assert resolve_precision("auto", cuda=True, bf16=True) == "bf16-mixed"
    assert resolve_precision("auto", cuda=True, bf16=False) == "16-mixed"
    assert resolve_precision("32", cuda=True, bf16=True) == "32"
    with pytest.raises(ConfigError, match="16-mixed needs a GPU"):
        resolve_precision("16-mixed", cuda=False)
