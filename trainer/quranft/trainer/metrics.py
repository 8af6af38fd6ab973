"""Training telemetry: Prometheus gauges, `progress.json` and the `QURANFT_PROGRESS` stdout line.

The operator reads the last progress line from the pod log (the record and its line are the contract's:
quranft.contract.progress); Prometheus scrapes the gauges. Both are fed by one Lightning callback
(quranft.trainer.callbacks).
"""
from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from quranft.contract.progress import PROGRESS_PREFIX, ProgressRecord, progress_line  # noqa: F401  (re-exported)


def metric_labels(run_name: str, namespace: str) -> dict[str, str]:
    """Run/namespace labels; the pod's environment wins over the config (the operator sets both)."""
    return {"run": os.environ.get("QURANFT_RUN_NAME", run_name),
            "namespace": os.environ.get("QURANFT_NAMESPACE", os.environ.get("POD_NAMESPACE", namespace))}


class TrainingMetrics:
    """Prometheus gauges on their own registry, served over HTTP while training runs (port 0: off)."""

    def __init__(self, labels: dict[str, str], port: int):
        from prometheus_client import CollectorRegistry, Gauge

        self.registry = CollectorRegistry()
        self.port = port
        self._server = None
        names = list(labels)

        def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> Any:
            return Gauge(f"quranft_{name}", doc, names + list(extra), registry=self.registry)

        self._loss = gauge("train_loss", "Training loss of the last optimiser step", ("kind",))
        self._lr = gauge("learning_rate", "Current learning rate")
        self._step = gauge("global_step", "Optimiser steps done")
        self._max_steps = gauge("max_steps", "Optimiser steps planned")
        self._wer = gauge("val_wer", "Validation WER of the CTC head")
        self._sps = gauge("samples_per_second", "Training throughput")
        self._epoch = gauge("epoch", "Current epoch")
        self.labels = labels

    def start(self) -> int:
        """Serve /metrics; returns the bound port (useful when configured as an ephemeral one)."""
        if self.port == 0:
            return 0
        import errno
        import logging

        from prometheus_client import start_http_server

        try:
            self._server, _ = start_http_server(self.port, registry=self.registry)
        except OSError as exc:
            # A busy port must not fail training: the embedded cluster's pods share the host's network, so a
            # replacement pod can start while its predecessor (or another run's trainer) still holds the port.
            if exc.errno != errno.EADDRINUSE:
                raise
            logging.getLogger(__name__).warning("metrics port %d is in use (%s): training goes on without "
                                                "/metrics", self.port, exc)
            return 0
        return self._server.server_address[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def update(self, *, step: int | None = None, max_steps: int | None = None, losses: dict[str, float] | None = None,
               lr: float | None = None, val_wer: float | None = None, samples_per_second: float | None = None,
               epoch: int | None = None) -> None:
        for kind, value in (losses or {}).items():
            self._loss.labels(**self.labels, kind=kind).set(value)
        for gauge, value in ((self._step, step), (self._max_steps, max_steps), (self._lr, lr),
                             (self._wer, val_wer), (self._sps, samples_per_second), (self._epoch, epoch)):
            if value is not None:
                gauge.labels(**self.labels).set(value)


def rfc3339_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc, ensure_ascii=False, indent=1, default=str))
    os.replace(tmp, path)


HISTORY_KEYS = ("step", "loss", "valWer", "lr", "samplesPerSecond", "updatedAt")


class ProgressReporter:
    """Writes progress.json and prints the progress line, at most once per `interval` seconds.

    With `push`, each report is also handed to it (progress_push: rank 0 POSTs it to the operator).
    With `history`, each report is also appended to it as one JSON line (HISTORY_KEYS, for campaign curves).
    The file is append-only: after a resume the steps trained after the checkpoint are reported again, and
    the later line of a step is the one that led to the final model.
    """

    def __init__(self, path: Path, interval: float, *, out: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, history: Path | None = None,
                 push: Callable[[dict[str, Any]], None] | None = None):
        self.path = path
        self._push = push  # progress_push.ProgressPusher.submit: the same record to the operator's endpoint
        self.history = history
        self.interval = interval
        self._out = out or (lambda line: print(line, flush=True))
        self._clock = clock
        self._last: float | None = None
        # Step of the newest complete checkpoint (`lastCheckpointStep`); None until one exists.
        self.last_checkpoint_step: int | None = None
        self._reported_checkpoint: int | None = None

    def checkpoint_saved(self, step: int) -> None:
        """A checkpoint for `step` is complete (renamed into place, or found on resume)."""
        self.last_checkpoint_step = step

    def report(self, *, step: int, max_steps: int, loss: float | None, lr: float | None, epoch: int,
               force: bool = False, **extra: Any) -> bool:
        now = self._clock()
        # A new checkpoint is reported at once: the operator only sees the pod's last line, and a pod
        # preempted right after saving may never print another.
        new_checkpoint = self.last_checkpoint_step != self._reported_checkpoint
        if not force and not new_checkpoint and self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        if self.last_checkpoint_step is not None:  # omitted, not null, until a checkpoint exists
            extra = {"lastCheckpointStep": self.last_checkpoint_step, **extra}
        doc = ProgressRecord(step=step, max_steps=max_steps, loss=loss, lr=lr, epoch=epoch,
                             updated_at=rfc3339_now(), **extra).wire()
        self._reported_checkpoint = self.last_checkpoint_step
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, doc)
        if self.history is not None:
            with self.history.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({key: doc.get(key) for key in HISTORY_KEYS}, separators=(",", ":")) + "\n")
        self._out(progress_line(doc))
        if self._push is not None:
            self._push(doc)
        return True
