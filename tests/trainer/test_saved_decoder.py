"""The decoder head a model.nemo ships with: a ctcOnly run's file restores (in a fresh process) on its CTC head
with greedy decoding and transcribes as the trained model did in-process; a hybrid export keeps RNNT."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures_model import REPO, cli_env, prepared_workspace, run_config, synth_112  # noqa: F401
from quranft.contract.config import RunConfig

MARK = "SAVED-DECODER "

# Runs in a fresh interpreter: what NeMo restores by itself, then what the benchmark's loader makes of it.
FRESH = f"""
import json, sys
import torch
from nemo.collections.asr.models import ASRModel
from quranft.benchmark.corpus import decode_audio
from quranft.benchmark.transcribe import Transcriber

torch.set_num_threads(1)
path, wavs = sys.argv[1], sys.argv[2:]
stock = ASRModel.restore_from(path, map_location="cpu")
model = Transcriber(path, device="cpu", batch_size=4, head=None)
print({MARK!r} + json.dumps({{
    "stock_class": type(stock).__name__, "stock_cur_decoder": stock.cur_decoder,
    "stock_decoder_type": stock.cfg.get("decoder_type"),
    "stock_ctc_strategy": stock.cfg.aux_ctc.decoding.strategy,
    "saved_head": model.saved_head, "cur_decoder": model.model.cur_decoder,
    "ctc_strategy": model.model.cfg.aux_ctc.decoding.strategy,
    "ctc_decoding": type(model.model.ctc_decoding).__name__,
    "precision": model.info.precision, "compute_dtype": model.info.compute_dtype,
    "texts": model.transcribe([decode_audio(w) for w in wavs]),
}}))
"""


def _fresh_process(path: Path, wavs: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", FRESH, str(path), *wavs], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env=cli_env(OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith(MARK))
    return json.loads(line[len(MARK):])


@pytest.mark.slow
def test_ctc_only_model_restores_in_a_fresh_process_on_its_ctc_head(prepared_workspace, synth_112, monkeypatch):
    import quranft.trainer.train as trainmod

    exported = {}
    real_export = trainmod.export_model

    def keep(model, path, half, head="rnnt"):
        real_export(model, path, half, head)
        exported.update(model=model, head=head)

    monkeypatch.setattr(trainmod, "export_model", keep)
    # A near-zero learning rate: the run goes through every step of a ctcOnly run and its export, but the
    # weights stay close to the random init, whose CTC head answers with text (a few real steps teach it to
    # answer blank, and equal blanks would prove nothing).
    doc = run_config(prepared_workspace, synth_112 / "dataset", "ctc-saved", maxSteps=2, valCheckInterval=2,
                     checkpointEveryNSteps=2, warmupSteps=1, learningRate=1e-7, halfPrecisionWeights=True)
    summary = trainmod.train(RunConfig.model_validate(doc), log=lambda _: None)
    assert exported["head"] == "ctc"

    wavs = sorted(str(p) for p in (synth_112 / "benchmark").glob("*.wav"))[:4]
    model = exported["model"]  # the trained model as it was written: fp16, on its CTC head
    assert model.cur_decoder == "ctc"
    in_process = [h.text for h in model.transcribe(wavs, batch_size=4, verbose=False)]

    fresh = _fresh_process(Path(summary["modelPath"]), wavs)
    # NeMo 3.0 itself always restores a hybrid model on RNNT; the file records the CTC choice ...
    assert fresh["stock_class"] == "EncDecHybridRNNTCTCBPEModel" and fresh["stock_cur_decoder"] == "rnnt"
    assert fresh["stock_decoder_type"] == "ctc" and fresh["stock_ctc_strategy"] == "greedy_batch"
    # ... and restoring through the benchmark's loader puts NeMo on that head with greedy CTC decoding.
    assert fresh["saved_head"] == "ctc" and fresh["cur_decoder"] == "ctc"
    assert fresh["ctc_strategy"] == "greedy_batch" and fresh["ctc_decoding"] == "CTCBPEDecoding"
    assert fresh["precision"] == "fp16" and fresh["compute_dtype"] == "fp16"
    assert all(in_process) and len(set(in_process)) > 1, in_process
    assert fresh["texts"] == in_process


def test_a_hybrid_export_keeps_rnnt_as_the_saved_head(tmp_path):
    from nemo.collections.asr.models import ASRModel

    from quranft.benchmark.transcribe import Transcriber
    from quranft.trainer.tiny import build_tiny_model
    from quranft.trainer.train import export_model

    model = build_tiny_model()
    model.change_decoding_strategy(decoder_type="ctc", verbose=False)  # whatever it was left on
    path = tmp_path / "model.nemo"
    export_model(model, path, half=False, head="rnnt")
    restored = ASRModel.restore_from(str(path), map_location="cpu")
    assert restored.cur_decoder == "rnnt" and restored.cfg.decoder_type == "rnnt"
    assert restored.cfg.decoding.strategy == "greedy_batch"
    loaded = Transcriber(str(path), device="cpu", head=None)
    assert loaded.saved_head == "rnnt" and loaded.model.cur_decoder == "rnnt" and loaded.info.precision == "fp32"
