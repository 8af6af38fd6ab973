#!/usr/bin/env python3
"""Figures for the CPU stub's acceptance target (issue 3): synth-data for surahs 1,112,113,114 -> prepare ->
tiny ctcOnly training -> share of training clips whose greedy CTC transcript equals the verse.

Target: training under 5 minutes on 2 cores, >= 80 % exact. Prints figures; asserts nothing.
Usage: PYTHONPATH=contract:operator:trainer:benchmark python scripts/bench_tiny_train.py [--steps 800] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--surahs", default="1,112,113,114")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from quranft.benchmark.normalize import normalize_arabic
    from quranft.contract.config import RunConfig
    from quranft.trainer.prepare import prepare
    from quranft.trainer.synth import parse_surahs, write_synth_data
    from quranft.trainer.train import train

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-tiny-"))
    t0 = time.monotonic()
    write_synth_data(out / "synth", parse_surahs(args.surahs), log=lambda _: None)
    t_synth = time.monotonic() - t0
    cfg = RunConfig.model_validate({
        "run": {"name": "bench", "workspace": str(out / "ws")},
        "data": {"source": "local", "localPath": str(out / "synth" / "dataset"), "minDurationSeconds": 0.3},
        "training": {"baseModel": "tiny", "mode": "ctcOnly", "maxSteps": args.steps, "batchSize": 4,
                     "learningRate": 3e-3, "warmupSteps": 50, "valCheckInterval": args.steps,
                     "checkpointEveryNSteps": args.steps, "freeze": {"encoderLayers": 0}},
        "metrics": {"port": 0, "progressIntervalSeconds": 60},
    })
    t0 = time.monotonic()
    prepare(cfg, log=lambda _: None)
    t_prepare = time.monotonic() - t0
    t0 = time.monotonic()
    summary = train(cfg, log=lambda _: None)
    t_train = time.monotonic() - t0

    from nemo.collections.asr.models import ASRModel

    rows = [json.loads(line) for line in (cfg.data_dir / "train_manifest.json").read_text().splitlines()]
    model = ASRModel.restore_from(summary["modelPath"], map_location="cpu")
    model.change_decoding_strategy(decoder_type="ctc", verbose=False)
    hyps = model.transcribe([r["audio_filepath"] for r in rows], batch_size=8, verbose=False)
    exact = sum(normalize_arabic(h.text) == normalize_arabic(r["text"]) for h, r in zip(hyps, rows))
    meta = json.loads((cfg.run_dir / "training_metadata.json").read_text())
    print(json.dumps({
        "cpus": os.cpu_count(), "loadAverage": os.getloadavg(), "steps": args.steps,
        "synthSeconds": round(t_synth, 1), "prepareSeconds": round(t_prepare, 1),
        "trainSeconds": round(t_train, 1), "stepsPerSecond": round(args.steps / t_train, 2),
        "parameters": meta["parameters"], "finalLoss": summary["finalLoss"], "valWer": summary["valWer"],
        "trainingClips": len(rows), "exact": exact, "exactShare": round(exact / len(rows), 3),
        "targets": {"trainUnder300s": t_train < 300, "exactAtLeast80pct": exact >= 0.8 * len(rows)},
    }, indent=1))


if __name__ == "__main__":
    main()
