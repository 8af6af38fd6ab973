"""`quranft trainer prepare`: NeMo manifests + 16 kHz mono WAV files, keyed by the data spec hash.

Layout (docs/contracts.md): `<workspace>/data/<hash>/{train_manifest.json, val_manifest.json, audio/,
stats.json, COMPLETE}`. The directory is built under `data/.tmp-<hash>-<pid>-<random>` and renamed into
place only when complete, so a reader either sees nothing or a finished build; sibling runs with the same
data spec (and a restarted Job) reuse it at once. Two concurrent builds of one spec both finish; the
second rename loses, discards its copy and reuses the winner's. `build_once` is that cache, shared with the
benchmark's hub corpora (`quranft.benchmark.corpus_source`, under `<workspace>/corpora/`).

Each manifest line also carries `pcm_sha256` (of the 16-bit PCM in its WAV: the benchmark's leakage check)
and, when the data spec names those columns, `reciter` and `verses`. NeMo's manifest reader ignores keys it
does not know.

Transcripts pass the vocabulary gate (quranft.trainer.vocab): `text` is folded into the characters the
tokenizer of `training.baseModel` knows (`source_text` keeps the dataset's own text when the fold changed
it), and a dataset whose `<unk>` rate is above `data.maxUnkRate` is a DataError naming the characters.
The directory stays keyed by the data spec alone (the operator computes that key without the model, and
siblings share it); stats.json records the tokenizer's sha256. A run whose base model has another tokenizer
reuses the audio and is gated on the transcripts refolded from `source_text`; its train stage trains on
refolded copies of the manifests in its own run directory (quranft.trainer.model.training_manifests).

Hub datasets are read at a pinned commit: `data.revision` (or the blend's) when set, else the commit the
default branch points at when the build starts; stats.json records both (`revision`, `resolvedRevision`).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic.alias_generators import to_camel

from quranft.contract import workspace as layout
from quranft.contract.summaries import PrepareSummary
from quranft.trainer import vocab
from quranft.contract.config import DataSpec, RunConfig, data_spec_hash
from quranft.trainer.errors import DataError

COMPLETE_MARKER = "COMPLETE"  # written last; a directory without it is never reused
OWNER_FILE = "OWNER.json"  # who builds a tmp dir; its mtime is the builder's heartbeat
STALE_AFTER_SECONDS = 30 * 60  # a tmp dir whose heartbeat is older than this belongs to a dead build
HEARTBEAT_SECONDS = 30.0
PROGRESS_SECONDS = 10.0
FILES_PER_FOLDER = 1000  # audio/<manifest>/<source>/<bucket>/ keeps folders small on network volumes

Log = Callable[[str], None]
_BUILDING: set[str] = set()  # tmp dir names this process is building right now


@dataclass
class SourceCounts:
    """What happened to the rows of one source feeding one manifest (stats.json, camelCase)."""
    dataset: str
    split: str
    revision: str | None = None  # as the data spec pins it (hub sources)
    resolved_revision: str | None = None  # the commit read (hub sources; "unknown" when the hub did not say)
    rows_read: int = 0
    kept: int = 0
    excluded_label: int = 0
    empty_text: int = 0
    too_short: int = 0
    too_long: int = 0
    undecodable: int = 0
    duration_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out = {to_camel(k): v for k, v in asdict(self).items()}
        out["durationSeconds"] = round(self.duration_seconds, 3)
        return out

    def describe(self) -> str:
        return (f"read={self.rows_read} kept={self.kept} excludedLabel={self.excluded_label} "
                f"emptyText={self.empty_text} tooShort={self.too_short} tooLong={self.too_long} "
                f"undecodable={self.undecodable}")


@dataclass
class Source:
    """One stream of rows feeding one manifest, with its column names and limits."""
    name: str  # "primary" or "blend": names stats entries and audio folders
    dataset: str
    local_path: Path | None
    split: str
    limit: int | None
    text_column: str
    audio_column: str
    label_column: str | None = None
    exclude_labels: frozenset[str] = field(default_factory=frozenset)
    duration_ms_column: str | None = None
    reciter_column: str | None = None  # carried into the manifest for the leakage check
    surah_column: str | None = None
    ayah_column: str | None = None
    revision: str | None = None  # hub commit, tag or branch (None: the default branch)

    def id_columns(self) -> list[str]:
        return [c for c in (self.reciter_column, self.surah_column, self.ayah_column) if c]


def sources_for(data: DataSpec) -> dict[str, list[Source]]:
    """Sources per manifest: the primary splits; the blend joins the training manifest only."""
    def primary(split: str, limit: int | None) -> Source:
        local = data.local_path if data.source == "local" else None
        return Source("primary", data.dataset, local, split, limit, data.text_column, data.audio_column,
                      reciter_column=data.reciter_column, surah_column=data.surah_column,
                      ayah_column=data.ayah_column, revision=data.revision if local is None else None)

    train = [primary(data.train_split, data.max_train_samples)]
    if data.blend is not None:
        b = data.blend
        train.append(Source("blend", b.dataset, b.local_path, b.split, b.max_samples, b.text_column,
                            data.audio_column, b.label_column, frozenset(b.exclude_labels),
                            b.duration_ms_column, revision=b.revision if b.local_path is None else None))
    return {"train": train, "val": [primary(data.val_split, data.max_val_samples)]}


# ---------------------------------------------------------------------------------------------- rows

def clean_text(value: Any) -> str:
    # Stripped only; the vocabulary gate then folds what the tokenizer does not know (write_source).
    return value.strip() if isinstance(value, str) else ""


def declared_seconds(row: dict[str, Any], column: str | None) -> float | None:
    """A row's own duration claim (RetaSy: duration_ms), used to skip decoding clips that cannot pass."""
    if column is None:
        return None
    value = row.get(column)
    if isinstance(value, (int, float)) and value > 0:
        return float(value) / 1000.0
    return None


