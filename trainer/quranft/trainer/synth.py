"""Synthetic Arabic recitations (espeak-ng) for the CPU stub: a local training dataset plus a held-out
benchmark corpus, so the whole pipeline runs without the hub.

Layout written under `out`:
- `dataset/data/{train,validation}-00000-of-00001.parquet`: `audio` (16 kHz WAV bytes), `text`
  (normalised verse text), `duration`, `surah`, `ayah` — the columns of the hub corpus, loadable with
  `datasets.load_dataset(out / "dataset")` (use it as `data.localPath`).
- `benchmark/manifest.json` + WAV files: held-out voices (other speed/pitch) in the format of the team's
  recitation corpus (a `spec.benchmark.corpus.path`);
- `benchmark-dataset/data/test-00000-of-00001.parquet`: the same held-out clips as a dataset split
  (`audio`, `text`, `surah`, `ayah`, `id`, `category`, `source`, `reciter`), which a
  `spec.benchmark.corpus` with `localPath` prepares through the same code path as a hub split.
"""
from __future__ import annotations

import io
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from quranft.trainer.errors import DataError, EnvironmentProblem

SAMPLE_RATE = 16_000
ESPEAK_VOICE = "ar"


@dataclass(frozen=True)
class Voice:
    name: str
    speed: int  # espeak-ng words per minute
    pitch: int  # espeak-ng 0..99


# Two training voices so the model does not learn one speaking rate only; validation and benchmark
# voices are never trained on.
SPLITS: dict[str, tuple[Voice, ...]] = {
    "train": (Voice("s150p50", 150, 50), Voice("s135p40", 135, 40)),
    "validation": (Voice("s165p60", 165, 60),),
}
HELD_OUT: tuple[Voice, ...] = (Voice("s120p70", 120, 70), Voice("s180p30", 180, 30))


def parse_surahs(raw: str) -> list[int]:
    try:
        surahs = [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        surahs = []
    if not surahs or any(not 1 <= s <= 114 for s in surahs):
        from quranft.contract.config import ConfigError

        raise ConfigError(f"--surahs {raw!r}: expected comma-separated surah numbers 1..114")
    return surahs


def surah_verses(surahs: list[int]) -> list[tuple[int, int, str]]:
    """(surah, ayah, normalised text) for every verse of the given surahs, in mushaf order."""
    from quranft.benchmark.quran_text import load_quran

    quran = load_quran()
    wanted = set(surahs)
    return [(s, a, text) for (s, a), text in zip(quran.refs, quran.texts) if s in wanted]


def espeak_binary() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise EnvironmentProblem("espeak-ng is not installed (Debian: apt-get install -y espeak-ng)")
    return path


def synthesize(text: str, voice: Voice, espeak: str | None = None) -> np.ndarray:
    """16 kHz mono float32 audio of `text` spoken by espeak-ng's Arabic voice."""
    import soundfile as sf
    from scipy.signal import resample_poly

    cmd = [espeak or espeak_binary(), "-v", ESPEAK_VOICE, "-s", str(voice.speed), "-p", str(voice.pitch),
           "--stdout", text]
    wav = subprocess.run(cmd, check=True, capture_output=True, timeout=120).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        gcd = np.gcd(rate, SAMPLE_RATE)
        audio = resample_poly(audio, SAMPLE_RATE // gcd, rate // gcd).astype(np.float32)
    return audio


def wav_bytes(audio: np.ndarray) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def category(text: str) -> str:
    words = len(text.split())
    return "short" if words <= 4 else "medium" if words <= 12 else "long"


def _write_split(rows: list[dict], path: Path, extra_columns: tuple[str, ...] = ()) -> None:
    from datasets import Audio, Dataset, Features, Value

    features = Features({"audio": {"bytes": Value("binary"), "path": Value("string")}, "text": Value("string"),
                         "duration": Value("float64"), "surah": Value("int32"), "ayah": Value("int32"),
                         **{column: Value("string") for column in extra_columns}})
    path.parent.mkdir(parents=True, exist_ok=True)
    # Rows already hold WAV bytes: declare the column as Audio by an Arrow-level cast, because encoding
    # through the Audio feature needs torchcodec (datasets >= 4) just to pass the bytes through.
    ds = Dataset.from_list(rows, features=features).cast_column("audio", Audio(sampling_rate=SAMPLE_RATE))
    ds.to_parquet(str(path))


def write_synth_data(out: Path, surahs: list[int], *, log: Callable[[str], None] = print) -> dict:
    """Synthesise every verse of `surahs` with each voice; returns counts per split."""
    espeak = espeak_binary()
    verses = surah_verses(surahs)
    if not verses:
        raise DataError(f"no verses found for surahs {surahs}")
    out = Path(out)
    counts: dict[str, int] = {}
    for split, voices in SPLITS.items():
        rows = []
        for voice in voices:
            for surah, ayah, text in verses:
                audio = synthesize(text, voice, espeak)
                rows.append({"audio": {"bytes": wav_bytes(audio), "path": f"{surah:03d}{ayah:03d}-{voice.name}.wav"},
                             "text": text, "duration": len(audio) / SAMPLE_RATE, "surah": surah, "ayah": ayah})
        _write_split(rows, out / "dataset" / "data" / f"{split}-00000-of-00001.parquet")
        counts[split] = len(rows)
        log(f"synth-data: {split}: {len(rows)} clips")

    # The held-out clips twice: a corpus directory (manifest.json, the recitations format) and the same clips
    # as a dataset split (`benchmark-dataset`, split "test"), which spec.benchmark.corpus prepares itself.
    bench = out / "benchmark"
    bench.mkdir(parents=True, exist_ok=True)
    samples, rows = [], []
    for voice in HELD_OUT:
        for surah, ayah, text in verses:
            name = f"synth_{surah:03d}_{ayah:03d}_{voice.name}"
            samples_16k = synthesize(text, voice, espeak)
            audio = wav_bytes(samples_16k)
            (bench / f"{name}.wav").write_bytes(audio)
            samples.append({"id": name, "file": f"{name}.wav", "surah": surah, "ayah": ayah, "ayah_end": None,
                            "category": category(text), "source": "synthetic",
                            "expected_verses": [{"surah": surah, "ayah": ayah}]})
            rows.append({"audio": {"bytes": audio, "path": f"{name}.wav"}, "text": text,
                         "duration": len(samples_16k) / SAMPLE_RATE, "surah": surah, "ayah": ayah, "id": name, "category": category(text),
                         "source": "synthetic", "reciter": voice.name})
    (bench / "manifest.json").write_text(json.dumps({"samples": samples}, ensure_ascii=False, indent=1))
    _write_split(rows, out / "benchmark-dataset" / "data" / "test-00000-of-00001.parquet",
                 extra_columns=("id", "category", "source", "reciter"))
    counts["benchmark"] = len(samples)
    log(f"synth-data: benchmark: {len(samples)} clips in {bench} and {out / 'benchmark-dataset'} (split test)")
    return {"dataset": str(out / "dataset"), "benchmark": str(bench), "benchmarkDataset": str(out / "benchmark-dataset"),
            "counts": counts, "surahs": surahs}
