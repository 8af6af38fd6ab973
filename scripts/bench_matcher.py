"""Verse-matching throughput: transcripts per second on one core against the full Quran.

Transcripts are runs of 1-5 consecutive verses drawn from all 6,236 (a third with a basmala prefix),
with character-level ASR-like noise, so the figure covers retrieval and run alignment, not just exact hits.

    python scripts/bench_matcher.py [--n 2000] [--noise 0.08] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmark"))

ARABIC_LETTERS = "ابتثجحخدذرزسشصضطظعغفقكلمنهوي"


def noisy(text: str, rate: float, rng: random.Random) -> str:
    out = []
    for ch in text:
        r = rng.random()
        if r < rate / 3:
            continue  # deletion
        if r < 2 * rate / 3:
            out.append(rng.choice(ARABIC_LETTERS))  # substitution
            continue
        out.append(ch)
        if r < rate:
            out.append(rng.choice(ARABIC_LETTERS))  # insertion
    return "".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--noise", type=float, default=0.08)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    # Matching is single-threaded; CPU time of this process is one core's time even on a busy machine.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

    from quranft.benchmark.matcher import VerseMatcher
    from quranft.benchmark.quran_text import load_quran
    from quranft.benchmark.scoring import score_sequence

    t0 = time.perf_counter()
    quran = load_quran()
    matcher = VerseMatcher(quran)
    build = time.perf_counter() - t0

    rng = random.Random(args.seed)
    n_verses = len(quran.refs)
    cases = []
    for _ in range(args.n):
        length = rng.randint(1, 5)
        start = rng.randrange(n_verses)
        surah = quran.refs[start][0]
        end = start
        while end + 1 < n_verses and end - start + 1 < length and quran.refs[end + 1][0] == surah:
            end += 1
        text = " ".join(quran.texts[start : end + 1])
        if quran.opens_with_basmala(start) or rng.random() < 0.1:
            text = f"{quran.basmala} {text}"
        cases.append((list(quran.refs[start : end + 1]), noisy(text, args.noise, rng)))

    matcher.predict(cases[0][1])  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    predictions = [matcher.predict(t) for _, t in cases]
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    scores = [score_sequence(e, p) for (e, _), p in zip(cases, predictions)]
    recall = sum(s.recall for s in scores) / len(scores)
    seq = sum(s.sequence_accuracy for s in scores) / len(scores)
    print(f"index build: {build:.2f} s (6,236 verses)")
    print(f"transcripts: {len(cases)}, noise {args.noise:.0%}, 1-5 verses each")
    print(f"throughput: {len(cases) / cpu:.0f} transcripts/s per CPU-second on one core "
          f"({cpu / len(cases) * 1e3:.2f} ms CPU each; wall-clock {len(cases) / elapsed:.0f}/s)")
    print(f"recall on synthetic transcripts: {recall:.3f}, sequence accuracy: {seq:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
