#!/usr/bin/env python3
"""Time per test area (tests/<area>/) from pytest's JUnit XML files, and one closing count line.

    python scripts/test_areas.py A.xml [B.xml ...] [--wall SECONDS]
"""
from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--wall", type=int, help="wall-clock seconds of the whole run")
    args = parser.parse_args()

    seconds: dict[str, float] = defaultdict(float)
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for report in args.reports:
        if not report.is_file():
            print(f"test areas: no report {report} (that pytest run did not finish)")
            counts["failed"] += 1
            continue
        for case in ET.parse(report).getroot().iter("testcase"):
            # classname "tests.operator.test_status" -> area "operator"
            parts = (case.get("classname") or "").split(".")
            area = parts[1] if len(parts) > 2 and parts[0] == "tests" else "other"
            seconds[area] += float(case.get("time") or 0)
            if case.find("failure") is not None or case.find("error") is not None:
                counts["failed"] += 1
            elif case.find("skipped") is not None:
                counts["skipped"] += 1
            else:
                counts["passed"] += 1
    print("time per test area (sum of test durations; the two pytest runs overlap):")
    for area, total in sorted(seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {area:<12} {total:8.1f} s")
    if args.wall is not None:
        print(f"  {'wall clock':<12} {args.wall:8d} s")
    line = f"{counts['passed']} passed, {counts['failed']} failed"
    if counts["skipped"]:
        line += f", {counts['skipped']} skipped"
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
