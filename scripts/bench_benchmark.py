#!/usr/bin/env python3
"""Benchmark-stage speed (issue 11, item 5): clips/s, RTFx and the matcher's share of the time, per head and
batch size, for the tiny model on CPU over the team's 44 real recitation clips (shared/corpus).

The tiny model is untrained, so its transcripts are noise: the matcher then works hardest (it falls back to
its full scan), which makes the matcher's share an upper bound. Prints figures; asserts nothing.
Usage: PYTHONPATH=contract:operator:trainer:benchmark python scripts/bench_benchmark.py [--corpus DIR] [--batch 1,4,16]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus" / "recitations-v1")
    parser.add_argument("--batch", default="1,4,16", help="batch sizes of the throughput pass")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--latency-samples", type=int, default=16)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))

    from quranft.benchmark.corpus import load_corpus
    from quranft.benchmark.matcher import VerseMatcher
    from quranft.benchmark.runner import decode_clips, evaluate, latency_sample
    from quranft.benchmark.transcribe import Transcriber

    t0 = time.perf_counter()
    corpus = load_corpus(args.corpus)
    clips = decode_clips(corpus.samples)
    decodable = [c for c in clips if c.error is None]
    t_decode = time.perf_counter() - t0
    t0 = time.perf_counter()
    matcher = VerseMatcher()
    t_index = time.perf_counter() - t0
    audio_s = sum(c.seconds for c in decodable)
    print(f"corpus: {len(decodable)} clips, {audio_s:.1f} s of audio, decoded in {t_decode:.1f} s; "
          f"verse index built in {t_index:.1f} s; {os.cpu_count()} CPU(s)")
    ids = latency_sample([c.sample.id for c in decodable], args.latency_samples, seed=0)
    model = Transcriber(args.model, device="cpu")
    print(f"model: {model.info.model_class}, heads {model.heads}, {model.info.size_bytes / 1e6:.1f} MB")
    print(f"{'head':>5} {'batch':>5} {'clips/s':>8} {'RTFx':>7} {'matcher %':>9} {'p50 latency s':>13} "
          f"{'recall':>6}")
    for head in model.heads:
        model.use_head(head)
        for batch in (int(b) for b in args.batch.split(",")):
            model.batch_size = batch
            run = evaluate(model, clips, matcher, "bench", head=head, latency_ids=ids)
            t = run["throughput"]
            print(f"{head:>5} {batch:>5} {t['clipsPerSecond']:>8.2f} {t['rtfx']:>7.1f} "
                  f"{100 * t['matcherShare']:>8.1f}% {run['p50_latency']:>13.3f} {run['recall']:>6.3f}")
    model.close()


if __name__ == "__main__":
    main()
