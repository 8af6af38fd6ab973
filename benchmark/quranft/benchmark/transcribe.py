"""Load a NeMo ASR model once and transcribe audio arrays with batched CTC greedy decoding.

NeMo and torch are imported lazily so the rest of the benchmark (scoring, `score`, `--help`) stays light.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quranft.trainer.config import ConfigError
from quranft.trainer.errors import EnvironmentProblem, TrainingError

from .corpus import SAMPLE_RATE


@dataclass(frozen=True)
class ModelInfo:
    ref: str  # what the user asked for: a path or a hub name
    path: str  # the file (or unpacked folder) on disk that was loaded
    size_bytes: int
    sha256: str | None  # of the .nemo file; None for an unpacked folder
    model_class: str
    decoder: str  # "ctc" always: hybrid models are switched to their CTC head


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


class Transcriber:
    """One loaded model. `transcribe` takes 16 kHz mono float32 arrays and returns their texts."""

    def __init__(self, ref: str, device: str = "auto", batch_size: int = 1):
        path = resolve_model_file(ref)
        asr_model = _asr_model_class()
        import torch

        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.batch_size = batch_size
        try:
            if path.is_dir():
                from nemo.core.connectors.save_restore_connector import SaveRestoreConnector

                connector = SaveRestoreConnector()
                connector.model_extracted_dir = str(path)
                model = asr_model.restore_from(str(path), map_location="cpu", save_restore_connector=connector)
            else:
                model = asr_model.restore_from(str(path), map_location="cpu")
        except Exception as exc:
            raise TrainingError(f"model: cannot restore {path}: {exc}") from exc
        self.model = model.to(self.device).eval()
        _use_ctc_greedy(self.model)
        self.info = ModelInfo(ref=ref, path=str(path), size_bytes=file_size(path), sha256=file_sha256(path),
                              model_class=type(model).__name__, decoder="ctc")

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


def _use_ctc_greedy(model: Any) -> None:
    """Hybrid RNNT+CTC models decode with their CTC head; every model uses greedy (batched) search."""
    from omegaconf import OmegaConf, open_dict

    if hasattr(model, "ctc_decoder") and hasattr(model.cfg, "aux_ctc"):  # EncDecHybridRNNTCTC*Model
        cfg = copy.deepcopy(model.cfg.aux_ctc.get("decoding") or OmegaConf.create({}))
        with open_dict(cfg):
            cfg.strategy = "greedy_batch"
        model.change_decoding_strategy(decoding_cfg=cfg, decoder_type="ctc", verbose=False)
    elif hasattr(model, "decoding") and type(model).__name__.startswith("EncDecCTC"):
        cfg = copy.deepcopy(model.cfg.decoding)
        with open_dict(cfg):
            cfg.strategy = "greedy_batch"
        model.change_decoding_strategy(decoding_cfg=cfg, verbose=False)
    else:
        raise ConfigError(f"model: {type(model).__name__} has no CTC decoder; the benchmark decodes with CTC")


__all__ = ["SAMPLE_RATE", "ModelInfo", "Transcriber", "resolve_model_file"]
