"""Load a NeMo ASR model once, as written, and transcribe audio arrays with batched greedy decoding on the
decoder head asked for (CTC or RNNT).

NeMo and torch are imported lazily so the rest of the benchmark (scoring, `score`, `--help`) stays light.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from quranft.contract.config import ConfigError
from quranft.trainer.errors import EnvironmentProblem, TrainingError

from .corpus import SAMPLE_RATE


@dataclass(frozen=True)
class ModelInfo:
    ref: str  # what the user asked for: a path or a hub name
    path: str  # the file (or unpacked folder) on disk that was loaded
    size_bytes: int
    sha256: str | None  # of the .nemo file; None for an unpacked folder
    model_class: str
    decoder: str  # the head transcribe() decodes with now: "ctc" or "rnnt"
    precision: str = "fp32"  # dtype of the weights stored in the file: fp32 | fp16 | bf16
    compute_dtype: str = "fp32"  # dtype the model runs in here (the stored one where the device supports it)
    heads: tuple[str, ...] = ()  # the decoder heads the model has
    saved_head: str | None = None  # the head the file restores with


DECODERS = ("auto", "ctc", "rnnt", "both")
MODES = ("ctcOnly", "hybrid")
TINY = "tiny"  # the trainer's CPU-stub base model (training.baseModel: tiny), built from config


def resolve_model_file(ref: str) -> Path:
    """A local `.nemo` path, `tiny`, or a hub name (`org/model`) resolved through NeMo's download cache."""
    path = Path(ref)
    if path.exists():
        return path
    if ref == TINY:
        return _tiny_model_file()
    if ref.endswith(".nemo") or ref.startswith((".", "/")):
        raise ConfigError(f"model: file not found: {ref}")
    asr_model = _asr_model_class()
    try:
        return Path(asr_model.from_pretrained(ref, map_location="cpu", return_model_file=True))
    except Exception as exc:  # network, auth, unknown name: all leave us without a model
        raise EnvironmentProblem(f"model: cannot fetch {ref!r} from the hub: {exc}") from exc


def _tiny_model_file() -> Path:
    """The untrained tiny base model, written once into the cache (same builder and seed as the trainer)."""
    from quranft.trainer.tiny import cache_root, write_tiny_model

    path = cache_root() / "models" / "tiny-base.nemo"
    if not path.exists():
        write_tiny_model(path)  # atomic: concurrent runs never read a half-written file
    return path


def _asr_model_class():
    try:
        from nemo.collections.asr.models import ASRModel
    except Exception as exc:  # ImportError, or a broken CUDA/numba stack raising at import time
        raise EnvironmentProblem(f"cannot import NeMo ASR: {exc}") from exc
    return ASRModel


def file_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def file_sha256(path: Path) -> str | None:
    if path.is_dir():
        return None
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_heads(decoder: str, mode: str | None, available: tuple[str, ...] | list[str],
                  saved: str | None = None) -> list[str]:
    """The heads to score, in ctc, rnnt order. `decoder`: auto | ctc | rnnt | both; auto follows the training
    `mode` (ctcOnly → ctc, hybrid → both) and, with no mode (a baseline, a plain model), the model's `saved`
    head (else NeMo's restore default: rnnt when the model has it). ConfigError for a head the model lacks."""
    if decoder not in DECODERS:
        raise ConfigError(f"benchmark.decoder: {decoder!r} is not one of {', '.join(DECODERS)}")
    if mode is not None and mode not in MODES:
        raise ConfigError(f"training.mode: {mode!r} is not one of {', '.join(MODES)}")
    available = tuple(available)
    if decoder == "both" or (decoder == "auto" and mode == "hybrid"):
        wanted = ["ctc", "rnnt"]
    elif decoder == "auto" and mode == "ctcOnly":
        wanted = ["ctc"]
    elif decoder == "auto":
        fallback = "rnnt" if "rnnt" in available else (available[0] if available else "ctc")
        wanted = [saved if saved in available else fallback]
    else:
        wanted = [decoder]
    missing = [h for h in wanted if h not in available]
    if missing:
        have = ", ".join(available) if available else "none"
        raise ConfigError(f"benchmark.decoder: {decoder} needs the {' and '.join(missing)} head, "
                          f"but the model has only: {have}")
    return wanted


def default_verdict_head(mode: str | None, saved: str | None = None) -> str:
    """The head that decides the verdict: ctc for ctcOnly, rnnt for hybrid; with no mode, `saved` else ctc."""
    if mode == "ctcOnly":
        return "ctc"
    if mode == "hybrid":
        return "rnnt"
    if mode is None:
        return saved or "ctc"
    raise ConfigError(f"training.mode: {mode!r} is not one of {', '.join(MODES)}")


_PRECISIONS = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}


