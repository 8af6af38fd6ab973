"""`prepare`: local datasets through the hub code path, filters, blend, the shared cache and its races."""
from __future__ import annotations

import json
import multiprocessing
import os
import secrets
import shutil
import socket
import time
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf

from prepare_fixtures import QURAN_TRAIN, QURAN_VAL, RETASY, VERSE, synth_m4a
from quranft.trainer import prepare as prep
from quranft.trainer import sources
from quranft.trainer import vocab
from quranft.trainer.audio import decode
from quranft.contract.config import data_spec_hash, load_config
from quranft.trainer.errors import DataError


def config(workspace: Path, local_path: Path, *extra: str, blend: Path | None = None):
    overrides = [f"run.workspace={workspace}", "data.source=local", f"data.localPath={local_path}",
                 "data.maxDurationSeconds=5", "training.baseModel=tiny", *extra]
    if blend is not None:
        overrides.append(f"data.blend.localPath={blend}")
    return load_config(None, overrides)


def read_manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def expected(rows, outcome: str) -> int:
    return sum(1 for *_, o in rows if o == outcome)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*")}


def quiet(_line: str) -> None:
    pass


def tiny_fold(text: str) -> str:
    """What the vocabulary gate writes for the tiny tokenizer (bare letters: harakat are dropped)."""
    return vocab.fold(text.strip(), vocab.load_tokenizer("tiny").inventory)


def test_prepare_filters_and_writes_16k_mono_manifests(tmp_path, local_quran_dataset):
    cfg = config(tmp_path / "ws", local_quran_dataset)
    lines: list[str] = []
    summary = prep.prepare(cfg, log=lines.append)

    key = data_spec_hash(cfg.data)
    data_dir = tmp_path / "ws" / "data" / key
    assert summary["ok"] is True and summary["stage"] == "prepare" and summary["reused"] is False
    assert summary["dataSpecHash"] == key and summary["dataDir"] == str(data_dir)
    assert sorted(p.name for p in data_dir.iterdir()) == [
        "COMPLETE", "audio", "stats.json", "train_manifest.json", "val_manifest.json"]
    assert not list((tmp_path / "ws" / "data").glob(".tmp-*"))

    train = read_manifest(data_dir / "train_manifest.json")
    val = read_manifest(data_dir / "val_manifest.json")
    kept_texts = [text.strip() for _, text, outcome in QURAN_TRAIN if outcome == "keep"]
    # Folded into the tiny tokenizer's bare letters, in input order; the dataset's own text is kept beside it.
    assert [row["text"] for row in train] == [tiny_fold(t) for t in kept_texts]
    assert [row["source_text"] for row in train] == kept_texts
    assert train[0]["text"] == "بسم الله الرحمن الرحيم" and train[0]["source_text"] == VERSE.strip()
    assert len(val) == expected(QURAN_VAL, "keep")
    for row in train + val:
        path = Path(row["audio_filepath"])
        assert path.is_absolute() and path.is_file() and data_dir in path.parents
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.format, info.subtype) == (16000, 1, "WAV", "PCM_16")
        assert row["duration"] == pytest.approx(info.frames / 16000, abs=1e-4)
        assert 0.6 <= row["duration"] <= 5
    # Resampled clips keep their length: 1.0 s, 2.0 s (44.1 kHz stereo), 1.5 s (48 kHz FLAC), MP3 ~2.5 s.
    assert [round(r["duration"], 2) for r in train[:3]] == [1.0, 2.0, 1.5]
    assert train[3]["duration"] == pytest.approx(2.5, abs=0.1)

    stats = json.loads((data_dir / "stats.json").read_text())
    primary = stats["train"]["sources"]["primary"]
    assert primary == {**primary, "rowsRead": len(QURAN_TRAIN), "kept": 4, "tooShort": 1, "tooLong": 1,
                       "emptyText": 2, "undecodable": 2, "excludedLabel": 0, "split": "train"}
    assert stats["train"]["samples"] == 4
    assert stats["train"]["durationSeconds"] == pytest.approx(sum(r["duration"] for r in train), abs=1e-2)
    assert stats["val"]["sources"]["primary"]["tooShort"] == 1
    assert stats["dataSpecHash"] == key and stats["spec"]["localPath"] == str(local_quran_dataset)
    assert primary["revision"] is None and primary["resolvedRevision"] is None  # local: no revision
    words = stats["vocabulary"]
    assert words["tokenizer"]["baseModel"] == "tiny" and words["maxUnkRate"] == 0.001
    assert words["tokenizer"]["sha256"] == vocab.load_tokenizer("tiny").sha256
    assert words["train"]["primary"]["unkRate"] == 0 and words["train"]["primary"]["oov"] == []
    assert words["train"]["primary"]["transcripts"] == 4 and words["train"]["primary"]["changedByFold"] == 4
    assert {f["from"] for f in words["train"]["primary"]["folded"]} >= {"\u25cc\u064e", "\u25cc\u0651"}  # ◌َ ◌ّ
    assert words["val"]["primary"]["tokens"] > 0
    assert summary["stats"] == {"train": stats["train"], "val": stats["val"], "vocabulary": {
        "tokenizer": words["tokenizer"]["sha256"][:12], "maxUnkRate": 0.001,
        "train/primary": {"unkRate": 0.0, "tokens": words["train"]["primary"]["tokens"], "oov": {}},
        "val/primary": {"unkRate": 0.0, "tokens": words["val"]["primary"]["tokens"], "oov": {}}}}
    assert any("train/primary done" in line for line in lines)


