"""synth-data: espeak-ng recitations as a local dataset (train/validation) + a held-out benchmark corpus."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import soundfile as sf

from fixtures_model import synth_112  # noqa: F401  (fixture)
from quranft.contract.config import ConfigError
from quranft.trainer.synth import HELD_OUT, SPLITS, parse_surahs

SHARED_MANIFEST = Path("/work/shared/corpus/recitations-v1/manifest.json")
VERSES_112 = ["قل هو الله احد", "الله الصمد", "لم يلد ولم يولد", "ولم يكن له كفوا احد"]


def test_dataset_loads_with_datasets_and_has_the_hub_columns(synth_112):
    from datasets import Audio, load_dataset

    ds = load_dataset(str(synth_112 / "dataset"))
    assert set(ds) == {"train", "validation"}
    assert ds["train"].num_rows == 4 * len(SPLITS["train"])
    assert ds["validation"].num_rows == 4 * len(SPLITS["validation"])
    rows = ds["train"].cast_column("audio", Audio(decode=False))
    assert {"audio", "text", "duration"} <= set(rows.column_names)
    assert sorted(set(rows["text"])) == sorted(VERSES_112)
    for row in rows:
        audio, rate = sf.read(io.BytesIO(row["audio"]["bytes"]))
        assert rate == 16_000 and audio.ndim == 1
        assert row["duration"] == pytest.approx(len(audio) / rate, abs=1e-3)
        assert 0.5 < row["duration"] < 10


def test_voices_differ_between_train_validation_and_benchmark(synth_112):
    from datasets import Audio, load_dataset

    ds = load_dataset(str(synth_112 / "dataset")).cast_column("audio", Audio(decode=False))
    train_bytes = {r["audio"]["bytes"] for r in ds["train"]}
    assert not train_bytes & {r["audio"]["bytes"] for r in ds["validation"]}
    bench = synth_112 / "benchmark"
    assert not train_bytes & {p.read_bytes() for p in bench.glob("*.wav")}


def test_benchmark_manifest_matches_the_shared_corpus_format(synth_112):
    manifest = json.loads((synth_112 / "benchmark" / "manifest.json").read_text())
    samples = manifest["samples"]
    assert len(samples) == 4 * len(HELD_OUT)
    reference_keys = {"id", "file", "surah", "ayah", "ayah_end", "category", "source", "expected_verses"}
    if SHARED_MANIFEST.exists():  # the real corpus defines the format; its extra keys are optional ones
        assert reference_keys <= set(json.loads(SHARED_MANIFEST.read_text())["samples"][0])
    for s in samples:
        assert reference_keys <= set(s)
        assert s["surah"] == 112 and s["expected_verses"] == [{"surah": 112, "ayah": s["ayah"]}]
        assert s["category"] in {"short", "medium", "long"}
        _, rate = sf.read(synth_112 / "benchmark" / s["file"])
        assert rate == 16_000
    assert len({s["id"] for s in samples}) == len(samples)


@pytest.mark.parametrize("raw", ["", "0", "1,115", "fatiha"])
def test_bad_surah_lists_are_config_errors(raw):
    with pytest.raises(ConfigError):
        parse_surahs(raw)


def test_surah_list_parses():
    assert parse_surahs("1,112, 113,114") == [1, 112, 113, 114]
