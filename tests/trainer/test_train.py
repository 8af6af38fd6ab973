"""Training the tiny model on the synthetic set: ctcOnly and hybrid, outputs, metrics, resume and SIGTERM."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import socket
import tarfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from fixtures_model import (cli_command, prepared_workspace, start_cli, synth_112, wait_for,  # noqa: F401
                            write_config, run_config)
from quranft.trainer.checkpoints import latest_checkpoint, list_checkpoints, remove_stale_temps
from quranft.contract.config import RunConfig
from quranft.trainer.metrics import PROGRESS_PREFIX

LOSS_LINE = re.compile(r'^quranft_train_loss\{kind="total",namespace="tests",run="([^"]+)"\} (\S+)$', re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ctc_transcripts(model, paths: list[str]) -> list[str]:
    model.change_decoding_strategy(decoder_type="ctc", verbose=False)
    hyps = model.transcribe(paths, batch_size=4, verbose=False)
    return [h if isinstance(h, str) else h.text for h in hyps]


def progress_docs(lines) -> list[dict]:
    return [json.loads(line[len(PROGRESS_PREFIX):]) for line in lines if line.startswith(PROGRESS_PREFIX)]


class LineSink(io.TextIOBase):
    """stdout as a list of lines, interleaved with the trainer's log lines (same thread)."""

    def __init__(self, lines: list[str]):
        self.lines, self._partial = lines, ""

    def write(self, text: str) -> int:
        *done, self._partial = (self._partial + text).split("\n")
        self.lines.extend(done)
        return len(text)