def precheck(row: dict[str, Any], src: Source, min_s: float, max_s: float) -> tuple[str | None, str]:
    """(reason to drop the row before decoding it, or None; its cleaned text)."""
    if src.exclude_labels and str(row.get(src.label_column) or "").strip() in src.exclude_labels:
        return "excluded_label", ""
    text = clean_text(row.get(src.text_column))
    if not text:
        return "empty_text", ""
    claimed = declared_seconds(row, src.duration_ms_column)
    if claimed is not None and claimed < min_s:
        return "too_short", text
    if claimed is not None and claimed > max_s:
        return "too_long", text
    return None, text


def clip_ids(row: dict[str, Any], src: Source) -> dict[str, Any]:
    """The row's reciter and verse ids for the manifest (only those its source names and the row holds)."""
    out: dict[str, Any] = {}
    if src.reciter_column:
        reciter = row.get(src.reciter_column)
        if reciter is not None and str(reciter).strip():
            out["reciter"] = str(reciter).strip()
    if src.surah_column and src.ayah_column:
        try:
            out["verses"] = [{"surah": int(row[src.surah_column]), "ayah": int(row[src.ayah_column])}]
        except (KeyError, TypeError, ValueError):
            pass  # no usable ids on this row: it still trains, it just cannot be matched by verse
    return out


def decode_clip(audio_value: Any) -> Any:
    """Worker: 16 kHz mono samples, or the UndecodableAudio explaining why not (None: nothing to do)."""
    from quranft.trainer.audio import UndecodableAudio, load_16k_mono

    if audio_value is None:
        return None
    try:
        return load_16k_mono(audio_value)
    except UndecodableAudio as exc:
        return exc


def ordered_map(fn: Callable[[Any], Any], items: Iterable[tuple[Any, Any]], workers: int
                 ) -> Iterator[tuple[Any, Any]]:
    """(tag, fn(arg)) in input order with a bounded look-ahead; stopping early cancels the rest."""
    if workers <= 1:
        for tag, arg in items:
            yield tag, fn(arg)
        return
    window = workers * 4
    with ThreadPoolExecutor(workers, thread_name_prefix="prepare") as pool:
        pending: deque[tuple[Any, Future]] = deque()
        try:
            for tag, arg in items:
                pending.append((tag, pool.submit(fn, arg)))
                if len(pending) >= window:
                    tag0, fut = pending.popleft()
                    yield tag0, fut.result()
            while pending:
                tag0, fut = pending.popleft()
                yield tag0, fut.result()
        finally:
            for _, fut in pending:
                fut.cancel()


