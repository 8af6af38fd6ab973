"""Audio for the manifests: decode what `datasets` hands over undecoded, write 16 kHz mono PCM WAV.

`datasets` gives an `Audio(decode=False)` value: `{"bytes": ..., "path": ...}` (bytes may be None when the
file lives on disk or on the hub). libsndfile (soundfile) reads WAV/FLAC/OGG/MP3; anything else (m4a/AAC,
opus in webm...) goes through the ffmpeg CLI when it is installed.
"""
from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 16_000


class UndecodableAudio(ValueError):
    """The audio value holds no readable audio."""


def _read_source(value: Any) -> bytes:
    """The encoded bytes of a `datasets` audio value (dict, raw bytes, or a local/remote path)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    path = value
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return bytes(value["bytes"])
        path = value.get("path")
    if not path:
        raise UndecodableAudio("audio value has neither bytes nor a path")
    path = str(path)
    try:
        if "://" in path:  # e.g. hf:// in streaming mode (fsspec, with datasets; token as huggingface_hub finds it)
            import fsspec

            with fsspec.open(path, "rb") as fh:
                return fh.read()
        return Path(path).read_bytes()
    except OSError as exc:
        raise UndecodableAudio(f"cannot read {path}: {exc}") from exc


def _decode_soundfile(data: bytes) -> tuple[np.ndarray, int]:
    import soundfile as sf

    samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return samples.mean(axis=1), int(rate)


def _decode_ffmpeg(data: bytes) -> tuple[np.ndarray, int]:
    # A file, not a pipe: MP4/M4A from phones often keeps its index (moov) at the end, safest read seekably.
    # ffmpeg does the down-mix and resampling itself, straight to the target format.
    with tempfile.NamedTemporaryFile(prefix="quranft-audio-") as src:
        src.write(data)
        src.flush()
        proc = subprocess.run(
            ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", src.name,
             "-f", "f32le", "-ac", "1", "-ar", str(SAMPLE_RATE), "pipe:1"],
            capture_output=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise UndecodableAudio(f"ffmpeg: {proc.stderr.decode(errors='replace').strip()[-300:]}")
    if not proc.stdout:
        raise UndecodableAudio("ffmpeg decoded no audio")
    return np.frombuffer(proc.stdout, dtype=np.float32), SAMPLE_RATE


def decode(value: Any) -> tuple[np.ndarray, int]:
    """(mono float32 samples, sample rate) of a `datasets` audio value; UndecodableAudio if unreadable."""
    if isinstance(value, dict) and value.get("array") is not None:  # already decoded upstream
        samples = np.asarray(value["array"], dtype=np.float32)
        return (samples.mean(axis=1) if samples.ndim == 2 else samples), int(value["sampling_rate"])
    data = _read_source(value)
    if not data:
        raise UndecodableAudio("empty audio bytes")
    try:
        return _decode_soundfile(data)
    except Exception as sf_error:  # libsndfile raises LibsndfileError/RuntimeError for unknown formats
        if shutil.which("ffmpeg") is None:
            raise UndecodableAudio(f"soundfile: {sf_error}") from sf_error
        return _decode_ffmpeg(data)


def to_16k_mono(samples: np.ndarray, rate: int) -> np.ndarray:
    """Resample mono samples to 16 kHz (soxr, the resampler librosa uses)."""
    if rate == SAMPLE_RATE or samples.size == 0:
        return samples
    import soxr

    return soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)


def write_wav(path: Path, samples: np.ndarray) -> None:
    """16-bit PCM WAV at 16 kHz, the format NeMo's audio loader expects without resampling."""
    import soundfile as sf

    sf.write(str(path), np.clip(samples, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="WAV")


def load_16k_mono(value: Any) -> np.ndarray:
    """Decode any `datasets` audio value to 16 kHz mono float32 samples."""
    samples, rate = decode(value)
    if not np.all(np.isfinite(samples)):
        raise UndecodableAudio("audio contains NaN or infinite samples")
    return to_16k_mono(samples, rate)
