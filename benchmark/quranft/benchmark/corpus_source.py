"""Where a benchmark corpus comes from: a directory with manifest.json, or a split of a (hub or local) dataset.

A dataset corpus is materialised once into the workspace's content-addressed cache,
`<workspace>/corpora/<specHash>/{manifest.json, audio/, stats.json, COMPLETE}`, by the same streaming
`datasets` path (`quranft.trainer.sources.open_rows`) and the same decoder (`load_16k_mono`) as training data,
with prepare's build-in-a-tmp-dir-and-rename cache (`quranft.trainer.prepare.build_once`). Sibling runs with
the same spec reuse it without writing a byte, so they are judged on byte-identical clips.

The manifest is in the recitations format (`/work/shared/corpus/recitations-v1/manifest.json`: id, file,
surah, ayah, ayah_end, category, source, expected_verses) plus `reciter`, `text`, `duration` and each clip's
`pcm_sha256` (the leakage check's digest). Clips are 16 kHz mono PCM_16 WAV.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from quranft.contract import workspace as layout

from .corpus import corpus_hash  # noqa: F401  (re-exported: results record corpus.hash)
from .scoring import Verse, parse_verse

CORPUS_FORMAT = 1  # bump when materialisation writes different bytes for the same spec
FILES_PER_FOLDER = 1000

Log = Callable[[str], None]

_DATASET_FIELDS = ("source", "dataset", "local_path", "split", "revision", "max_samples", "audio_column",
                   "id_column", "verses_column", "surah_column", "ayah_column", "ayah_end_column",
                   "text_column", "category_column", "source_column", "reciter_column")


class CorpusSpec(BaseModel):
    """spec.benchmark.corpus: a prepared directory (`path`) or a dataset split to materialise."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              validate_assignment=True)

    path: Path | None = Field(None, description="Directory with manifest.json (recitations format) and the clips.")
    source: Literal["hub", "local"] = Field(
        "hub", description="hub: `dataset` from the Hugging Face hub; local: `localPath` (inferred from localPath).")
    dataset: str | None = Field(None, description="Hub dataset name (source=hub).")
    local_path: Path | None = Field(None, description="Directory `datasets` can load (source=local).")
    split: str = Field("test", min_length=1, description="Split to benchmark on.")
    revision: str | None = Field(None, min_length=1,
                                 description="Hub commit, tag or branch to pin (source=hub only).")
    max_samples: int | None = Field(None, ge=1, description="At most this many clips (the first decodable rows).")
    audio_column: str = Field("audio", description="Audio column (any format the trainer decodes).")
    id_column: str | None = Field(None, description="Sample id column; default: the split and row index.")
    verses_column: str | None = Field(
        None, description='Column with the expected verses: a list of "s:a", {surah, ayah} or [s, a].')
    surah_column: str | None = Field(None, description="Surah number column (with ayahColumn).")
    ayah_column: str | None = Field(None, description="Ayah number column (with surahColumn).")
    ayah_end_column: str | None = Field(None, description="Last ayah of a multi-verse clip (optional).")
    text_column: str | None = Field(
        None, description="Verse text: kept in the manifest; without verse columns the verses are found by their "
                          "exact normalised text (either Tanzil spelling; a leading basmala is allowed).")
    category_column: str | None = Field(None, description="Category column (short/medium/long/multi...).")
    source_column: str | None = Field(None, description="Per-clip source column; default: the dataset name.")
    reciter_column: str | None = Field(None, description="Reciter column, for the same-reciter-same-verse check.")

    @model_validator(mode="before")
    @classmethod
    def _infer_source(cls, data: Any) -> Any:
        if isinstance(data, dict) and "source" not in data and (data.get("localPath") or data.get("local_path")):
            return {**data, "source": "local"}
        return data

    @model_validator(mode="after")
    def _check(self) -> "CorpusSpec":
        wants_dataset = self.dataset is not None or self.local_path is not None
        if self.path is not None and wants_dataset:
            raise ValueError("give either path (a corpus directory) or dataset/localPath, not both")
        if self.path is None and not wants_dataset:
            raise ValueError("a corpus needs path, dataset (hub) or localPath")
        if self.path is not None:
            extra = sorted(to_camel(f) for f in self.model_fields_set & set(_DATASET_FIELDS))
            if extra:
                raise ValueError(f"{', '.join(extra)} only apply to a dataset corpus (dataset/localPath), not path")
            return self
        if self.source == "hub" and self.local_path is not None:
            raise ValueError("localPath needs source=local")
        if self.source == "hub" and self.dataset is None:
            raise ValueError("source=hub needs dataset")
        if self.source == "local" and self.local_path is None:
            raise ValueError("source=local needs localPath")
        if self.source == "local" and self.revision is not None:
            raise ValueError("revision pins hub datasets only (source=hub)")
        by_parts = self.surah_column is not None or self.ayah_column is not None
        if self.verses_column is not None and by_parts:
            raise ValueError("give versesColumn or surahColumn + ayahColumn, not both")
        if self.verses_column is None and not (self.surah_column and self.ayah_column) and by_parts:
            raise ValueError("surahColumn and ayahColumn go together")
        if self.verses_column is None and not by_parts and self.text_column is None:
            raise ValueError("a dataset corpus needs verse ids: versesColumn, surahColumn + ayahColumn, "
                             "or textColumn (verses found by their text)")
        if self.ayah_end_column is not None and self.surah_column is None:
            raise ValueError("ayahEndColumn needs surahColumn + ayahColumn")
        return self

    @property
    def is_dataset(self) -> bool:
        return self.path is None

    def columns(self) -> list[str]:
        """Columns every row must have (the audio column is checked by open_rows itself)."""
        return [c for c in (self.id_column, self.verses_column, self.surah_column, self.ayah_column,
                            self.ayah_end_column, self.text_column, self.category_column, self.source_column,
                            self.reciter_column) if c]

    @property
    def name(self) -> str:
        return self.dataset if self.source == "hub" else Path(self.local_path).name  # type: ignore[arg-type]