class Ticker:
    """Progress lines and the tmp dir heartbeat, each at most every few seconds."""

    def __init__(self, owner_file: Path, log: Log):
        self.owner_file, self.log = owner_file, log
        self.last_log = self.last_beat = time.monotonic()

    def tick(self, label: str, counts: SourceCounts) -> None:
        now = time.monotonic()
        if now - self.last_beat >= HEARTBEAT_SECONDS:
            os.utime(self.owner_file)
            self.last_beat = now
        if now - self.last_log >= PROGRESS_SECONDS:
            self.log(f"prepare: {label} {counts.describe()}")
            self.last_log = now


def write_source(src: Source, *, manifest, build_dir: Path, final_dir: Path, manifest_name: str,
                 min_s: float, max_s: float, workers: int, ticker: Ticker, gate: vocab.Gate,
                 resolved_revision: str | None = None) -> tuple[SourceCounts, vocab.VocabCounts]:
    """Filter, fold, decode and write one source's rows; append its manifest lines. Returns its counts.

    `resolved_revision` (a hub source's commit) is what is read; "unknown" reads `src.revision` as given.
    """
    from quranft.trainer.audio import SAMPLE_RATE, UndecodableAudio, pcm_sha256, write_wav
    from quranft.trainer.sources import indexed_rows, open_rows

    counts = SourceCounts(src.dataset if src.local_path is None else str(src.local_path), src.split,
                          revision=src.revision, resolved_revision=resolved_revision)
    words = vocab.VocabCounts()
    if src.limit == 0:
        return counts, words
    required = [src.text_column] + ([src.label_column] if src.exclude_labels and src.label_column else []) \
        + src.id_columns()
    pinned = resolved_revision if resolved_revision not in (None, "unknown") else src.revision
    rows = open_rows(dataset=src.dataset, local_path=src.local_path, split=src.split,
                     audio_column=src.audio_column, required_columns=required, revision=pinned)
    rel_root = Path("audio") / manifest_name / src.name
    label = f"{manifest_name}/{src.name}"

    def tagged_rows() -> Iterator[tuple[tuple[int, str, str, str | None, dict[str, Any], Counter], Any]]:
        """Every row as ((index, text, folded text, reason to drop it or None, its ids, what the fold
        changed), audio to decode or None). Folding first lets a transcript with nothing left skip decoding."""
        for index, row in indexed_rows(rows, f"{counts.dataset} split {src.split!r}"):
            reason, text = precheck(row, src, min_s, max_s)
            changes: Counter = Counter()
            folded = "" if reason else vocab.fold(text, gate.tokenizer.inventory, changes)
            if reason is None and not folded:
                reason = "empty_text"  # only marks or verse numbers
            yield ((index, text, folded, reason, clip_ids(row, src), changes),
                   None if reason else row.get(src.audio_column))

    # Results come back in stream order, so the counts cover exactly the rows up to the cap.
    for (index, text, folded, reason, ids, changes), samples in ordered_map(decode_clip, tagged_rows(), workers):
        counts.rows_read += 1
        ticker.tick(label, counts)
        if reason is None and isinstance(samples, UndecodableAudio):
            reason = "undecodable"
        elif reason is None:
            seconds = len(samples) / SAMPLE_RATE
            reason = "too_short" if seconds < min_s else "too_long" if seconds > max_s else None
        if reason is not None:
            setattr(counts, reason, getattr(counts, reason) + 1)
            continue
        rel = rel_root / f"{index // FILES_PER_FOLDER:06d}" / f"{index:09d}.wav"
        (build_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        write_wav(build_dir / rel, samples)
        # Paths point at the final location: the manifest is read after the rename.
        line = {"audio_filepath": str(final_dir / rel), "duration": round(seconds, 4), "text": folded,
                **({"source_text": text} if folded != text else {}), "pcm_sha256": pcm_sha256(samples), **ids}
        manifest.write(json.dumps(line, ensure_ascii=False) + "\n")
        counts.kept += 1
        counts.duration_seconds += seconds
        words.folded.update(changes)
        gate.count(folded, words, changed=folded != text)
        if src.limit is not None and counts.kept >= src.limit:
            break
    return counts, words


def resolve_revisions(sources: Iterable[Source], log: Log) -> dict[tuple[str, str | None], str]:
    """The commit each hub source will be read at (once per dataset and requested revision)."""
    from quranft.trainer.sources import resolve_revision

    resolved: dict[tuple[str, str | None], str] = {}
    for src in sources:
        wanted = (src.dataset, src.revision)
        if src.local_path is None and wanted not in resolved:
            resolved[wanted] = resolve_revision(src.dataset, src.revision) or "unknown"
            log(f"prepare: {src.dataset}@{src.revision or '(default branch)'} is commit {resolved[wanted]}")
    return resolved


def build(data: DataSpec, build_dir: Path, final_dir: Path, *, key: str, workers: int, log: Log,
          gate: vocab.Gate) -> dict:
    """Write manifests, audio and stats.json into build_dir (paths inside point at final_dir)."""
    started = time.monotonic()
    ticker = Ticker(build_dir / OWNER_FILE, log)
    stats: dict[str, Any] = {"dataSpecHash": key}
    plan = sources_for(data)
    revisions = resolve_revisions((s for sources in plan.values() for s in sources), log)
    words_of: dict[str, dict[str, vocab.VocabCounts]] = {}
    for manifest_name, sources in plan.items():
        per_source: dict[str, Any] = {}
        words_of[manifest_name] = {}
        with open(build_dir / f"{manifest_name}_manifest.json", "w", encoding="utf-8") as manifest:
            for src in sources:
                log(f"prepare: {manifest_name}/{src.name}: {src.local_path or src.dataset} split {src.split!r}"
                    + (f", at most {src.limit}" if src.limit else ""))
                counts, words = write_source(
                    src, manifest=manifest, build_dir=build_dir, final_dir=final_dir, manifest_name=manifest_name,
                    min_s=data.min_duration_seconds, max_s=data.max_duration_seconds, workers=workers,
                    ticker=ticker, gate=gate, resolved_revision=revisions.get((src.dataset, src.revision)))
                log(f"prepare: {manifest_name}/{src.name} done: {counts.describe()}; "
                    f"<unk> rate {words.unk_rate:.4%} of {words.tokens} tokens")
                gate.check(f"{manifest_name}/{src.name}", words, f"{counts.dataset} split {src.split!r}")
                per_source[src.name] = counts
                words_of[manifest_name][src.name] = words
        samples = sum(c.kept for c in per_source.values())
        if samples == 0:
            detail = "; ".join(f"{name} ({c.dataset} split {c.split!r}): {c.describe()}"
                               for name, c in per_source.items())
            raise DataError(f"no {manifest_name} samples left after filtering "
                            f"({data.min_duration_seconds}-{data.max_duration_seconds} s): {detail}")
        stats[manifest_name] = {
            "samples": samples,
            "durationSeconds": round(sum(c.duration_seconds for c in per_source.values()), 3),
            "sources": {name: c.to_json() for name, c in per_source.items()},
        }
    stats["vocabulary"] = vocabulary_section(gate, words_of)
    stats["buildSeconds"] = round(time.monotonic() - started, 3)
    stats["createdAt"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return stats


def vocabulary_section(gate: vocab.Gate, words_of: dict[str, dict[str, vocab.VocabCounts]]) -> dict[str, Any]:
    """stats.json's `vocabulary`: the tokenizer, the threshold, and per manifest and source what the fold
    did and the <unk> rate left."""
    return {"tokenizer": gate.tokenizer.describe(), "maxUnkRate": gate.max_unk_rate,
            **{name: {src: words.to_json() for src, words in per.items()} for name, per in words_of.items()}}


def vocabulary_brief(gate: vocab.Gate, section: dict[str, Any], prepared_for: str | None) -> dict[str, Any]:
    """The termination summary's (and so status.data.stats') share of a vocabulary section: the tokenizer,
    and per manifest/source the <unk> rate, token count and the three commonest unknown characters."""
    out: dict[str, Any] = {"tokenizer": gate.tokenizer.sha256[:12], "maxUnkRate": gate.max_unk_rate}
    if prepared_for != gate.tokenizer.sha256:
        out["preparedFor"] = (prepared_for or "")[:12] or None  # transcripts refolded at train time
    out.update({f"{name}/{src}": vocab.brief(entry) for name in ("train", "val")
                for src, entry in (section.get(name) or {}).items()})
    return out


def reuse_vocabulary(data_dir: Path, stats: dict[str, Any], gate: vocab.Gate, log: Log
                     ) -> dict[str, dict[str, vocab.VocabCounts]]:
    """Gate a reused directory for this run: its transcripts refolded (in memory) from their source text
    for this run's tokenizer and counted per source. The directory is not touched."""
    prepared_for = vocab.recorded_tokenizer(stats)
    if prepared_for != gate.tokenizer.sha256:
        log(f"prepare: {data_dir} was prepared for tokenizer {(prepared_for or 'none (before the gate)')[:12]}; "
            f"training.baseModel {gate.tokenizer.base_model} has {gate.tokenizer.sha256[:12]}: its transcripts "
            "are refolded for it (the train stage trains on refolded copies)")
    words_of: dict[str, dict[str, vocab.VocabCounts]] = {}
    for name in ("train", "val"):
        per = {src: vocab.VocabCounts() for src in ((stats.get(name) or {}).get("sources") or {})}
        with open(data_dir / f"{name}_manifest.json", encoding="utf-8") as fh:
            for raw in fh:
                if not raw.strip():
                    continue
                line = json.loads(raw)
                parts = Path(line.get("audio_filepath", "")).parts  # .../audio/<manifest>/<source>/<bucket>/<i>.wav
                source = parts[-3] if len(parts) >= 3 else "primary"
                words = per.setdefault(source, vocab.VocabCounts())
                original = vocab.source_text(line)
                folded = gate.fold(original, words)
                gate.count(folded, words, changed=folded != original)
        for source, words in per.items():
            gate.check(f"{name}/{source}", words, str(data_dir / f"{name}_manifest.json"))
        words_of[name] = per
    return words_of


# ----------------------------------------------------------------------------- the shared directory

def is_complete(data_dir: Path) -> bool:
    return (data_dir / COMPLETE_MARKER).is_file() and (data_dir / "stats.json").is_file()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(tmp_dir: Path, now: float | None = None) -> bool:
    """A build dir nobody is working on: its builder died on this host, or its heartbeat stopped.

    Pods share the volume but not PID namespaces, so a PID is only trusted on the builder's own host; a
    restarted container reuses its pod's hostname and often its PID, hence the own-PID check.
    """
    now = time.time() if now is None else now
    owner = tmp_dir / OWNER_FILE
    try:
        heartbeat = (owner if owner.exists() else tmp_dir).stat().st_mtime
        info = json.loads(owner.read_text()) if owner.exists() else {}
    except (OSError, ValueError):
        return False  # vanished or being written: leave it to its owner or a later run
    if now - heartbeat > STALE_AFTER_SECONDS:
        return True
    if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
        if info["pid"] == os.getpid():
            return tmp_dir.name not in _BUILDING
        return not _pid_alive(info["pid"])
    return False


def clean_stale(data_root: Path, log: Log, label: str = "prepare") -> None:
    """Remove half-written builds left by dead prepares (any data spec)."""
    for tmp_dir in data_root.glob(".tmp-*"):
        if tmp_dir.is_dir() and is_stale(tmp_dir):
            log(f"{label}: removing stale build {tmp_dir.name}")
            shutil.rmtree(tmp_dir, ignore_errors=True)
    for leftover in data_root.glob(".discard-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _set_aside(path: Path) -> None:
    """Move a directory out of the way (atomically) and delete it; a concurrent mover may win."""
    aside = path.with_name(f".discard-{path.name}-{secrets.token_hex(4)}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def _publish(build_dir: Path, final_dir: Path) -> bool:
    """Rename the finished build into place. True when another prepare got there first (reuse theirs)."""
    try:
        os.rename(build_dir, final_dir)
        return False
    except OSError:  # ENOTEMPTY/EEXIST: the name is taken
        if not is_complete(final_dir):
            raise
        _set_aside(build_dir)
        return True


def _read_stats(data_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((data_dir / "stats.json").read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{data_dir}/stats.json is unreadable: {exc}") from exc


def _summary(key: str, data_dir: Path, reused: bool, stats: dict[str, Any],
             words: dict[str, Any] | None = None) -> dict[str, Any]:
    brief = {name: stats[name] for name in ("train", "val") if name in stats}
    if words is not None:
        brief["vocabulary"] = words
    return PrepareSummary(data_spec_hash=key, data_dir=str(data_dir), reused=reused, stats=brief).wire()


def default_workers() -> int:
    # Decoding and resampling release the GIL; the pod's CPU share bounds what helps.
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def build_once(root: Path, key: str, fill: Callable[[Path, Path], dict[str, Any]], *, log: Log,
               label: str = "prepare") -> tuple[Path, bool, dict[str, Any]]:
    """The content-addressed cache: `(root/key, reused, stats)`.

    A complete `root/key` is reused without touching anything. Otherwise `fill(build_dir, final_dir)`
    writes into a fresh `root/.tmp-<key>-<pid>-<random>` (paths it records point at final_dir) and returns
    the stats; stats.json and COMPLETE are written last and the directory is renamed into place. Losing
    the rename to a concurrent build reuses the winner's; any failure removes the half-built directory.
    """
    final_dir = root / key
    if is_complete(final_dir):  # the fast path touches nothing
        log(f"{label}: reusing {final_dir}")
        return final_dir, True, _read_stats(final_dir)

    root.mkdir(parents=True, exist_ok=True)
    clean_stale(root, log, label)
    if final_dir.exists() and not is_complete(final_dir):
        log(f"{label}: {final_dir} has no {COMPLETE_MARKER} marker; rebuilding it")
        _set_aside(final_dir)

    build_dir = root / f".tmp-{key}-{os.getpid()}-{secrets.token_hex(4)}"
    build_dir.mkdir()
    _BUILDING.add(build_dir.name)
    try:
        (build_dir / OWNER_FILE).write_text(json.dumps(
            {"host": socket.gethostname(), "pid": os.getpid(), "startedAt": time.time()}))
        stats = fill(build_dir, final_dir)
        (build_dir / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
        (build_dir / OWNER_FILE).unlink()
        (build_dir / COMPLETE_MARKER).write_text(key + "\n")  # last: marks the build complete
        lost_race = _publish(build_dir, final_dir)
    except BaseException:
        shutil.rmtree(build_dir, ignore_errors=True)
        raise
    finally:
        _BUILDING.discard(build_dir.name)
    if lost_race:
        log(f"{label}: another {label} finished {final_dir} first; reusing it")
        return final_dir, True, _read_stats(final_dir)
    return final_dir, False, stats


def prepare(cfg: RunConfig, *, log: Log = print, workers: int | None = None) -> dict[str, Any]:
    """Build (or reuse) the prepared data for cfg.data; returns the contract's prepare summary.

    Raises DataError when a source cannot be read or nothing is left after filtering.
    """
    key = data_spec_hash(cfg.data)
    data_root = layout.data_root(os.path.abspath(cfg.run.workspace))
    gate = vocab.Gate(vocab.load_tokenizer(cfg.training.base_model), cfg.data.max_unk_rate)

    def fill(build_dir: Path, final_dir: Path) -> dict[str, Any]:
        stats = build(cfg.data, build_dir, final_dir, key=key, workers=workers or default_workers(), log=log,
                      gate=gate)
        stats["spec"] = cfg.data.model_dump(mode="json", by_alias=True)
        return stats

    final_dir, reused, stats = build_once(data_root, key, fill, log=log)
    if reused:  # by an earlier run, maybe for another tokenizer or a looser maxUnkRate: gate it for this one
        section = vocabulary_section(gate, reuse_vocabulary(final_dir, stats, gate, log))
    else:
        section = stats["vocabulary"]
        log(f"prepare: wrote {final_dir} (train {stats['train']['samples']} samples, "
            f"val {stats['val']['samples']} samples, {stats['buildSeconds']} s)")
    return _summary(key, final_dir, reused, stats,
                    vocabulary_brief(gate, section, vocab.recorded_tokenizer(stats)))
