"""`quranft trainer train`: fine-tune a FastConformer hybrid model on prepared manifests.

The steps follow NeMo's own fine-tune script: trainer -> base model -> freeze -> data -> optimisation ->
fit, then export. Resumes from the newest complete checkpoint in runs/<name>/checkpoints.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from quranft.trainer.config import ConfigError, RunConfig, data_spec_hash, dump_config


class Preempted(Exception):
    """SIGTERM stopped training after a checkpoint was saved; the CLI exits 143 and the Job retries."""

    def __init__(self, step: int, checkpoint: Path | None):
        super().__init__(f"SIGTERM at step {step}; checkpoint {checkpoint}")
        self.step = step
        self.checkpoint = checkpoint


def bf16_supported() -> bool:
    """Native bf16 on the current GPU (Ampere and later); emulated bf16 on older GPUs does not count."""
    import torch

    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch without the argument
        return bool(torch.cuda.is_bf16_supported())


def resolve_precision(requested: str, cuda: bool, bf16: bool | None = None) -> str:
    """auto: bf16-mixed on a GPU that supports it natively, else 16-mixed; 32 on CPU."""
    if requested == "auto":
        if not cuda:
            return "32"
        return "bf16-mixed" if (bf16_supported() if bf16 is None else bf16) else "16-mixed"
    if requested == "16-mixed" and not cuda:
        raise ConfigError("training.precision: 16-mixed needs a GPU (use 32 or bf16-mixed on CPU)")
    return requested


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("torch", "nemo_toolkit", "lightning", "quran-finetune"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def export_model(model, path: Path, half: bool, head: str = "rnnt") -> None:
    """Write model.nemo atomically; `half` stores fp16 weights (about half the size). `head` is the decoder
    the model ships with (ctc for a ctcOnly run, whose RNNT head is frozen and stale): its greedy decoding
    config and the `decoder_type` cfg key go into the file (quranft.trainer.decoding says why NeMo needs that).
    The model is switched to `head` and, with `half`, cast to fp16 in place."""
    from quranft.trainer.decoding import record_head

    record_head(model, head)
    if half:
        model = model.half()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    model.save_to(str(tmp))
    os.replace(tmp, path)


def read_stats(data_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((data_dir / "stats.json").read_text())
    except (OSError, ValueError):
        return None


def train(cfg: RunConfig, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train per `cfg`; returns the termination summary. Raises Preempted on SIGTERM."""
    import torch
    from lightning.pytorch import Trainer, seed_everything
    from lightning.pytorch.utilities.exceptions import SIGTERMException
    from omegaconf import open_dict

    from quranft.trainer import model as modelmod
    from quranft.trainer.callbacks import KeepFrozenInEval, Telemetry
    from quranft.trainer.checkpoints import StepCheckpoint, latest_checkpoint, remove_stale_temps
    from quranft.trainer.ctc_only import enable_ctc_only
    from quranft.trainer.doctor import check_mode
    from quranft.trainer.metrics import ProgressReporter, TrainingMetrics, metric_labels

    t = cfg.training
    started = time.monotonic()
    cuda = torch.cuda.is_available()
    if not cuda and "OMP_NUM_THREADS" not in os.environ:
        # Measured on a shared 2-core box: 2 OpenMP threads made the tiny model's steps ~10x slower than
        # 1 (spin-waiting against other processes); small models gain little from intra-op threads anyway.
        torch.set_num_threads(1)
    precision = resolve_precision(t.precision, cuda)
    check_mode(t.mode, cuda)  # before minutes of model loading, not mid-training
    data_dir, run_dir = cfg.data_dir, cfg.run_dir
    modelmod.manifest_paths(data_dir)  # DataError early when prepare has not run
    ckpt_dir = run_dir / "checkpoints"
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(t.seed, workers=True)

    # Unset numWorkers: workers from the CPU request on a GPU, none on CPU. A CPU step is compute-bound (workers
    # gain nothing, measured on the tiny model), and the embedded node agent SIGTERMs a container's whole process
    # group, not only its main process as the kubelet does: a worker killed first fails the SIGTERM checkpoint.
    workers = modelmod.data_workers(t.num_workers) if cuda or t.num_workers is not None else 0
    log(f"train: base model {t.base_model}, mode {t.mode}, precision {precision}, data {data_dir}, "
        f"{workers} data loader workers" + (" (from the CPU request)" if t.num_workers is None and cuda else ""))
    model = modelmod.load_base(t.base_model)
    frozen = modelmod.freeze(model, t.freeze)
    manifests = modelmod.training_manifests(model, data_dir, run_dir, base_model=t.base_model,
                                            max_unk_rate=cfg.data.max_unk_rate, log=log)
    counts = modelmod.setup_data(model, manifests, t, pin_memory=cuda, num_workers=workers)
    with open_dict(model.cfg):
        model.cfg.optim = modelmod.optim_config(t)
    if t.mode == "ctcOnly":
        enable_ctc_only(model)
    else:
        model.ctc_loss_weight = t.ctc_weight
        with open_dict(model.cfg):
            model.cfg.aux_ctc.ctc_loss_weight = t.ctc_weight
    params = modelmod.parameter_counts(model)
    log(f"train: {params['trainable']:,} of {params['total']:,} parameters trainable; "
        f"{counts['trainSamples']} train / {counts['valSamples']} val samples")

    labels = metric_labels(cfg.run.name, cfg.run.namespace)
    metrics = TrainingMetrics(labels, cfg.metrics.port)
    port = metrics.start()
    if port:
        log(f"train: Prometheus metrics on :{port}/metrics")
    progress = ProgressReporter(run_dir / "progress.json", cfg.metrics.progress_interval_seconds)
    telemetry = Telemetry(progress, metrics, t.max_steps)
    checkpoint = StepCheckpoint(ckpt_dir, t.checkpoint_every_n_steps, log=log, on_saved=progress.checkpoint_saved)
    trainer = Trainer(
        accelerator="gpu" if cuda else "cpu", devices=1, precision=precision, max_steps=t.max_steps,
        accumulate_grad_batches=t.grad_accum, gradient_clip_val=t.gradient_clip_val or None,
        # Lightning counts training batches here, not optimiser steps.
        val_check_interval=t.val_check_interval * t.grad_accum, check_val_every_n_epoch=None,
        num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=50,
        # checkpoint before telemetry: the progress line of a step that saved one already names it.
        callbacks=[KeepFrozenInEval(frozen), checkpoint, telemetry],
    )
    model.set_trainer(trainer)

    for stale in remove_stale_temps(ckpt_dir):
        log(f"train: removed {stale.name}, left by a writer that was killed")
    resume = latest_checkpoint(ckpt_dir)
    resumed_from = resume[0] if resume else None
    if resume:
        log(f"train: resuming from {resume[1]} (step {resume[0]})")
        progress.checkpoint_saved(resume[0])
    try:
        try:
            trainer.fit(model, ckpt_path=str(resume[1]) if resume else None)
        except SIGTERMException:
            # The pod's last progress line names the checkpoint just saved for the retry.
            progress.report(step=trainer.global_step, max_steps=t.max_steps,
                            loss=telemetry.final_losses().get("total"), lr=None, epoch=trainer.current_epoch,
                            force=True)
            raise Preempted(trainer.global_step, checkpoint.last_path) from None
        # Final CTC WER on the validation set, so the summary describes the exported weights.
        trainer.validate(model, verbose=False)
    finally:
        metrics.stop()

    model_path = run_dir / "model.nemo"
    export_model(model, model_path, t.half_precision_weights, head="ctc" if t.mode == "ctcOnly" else "rnnt")
    losses = telemetry.final_losses()
    telemetry.progress.report(step=trainer.global_step, max_steps=t.max_steps, loss=losses.get("total"),
                              lr=None, epoch=trainer.current_epoch, force=True)
    wall = time.monotonic() - started
    summary = {"ok": True, "stage": "train", "step": trainer.global_step, "modelPath": str(model_path),
               "sizeBytes": model_path.stat().st_size, "sha256": sha256_file(model_path),
               "dataSpecHash": data_spec_hash(cfg.data), "finalLoss": losses.get("total"),
               "valWer": telemetry.val_wer, "resumedFromStep": resumed_from}
    meta = {**summary, "config": json.loads(dump_config(cfg)), "precision": precision, "numWorkers": workers,
            "device": torch.cuda.get_device_name(0) if cuda else "cpu", "parameters": params,
            "data": {**counts, "stats": read_stats(data_dir)}, "finalLosses": losses,
            "wallTimeSeconds": round(wall, 2), "versions": versions()}
    (run_dir / "training_metadata.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2, default=str))
    log(f"train: done in {wall:.0f}s, step {trainer.global_step}, loss {losses.get('total')}, "
        f"val WER {telemetry.val_wer}; {model_path}")
    return summary
