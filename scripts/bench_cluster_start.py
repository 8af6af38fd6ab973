"""Cached start-to-ready time of the embedded cluster (target: < 30 s on 2 cores).

Usage: python scripts/bench_cluster_start.py [--runs N]. Uses a throwaway state dir, so a cluster you
already run is not touched; the binaries must be built (tests/cluster/build.sh) or it builds them first,
outside the timing.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from quranft.cluster import binaries, controlplane  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    binaries.ensure_binaries()  # a cold build is not part of the start time
    times = []
    with tempfile.TemporaryDirectory(prefix="quranft-bench-") as tmp:
        controlplane.up(Path(tmp), log=lambda m: None)  # first run creates the certs (cached afterwards)
        controlplane.down(Path(tmp), log=lambda m: None)
        for _ in range(args.runs):
            t0 = time.monotonic()
            controlplane.up(Path(tmp), log=lambda m: None)
            times.append(time.monotonic() - t0)
            controlplane.down(Path(tmp), log=lambda m: None)
    print(f"cluster cached start-to-ready: {statistics.median(times):.1f} s median over {len(times)} run(s) "
          f"(min {min(times):.1f}, max {max(times):.1f}); target < 30 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
