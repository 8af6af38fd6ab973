"""Verse matching on realistic ASR noise: exact-verse accuracy and transcripts per second on one core.

Clips are runs of 1-5 consecutive verses drawn from all 6,236, made noisy by the seeded generator
`quranft.benchmark.asr_noise` at each level (clean, light, user, heavy: confusions by family, deletions,
insertions, merged and split words, start or end cuts, isti'adha / basmala / closing formula). For each
level the script prints the matcher's fast path next to the old matcher (`matcher_v1`, unchanged from
before issue 13) on the same transcripts, and the full scan (every candidate run scored: what the
matcher accepts by definition) on the first `--full-n` of them.

Exact-verse accuracy: the predicted verses are exactly the expected ones (sequence accuracy).
Throughput: transcripts per CPU-second of this process, single-threaded (rapidfuzz workers=1).

    python scripts/bench_matcher.py [--n 2000] [--full-n 300] [--seed 0] [--levels clean,light,user,heavy]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmark"))


def timed(fn, items):
    """(results, CPU seconds) of fn over items."""
    c0 = time.process_time()
    out = [fn(x) for x in items]
    return out, time.process_time() - c0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="clips per level (fast path and old matcher)")
    ap.add_argument("--full-n", type=int, default=300, help="of those, how many the full scan also matches")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--levels", default="clean,light,user,heavy")
    args = ap.parse_args()
    # Matching is single-threaded; CPU time of this process is one core's time even on a busy machine.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

    from quranft.benchmark.asr_noise import LEVELS, AsrNoise
    from quranft.benchmark.matcher import VerseMatcher
    from quranft.benchmark.matcher_v1 import VerseMatcher as OldMatcher
    from quranft.benchmark.quran_text import load_quran

    t0 = time.process_time()
    quran = load_quran()
    matcher = VerseMatcher(quran)
    build = time.process_time() - t0
    t0 = time.process_time()
    matcher.match_full_scan("قل هو الله احد")  # builds the full-scan table (lazily, on the first scan)
    table = time.process_time() - t0
    old = OldMatcher(quran)
    print(f"index build: {build:.2f} s CPU (6,236 verses, two trigram views); full-scan table {table:.2f} s")
    print(f"clips: {args.n} per level, 1-5 verses each, seed {args.seed}; one core (CPU time)")

    rows, full_rows = [], []
    for level in args.levels.split(","):
        clips = AsrNoise(quran, LEVELS[level], seed=args.seed).sample(args.n)
        transcripts = [c.transcript for c in clips]
        matcher.match(transcripts[0]), old.predict(transcripts[0])  # warm-up
        fast, fast_cpu = timed(matcher.match, transcripts)
        was, old_cpu = timed(old.predict, transcripts)
        sub = transcripts[: args.full_n]
        full, full_cpu = timed(matcher.match_full_scan, sub)

        def accuracy(predicted, upto=None):
            pairs = list(zip(predicted, clips))[:upto]
            return sum(p == c.expected for p, c in pairs) / len(pairs)

        rows.append((level, accuracy([f.verses for f in fast]), accuracy(was),
                     sum(not f.verses for f in fast) / len(fast), sum(not p for p in was) / len(was),
                     sum(f.full_scan for f in fast) / len(fast), len(fast) / fast_cpu, len(was) / old_cpu))
        full_rows.append((level, len(sub), accuracy([f.verses for f in full], len(sub)),
                          accuracy([f.verses for f in fast], len(sub)),
                          sum(f.verses == s.verses for f, s in zip(fast, full) if s.verses),
                          sum(bool(s.verses) for s in full), len(sub) / full_cpu))

    print()
    print("exact-verse accuracy and throughput, fast path (this matcher) vs old matcher, same transcripts")
    print(f"{'level':7} {'accuracy':>9} {'old':>7} {'abstain':>8} {'old':>7} {'fallback':>10} "
          f"{'transcripts/s':>14} {'old':>7}")
    for level, acc, acc_old, abst, abst_old, fallback, tps, tps_old in rows:
        print(f"{level:7} {acc:9.2%} {acc_old:7.2%} {abst:8.2%} {abst_old:7.2%} {fallback:10.1%} "
              f"{tps:14,.0f} {tps_old:7,.0f}")
    print("('fallback': share of clips the fast path handed to the full scan: short, or best anchored "
          "score below min_score + fallback_margin)")
    print()
    print("full scan (every candidate run scored) on the first clips of each level")
    print(f"{'level':7} {'clips':>6} {'accuracy':>9} {'fast path':>10} {'fast = full':>12} {'transcripts/s':>14}")
    for level, n, acc_full, acc_fast, same, accepted, tps in full_rows:
        print(f"{level:7} {n:6} {acc_full:9.2%} {acc_fast:10.2%} {f'{same}/{accepted}':>12} {tps:14,.1f}")
    print("('fast = full': clips the full scan accepts on which the fast path predicts the same verses)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