def test_parquet_and_audiofolder_go_through_the_same_path(tmp_path, local_quran_dataset, local_quran_parquet,
                                                           local_quran_audiofolder):
    def outcome(local):
        summary = prep.prepare(config(tmp_path / "ws", local), log=quiet)
        data_dir = Path(summary["dataDir"])
        rows = read_manifest(data_dir / "train_manifest.json") + read_manifest(data_dir / "val_manifest.json")
        return [(r["text"], round(r["duration"], 3)) for r in rows], summary["stats"]

    disk_rows, disk_stats = outcome(local_quran_dataset)
    parquet_rows, parquet_stats = outcome(local_quran_parquet)
    assert parquet_rows == disk_rows
    for name in ("train", "val"):
        a, b = disk_stats[name]["sources"]["primary"], parquet_stats[name]["sources"]["primary"]
        assert {k: v for k, v in a.items() if k != "dataset"} == {k: v for k, v in b.items() if k != "dataset"}
    folder_rows, folder_stats = outcome(local_quran_audiofolder)
    assert sorted(folder_rows) == sorted(disk_rows)  # audiofolder order is by file name
    assert folder_stats["train"]["sources"]["primary"]["tooLong"] == 1


def test_blend_drops_excluded_labels_and_joins_training_only(tmp_path, local_quran_dataset, local_retasy_dataset):
    cfg = config(tmp_path / "ws", local_quran_dataset, blend=local_retasy_dataset)
    summary = prep.prepare(cfg, log=quiet)
    data_dir = Path(summary["dataDir"])
    train = read_manifest(data_dir / "train_manifest.json")
    val = read_manifest(data_dir / "val_manifest.json")

    blended = [r for r in train if "/audio/train/blend/" in r["audio_filepath"]]
    kept = [i for i, (_, _, outcome) in enumerate(RETASY) if outcome == "keep"]
    assert [r["source_text"] for r in blended] == [f"قُلْ هُوَ اللَّهُ أَحَدٌ {i}" for i in kept]
    assert {r["text"] for r in blended} == {"قل هو الله احد"}  # harakat, hamza form and the verse number folded
    assert len(train) == 4 + len(kept)
    assert train[:4] == [r for r in train if "/primary/" in r["audio_filepath"]]  # primary first
    assert not any("/blend/" in r["audio_filepath"] for r in val)
    counts = summary["stats"]["train"]["sources"]["blend"]
    assert counts["excludedLabel"] == 3 and counts["tooShort"] == 1 and counts["kept"] == len(kept)
    assert counts["rowsRead"] == len(RETASY)
    assert "blend" not in summary["stats"]["val"]["sources"]


def test_sample_limits_cap_kept_rows(tmp_path, local_quran_dataset, local_retasy_dataset):
    cfg = config(tmp_path / "ws", local_quran_dataset, "data.maxTrainSamples=2", "data.maxValSamples=1",
                 "data.blend.maxSamples=1", blend=local_retasy_dataset)
    stats = prep.prepare(cfg, log=quiet)["stats"]
    assert stats["train"]["sources"]["primary"]["kept"] == 2
    assert stats["train"]["sources"]["primary"]["rowsRead"] == 2  # stops reading once the cap is reached
    assert stats["train"]["sources"]["blend"]["kept"] == 1
    assert stats["val"]["samples"] == 1


def test_single_worker_writes_the_same_manifests(tmp_path, local_quran_dataset):
    one = prep.prepare(config(tmp_path / "a", local_quran_dataset), log=quiet, workers=1)
    many = prep.prepare(config(tmp_path / "b", local_quran_dataset), log=quiet, workers=4)

    def rows(summary, root):
        return [{**r, "audio_filepath": str(Path(r["audio_filepath"]).relative_to(root))}
                for r in read_manifest(Path(summary["dataDir"]) / "train_manifest.json")]
    assert rows(one, tmp_path / "a") == rows(many, tmp_path / "b")


