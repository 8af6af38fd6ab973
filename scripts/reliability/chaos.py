#!/usr/bin/env python
"""Operator chaos at full size: SIGKILL the operator --kills times at seeded random moments across
prepare -> train -> benchmark -> verdict (stub stages), restarting it each time, and print
Jobs per stage per generation (must be 1), verdicts n/n and the max overrun vs. a normal run.

    python scripts/reliability/chaos.py --kills 50 --seed 7

Uses the running embedded cluster (`quranft cluster up`) or starts one. Exit 1 when a check fails.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import _paths  # noqa: F401  (sys.path)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--seed", type=int, default=20260707)
    p.add_argument("--max-in-flight", type=int, default=2, help="runs in flight at once")
    p.add_argument("--overrun-limit", type=float, default=30.0,
                   help="seconds a run may exceed the normal time, per kill it lived through")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)

    from chaoslib import Tracker, run_chaos
    from clusterkit import scratch_env, script_cluster

    t0 = time.monotonic()
    with script_cluster() as cluster, scratch_env(cluster, "chaos") as env:
        with Tracker(cluster, env.ns) as tracker:
            report = run_chaos(env, tracker, seed=args.seed, kills=args.kills, max_in_flight=args.max_in_flight,
                               timeout=120 + 60 * args.kills)
            report.overrun_per_kill_limit = args.overrun_limit
    print(report.summary())
    print(f"  wall time {time.monotonic() - t0:.0f} s; operator log: {env.log_path}")
    if args.json:
        args.json.write_text(json.dumps({"seed": args.seed, "kills": args.kills, "verdicts": report.verdicts,
                                         "durations": report.durations, "maxOverrun": report.max_overrun,
                                         "killsDuring": report.kills_during, "overBudget": report.over_budget,
                                         "referenceSeconds": report.reference_seconds,
                                         "jobs": {r: dict(c) for r, c in report.jobs.items()}}, indent=2))
    ok = (not report.duplicates and not report.missing_stages
          and all(v == "Succeeded" for v in report.verdicts.values())
          and not report.over_budget)
    print("RESULT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
