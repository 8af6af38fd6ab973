"""Small local datasets with real audio bytes, in the formats `datasets` loads (no network)."""
from __future__ import annotations

from pathlib import Path

import pytest

from prepare_fixtures import QURAN_TRAIN, QURAN_VAL, RETASY, _audio, synth_audio


def _table(rows) -> dict:
    return {"audio": [r[0] for r in rows], "text": [r[1] for r in rows]}


def _quran_dict():
    from datasets import Audio, Dataset, DatasetDict

    def split(rows):
        return Dataset.from_dict(_table(rows)).cast_column("audio", Audio())
    return DatasetDict({"train": split(QURAN_TRAIN), "validation": split(QURAN_VAL)})


@pytest.fixture(scope="session")
def local_quran_dataset(tmp_path_factory) -> Path:
    """`DatasetDict.save_to_disk` output with train/validation splits."""
    path = tmp_path_factory.mktemp("quran-disk") / "ds"
    _quran_dict().save_to_disk(str(path))
    return path


@pytest.fixture(scope="session")
def local_quran_parquet(tmp_path_factory) -> Path:
    """Parquet shards named like a hub dataset's (`data/<split>-00000-of-00001.parquet`)."""
    path = tmp_path_factory.mktemp("quran-parquet")
    for split, ds in _quran_dict().items():
        ds.to_parquet(str(path / "data" / f"{split}-00000-of-00001.parquet"))
    return path


@pytest.fixture(scope="session")
def local_quran_audiofolder(tmp_path_factory) -> Path:
    """An audiofolder: <split>/<file>.wav plus metadata.csv with the text."""
    import csv

    root = tmp_path_factory.mktemp("quran-audiofolder")
    for split, rows in (("train", QURAN_TRAIN), ("validation", QURAN_VAL)):
        folder = root / split
        folder.mkdir()
        with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file_name", "text"])
            for i, (audio, text, outcome) in enumerate(rows):
                if outcome in ("keep", "short", "long"):  # audiofolder needs real audio files
                    name = f"{i:03d}{Path(audio['path']).suffix}"
                    (folder / name).write_bytes(audio["bytes"])
                    writer.writerow([name, text])
    return root


@pytest.fixture(scope="session")
def local_retasy_dataset(tmp_path_factory) -> Path:
    """A bare `Dataset.save_to_disk` (no split names) with RetaSy's columns."""
    from datasets import Audio, Dataset

    rows = {
        "audio": [_audio(synth_audio(ms / 1000 if ms > 500 else 1.0), f"r{i}.wav") for i, (ms, _, _) in
                  enumerate(RETASY)],
        "Surah": ["112"] * len(RETASY),
        "Aya": [f" قُلْ هُوَ اللَّهُ أَحَدٌ {i} " for i in range(len(RETASY))],
        "duration_ms": [ms for ms, _, _ in RETASY],
        "final_label": [label for _, label, _ in RETASY],
    }
    path = tmp_path_factory.mktemp("retasy") / "ds"
    Dataset.from_dict(rows).cast_column("audio", Audio()).save_to_disk(str(path))
    return path