def test_second_prepare_reuses_without_touching_anything(tmp_path, local_quran_dataset):
    source = tmp_path / "source"
    shutil.copytree(local_quran_dataset, source)
    first = prep.prepare(config(tmp_path / "ws", source), log=quiet)
    before = snapshot(tmp_path / "ws")
    shutil.rmtree(source)  # proof that the reuse path never reads the dataset

    # A sibling experiment: other run, other training knobs, same data spec.
    sibling = config(tmp_path / "ws", source, "run.name=v4-longer", "training.maxSteps=15000")
    again = prep.prepare(sibling, log=quiet)
    assert again["reused"] is True
    assert {k: v for k, v in again.items() if k != "reused"} == {k: v for k, v in first.items() if k != "reused"}
    assert snapshot(tmp_path / "ws") == before


def test_other_data_spec_gets_its_own_directory(tmp_path, local_quran_dataset):
    a = prep.prepare(config(tmp_path / "ws", local_quran_dataset), log=quiet)
    b = prep.prepare(config(tmp_path / "ws", local_quran_dataset, "data.minDurationSeconds=1.1"), log=quiet)
    assert a["dataDir"] != b["dataDir"] and b["reused"] is False
    assert b["stats"]["train"]["sources"]["primary"]["tooShort"] == 2  # the 1.0 s clip now fails too


def test_directory_without_completion_marker_is_rebuilt(tmp_path, local_quran_dataset):
    cfg = config(tmp_path / "ws", local_quran_dataset)
    data_dir = Path(prep.prepare(cfg, log=quiet)["dataDir"])
    (data_dir / "COMPLETE").unlink()
    (data_dir / "train_manifest.json").write_text('{"half": "written"\n')

    summary = prep.prepare(cfg, log=quiet)
    assert summary["reused"] is False
    assert (data_dir / "COMPLETE").is_file()
    assert len(read_manifest(data_dir / "train_manifest.json")) == 4
    assert not [p for p in (tmp_path / "ws" / "data").iterdir() if p.name.startswith(".")]


def _leftover(data_root: Path, key: str, *, host: str, pid: int, age: float = 0.0) -> Path:
    tmp = data_root / f".tmp-{key}-{pid}-{secrets.token_hex(4)}"
    (tmp / "audio").mkdir(parents=True)
    (tmp / "train_manifest.json").write_text("{}\n")
    owner = tmp / prep.OWNER_FILE
    owner.write_text(json.dumps({"host": host, "pid": pid, "startedAt": time.time() - age}))
    os.utime(owner, (time.time() - age, time.time() - age))
    return tmp


def _dead_pid() -> int:
    proc = multiprocessing.get_context("fork").Process(target=os._exit, args=(0,))
    proc.start()
    proc.join()
    return proc.pid


def test_half_finished_builds_are_never_reused_and_dead_ones_are_cleaned(tmp_path, local_quran_dataset):
    cfg = config(tmp_path / "ws", local_quran_dataset)
    key = data_spec_hash(cfg.data)
    data_root = tmp_path / "ws" / "data"
    here = socket.gethostname()
    dead = _leftover(data_root, key, host=here, pid=_dead_pid())
    silent = _leftover(data_root, key, host="other-pod", pid=7, age=prep.STALE_AFTER_SECONDS + 60)
    busy = _leftover(data_root, key, host="other-pod", pid=7)  # another pod is building right now
    assert prep.is_stale(dead) and prep.is_stale(silent) and not prep.is_stale(busy)

    summary = prep.prepare(cfg, log=quiet)
    assert summary["reused"] is False
    assert not dead.exists() and not silent.exists()
    assert busy.exists()  # a live build elsewhere is left alone
    assert len(read_manifest(Path(summary["dataDir"]) / "train_manifest.json")) == 4


def test_a_restarted_container_with_the_same_pid_cleans_its_own_leftover(tmp_path):
    leftover = _leftover(tmp_path, "abc", host=socket.gethostname(), pid=os.getpid())
    assert prep.is_stale(leftover)


