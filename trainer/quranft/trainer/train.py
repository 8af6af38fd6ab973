"""`quranft trainer train`: fine-tune a FastConformer hybrid model on prepared manifests.

The steps follow NeMo's own fine-tune script: trainer -> base model -> freeze -> data -> optimisation ->
fit, then export. Resumes from the newest complete checkpoint in runs/<name>/checkpoints. With
`distributed` asking for more than one rank it trains with DDP (quranft.trainer.distributed: who is where and
who writes; quranft.trainer.ddp: the Lightning side, data order, learning rate).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from quranft.contract import workspace as layout
from quranft.contract.summaries import TrainSummary
from quranft.contract.config import ConfigError, RunConfig, data_spec_hash, dump_config


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


def train(cfg: RunConfig, *, log: Callable[[str], None] = print,
          callbacks: Sequence[Any] = ()) -> dict[str, Any] | None:
    """Train per `cfg` (`callbacks` are added to Lightning's); returns the termination summary on global rank 0
    and None on the other ranks, which write nothing. Raises Preempted on SIGTERM, on every rank together.
    World size 1 runs without DDP, as a single process."""
    import torch
    from lightning.pytorch import Trainer, seed_everything
    from lightning.pytorch.utilities.exceptions import SIGTERMException
    from omegaconf import open_dict

    from quranft.trainer import ddp
    from quranft.trainer import model as modelmod
    from quranft.trainer.callbacks import KeepFrozenInEval, Telemetry
    from quranft.trainer.checkpoints import StepCheckpoint, latest_checkpoint, remove_stale_temps
    from quranft.trainer.ctc_only import enable_ctc_only
    from quranft.trainer.distributed import (check_devices, check_shards, placement, rendezvous_failure,
                                             resolve_backend)
    from quranft.trainer.doctor import check_mode
    from quranft.trainer.metrics import ProgressReporter, TrainingMetrics, metric_labels
    from quranft.trainer.progress_push import ProgressPusher
    from quranft.trainer.tracking import training_tracker

    t, dist = cfg.training, cfg.distributed
    started = time.monotonic()
    place = placement(dist)  # EnvironmentProblem before minutes of model loading
    cuda = torch.cuda.is_available()
    backend = resolve_backend(dist.backend, cuda) if place.distributed else None
    if place.distributed:
        check_devices(place, cuda, torch.cuda.device_count() if cuda else 0)
    writer = place.is_global_zero
    out = log
    rank_log = out if not place.distributed else (lambda msg: out(f"[rank {place.global_rank}] {msg}"))
    if not writer:
        log = lambda _msg: None  # noqa: E731 - the other ranks log only their own lines (rank_log)
    if not cuda and "OMP_NUM_THREADS" not in os.environ:
        # Measured on a shared 2-core box: 2 OpenMP threads made the tiny model's steps ~10x slower than
        # 1 (spin-waiting against other processes); small models gain little from intra-op threads anyway.
        torch.set_num_threads(1)
    precision = resolve_precision(t.precision, cuda)
    check_mode(t.mode, cuda)  # before minutes of model loading, not mid-training
    data_dir, run_dir = cfg.data_dir, cfg.run_dir
    modelmod.manifest_paths(data_dir)  # DataError early when prepare has not run
    ckpt_dir = layout.checkpoints_dir(cfg.run.name, cfg.run.workspace)
    if writer:
        run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(t.seed, workers=True)  # the same seed on every rank: identical initial weights

    # Unset numWorkers: workers from the CPU request on a GPU, none on CPU. A CPU step is compute-bound (workers
    # gain nothing, measured on the tiny model), and the embedded node agent SIGTERMs a container's whole process
    # group, not only its main process as the kubelet does: a worker killed first fails the SIGTERM checkpoint.
    workers = modelmod.data_workers(t.num_workers) if cuda or t.num_workers is not None else 0
    log(f"train: base model {t.base_model}, mode {t.mode}, precision {precision}, data {data_dir}, "
        f"{workers} data loader workers" + (" (from the CPU request)" if t.num_workers is None and cuda else ""))
    global_batch = t.batch_size * t.grad_accum * place.world_size
    log(f"train: world size {place.world_size} ({place.nodes} node(s) x {place.devices_per_node} "
        f"{'GPU' if cuda else 'process'}(es) per node{f', {backend}' if backend else ''}); global batch "
        f"{global_batch} = batchSize {t.batch_size} x gradAccum {t.grad_accum} x {place.world_size} rank(s); "
        f"learning rate {t.learning_rate} as configured, not scaled with the world size (as in NeMo); "
        f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}")
    model = modelmod.load_base(t.base_model)
    frozen = modelmod.freeze(model, t.freeze)
    with tempfile.TemporaryDirectory(prefix="quranft-manifests-") as private:
        # Refolded manifests (rare: data prepared for another tokenizer) go to the run directory from rank 0 only;
        # the other ranks refold the same lines into a private directory (NeMo reads them while setting up).
        manifests = modelmod.training_manifests(model, data_dir, run_dir, base_model=t.base_model,
                                                max_unk_rate=cfg.data.max_unk_rate, log=log,
                                                refold_dir=None if writer else Path(private))
        counts = modelmod.setup_data(model, manifests, t, pin_memory=cuda, num_workers=workers)
    if place.distributed:
        check_shards(counts["trainSamples"], place.world_size)
    model._train_dl = ddp.shard_train_loader(model._train_dl, place, t.seed)
    if place.distributed:
        rank_log(f"train: {place.describe()}, pid {os.getpid()}: {len(model._train_dl.sampler)} of "
                 f"{counts['trainSamples']} training samples per epoch")
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

    metrics = progress = telemetry = None
    if writer:  # progress, metrics and the termination summary come from global rank 0 alone
        labels = metric_labels(cfg.run.name, cfg.run.namespace)
        metrics = TrainingMetrics(labels, cfg.metrics.port)
        port = metrics.start()
        if port:
            log(f"train: Prometheus metrics on :{port}/metrics")
        pusher = ProgressPusher.from_env(log=log)  # the operator's endpoint, when it gave one
        progress = ProgressReporter(layout.progress_path(cfg.run.name, cfg.run.workspace),
                                    cfg.metrics.progress_interval_seconds,
                                    history=layout.progress_history_path(cfg.run.name, cfg.run.workspace),
                                    push=pusher.submit if pusher else None)
    group = ddp.GroupSync() if place.distributed else None
    if writer:
        telemetry = Telemetry(progress, metrics, t.max_steps, world_size=place.world_size, group=group)
    # MLflow (when MLFLOW_TRACKING_URI is set): rank 0 logs into the resource's run; never fails training.
    tracker = training_tracker(cfg, world_size=place.world_size, log=log) if writer else None
    checkpoint = StepCheckpoint(ckpt_dir, t.checkpoint_every_n_steps, log=log, writer=writer,
                                on_saved=progress.checkpoint_saved if progress else None)
    # group before telemetry (it reads the averaged losses); checkpoint before telemetry: the progress line of a
    # step that saved one already names it.
    own = [KeepFrozenInEval(frozen), group, checkpoint, telemetry, tracker]
    trainer = Trainer(
        accelerator="gpu" if cuda else "cpu", precision=precision, max_steps=t.max_steps,
        accumulate_grad_batches=t.grad_accum, gradient_clip_val=t.gradient_clip_val or None,
        # Lightning counts training batches here, not optimiser steps.
        val_check_interval=t.val_check_interval * t.grad_accum, check_val_every_n_epoch=None,
        num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=50,
        callbacks=[cb for cb in own if cb is not None] + list(callbacks),
        **ddp.trainer_settings(place, backend, dist.rendezvous_timeout_seconds, ddp.unused_parameters(t),
                               cuda),
    )
    model.set_trainer(trainer)

    if writer:
        for stale in remove_stale_temps(ckpt_dir):
            log(f"train: removed {stale.name}, left by a writer that was killed")
    resume = latest_checkpoint(ckpt_dir)
    resumed_from = resume[0] if resume else None
    if resume:
        log(f"train: resuming from {resume[1]} (step {resume[0]})")
        if progress:
            progress.checkpoint_saved(resume[0])
    try:
        try:
            trainer.fit(model, ckpt_path=str(resume[1]) if resume else None)
        except SIGTERMException:
            # The pod's last progress line names the checkpoint just saved for the retry.
            if telemetry:
                telemetry.report(trainer, force=True)
            if group is not None:
                rank_log(f"train: stopping at step {trainer.global_step}: "
                         + ("a peer rank received SIGTERM" if group.stopped_by_peer else "SIGTERM"))
            raise Preempted(trainer.global_step, checkpoint.last_path) from None
        except Exception as exc:
            failure = rendezvous_failure(exc, place, dist.rendezvous_timeout_seconds) if (
                group is not None and not group.rendezvoused) else None
            if failure is None:
                raise
            raise failure from exc
        # Final CTC WER on the validation set, so the summary describes the exported weights (every rank takes
        # part: NeMo averages the validation metrics over the ranks).
        trainer.validate(model, verbose=False)
    finally:
        if metrics:
            metrics.stop()
    if not writer:
        rank_log(f"train: done at step {trainer.global_step}; rank 0 exports the model")
        return None

    model_path = layout.model_path(cfg.run.name, cfg.run.workspace)
    export_model(model, model_path, t.half_precision_weights, head="ctc" if t.mode == "ctcOnly" else "rnnt")
    losses = telemetry.final_losses()
    telemetry.report(trainer, force=True)  # the step again, now with the final validation WER
    wall = time.monotonic() - started
    summary = TrainSummary(
        step=trainer.global_step, model_path=str(model_path), size_bytes=model_path.stat().st_size,
        sha256=sha256_file(model_path), data_spec_hash=data_spec_hash(cfg.data), final_loss=losses.get("total"),
        val_wer=telemetry.val_wer, resumed_from_step=resumed_from, world_size=place.world_size,
        global_batch_size=global_batch, nodes=place.nodes, devices_per_node=place.devices_per_node).wire()
    if tracker is not None:
        summary["tracking"] = tracker.summary()
    meta = {**summary, "config": json.loads(dump_config(cfg)), "precision": precision, "numWorkers": workers,
            "device": torch.cuda.get_device_name(0) if cuda else "cpu", "parameters": params,
            "data": {**counts, "stats": read_stats(data_dir)}, "finalLosses": losses,
            "wallTimeSeconds": round(wall, 2), "versions": versions()}
    layout.training_metadata_path(cfg.run.name, cfg.run.workspace).write_text(json.dumps(meta, ensure_ascii=False, indent=2, default=str))
    log(f"train: done in {wall:.0f}s, step {trainer.global_step}, loss {losses.get('total')}, "
        f"val WER {telemetry.val_wer}; {model_path}")
    return summary
