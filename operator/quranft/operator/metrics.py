"""The operator's own Prometheus metrics (prometheus-client), served on settings.metrics_port."""
from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

from .status import TERMINAL

PHASES = ("Pending", "Queued", "PreparingData", "Training", "Benchmarking", "Suspended", "Succeeded", "Failed",
          "Stopped")


class _PhaseCollector:
    """runs by phase, from the operator's last view of each run (exact at scrape time, no drift)."""

    def __init__(self) -> None:
        self._phases: dict[str, str] = {}
        self._lock = threading.Lock()

    def set(self, uid: str, phase: str) -> None:
        with self._lock:
            self._phases[uid] = phase

    def forget(self, uid: str) -> None:
        with self._lock:
            self._phases.pop(uid, None)

    def collect(self):  # prometheus-client collector protocol
        with self._lock:
            counts = {phase: 0 for phase in PHASES}
            for phase in self._phases.values():
                counts[phase] = counts.get(phase, 0) + 1
        family = GaugeMetricFamily("quranft_runs", "QuranFineTune resources by phase", labels=["phase"])
        for phase, count in counts.items():
            family.add_metric([phase], count)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.phases = _PhaseCollector()
        self.registry.register(self.phases)
        self.reconcile_seconds = Histogram(
            "quranft_reconcile_duration_seconds", "Time of one reconcile pass", registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.stage_seconds = Histogram(
            "quranft_stage_duration_seconds", "Duration of a stage Job from start to finish",
            ["stage", "outcome"], registry=self.registry,
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400))
        self.verdicts = Counter("quranft_verdicts_total", "Benchmark verdicts", ["verdict"], registry=self.registry)
        self.failures = Counter("quranft_failures_total", "Runs that failed, by reason", ["reason"],
                                registry=self.registry)
        # Progress arrives pushed (progress_server.py); a log read is the fallback for a pod that pushes nothing.
        self.progress_pushes = Counter("quranft_progress_pushes_total", "Progress pushes by HTTP status",
                                       ["code"], registry=self.registry)
        self.progress_log_reads = Counter(
            "quranft_progress_log_reads_total",
            "Training pod log reads for progress: pods that pushed nothing for progressStaleSeconds",
            registry=self.registry)
        self._seen_stages: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, registry=self.registry)

    def stage_finished(self, uid: str, stage: str, outcome: str, seconds: float) -> None:
        with self._lock:
            if (uid, stage) in self._seen_stages:
                return
            self._seen_stages.add((uid, stage))
        self.stage_seconds.labels(stage=stage, outcome=outcome).observe(max(0.0, seconds))

    def transition(self, old_phase: str | None, new_status: dict) -> None:
        phase = new_status.get("phase")
        if phase == old_phase or phase not in TERMINAL:
            return
        if phase == "Succeeded" and new_status.get("verdict"):
            self.verdicts.labels(verdict=new_status["verdict"]).inc()
        if phase == "Failed":
            reason = next((c.get("reason") for c in new_status.get("conditions") or [] if c["type"] == "Failed"),
                          "Unknown")
            self.failures.labels(reason=reason or "Unknown").inc()

    def forget(self, uid: str) -> None:
        self.phases.forget(uid)
        with self._lock:
            self._seen_stages = {k for k in self._seen_stages if k[0] != uid}