def test_empty_training_set_is_a_data_error_with_the_counts(tmp_path, local_quran_dataset):
    cfg = config(tmp_path / "ws", local_quran_dataset, "data.minDurationSeconds=4")
    with pytest.raises(DataError) as info:
        prep.prepare(cfg, log=quiet)
    message = str(info.value)
    assert "no train samples left after filtering" in message
    for part in ("read=10", "kept=0", "tooShort=5", "tooLong=1", "emptyText=2", "undecodable=2"):
        assert part in message
    assert list((tmp_path / "ws" / "data").iterdir()) == []  # nothing half-written remains


@pytest.mark.parametrize("extra, expected", [
    (["data.valSplit=test"], "no split 'test' (splits: train, validation)"),
    (["data.textColumn=transcript"], "missing column(s) transcript"),
    (["data.audioColumn=wave"], "missing column(s) wave"),
])
def test_unusable_sources_are_data_errors(tmp_path, local_quran_dataset, extra, expected):
    with pytest.raises(DataError, match=r".*") as info:
        prep.prepare(config(tmp_path / "ws", local_quran_dataset, *extra), log=quiet)
    assert expected in str(info.value)


def test_missing_local_dataset_and_bad_parquet_split_are_data_errors(tmp_path, local_quran_parquet):
    with pytest.raises(DataError, match="does not exist"):
        prep.prepare(config(tmp_path / "ws", tmp_path / "nowhere"), log=quiet)
    with pytest.raises(DataError, match="Bad split: test"):
        prep.prepare(config(tmp_path / "ws", local_quran_parquet, "data.valSplit=test"), log=quiet)


def test_blend_without_its_label_column_is_a_data_error(tmp_path, local_quran_dataset, local_retasy_dataset):
    cfg = config(tmp_path / "ws", local_quran_dataset, "data.blend.labelColumn=verdict",
                 blend=local_retasy_dataset)
    with pytest.raises(DataError, match=r"missing column\(s\) verdict"):
        prep.prepare(cfg, log=quiet)


def test_losing_the_rename_race_reuses_the_winner(tmp_path, local_quran_dataset, monkeypatch):
    cfg = config(tmp_path / "ws", local_quran_dataset)
    real_build = prep.build
    calls = Counter()

    def build_while_another_prepare_finishes(*args, **kwargs):
        calls["build"] += 1
        stats = real_build(*args, **kwargs)
        if calls["build"] == 1:
            winner = prep.prepare(cfg, log=quiet)  # a concurrent prepare publishes first
            assert winner["reused"] is False
        return stats

    monkeypatch.setattr(prep, "build", build_while_another_prepare_finishes)
    lines: list[str] = []
    loser = prep.prepare(cfg, log=lines.append)
    assert loser["reused"] is True and calls["build"] == 2
    assert any("finished" in line and "first" in line for line in lines)
    data_root = tmp_path / "ws" / "data"
    assert [p.name for p in data_root.iterdir()] == [data_spec_hash(cfg.data)]  # the loser's copy is gone


def _prepare_in_child(workspace: str, local: str, out) -> None:
    summary = prep.prepare(config(Path(workspace), Path(local)), log=quiet)
    out.put(summary["reused"])


def test_concurrent_prepares_of_one_spec_both_succeed(tmp_path, local_quran_dataset):
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_prepare_in_child, args=(str(tmp_path / "ws"), str(local_quran_dataset), results))
             for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    reused = sorted(results.get(timeout=5) for _ in procs)
    assert reused == [False, True]  # one published; the other reused it (directly or after losing the rename)
    data_root = tmp_path / "ws" / "data"
    key = data_spec_hash(config(tmp_path / "ws", local_quran_dataset).data)
    assert [p.name for p in data_root.iterdir()] == [key]
    assert len(read_manifest(data_root / key / "train_manifest.json")) == 4


def test_formats_libsndfile_cannot_read_go_through_ffmpeg(tmp_path):
    # ffmpeg only decodes: the file's own rate comes back, soxr resamples it like every other format.
    samples, rate = decode({"bytes": synth_m4a(1.5, tmp_path), "path": "phone.m4a"})
    assert rate == 44100 and len(samples) / rate == pytest.approx(1.5, abs=0.1)


