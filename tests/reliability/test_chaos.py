"""Item 1: SIGKILL the operator at seeded random moments across prepare -> train -> benchmark -> verdict.

CI runs a few kills; scripts/reliability/chaos.py runs the full 50 with the same code.
"""
from __future__ import annotations

import json
import os

import pytest
from chaoslib import Tracker, run_chaos

pytestmark = pytest.mark.cluster
KILLS = int(os.environ.get("QURANFT_CHAOS_KILLS", "5"))
# Issue 7: a run finishes within its normal time + 30 s. With two runs in flight a run can live through
# several kills, so the budget is 30 s per kill it lived through (the raw max overrun is printed too).


def test_operator_sigkills_never_duplicate_jobs_and_every_run_reaches_its_verdict(env, seed, tmp_path):
    env.claim()
    with Tracker(env.cluster, env.ns) as tracker:
        report = run_chaos(env, tracker, seed=seed, kills=KILLS)
    print("\n" + report.summary())
    (tmp_path / "chaos-summary.json").write_text(json.dumps({
        "seed": seed, "kills": report.kills, "verdicts": report.verdicts, "durations": report.durations,
        "referenceSeconds": report.reference_seconds, "maxOverrun": report.max_overrun,
        "killsDuring": report.kills_during,
        "jobs": {r: dict(c) for r, c in report.jobs.items()}, "killPhases": dict(report.kill_phases)}, indent=2))
    assert report.duplicates == {}
    assert report.missing_stages == {}
    assert report.verdicts == {r: "Succeeded" for r in report.runs}, {r: tracker.status.get(r) for r in report.runs}
    assert report.over_budget == {}, report.durations
