"""Lightning callbacks: telemetry (Prometheus + progress) and keeping frozen modules in eval mode."""
from __future__ import annotations

import time
from collections import deque

from lightning.pytorch import Callback

from quranft.trainer.metrics import ProgressReporter, TrainingMetrics

LOSS_KEYS = {"total": "train_loss", "ctc": "train_ctc_loss", "rnnt": "train_rnnt_loss"}
SMOOTHING = 10  # final losses are the mean of the last optimiser steps, not one noisy batch


def _value(metrics, key):
    value = metrics.get(key)
    return None if value is None else float(value)


class Telemetry(Callback):
    """Rank 0's Prometheus gauges and progress reports.

    Under DDP, `group` (quranft.trainer.ddp.GroupSync, earlier in the callback list) holds the losses averaged
    over the ranks; samples/s counts every rank's samples (each rank's batch x world size: DistributedSampler
    gives the ranks equal shares).
    """

    def __init__(self, progress: ProgressReporter, metrics: TrainingMetrics | None, max_steps: int,
                 world_size: int = 1, group=None):
        self.progress = progress
        self.metrics = metrics
        self.max_steps = max_steps
        self.world_size = world_size
        self.group = group
        self.recent: dict[str, deque] = {kind: deque(maxlen=SMOOTHING) for kind in LOSS_KEYS}
        self.val_wer: float | None = None
        self.val_wer_step: int | None = None  # the step the last validation ran at (valWerStep)
        self.loss: float | None = None  # the last step's total loss
        self.lr: float | None = None
        self.samples_per_second: float | None = None
        self._samples = 0
        self._t0 = time.monotonic()
        self._last_step = -1

    def final_losses(self) -> dict[str, float]:
        return {kind: sum(vals) / len(vals) for kind, vals in self.recent.items() if vals}

    def _lr(self, trainer) -> float | None:
        return float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else None

    def report(self, trainer, *, force: bool = False) -> bool:
        """One progress report (progress.json, the progress line, progress_history.jsonl): the current step with
        the last step's loss, learning rate and samples/s, and the latest validation WER once known."""
        extra = {"worldSize": self.world_size, "samplesPerSecond": self.samples_per_second}
        if self.val_wer is not None:
            extra["valWer"], extra["valWerStep"] = self.val_wer, self.val_wer_step
        return self.progress.report(step=trainer.global_step, max_steps=self.max_steps,
                                    loss=self.loss, lr=self.lr,
                                    epoch=trainer.current_epoch, force=force, **extra)

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0, self._samples = time.monotonic(), 0
        if self.metrics:
            self.metrics.update(step=trainer.global_step, max_steps=self.max_steps, epoch=trainer.current_epoch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._samples += int(batch[0].shape[0]) * self.world_size
        if trainer.global_step == self._last_step:  # still accumulating gradients
            return
        self._last_step = trainer.global_step
        if self.group is not None:
            losses = dict(self.group.losses)
        else:
            logged = trainer.callback_metrics
            losses = {kind: v for kind, key in LOSS_KEYS.items() if (v := _value(logged, key)) is not None}
        for kind, value in losses.items():
            self.recent[kind].append(value)
        self.loss = losses.get("total")
        self.lr = self._lr(trainer)
        self.samples_per_second = round(self._samples / max(time.monotonic() - self._t0, 1e-6), 3)
        if self.metrics:
            self.metrics.update(step=trainer.global_step, max_steps=self.max_steps, losses=losses, lr=self.lr,
                                samples_per_second=self.samples_per_second, epoch=trainer.current_epoch)
        self.report(trainer, force=trainer.global_step >= self.max_steps)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        logged = trainer.callback_metrics
        wer = _value(logged, "val_wer_ctc")
        self.val_wer = wer if wer is not None else _value(logged, "val_wer")
        self.val_wer_step = trainer.global_step
        if self.metrics and self.val_wer is not None:
            self.metrics.update(val_wer=self.val_wer)


class KeepFrozenInEval(Callback):
    """Lightning puts the whole model in train mode; frozen layers must not update BatchNorm statistics."""

    def __init__(self, modules: list):
        self.modules = modules

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        for module in self.modules:
            if module.training:
                module.eval()
