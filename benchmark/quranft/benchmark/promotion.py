"""Promotion: the winner's model becomes `models/production/<campaign>/model.nemo`, atomically, with its
`results.json` and `lineage.json`; the model it replaces is kept under `history/`.

Layout on the claim:

    models/production/<campaign>/{model.nemo, results.json, lineage.json}
    models/production/<campaign>/history/<promotedAt>-<variant>/{model.nemo, results.json, lineage.json}

Order, so that a Job killed at any point and run again ends in the same state with one history entry:
1. `lineage.json` already names this promotion (`promotionId`): finish it (model and results must match
   what the lineage records; a file that does not is copied again) and change nothing else.
2. Copy the winner's model to a temp file in the production directory (same filesystem), hashing it on the
   way; a model whose sha256 is not the one the benchmark measured is refused (DataError).
3. Archive the current production files to `history/<its promotedAt>-<its variant>/`: hard links (the bytes
   stay where they are; a copy where the filesystem has no hard links) into a temp directory renamed into
   place. The name comes from the current lineage, so a rerun finds the archive already there.
4. Write the new `lineage.json` (temp + os.replace): from here on, a rerun takes branch 1.
5. os.replace the staged model over `model.nemo`, then `results.json`.
Nothing here ever deletes a production or history model: only this module's own temp files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from quranft.contract import workspace as layout
from quranft.contract.workspace import LINEAGE_FILE, MODEL_FILE, RESULTS_FILE
from quranft.trainer.errors import DataError

FILES = (MODEL_FILE, RESULTS_FILE, LINEAGE_FILE)
HISTORY_DIR = "history"
TMP_MARK = ".tmp-"
CHUNK = 8 << 20


class ModelMismatch(DataError):
    """The file to promote is not the model the benchmark judged (its sha256 differs)."""


@dataclass(frozen=True)
class Production:
    variant: str
    model_path: Path
    lineage_path: Path
    results_path: Path
    history: tuple[Path, ...]
    promoted_at: str
    already_promoted: bool  # a rerun that found this promotion done (or half done, and finished it)

    def to_json(self) -> dict[str, Any]:
        return {"variant": self.variant, "modelPath": str(self.model_path), "lineagePath": str(self.lineage_path),
                "resultsPath": str(self.results_path), "history": [str(p) for p in self.history],
                "promotedAt": self.promoted_at}


def production_dir(workspace: Path, campaign: str) -> Path:
    return layout.production_dir(campaign, workspace)


def rfc3339(now: datetime) -> str:
    return now.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def history_stamp(promoted_at: str | None) -> str:
    """`2026-02-27T09:25:40Z` -> `20260227T092540Z` (no colons in directory names)."""
    return (promoted_at or "unknown").replace("-", "").replace(":", "")


def promote(
    workspace: Path,
    campaign: str,
    *,
    variant: str,
    model_source: Path,
    results_source: Path,
    promotion: str,
    expected_sha256: str | None,
    lineage: Callable[[dict[str, Any], str], dict[str, Any]],
    now: datetime | None = None,
) -> Production:
    """Make `model_source` the campaign's production model (see the module docstring).

    `lineage(model, promoted_at)` builds the lineage document, `model` being {path, source, sha256, bytes}."""
    if not model_source.is_file():
        raise DataError(f"cannot promote {variant}: its model {model_source} does not exist")
    if not results_source.is_file():
        raise DataError(f"cannot promote {variant}: its results file {results_source} does not exist")
    root = production_dir(workspace, campaign)
    (root / HISTORY_DIR).mkdir(parents=True, exist_ok=True)
    _remove_own_temps(root)
    current = read_lineage(root / LINEAGE_FILE)
    if current is not None and current.get("promotionId") == promotion:
        _finish(root, current, model_source, results_source)
        return _production(root, variant, current["promotedAt"], already=True)

    staged = root / f".{MODEL_FILE}{TMP_MARK}{os.getpid()}"
    sha, size = copy_hashed(model_source, staged)
    if expected_sha256 and sha != expected_sha256:
        staged.unlink()
        raise ModelMismatch(f"cannot promote {variant}: {model_source} has sha256 {sha[:12]}, the benchmark "
                            f"judged {expected_sha256[:12]}: the file changed after it was benchmarked")
    if current is not None or (root / MODEL_FILE).exists():
        archive(root, current)
    promoted_at = rfc3339(now or datetime.now(timezone.utc))
    doc = lineage({"path": str(root / MODEL_FILE), "source": str(model_source), "sha256": sha, "bytes": size},
                  promoted_at)
    if doc.get("promotionId") != promotion or doc.get("promotedAt") != promoted_at:
        raise ValueError("the lineage document must carry this promotion's promotionId and promotedAt")
    write_atomic(root / LINEAGE_FILE, json.dumps(doc, ensure_ascii=False, indent=1, default=str).encode())
    os.replace(staged, root / MODEL_FILE)
    copy_atomic(results_source, root / RESULTS_FILE)
    _fsync_dir(root)
    return _production(root, variant, promoted_at, already=False)


def read_lineage(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def history(root: Path) -> tuple[Path, ...]:
    base = root / HISTORY_DIR
    if not base.is_dir():
        return ()
    return tuple(sorted(p for p in base.iterdir() if p.is_dir() and TMP_MARK not in p.name))


def archive(root: Path, current: Mapping[str, Any] | None) -> Path:
    """Keep the current production files under history/ (idempotent: an archive of the same promotion that
    already exists is returned as is)."""
    if current is not None:
        name = f"{history_stamp(current.get('promotedAt'))}-{current.get('variant') or 'unknown'}"
    else:  # a model placed by hand, without lineage: named by its modification time
        mtime = datetime.fromtimestamp((root / MODEL_FILE).stat().st_mtime, timezone.utc)
        name = f"{history_stamp(rfc3339(mtime))}-unknown"
    base = root / HISTORY_DIR
    target, n = base / name, 1
    while target.exists():
        if _same_archive(target, root, current):
            return target
        target, n = base / f"{name}-{n}", n + 1
    tmp = base / f"{TMP_MARK}{name}-{os.getpid()}"
    tmp.mkdir()
    for fname in FILES:
        src = root / fname
        if src.exists():
            try:
                os.link(src, tmp / fname)
            except OSError:  # no hard links on this filesystem (some network ones): a copy
                shutil.copy2(src, tmp / fname)
    _fsync_dir(tmp)
    os.rename(tmp, target)
    _fsync_dir(base)
    return target


def _same_archive(target: Path, root: Path, current: Mapping[str, Any] | None) -> bool:
    archived = read_lineage(target / LINEAGE_FILE)
    if current is not None and archived is not None:
        return archived.get("promotionId") == current.get("promotionId")
    a, b = target / MODEL_FILE, root / MODEL_FILE
    return a.exists() and b.exists() and (os.path.samefile(a, b) or a.stat().st_size == b.stat().st_size)


def _finish(root: Path, current: Mapping[str, Any], model_source: Path, results_source: Path) -> None:
    """A promotion whose lineage is written: put the model and the results it names in place if they are not."""
    want = (current.get("model") or {}).get("sha256")
    model = root / MODEL_FILE
    if not model.exists() or sha256_file(model) != want:
        staged = root / f".{MODEL_FILE}{TMP_MARK}{os.getpid()}"
        sha, _ = copy_hashed(model_source, staged)
        if sha != want:
            staged.unlink()
            raise ModelMismatch(f"{model_source} has sha256 {sha[:12]}, this promotion's lineage records "
                                f"{str(want)[:12]}: the file changed after it was promoted")
        os.replace(staged, model)
    results = root / RESULTS_FILE
    if not results.exists() or results.read_bytes() != results_source.read_bytes():
        copy_atomic(results_source, results)
    _fsync_dir(root)


def _production(root: Path, variant: str, promoted_at: str, *, already: bool) -> Production:
    return Production(variant, root / MODEL_FILE, root / LINEAGE_FILE, root / RESULTS_FILE, history(root),
                      promoted_at, already)


def _remove_own_temps(root: Path) -> None:
    """Temp files and directories a killed promotion left (this module's names only; history links only)."""
    for path in list(root.iterdir()) + list((root / HISTORY_DIR).iterdir()):
        if path.name.startswith(TMP_MARK) or (path.name.startswith(".") and TMP_MARK in path.name):
            if path.is_dir():
                shutil.rmtree(path)  # links to (or copies of) files that are still in production
            else:
                path.unlink()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def copy_hashed(src: Path, dst: Path) -> tuple[str, int]:
    """Copy src to dst (fsynced), hashing the bytes on the way: (sha256, size)."""
    h, size = hashlib.sha256(), 0
    with src.open("rb") as fin, dst.open("wb") as fout:
        while chunk := fin.read(CHUNK):
            h.update(chunk)
            fout.write(chunk)
            size += len(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return h.hexdigest(), size


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}{TMP_MARK}{os.getpid()}")
    copy_hashed(src, tmp)
    os.replace(tmp, dst)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