def test_hub_sources_stream_by_name_and_leave_the_token_to_the_environment(
        tmp_path, monkeypatch, local_quran_parquet, local_retasy_dataset):
    # The hub is out of reach in tests: only `load_dataset` is replaced, by local copies of the two corpora.
    import datasets

    real_load_dataset = datasets.load_dataset
    calls = []

    def hub(name, **kwargs):
        calls.append((name, kwargs))
        if name == "RetaSy/quranic_audio_dataset":
            return datasets.load_from_disk(str(local_retasy_dataset)).to_iterable_dataset()
        assert name == "rabah2026/Quran-Ayah-Corpus"
        return real_load_dataset(str(local_quran_parquet), **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", hub)
    # The hub's answer to "which commit is this revision now": the Quran corpus answers, RetaSy cannot.
    resolved = []

    def resolve(name, revision=None):
        resolved.append((name, revision))
        return "c0ffee" * 6 + "abcd" if name == "rabah2026/Quran-Ayah-Corpus" else None

    monkeypatch.setattr(sources, "resolve_revision", resolve)
    cfg = load_config(None, [f"run.workspace={tmp_path / 'ws'}", "data.maxDurationSeconds=5",
                             "data.blend.maxSamples=2", "training.baseModel=tiny"])
    summary = prep.prepare(cfg, log=quiet)
    sha = "c0ffee" * 6 + "abcd"
    assert resolved == [("rabah2026/Quran-Ayah-Corpus", None), ("RetaSy/quranic_audio_dataset", None)]  # once each
    # Unpinned, the corpus is read at the commit it resolved to (train and validation alike); RetaSy as is.
    assert calls == [
        ("rabah2026/Quran-Ayah-Corpus", {"split": "train", "streaming": True, "revision": sha}),
        ("RetaSy/quranic_audio_dataset", {"split": "train", "streaming": True}),
        ("rabah2026/Quran-Ayah-Corpus", {"split": "validation", "streaming": True, "revision": sha}),
    ]
    train_sources = summary["stats"]["train"]["sources"]
    assert train_sources["primary"]["dataset"] == "rabah2026/Quran-Ayah-Corpus"
    assert train_sources["primary"]["kept"] == 4
    blend = train_sources["blend"]
    assert blend["kept"] == 2 and blend["excludedLabel"] == 0  # rows 0-1: no bad label
    # The revision read is recorded (stats.json and the summary, hence status.data.stats); unknown never fails.
    assert (train_sources["primary"]["revision"], train_sources["primary"]["resolvedRevision"]) == (None, sha)
    assert (train_sources["blend"]["revision"], train_sources["blend"]["resolvedRevision"]) == (None, "unknown")
    assert summary["stats"]["val"]["sources"]["primary"]["resolvedRevision"] == sha
    stats = json.loads((Path(summary["dataDir"]) / "stats.json").read_text())
    assert stats["train"]["sources"]["primary"]["resolvedRevision"] == sha


def test_a_pinned_revision_is_read_as_pinned_and_keys_its_own_directory(
        tmp_path, monkeypatch, local_quran_parquet, local_retasy_dataset):
    import datasets

    real_load_dataset = datasets.load_dataset
    calls = []

    def hub(name, **kwargs):
        calls.append((name, kwargs.get("revision")))
        if name == "RetaSy/quranic_audio_dataset":
            return datasets.load_from_disk(str(local_retasy_dataset)).to_iterable_dataset()
        return real_load_dataset(str(local_quran_parquet), **{k: v for k, v in kwargs.items() if k != "revision"})

    monkeypatch.setattr(datasets, "load_dataset", hub)
    monkeypatch.setattr(sources, "resolve_revision", lambda name, revision=None: f"sha-of-{revision or 'main'}")

    def run(*extra):
        cfg = load_config(None, [f"run.workspace={tmp_path / 'ws'}", "data.maxDurationSeconds=5",
                                 "data.blend.maxSamples=1", "training.baseModel=tiny", *extra])
        return prep.prepare(cfg, log=quiet)

    unpinned = run()
    pinned = run("data.revision=v1.0")
    again = run("data.revision=v1.0", "run.name=sibling", "training.maxSteps=99")
    blend_pinned = run("data.revision=v1.0", "data.blend.revision=abc123")
    assert len({unpinned["dataDir"], pinned["dataDir"], blend_pinned["dataDir"]}) == 3
    assert again["dataDir"] == pinned["dataDir"] and again["reused"] is True  # one prepared copy per revision
    assert calls.count(("rabah2026/Quran-Ayah-Corpus", "sha-of-v1.0")) == 4  # train + val, for two builds
    assert ("RetaSy/quranic_audio_dataset", "sha-of-abc123") in calls
    primary = pinned["stats"]["train"]["sources"]["primary"]
    assert (primary["revision"], primary["resolvedRevision"]) == ("v1.0", "sha-of-v1.0")
    blend = blend_pinned["stats"]["train"]["sources"]["blend"]
    assert (blend["revision"], blend["resolvedRevision"]) == ("abc123", "sha-of-abc123")
    assert sorted(p.name for p in (tmp_path / "ws" / "data").iterdir()) == sorted(
        Path(s["dataDir"]).name for s in (unpinned, pinned, blend_pinned))
