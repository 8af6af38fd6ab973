"""Audio for the manifests: decode what `datasets` hands over undecoded, write 16 kHz mono PCM WAV.

`datasets` gives an `Audio(decode=False)` value: `{"bytes": ..., "path": ...}` (bytes may be None when the
file lives on disk or on the hub). libsndfile (soundfile) reads WAV/FLAC/OGG/MP3; anything else (m4a/AAC,
opus in webm...) goes through the ffmpeg CLI when it is installed. Either way the decoder hands back the
file's own rate and channels; the down-mix (channel mean) and the resampler (soxr) are the same for every
format.

This is the one audio path: prepare (training data) and the benchmark (`quranft.benchmark.corpus.decode_audio`)
both call `load_16k_mono`, so the same file gives the same samples on both sides, and `pcm16` is the one
float -> 16-bit conversion (`write_wav` stores it, `pcm_sha256` hashes it; leakage checks compare those).
"""
from __future__ import annotations

import hashlib
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
    # ffmpeg only decodes (first audio stream, float WAV at the file's own rate and channels); the down-mix
    # and the resampling are ours, as for the formats libsndfile reads.
    with tempfile.TemporaryDirectory(prefix="quranft-audio-") as tmp:
        src, out = Path(tmp) / "in", Path(tmp) / "out.wav"
        src.write_bytes(data)
        proc = subprocess.run(
            ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(src),
             "-map", "0:a:0", "-vn", "-c:a", "pcm_f32le", "-f", "wav", str(out)],
            capture_output=True, timeout=300, check=False)
        if proc.returncode != 0:
            raise UndecodableAudio(f"ffmpeg: {proc.stderr.decode(errors='replace').strip()[-300:]}")
        try:
            samples, rate = _decode_soundfile(out.read_bytes())
        except Exception as exc:
            raise UndecodableAudio(f"ffmpeg output unreadable: {exc}") from exc
    if samples.size == 0:
        raise UndecodableAudio("ffmpeg decoded no audio")
    return samples, rate


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
            raise UndecodableAudio(f"soundfile: {sf_error} (install ffmpeg for this format)") from sf_error
        return _decode_ffmpeg(data)


def to_16k_mono(samples: np.ndarray, rate: int) -> np.ndarray:
    """Resample mono samples to 16 kHz (soxr, the resampler librosa uses)."""
    if rate == SAMPLE_RATE or samples.size == 0:
        return samples
    import soxr

    return soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)


def pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] as little-endian int16, the way our WAV files store them.

    Scaled by 32768 (what libsndfile, torchaudio and NeMo divide by when they read PCM_16), rounded down and
    clipped: byte for byte what libsndfile 1.2 wrote for us before (prepared directories keep their
    bytes), and reading a stored file back as float and converting again gives the same integers, so a
    clip's digest is the same whether it is taken from the decoded source or from the WAV written from it.
    """
    scaled = np.floor(np.asarray(samples, dtype=np.float32) * np.float32(32768.0))
    return np.clip(scaled, -32768, 32767).astype("<i2")


def pcm_sha256(samples: np.ndarray) -> str:
    """sha256 of the 16-bit PCM `write_wav` stores for these samples (the leakage check's audio identity)."""
    return hashlib.sha256(pcm16(samples).tobytes()).hexdigest()


def wav_pcm_sha256(path: str | Path) -> str:
    """`pcm_sha256` of a stored 16 kHz mono PCM_16 WAV, read without any float conversion."""
    import soundfile as sf

    data, _ = sf.read(str(path), dtype="int16", always_2d=True)
    if data.shape[1] != 1:
        raise UndecodableAudio(f"{path}: {data.shape[1]} channels, expected a mono WAV")
    return hashlib.sha256(np.ascontiguousarray(data[:, 0]).astype("<i2").tobytes()).hexdigest()


def write_wav(path: Path, samples: np.ndarray) -> None:
    """16-bit PCM WAV at 16 kHz, the format NeMo's audio loader expects without resampling."""
    import soundfile as sf

    sf.write(str(path), pcm16(samples), SAMPLE_RATE, subtype="PCM_16", format="WAV")


def load_16k_mono(value: Any) -> np.ndarray:
    """Decode any `datasets` audio value to 16 kHz mono float32 samples."""
    samples, rate = decode(value)
    if not np.all(np.isfinite(samples)):
        raise UndecodableAudio("audio contains NaN or infinite samples")
    return to_16k_mono(samples, rate)
