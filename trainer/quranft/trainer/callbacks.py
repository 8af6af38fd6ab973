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
    def __init__(self, progress: ProgressReporter, metrics: TrainingMetrics | None, max_steps: int):
        self.progress = progress
        self.metrics = metrics
        self.max_steps = max_steps
        self.recent: dict[str, deque] = {kind: deque(maxlen=SMOOTHING) for kind in LOSS_KEYS}
        self.val_wer: float | None = None
        self._samples = 0
        self._t0 = time.monotonic()
        self._last_step = -1

    def final_losses(self) -> dict[str, float]:
        return {kind: sum(vals) / len(vals) for kind, vals in self.recent.items() if vals}

    def _lr(self, trainer) -> float | None:
        return float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else None

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0, self._samples = time.monotonic(), 0
        if self.metrics:
            self.metrics.update(step=trainer.global_step, max_steps=self.max_steps, epoch=trainer.current_epoch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._samples += int(batch[0].shape[0])
        if trainer.global_step == self._last_step:  # still accumulating gradients
            return
        self._last_step = trainer.global_step
        logged = trainer.callback_metrics
        losses = {kind: v for kind, key in LOSS_KEYS.items() if (v := _value(logged, key)) is not None}
        for kind, value in losses.items():
            self.recent[kind].append(value)
        lr = self._lr(trainer)
        sps = self._samples / max(time.monotonic() - self._t0, 1e-6)
        if self.metrics:
            self.metrics.update(step=trainer.global_step, max_steps=self.max_steps, losses=losses, lr=lr,
                                samples_per_second=sps, epoch=trainer.current_epoch)
        self.progress.report(step=trainer.global_step, max_steps=self.max_steps, loss=losses.get("total"),
                             lr=lr, epoch=trainer.current_epoch,
                             force=trainer.global_step >= self.max_steps)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        logged = trainer.callback_metrics
        wer = _value(logged, "val_wer_ctc")
        self.val_wer = wer if wer is not None else _value(logged, "val_wer")
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