class Scraper(threading.Thread):
    """Scrapes /metrics over HTTP while training runs in this process."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.losses: list[float] = []
        self.pages: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                page = urllib.request.urlopen(self.url, timeout=2).read().decode()
            except OSError:
                page = ""
            if m := LOSS_LINE.search(page):
                self.pages.append(page)
                if not self.losses or self.losses[-1] != float(m.group(2)):
                    self.losses.append(float(m.group(2)))
            self.done.wait(0.3)


@pytest.fixture(scope="module")
def ctc_run(prepared_workspace, synth_112):
    """One in-process ctcOnly run (30 steps), scraped over HTTP; the RNNT loss and joint must never run.
    `lines` holds the log and the stdout (progress) lines in order."""
    from nemo.collections.asr.losses.rnnt import RNNTLoss
    from nemo.collections.asr.modules import RNNTJoint

    from quranft.trainer.train import train

    def forbidden(*_a, **_k):
        raise AssertionError("ctcOnly must not call the RNNT loss or joint")

    port = free_port()
    doc = run_config(prepared_workspace, synth_112 / "dataset", "ctc", maxSteps=30)
    doc["metrics"]["port"] = port
    cfg = RunConfig.model_validate(doc)
    scraper = Scraper(port)
    scraper.start()
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(LineSink(lines)):
        mp.setattr(RNNTLoss, "forward", forbidden)
        mp.setattr(RNNTJoint, "forward", forbidden)
        summary = train(cfg, log=lines.append)
    scraper.done.set()
    scraper.join()
    return cfg, summary, scraper, lines


def test_ctc_only_trains_and_writes_the_contract_outputs(ctc_run):
    cfg, summary, _, _ = ctc_run
    run_dir = cfg.run_dir
    assert summary["ok"] and summary["stage"] == "train" and summary["step"] == 30
    assert summary["resumedFromStep"] is None
    assert Path(summary["modelPath"]) == run_dir / "model.nemo"
    assert summary["sizeBytes"] == (run_dir / "model.nemo").stat().st_size
    assert re.fullmatch(r"[0-9a-f]{64}", summary["sha256"])
    assert 0 <= summary["valWer"] <= 10 and summary["finalLoss"] > 0
    meta = json.loads((run_dir / "training_metadata.json").read_text())
    assert meta["config"]["training"]["mode"] == "ctcOnly"
    assert meta["parameters"]["trainable"] < meta["parameters"]["total"]  # RNNT decoder frozen by default
    assert meta["data"]["trainSamples"] == 8 and meta["data"]["valSamples"] == 4
    assert meta["data"]["stats"]["train"]["samples"] == 8
    assert set(meta["finalLosses"]) == {"total", "ctc"}  # no RNNT loss in ctcOnly
    assert meta["versions"]["torch"] and meta["versions"]["nemo_toolkit"] and meta["wallTimeSeconds"] > 0
    progress = json.loads((run_dir / "progress.json").read_text())
    assert progress["step"] == 30 and progress["maxSteps"] == 30 and progress["lastCheckpointStep"] == 30
    assert [s for s, _ in list_checkpoints(run_dir / "checkpoints")] == [20, 30]  # keeps the newest two


def test_progress_lines_name_each_checkpoint_as_soon_as_it_is_complete(ctc_run):
    _, _, _, lines = ctc_run
    docs = progress_docs(lines)
    assert docs and all("lastCheckpointStep" not in d for d in docs if d["step"] < 10)  # none saved yet
    assert all(d.get("lastCheckpointStep", 0) <= d["step"] for d in docs)
    for saved in (10, 20, 30):  # checkpointEveryNSteps=10: reported on the step that saved it, not later
        at = next(i for i, line in enumerate(lines) if line.endswith(f"step-{saved:08d}.ckpt"))
        after = progress_docs(lines[at:])
        assert after[0]["step"] == saved and after[0]["lastCheckpointStep"] == saved, after[:2]


def test_validation_reports_ctc_wer_in_ctc_only_mode(ctc_run):
    cfg, summary, scraper, _ = ctc_run
    assert summary["valWer"] is not None
    assert any('quranft_val_wer{namespace="tests",run="ctc"}' in page for page in scraper.pages)


def test_prometheus_endpoint_shows_a_falling_loss(ctc_run):
    _, _, scraper, _ = ctc_run
    page = scraper.pages[-1]
    for name in ("quranft_learning_rate", "quranft_global_step", "quranft_max_steps", "quranft_samples_per_second",
                 "quranft_epoch", 'quranft_train_loss{kind="ctc"'):
        assert name in page
    losses = scraper.losses
    assert len(losses) >= 4, losses
    assert max(losses[-3:]) < min(losses[:2]), losses


def test_model_nemo_restores_and_transcribes(ctc_run, synth_112):
    from nemo.collections.asr.models import ASRModel, EncDecHybridRNNTCTCBPEModel

    cfg, *_ = ctc_run
    model = ASRModel.restore_from(str(cfg.run_dir / "model.nemo"), map_location="cpu")
    assert type(model) is EncDecHybridRNNTCTCBPEModel  # the ctcOnly mixin is not baked into the file
    wavs = sorted(str(p) for p in (synth_112 / "benchmark").glob("*.wav"))[:3]
    texts = ctc_transcripts(model, wavs)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)


def test_hybrid_mode_uses_rnnt_and_ctc_losses(prepared_workspace, synth_112):
    from quranft.trainer.train import train

    doc = run_config(prepared_workspace, synth_112 / "dataset", "hybrid", mode="hybrid", maxSteps=4,
                     valCheckInterval=4, ctcWeight=0.3, freeze={"encoderLayers": 1, "rnntDecoder": False},
                     halfPrecisionWeights=True)
    cfg = RunConfig.model_validate(doc)
    summary = train(cfg, log=lambda _: None)
    assert summary["ok"] and summary["step"] == 4 and summary["valWer"] is not None
    meta = json.loads((cfg.run_dir / "training_metadata.json").read_text())
    assert set(meta["finalLosses"]) == {"total", "ctc", "rnnt"}
    assert meta["config"]["training"]["ctcWeight"] == 0.3
    assert meta["parameters"]["trainable"] > 0.7 * meta["parameters"]["total"]  # RNNT decoder trained too

    import torch
    from nemo.collections.asr.models import ASRModel

    restored = ASRModel.restore_from(summary["modelPath"], map_location="cpu")
    assert restored.cfg.aux_ctc.ctc_loss_weight == 0.3
    with tarfile.open(summary["modelPath"]) as tar:  # halfPrecisionWeights: fp16 tensors in the file
        member = next(m for m in tar.getmembers() if m.name.endswith("model_weights.ckpt"))
        weights = torch.load(io.BytesIO(tar.extractfile(member).read()), map_location="cpu")
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float16}


def test_latest_checkpoint_skips_temp_and_damaged_files(tmp_path):
    import torch

    good = tmp_path / "step-00000010.ckpt"
    torch.save({"global_step": 10}, good)
    (tmp_path / ".step-00000020.ckpt.tmp-123").write_bytes(b"half written")
    (tmp_path / "step-00000030.ckpt").write_bytes(good.read_bytes()[:100])  # truncated after a rename
    assert latest_checkpoint(tmp_path) == (10, good)
    assert latest_checkpoint(tmp_path / "missing") is None


def test_stale_temp_checkpoints_are_removed_and_nothing_else(tmp_path):
    ours = tmp_path / f".step-00000030.ckpt.tmp-{os.getpid()}"  # this process's own write in progress
    keep = [tmp_path / "step-00000010.ckpt", tmp_path / "notes.txt", ours]
    stale = [tmp_path / ".step-00000020.ckpt.tmp-123", tmp_path / ".step-00000040.ckpt.tmp-9"]
    for path in keep + stale:
        path.write_bytes(b"x")
    assert sorted(remove_stale_temps(tmp_path)) == sorted(stale)
    assert sorted(tmp_path.iterdir()) == sorted(keep)
    assert remove_stale_temps(tmp_path / "missing") == []


def _progress_step(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "progress.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return 0


def test_resume_after_sigkill_continues_from_the_saved_step(prepared_workspace, synth_112, tmp_path):
    doc = run_config(prepared_workspace, synth_112 / "dataset", "killed", maxSteps=40, checkpointEveryNSteps=5,
                     valCheckInterval=100)
    config = write_config(tmp_path / "cfg.json", doc)
    cfg = RunConfig.model_validate(doc)
    ckpts = cfg.run_dir / "checkpoints"
    proc = start_cli("train", "--config", str(config), log=tmp_path / "first.log")
    try:
        wait_for(lambda: any(s >= 10 for s, _ in list_checkpoints(ckpts)), 600, proc, "a step-10 checkpoint")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    saved = latest_checkpoint(ckpts)[0]
    assert 10 <= saved < 40 and not (cfg.run_dir / "model.nemo").exists()

    term = tmp_path / "term.json"
    proc = start_cli("train", "--config", str(config), "--termination-log", str(term), log=tmp_path / "second.log")
    assert proc.wait(600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    summary = json.loads(term.read_text())
    assert summary["resumedFromStep"] >= saved and summary["step"] == 40
    log = (tmp_path / "second.log").read_text()
    first_step = int(re.search(r'QURANFT_PROGRESS \{"step":(\d+)', log).group(1))
    assert first_step > saved  # no step before the checkpoint was trained again
    # The resumed run reports the checkpoint it started from before it saves a new one.
    assert progress_docs(log.splitlines())[0]["lastCheckpointStep"] == summary["resumedFromStep"]


def test_sigterm_saves_a_checkpoint_and_exits_143(prepared_workspace, synth_112, tmp_path):
    doc = run_config(prepared_workspace, synth_112 / "dataset", "preempted", maxSteps=5000,
                     checkpointEveryNSteps=1000, valCheckInterval=1000)
    config = write_config(tmp_path / "cfg.json", doc)
    run_dir = RunConfig.model_validate(doc).run_dir
    term = tmp_path / "term.json"
    proc = start_cli("train", "--config", str(config), "--termination-log", str(term), log=tmp_path / "train.log")
    try:
        wait_for(lambda: _progress_step(run_dir) >= 3, 600, proc, "training progress")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 143, (tmp_path / "train.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    step, _ = latest_checkpoint(run_dir / "checkpoints")
    assert step >= 3  # nothing was due before step 1000: this one was written on SIGTERM
    last = progress_docs((tmp_path / "train.log").read_text().splitlines())[-1]
    assert last["lastCheckpointStep"] == step  # the pod's last line names the checkpoint the retry uses
    summary = json.loads(term.read_text())
    assert summary["ok"] is False and summary["reason"] == "Preempted" and summary["stage"] == "train"
    assert not (run_dir / "model.nemo").exists()


ACCEPTANCE_STEPS = 800  # 44/44 exact at 800 steps here; the issue author measured 1,500 steps ≈ 85 s idle


@pytest.mark.slow
def test_acceptance_tiny_ctc_only_reproduces_the_training_verses(tmp_path):
    """Issue 3: synth-data for surahs 1, 112, 113, 114 -> prepare -> tiny ctcOnly -> greedy CTC transcripts
    of >= 80 % of the training clips equal their verse text after normalisation.
    Timing is reported by scripts/bench_tiny_train.py, not asserted here."""
    from nemo.collections.asr.models import ASRModel

    from fixtures_model import ensure_espeak
    from quranft.benchmark.normalize import normalize_arabic
    from quranft.trainer.prepare import prepare
    from quranft.trainer.synth import write_synth_data
    from quranft.trainer.train import train

    ensure_espeak()
    started = time.monotonic()
    write_synth_data(tmp_path / "synth", [1, 112, 113, 114], log=lambda _: None)
    doc = run_config(tmp_path / "ws", tmp_path / "synth" / "dataset", "acceptance", maxSteps=ACCEPTANCE_STEPS,
                     warmupSteps=50, valCheckInterval=400, checkpointEveryNSteps=400)
    doc["metrics"]["progressIntervalSeconds"] = 30
    cfg = RunConfig.model_validate(doc)
    prepare(cfg, log=lambda _: None)
    summary = train(cfg, log=lambda _: None)
    print(f"acceptance: synth+prepare+train {time.monotonic() - started:.0f}s, final loss {summary['finalLoss']}")

    rows = [json.loads(line) for line in (cfg.data_dir / "train_manifest.json").read_text().splitlines()]
    assert len(rows) == 44  # 22 verses x 2 training voices
    model = ASRModel.restore_from(summary["modelPath"], map_location="cpu")
    texts = ctc_transcripts(model, [r["audio_filepath"] for r in rows])
    exact = sum(normalize_arabic(t) == normalize_arabic(r["text"]) for t, r in zip(texts, rows))
    assert exact >= 0.8 * len(rows), list(zip(texts, (r["text"] for r in rows)))
