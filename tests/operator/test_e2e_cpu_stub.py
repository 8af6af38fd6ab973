"""End to end on the embedded cluster: `quranft demo` with the real tiny trainer and benchmark.

The CPU-stub CTC example must reach Succeeded with verdict `improvement` over the untrained tiny base
model; the hybrid example must reach a verdict."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.mark.parametrize("example,verdicts", [
    ("cpu-stub-ctc.yaml", {"improvement"}),
    ("cpu-stub-hybrid.yaml", {"improvement", "neutral", "regression"}),
])
def test_demo_reaches_a_verdict(cluster, namespace, example, verdicts):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(ROOT / d) for d in ("operator", "trainer", "benchmark")))
    proc = subprocess.run([sys.executable, "-m", "quranft.cli", "demo", "--namespace", namespace,
                           "--example", str(ROOT / "manifests" / "examples" / example), "--timeout", "900"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    print(proc.stdout[-6000:], proc.stderr[-3000:])
    assert proc.returncode == 0
    verdict = next(line.split("verdict=")[1].split()[0] for line in proc.stdout.splitlines() if "verdict=" in line)
    assert verdict in verdicts
