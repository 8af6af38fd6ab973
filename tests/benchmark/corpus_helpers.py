"""Helpers to build small corpora for the benchmark tests (imported by test modules)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

RECITATIONS = Path("/work/shared/corpus/recitations-v1")


def make_corpus(root: Path, samples: list[dict], source: Path = RECITATIONS) -> Path:
    """A small corpus in `root`: each sample's `file` is copied from `source` unless `copy` is False."""
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for s in samples:
        s = dict(s)
        copy_from = s.pop("copy_from", None)
        if copy_from:
            shutil.copy(source / copy_from, root / s["file"])
        entries.append(s)
    (root / "manifest.json").write_text(json.dumps({"samples": entries}, ensure_ascii=False))
    return root


def entry(id_: str, file: str, verses: list[tuple[int, int]], copy_from: str | None = None, **extra) -> dict:
    e = {"id": id_, "file": file, "surah": verses[0][0] if verses else None,
         "ayah": verses[0][1] if verses else None, "ayah_end": None, "category": "short", "source": "test",
         "expected_verses": [{"surah": s, "ayah": a} for s, a in verses]}
    if copy_from:
        e["copy_from"] = copy_from
    e.update(extra)
    return e