def spec_hash(spec: CorpusSpec) -> str | None:
    """The cache key of a dataset corpus (16 hex chars over every dataset field, revision included)."""
    if not spec.is_dataset:
        return None
    doc = spec.model_dump(mode="json", by_alias=True, exclude={"path"})
    if doc.get("localPath"):
        doc["localPath"] = os.path.abspath(doc["localPath"])
    doc["format"] = CORPUS_FORMAT
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Materialized:
    root: Path  # the corpus directory to `load_corpus`
    spec_hash: str | None  # None for a path corpus
    reused: bool
    bytes_written: int  # bytes this call added to the cache (0 when reused, and for a path corpus)
    stats: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.root), "specHash": self.spec_hash, "reused": self.reused,
                "bytesWritten": self.bytes_written}


# ------------------------------------------------------------------------------------------- rows

def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{what} is {value!r}")
    number = int(value) if not isinstance(value, float) or value.is_integer() else None
    if number is None:
        raise ValueError(f"{what} is {value!r}")
    return number


@lru_cache(maxsize=1)
def _verses_by_text() -> dict[str, tuple[Verse, ...]]:
    """Normalised verse text (Tanzil simple and Uthmani spellings) -> the verses with exactly that text."""
    from .quran_text import load_quran

    index: dict[str, list[Verse]] = {}
    for style in ("SIMPLE", "UTHMANI"):
        quran = load_quran(style)
        for ref, text in zip(quran.refs, quran.texts):
            if ref not in index.setdefault(text, []):
                index[text].append(ref)
    return {text: tuple(sorted(refs)) for text, refs in index.items()}


def verses_by_text(text: Any) -> list[Verse]:
    """Every verse whose normalised text is exactly `text` (without or after a leading basmala)."""
    from .normalize import normalize_arabic
    from .quran_text import load_quran

    if not isinstance(text, str) or not normalize_arabic(text):
        raise ValueError(f"text is {text!r}")
    norm = normalize_arabic(text)
    index = _verses_by_text()
    found = index.get(norm)
    basmala = load_quran().basmala
    if not found and norm.startswith(basmala + " "):
        found = index.get(norm[len(basmala) + 1:])
    if not found:
        raise ValueError(f"text {text[:60]!r} is not exactly the text of a verse")
    return list(found)


