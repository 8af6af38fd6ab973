"""Rows of a hub or local dataset with the audio left undecoded: one code path for both.

The hub is read with `load_dataset(..., streaming=True)` (the token, if any, comes from HF_TOKEN or the file
named by HF_TOKEN_PATH, as the operator mounts it; `huggingface_hub` reads either itself). A local directory
is anything `datasets` loads: `save_to_disk` output
(`load_from_disk`, then iterated as a stream) or a folder of parquet/arrow/csv files or an audiofolder
(`load_dataset(dir, streaming=True)`). Either way the caller gets an iterable of plain dict rows whose audio
column is `{"bytes", "path"}`, because we decode and resample ourselves.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from quranft.trainer.errors import DataError


def is_saved_to_disk(path: Path) -> bool:
    """`Dataset.save_to_disk` writes state.json; `DatasetDict.save_to_disk` writes dataset_dict.json."""
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _load(dataset: str, local_path: Path | None, split: str, revision: str | None = None) -> Any:
    from datasets import DatasetDict, load_dataset, load_from_disk

    if local_path is None:
        pinned = {"revision": revision} if revision else {}  # a commit, tag or branch of the hub repo
        return load_dataset(dataset, split=split, streaming=True, **pinned)
    if not local_path.exists():
        raise DataError(f"local dataset {local_path} does not exist")
    if not is_saved_to_disk(local_path):
        return load_dataset(str(local_path), split=split, streaming=True)
    loaded = load_from_disk(str(local_path))
    # A bare Dataset has no split names; treat it like load_dataset treats unnamed files: as "train".
    splits = loaded if isinstance(loaded, DatasetDict) else {"train": loaded}
    if split not in splits:
        raise DataError(f"{local_path}: no split {split!r} (splits: {', '.join(sorted(splits))})")
    return splits[split].to_iterable_dataset()


def open_rows(*, dataset: str, local_path: Path | None, split: str, audio_column: str,
              required_columns: Iterable[str] = (), revision: str | None = None) -> Iterable[dict[str, Any]]:
    """A stream of rows of one split, its audio column cast to `Audio(decode=False)`. Raises DataError.

    `revision` pins a hub dataset (local directories have none; it is ignored for them).
    """
    from datasets import Audio

    where = str(local_path) if local_path is not None else dataset + (f"@{revision}" if revision else "")
    try:
        rows = _load(dataset, local_path, split, revision)
    except DataError:
        raise
    except Exception as exc:  # DatasetNotFoundError, bad split (ValueError), unreadable files, network
        raise DataError(f"cannot load {where} split {split!r}: {type(exc).__name__}: {exc}") from exc
    features = rows.features
    if features is None:  # some hub streams do not know their schema up front; rows are checked later
        return rows
    missing = [c for c in (audio_column, *required_columns) if c not in features]
    if missing:
        raise DataError(f"{where} split {split!r}: missing column(s) {', '.join(missing)} "
                        f"(columns: {', '.join(features)})")
    return rows.cast_column(audio_column, Audio(decode=False))


def resolve_revision(dataset: str, revision: str | None = None) -> str | None:
    """The commit a hub dataset's `revision` (None: its default branch) points at now, or None when the hub
    cannot say (offline, no access): recording the revision never fails a prepare."""
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(dataset, revision=revision).sha or None
    except Exception:  # network, auth, rate limits: the load itself reports what matters
        return None


def indexed_rows(rows: Iterable[dict[str, Any]], where: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index, row) of a stream; a stream that breaks midway (network, corrupt shard) is a DataError."""
    iterator = iter(rows)
    index = 0
    while True:
        try:
            row = next(iterator)
        except StopIteration:
            return
        except Exception as exc:
            raise DataError(f"reading {where} failed after {index} rows: {type(exc).__name__}: {exc}") from exc
        yield index, row
        index += 1
