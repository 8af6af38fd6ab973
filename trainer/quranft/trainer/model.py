"""Base model loading, freezing and data wiring (NeMo's fine-tune steps: base model -> freeze -> data)."""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from quranft.contract import workspace as layout
from quranft.contract.config import ConfigError, FreezeSpec, TrainingSpec
from quranft.trainer.errors import DataError

TRAIN_MANIFEST = "train_manifest.json"
VAL_MANIFEST = "val_manifest.json"
CPU_REQUEST_ENV = "QURANFT_CPU_REQUEST"  # the container's requests.cpu in whole cores (downward API)
MAX_AUTO_WORKERS = 8


def load_base(base_model: str):
    """A hybrid RNNT+CTC model from a hub name, a local .nemo file, or `tiny` (the CPU stub)."""
    from nemo.collections.asr.models import ASRModel, EncDecHybridRNNTCTCModel

    if base_model == "tiny":
        from quranft.trainer.tiny import build_tiny_model

        model = build_tiny_model()
    elif base_model.endswith(".nemo") or "/" in base_model and Path(base_model).exists():
        if not Path(base_model).is_file():
            raise ConfigError(f"training.baseModel: {base_model} does not exist")
        model = ASRModel.restore_from(base_model, map_location="cpu")
    else:
        model = ASRModel.from_pretrained(base_model, map_location="cpu")
    if not isinstance(model, EncDecHybridRNNTCTCModel):
        raise ConfigError(f"training.baseModel: {base_model} is a {type(model).__name__}, "
                          "not a hybrid RNNT+CTC model")
    return model


def frozen_modules(model, spec: FreezeSpec) -> list:
    """The modules to freeze; ConfigError when more encoder layers are asked for than the model has."""
    layers = list(model.encoder.layers)
    if spec.encoder_layers > len(layers):
        raise ConfigError(f"training.freeze.encoderLayers: {spec.encoder_layers} exceeds the "
                          f"{len(layers)} encoder layers of the base model")
    modules = []
    if spec.preprocessor:
        modules.append(model.preprocessor)
    modules += layers[: spec.encoder_layers]
    if spec.rnnt_decoder:
        modules += [model.decoder, model.joint]
    return modules


def freeze(model, spec: FreezeSpec) -> list:
    """Stop gradients into the frozen modules; returns them (they must also stay in eval mode)."""
    modules = frozen_modules(model, spec)
    for module in modules:
        for param in module.parameters():
            param.requires_grad_(False)
        module.eval()
    return modules


def parameter_counts(model) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def manifest_paths(data_dir: Path) -> tuple[Path, Path]:
    from quranft.trainer.prepare import is_complete

    train, val = data_dir / TRAIN_MANIFEST, data_dir / VAL_MANIFEST
    if not is_complete(data_dir):  # a half-written or foreign directory is never trained on
        raise DataError(f"{data_dir} holds no complete prepared data; run `quranft trainer prepare` with the "
                        "same data config first")
    for path in (train, val):
        if not path.is_file() or path.stat().st_size == 0:
            raise DataError(f"{path} is missing or empty; run `quranft trainer prepare` with the same data "
                            "config first")
    return train, val


def training_manifests(model, data_dir: Path, run_dir: Path, *, base_model: str, max_unk_rate: float,
                       log: Callable[[str], None] = print, refold_dir: Path | None = None) -> tuple[Path, Path]:
    """The prepared manifests, or, when prepare folded their transcripts for another tokenizer (a sibling
    run's base model shares the data spec, hence the directory), copies refolded for this model's tokenizer
    in `refold_dir` (default run_dir/manifests/; gated by maxUnkRate like prepare; DataError when above)."""
    from quranft.trainer import vocab

    train, val = manifest_paths(data_dir)
    tokenizer = vocab.Tokenizer.from_model(model, base_model)
    try:
        stats = json.loads((data_dir / "stats.json").read_text())
    except (OSError, ValueError):
        stats = None
    prepared_for = vocab.recorded_tokenizer(stats)
    if prepared_for == tokenizer.sha256:
        return train, val
    out = run_dir / layout.REFOLDED_MANIFESTS_DIR if refold_dir is None else refold_dir
    log(f"train: {data_dir} was prepared for tokenizer {(prepared_for or 'none (before the gate)')[:12]}, "
        f"{base_model} has {tokenizer.sha256[:12]}: training on its transcripts refolded into {out}")
    counts = vocab.refold_all({"train": train, "val": val}, vocab.Gate(tokenizer, max_unk_rate), out)
    for name, c in counts.items():
        log(f"train: {name}: {c.changed} of {c.transcripts} transcripts refolded, <unk> rate {c.unk_rate:.4%}")
    return out / train.name, out / val.name


def cpu_budget(env: Mapping[str, str] | None = None) -> int:
    """Whole CPUs this container may use: its CPU request (QURANFT_CPU_REQUEST, set by the operator from
    the downward API), else the CPUs this process may run on."""
    env = os.environ if env is None else env
    try:
        requested = int(env.get(CPU_REQUEST_ENV, "") or 0)
    except ValueError:
        requested = 0
    if requested > 0:
        return requested
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def data_workers(requested: int | None, cpus: int | None = None) -> int:
    """training.numWorkers, or when unset one worker per CPU but the one training runs on, at most 8."""
    if requested is not None:
        return requested
    cpus = cpu_budget() if cpus is None else cpus
    return max(0, min(cpus - 1, MAX_AUTO_WORKERS))


def count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def dataset_config(manifest: Path, spec: TrainingSpec, *, sample_rate: int, shuffle: bool,
                   pin_memory: bool, num_workers: int | None = None) -> dict[str, Any]:
    # Durations were filtered by `prepare`; NeMo's own min/max filters stay off so counts match stats.json.
    workers = data_workers(spec.num_workers) if num_workers is None else num_workers
    return {"manifest_filepath": str(manifest), "sample_rate": sample_rate, "batch_size": spec.batch_size,
            "shuffle": shuffle, "num_workers": workers, "pin_memory": pin_memory,
            "max_duration": None, "min_duration": None, "trim_silence": False, "use_start_end_token": False}


def setup_data(model, manifests: tuple[Path, Path], spec: TrainingSpec, *, pin_memory: bool,
               num_workers: int | None = None) -> dict[str, int]:
    """Wire the (train, val) manifests into the model; pin_memory only helps copies to a GPU."""
    train, val = manifests
    sample_rate = int(model.cfg.sample_rate)
    model.setup_training_data(dataset_config(train, spec, sample_rate=sample_rate, shuffle=True,
                                             pin_memory=pin_memory, num_workers=num_workers))
    model.setup_validation_data(dataset_config(val, spec, sample_rate=sample_rate, shuffle=False,
                                               pin_memory=pin_memory, num_workers=num_workers))
    return {"trainSamples": count_lines(train), "valSamples": count_lines(val)}


def optim_config(spec: TrainingSpec) -> dict[str, Any]:
    """AdamW with linear warmup then cosine decay to a tenth of the peak LR (NeMo's scheduler)."""
    return {"name": "adamw", "lr": spec.learning_rate, "betas": [0.9, 0.98], "weight_decay": 1e-3,
            "sched": {"name": "CosineAnnealing", "warmup_steps": spec.warmup_steps,
                      "min_lr": spec.learning_rate / 10, "max_steps": spec.max_steps}}