def row_verses(row: dict[str, Any], spec: CorpusSpec) -> tuple[list[Verse], list[list[Verse]]]:
    """(expected verses, also_accept) of a row; ValueError when it has none or they are malformed.

    Found by text, a verse whose text recurs (55:13, 55:16, ...) is expected as the first such verse,
    the others accepted as alternatives: the audio cannot tell them apart.
    """
    also: list[list[Verse]] = []
    if spec.verses_column is None and spec.surah_column is None:
        first, *others = verses_by_text(row.get(spec.text_column))  # type: ignore[arg-type]
        verses, also = [first], [[v] for v in others]
    elif spec.verses_column:
        value = row.get(spec.verses_column)
        if isinstance(value, str):
            value = [part for part in value.replace(",", " ").split() if part]
        if not value:
            raise ValueError(f"{spec.verses_column} is {row.get(spec.verses_column)!r}")
        verses = [parse_verse(v) for v in value]
    else:
        surah = _int(row.get(spec.surah_column), spec.surah_column)  # type: ignore[arg-type]
        first = _int(row.get(spec.ayah_column), spec.ayah_column)  # type: ignore[arg-type]
        end_raw = row.get(spec.ayah_end_column) if spec.ayah_end_column else None
        last = first if end_raw is None else _int(end_raw, spec.ayah_end_column)  # type: ignore[arg-type]
        if last < first:
            raise ValueError(f"{spec.ayah_end_column} {last} is before {spec.ayah_column} {first}")
        verses = [(surah, a) for a in range(first, last + 1)]
    for s, a in verses:
        if not (1 <= s <= 114 and a >= 1):
            raise ValueError(f"no verse {s}:{a}")
    return verses, also


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else (None if value is None else str(value))


def _entry(index: int, row: dict[str, Any], spec: CorpusSpec, where: str) -> dict[str, Any]:
    """Manifest entry of one row, without file/duration/pcm_sha256 (set once its audio decodes)."""
    from quranft.trainer.errors import DataError

    if spec.id_column:
        sample_id = _text(row.get(spec.id_column))
        if sample_id is None:
            raise DataError(f"{where}: row {index} has no id in column {spec.id_column!r}")
    else:
        sample_id = f"{spec.split}-{index:06d}"
    try:
        verses, also_accept = row_verses(row, spec)
    except (ValueError, KeyError, TypeError) as exc:
        columns = spec.verses_column or "/".join(c for c in (spec.surah_column, spec.ayah_column,
                                                             spec.ayah_end_column) if c) or spec.text_column
        raise DataError(f"{where}: row {index} (id {sample_id}) has no usable verse ids in {columns}: "
                        f"{exc}") from exc
    entry: dict[str, Any] = {
        "id": sample_id,
        "surah": verses[0][0],
        "ayah": verses[0][1],
        "ayah_end": verses[-1][1] if len(verses) > 1 and len({s for s, _ in verses}) == 1 else None,
        "category": _text(row.get(spec.category_column)) if spec.category_column else None,
        "source": (_text(row.get(spec.source_column)) if spec.source_column else None) or spec.name,
        "expected_verses": [{"surah": s, "ayah": a} for s, a in verses],
    }
    if also_accept:
        entry["also_accept"] = [[{"surah": s, "ayah": a} for s, a in seq] for seq in also_accept]
    if spec.reciter_column and _text(row.get(spec.reciter_column)):
        entry["reciter"] = _text(row.get(spec.reciter_column))
    if spec.text_column and _text(row.get(spec.text_column)):
        entry["text"] = _text(row.get(spec.text_column))
    return entry


