"""Progress line/file rate limiting and the Prometheus gauges (the HTTP scrape during training is in
test_train.py)."""
from __future__ import annotations

import json
import urllib.request

from quranft.trainer.metrics import PROGRESS_PREFIX, ProgressReporter, TrainingMetrics, metric_labels


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_progress_is_rate_limited_and_matches_the_contract(tmp_path):
    clock, lines = FakeClock(), []
    rep = ProgressReporter(tmp_path / "run" / "progress.json", 5.0, out=lines.append, clock=clock)
    assert rep.report(step=1, max_steps=10, loss=2.5, lr=0.003, epoch=0)
    clock.now += 4.9
    assert not rep.report(step=2, max_steps=10, loss=2.0, lr=0.003, epoch=0)
    assert rep.report(step=3, max_steps=10, loss=1.5, lr=0.003, epoch=1, force=True)
    clock.now += 5.0
    assert rep.report(step=4, max_steps=10, loss=1.0, lr=0.002, epoch=1)
    assert len(lines) == 3 and all(line.startswith(PROGRESS_PREFIX) for line in lines)
    doc = json.loads(lines[-1][len(PROGRESS_PREFIX):])
    assert set(doc) == {"step", "maxSteps", "loss", "lr", "epoch", "updatedAt"}
    assert doc["updatedAt"].endswith("Z") and doc["step"] == 4
    assert json.loads((tmp_path / "run" / "progress.json").read_text()) == doc
    assert not list((tmp_path / "run").glob(".*"))  # atomic writes leave no temp files



def test_progress_names_the_last_checkpoint_once_one_exists(tmp_path):
    clock, lines = FakeClock(), []
    rep = ProgressReporter(tmp_path / "progress.json", 5.0, out=lines.append, clock=clock)

    def last() -> dict:
        return json.loads(lines[-1][len(PROGRESS_PREFIX):])

    assert rep.report(step=1, max_steps=10, loss=2.5, lr=0.003, epoch=0)
    assert "lastCheckpointStep" not in last()  # omitted, not null, before the first checkpoint
    rep.checkpoint_saved(2)
    clock.now += 1.0  # inside the rate limit: a new checkpoint is still reported at once
    assert rep.report(step=2, max_steps=10, loss=2.0, lr=0.003, epoch=0)
    assert last()["lastCheckpointStep"] == 2 and last()["step"] == 2
    assert json.loads((tmp_path / "progress.json").read_text())["lastCheckpointStep"] == 2
    clock.now += 1.0
    assert not rep.report(step=3, max_steps=10, loss=1.5, lr=0.003, epoch=0)  # same checkpoint: rate-limited
    clock.now += 5.0
    assert rep.report(step=4, max_steps=10, loss=1.0, lr=0.003, epoch=0)
    assert last()["lastCheckpointStep"] == 2  # kept on later lines


def test_labels_come_from_the_environment_first(monkeypatch):
    monkeypatch.delenv("QURANFT_RUN_NAME", raising=False)
    monkeypatch.delenv("QURANFT_NAMESPACE", raising=False)
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    assert metric_labels("r", "ns") == {"run": "r", "namespace": "ns"}
    monkeypatch.setenv("POD_NAMESPACE", "team-a")
    monkeypatch.setenv("QURANFT_RUN_NAME", "v3-hybrid")
    assert metric_labels("r", "ns") == {"run": "v3-hybrid", "namespace": "team-a"}


def test_gauges_are_served_over_http():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    metrics = TrainingMetrics({"run": "r1", "namespace": "ns"}, port)
    assert metrics.start() == port
    try:
        metrics.update(step=7, max_steps=100, losses={"total": 1.5, "ctc": 2.0, "rnnt": 1.25}, lr=0.001,
                       val_wer=0.25, samples_per_second=12.5, epoch=3)
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        metrics.stop()
    for line in ('quranft_global_step{namespace="ns",run="r1"} 7.0',
                 'quranft_max_steps{namespace="ns",run="r1"} 100.0',
                 'quranft_train_loss{kind="rnnt",namespace="ns",run="r1"} 1.25',
                 'quranft_val_wer{namespace="ns",run="r1"} 0.25',
                 'quranft_samples_per_second{namespace="ns",run="r1"} 12.5',
                 'quranft_epoch{namespace="ns",run="r1"} 3.0',
                 'quranft_learning_rate{namespace="ns",run="r1"} 0.001'):
        assert line in page


def test_port_zero_disables_the_endpoint():
    metrics = TrainingMetrics({"run": "r", "namespace": "n"}, 0)
    assert metrics.start() == 0
    metrics.update(step=1)
    metrics.stop()


def test_a_busy_metrics_port_does_not_fail_training():
    import socket

    from quranft.trainer.metrics import TrainingMetrics

    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        metrics = TrainingMetrics({"namespace": "ns", "run": "r"}, busy)
        assert metrics.start() == 0  # no endpoint, no exception
        metrics.stop()
