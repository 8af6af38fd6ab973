"""The training side of MLflow tracking (quranft.trainer.tracking says what is logged, where and why it never
fails training): `ResourceRunLogger`, Lightning's MLFlowLogger bound to the resource's run, and `TrainingTracker`,
the callback that feeds it from `trainer.callback_metrics` (the trainer runs with `logger=False`; NeMo's
`self.log` values land there, as the Prometheus telemetry reads them)."""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from lightning.pytorch import Callback
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from quranft.trainer.tracking import (MAX_BATCH_METRICS, Guard, TrackingTarget, apply_client_env,
                                      find_or_create_run, metric_key, step_metrics, validation_metrics)

SAMPLES_WINDOW = 10  # optimiser steps that samples/s is averaged over


class ResourceRunLogger(MLFlowLogger):
    """Lightning's MLFlowLogger bound to the resource's run (found by uid, not one new run per process),
    buffering step metrics into batched requests; every call goes through the guard."""

    def __init__(self, target: TrackingTarget, tags: Mapping[str, str], guard: Guard, flush_seconds: float = 5.0):
        super().__init__(experiment_name=target.experiment, run_name=target.name, tracking_uri=target.uri,
                         tags=dict(tags))
        self.target, self.guard, self.flush_seconds = target, guard, flush_seconds
        self._pending: list = []
        self._last_flush = time.monotonic()

    @property
    def experiment(self):
        if self._run_id is None:  # then MLFlowLogger only reads the run (get_run) instead of creating one
            self._run_id = find_or_create_run(self._mlflow_client, self.target, self.tags or {})
        return MLFlowLogger.experiment.fget(self)

    def resolve_run(self) -> str | None:
        """The run id (finding or creating the run first); None when the server cannot be reached."""
        return self.guard.call("find the run", lambda: self.run_id)

    def log_hyperparams(self, params) -> None:
        self.guard.call("log params", super().log_hyperparams, params)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self._pending += [Metric(key=metric_key(k), value=float(v), timestamp=stamp, step=step or 0)
                          for k, v in metrics.items()]
        if len(self._pending) >= MAX_BATCH_METRICS or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Send the buffered points (dropped when the server cannot take them: tracking is degraded then)."""
        pending, self._pending = self._pending, []
        self._last_flush = time.monotonic()
        for i in range(0, len(pending), MAX_BATCH_METRICS):
            self.guard.call("log metrics", self._send, pending[i:i + MAX_BATCH_METRICS])

    def _send(self, chunk: list) -> None:
        self.experiment.log_batch(self.run_id, metrics=chunk)

    def finalize(self, status: str = "success") -> None:
        self.flush()
        self.guard.call("end the run", super().finalize, status)


class TrainingTracker(Callback):
    """Global rank 0's MLflow tracking of one training stage: params once the run is found, every optimiser
    step's train_* losses, learning_rate and samples_per_second, val_* after each validation (see
    quranft.trainer.tracking)."""

    def __init__(self, target: TrackingTarget, params: Mapping[str, Any], tags: Mapping[str, str], *,
                 world_size: int = 1, log: Callable[[str], None] | None = None, flush_seconds: float = 5.0,
                 guard: Guard | None = None):
        apply_client_env()
        self.target, self.params, self.world_size = target, dict(params), world_size
        # Not `self.log`: Lightning sets callback.log = lightning_module.log (CallbackConnector).
        self._say = log or print
        self.guard = guard or Guard(self._say)
        self.logger = ResourceRunLogger(target, tags, self.guard, flush_seconds=flush_seconds)
        self.run_id: str | None = None
        self._window: deque = deque(maxlen=SAMPLES_WINDOW)  # (monotonic time, samples seen) per optimiser step
        self._samples = 0
        self._last_step = -1
        self._params_logged = False

    def summary(self) -> dict[str, Any]:
        """The train summary's `tracking` object (Guard.summary)."""
        return self.guard.summary(self.run_id, self.target.uri)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.run_id is None:
            self.run_id = self.logger.resolve_run()
            if self.run_id:
                self._say(f"train: MLflow run {self.run_id} (experiment {self.target.experiment!r}, {self.target.uri})")
        if self.run_id and not self._params_logged:
            self.logger.log_hyperparams(self.params)
            self._params_logged = True

    def on_train_start(self, trainer, pl_module) -> None:
        self._samples = 0
        self._window.clear()
        self._window.append((time.monotonic(), 0))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._samples += _batch_size(batch) * self.world_size
        step = trainer.global_step
        if step == self._last_step:  # still accumulating gradients
            return
        self._last_step = step
        now = time.monotonic()
        metrics = step_metrics(trainer.callback_metrics)
        t0, seen = self._window[0] if self._window else (now, self._samples)
        if now > t0:
            metrics["samples_per_second"] = (self._samples - seen) / (now - t0)
        self._window.append((now, self._samples))
        self.logger.log_metrics(metrics, step)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        metrics = validation_metrics(trainer.callback_metrics)
        if metrics:
            self.logger.log_metrics(metrics, trainer.global_step)
        self.logger.flush()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self.logger.flush()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """A failed training marks the run FAILED; SIGTERM (preemption: the Job retries and resumes) leaves it
        running. The benchmark ends the run (FINISHED) once it has logged."""
        if isinstance(exception, SIGTERMException):
            self.logger.flush()
        else:
            self.logger.finalize("failed")


def _batch_size(batch) -> int:
    try:
        return int(batch[0].shape[0])
    except (TypeError, IndexError, AttributeError):
        return 0