def _build(spec: CorpusSpec, key: str, build_dir: Path, *, workers: int, log: Log) -> dict[str, Any]:
    from quranft.trainer.audio import SAMPLE_RATE, UndecodableAudio, pcm_sha256, write_wav
    from quranft.trainer.errors import DataError
    from quranft.trainer.prepare import OWNER_FILE, SourceCounts, Ticker, decode_clip, ordered_map
    from quranft.trainer.sources import indexed_rows, open_rows

    started = time.monotonic()
    local = spec.local_path if spec.source == "local" else None
    where = f"{local or spec.dataset}{'@' + spec.revision if spec.revision else ''} split {spec.split!r}"
    log(f"corpus: materialising {where}" + (f", at most {spec.max_samples}" if spec.max_samples else "")
        + f" into {build_dir.parent}/{key}")
    rows = open_rows(dataset=spec.dataset or "", local_path=local, split=spec.split,
                     audio_column=spec.audio_column, required_columns=spec.columns(), revision=spec.revision)
    counts = SourceCounts(str(local or spec.dataset), spec.split)
    ticker = Ticker(build_dir / OWNER_FILE, log)
    seen: set[str] = set()

    def tagged_rows() -> Iterator[tuple[tuple[int, dict[str, Any]], Any]]:
        for index, row in indexed_rows(rows, where):
            entry = _entry(index, row, spec, where)
            if entry["id"] in seen:
                raise DataError(f"{where}: duplicate sample id {entry['id']!r} (row {index})")
            seen.add(entry["id"])
            yield (index, entry), row.get(spec.audio_column)

    samples: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for (index, entry), audio in ordered_map(decode_clip, tagged_rows(), workers):
        counts.rows_read += 1
        ticker.tick("corpus", counts)
        if audio is None or isinstance(audio, UndecodableAudio) or audio.size == 0:
            counts.undecodable += 1
            reason = str(audio) if isinstance(audio, UndecodableAudio) else "no audio"
            skipped.append({"id": entry["id"], "row": index, "error": reason[:300]})
            continue
        rel = Path("audio") / f"{index // FILES_PER_FOLDER:04d}" / f"{index:06d}.wav"
        (build_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        write_wav(build_dir / rel, audio)
        seconds = len(audio) / SAMPLE_RATE
        samples.append({**entry, "file": str(rel), "duration": round(seconds, 4), "pcm_sha256": pcm_sha256(audio)})
        counts.kept += 1
        counts.duration_seconds += seconds
        if spec.max_samples is not None and counts.kept >= spec.max_samples:
            break
    if counts.rows_read == 0:
        raise DataError(f"{where} is empty: no rows to benchmark on")
    if not samples:
        raise DataError(f"{where}: none of {counts.rows_read} clips decodes (first error: {skipped[0]['error']})")

    stats = {"specHash": key, "samples": len(samples), "rowsRead": counts.rows_read,
             "undecodable": counts.undecodable, "durationSeconds": round(counts.duration_seconds, 3),
             "buildSeconds": round(time.monotonic() - started, 3),
             "createdAt": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "spec": spec.model_dump(mode="json", by_alias=True, exclude={"path"})}
    corpus_id = f"{spec.name}:{spec.split}" + (f"@{spec.revision}" if spec.revision else "")
    manifest = {"id": corpus_id, "specHash": key, "stats": {k: stats[k] for k in ("samples", "rowsRead",
                "undecodable", "durationSeconds")}, "skipped": skipped, "samples": samples}
    (build_dir / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n",
                                             encoding="utf-8")
    log(f"corpus: {where}: {len(samples)} clips ({counts.duration_seconds:.1f} s of audio), "
        f"{counts.undecodable} undecodable skipped")
    return stats


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def materialize(spec: CorpusSpec, workspace: str | Path, log: Log = print, *,
                workers: int | None = None) -> Materialized:
    """The corpus directory for `spec`: `spec.path` as it is, or the dataset split materialised (once) under
    `<workspace>/corpora/<specHash>/`. Raises DataError for an unreadable or empty dataset, a missing
    column, or a row without verse ids; clips that do not decode are skipped and counted.
    """
    from quranft.trainer.prepare import build_once, default_workers

    if not spec.is_dataset:
        return Materialized(Path(spec.path), None, True, 0)  # type: ignore[arg-type]
    key = spec_hash(spec)
    assert key is not None
    root = layout.corpora_root(os.path.abspath(workspace))

    def fill(build_dir: Path, _final_dir: Path) -> dict[str, Any]:  # manifest paths are relative
        return _build(spec, key, build_dir, workers=workers or default_workers(), log=log)

    final_dir, reused, stats = build_once(root, key, fill, log=log, label="corpus")
    written = 0 if reused else _tree_bytes(final_dir)
    if not reused:
        log(f"corpus: wrote {final_dir} ({stats['samples']} clips, {written} bytes, {stats['buildSeconds']} s)")
    return Materialized(final_dir, key, reused, written, stats)