def stored_precision(state_dict: dict[str, Any]) -> str:
    """fp32 | fp16 | bf16: the floating dtype holding most of the checkpoint's elements."""
    import torch

    counts: dict[str, int] = {}
    for tensor in state_dict.values():
        if torch.is_tensor(tensor) and tensor.is_floating_point():
            name = str(tensor.dtype).removeprefix("torch.")
            counts[name] = counts.get(name, 0) + tensor.numel()
    if not counts:
        return "fp32"
    name = max(counts, key=lambda k: counts[k])
    return _PRECISIONS.get(name, name)


def _recording_connector(extracted_dir: Path | None):
    """NeMo's SaveRestoreConnector, noting the stored weights' precision before `load_state_dict` casts them
    into the freshly built (fp32) model."""
    from nemo.core.connectors.save_restore_connector import SaveRestoreConnector

    class RecordingConnector(SaveRestoreConnector):
        precision: str | None = None

        def modify_state_dict(self, conf, state_dict):
            self.precision = stored_precision(state_dict)
            return super().modify_state_dict(conf, state_dict)

    connector = RecordingConnector()
    if extracted_dir is not None:
        connector.model_extracted_dir = str(extracted_dir)
    return connector


def _compute_dtype(precision: str, device: str):
    """The stored dtype where the device runs it; else fp32. (CPU with torch 2.15 runs the tiny model in fp16
    and bf16: measured, see tests/benchmark/test_transcribe.py.)"""
    import torch

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
    if dtype is torch.bfloat16 and device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        return torch.float32
    return dtype


class Transcriber:
    """One loaded model. `transcribe` takes 16 kHz mono float32 arrays and returns their texts, decoded with
    the current head (`use_head`). `info` always describes the current head.

    `head`: the head to start on. "auto" (default): CTC when the model has a CTC head (what the benchmark always
    decoded with), else its saved head; None: the saved head; "ctc"/"rnnt": that head (ConfigError if missing).
    The weights run in their stored precision (fp16 when the trainer's halfPrecisionWeights wrote them)."""

    def __init__(self, ref: str, device: str = "auto", batch_size: int = 1, head: str | None = "auto"):
        from quranft.trainer import decoding

        path = resolve_model_file(ref)
        asr_model = _asr_model_class()
        import torch

        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.batch_size = batch_size
        connector = _recording_connector(path if path.is_dir() else None)
        try:
            model = asr_model.restore_from(str(path), map_location="cpu", save_restore_connector=connector)
        except Exception as exc:
            raise TrainingError(f"model: cannot restore {path}: {exc}") from exc
        precision = connector.precision or "fp32"
        dtype = _compute_dtype(precision, self.device)
        self.model = model.to(device=self.device, dtype=dtype).eval()
        self.heads: tuple[str, ...] = decoding.heads_of(model)
        if not self.heads:
            raise ConfigError(f"model: {type(model).__name__} has no CTC or RNNT decoder head to benchmark")
        self.saved_head: str = decoding.apply_saved_head(model) or self.heads[0]
        self.info = ModelInfo(ref=ref, path=str(path), size_bytes=file_size(path), sha256=file_sha256(path),
                              model_class=type(model).__name__, decoder=self.saved_head, precision=precision,
                              compute_dtype=_PRECISIONS[str(dtype).removeprefix("torch.")], heads=self.heads,
                              saved_head=self.saved_head)
        if head == "auto":
            head = "ctc" if "ctc" in self.heads else self.saved_head
        self.use_head(head or self.saved_head)

    @property
    def head(self) -> str:
        """The head `transcribe` decodes with, as NeMo reports it (`cur_decoder` for a hybrid model)."""
        from quranft.trainer.decoding import current_head

        return current_head(self.model)

    def use_head(self, head: str) -> ModelInfo:
        """Decode with `head` (greedy batched search) from now on; returns the updated `info`."""
        from quranft.trainer.decoding import use_head

        use_head(self.model, head)
        self.info = replace(self.info, decoder=self.head)
        return self.info

    def transcribe(self, audios: list[np.ndarray]) -> list[str]:
        if not audios:
            return []
        import torch

        with torch.inference_mode():
            out = self.model.transcribe(
                [np.asarray(a, dtype=np.float32) for a in audios],
                batch_size=min(self.batch_size, len(audios)),
                verbose=False,
            )
        if isinstance(out, tuple):  # some NeMo versions return (best, n-best)
            out = out[0]
        return [_text(h) for h in out]

    def close(self) -> None:
        import torch

        del self.model
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()


def _text(hypothesis: Any) -> str:
    if isinstance(hypothesis, str):
        return hypothesis
    text = getattr(hypothesis, "text", None)
    return text if isinstance(text, str) else ""


__all__ = ["SAMPLE_RATE", "ModelInfo", "Transcriber", "default_verdict_head", "resolve_heads",
           "resolve_model_file", "stored_precision"]
