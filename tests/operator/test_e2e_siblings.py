"""End to end on the embedded cluster: the CPU-stub CTC example reaches `improvement`, and a sibling
benchmarks on the same hub-style corpus without preparing it again.

The corpus is synth-data's `benchmark-dataset` (local parquet) given as `spec.benchmark.corpus`, so the
benchmark prepares it through the same streaming `datasets` path as a hub split. The example's run
(`quranft demo`) prepares it into corpora/<hash>/ on the claim; a sibling created once the first is
benchmarking (trained for a few steps only: the point is the corpus, not its verdict) reuses it with 0 bytes
written, and both carry the same corpus content hash (siblings judged on identical clips).
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import yaml
from clusterkit import Env, condition
from kubernetes.client.exceptions import ApiException
from trainkit import EXAMPLE, ROOT

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

STEPS = 20


def siblings(path) -> tuple[str, dict]:
    """The cpu-stub-ctc example as file `path` (its name) + a briefly trained sibling's body."""
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    run = next(d for d in docs if d["kind"] == "QuranFineTune")
    path.write_text(yaml.safe_dump_all(docs))
    second = copy.deepcopy(run)
    second["metadata"] = {"name": "sibling"}
    second["spec"]["training"].update(maxSteps=STEPS, warmupSteps=2, valCheckInterval=STEPS,
                                      checkpointEveryNSteps=STEPS, seed=99)
    return run["metadata"]["name"], second


def test_siblings_share_one_prepared_corpus(cluster, namespace, tmp_path):
    example = tmp_path / "siblings.yaml"
    first, second = siblings(example)
    env = Env(cluster, namespace, tmp_path)
    pyenv = dict(os.environ, PYTHONPATH=os.pathsep.join(str(ROOT / d) for d in ("contract", "operator", "trainer", "benchmark")))
    demo_log = tmp_path / "demo.log"
    with open(demo_log, "w") as out:
        demo = subprocess.Popen([sys.executable, "-m", "quranft.cli", "demo", "--namespace", namespace,
                                 "--example", str(example), "--timeout", "900"],
                                env=pyenv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        def benchmarking():
            try:
                phase = (env.get(first).get("status") or {}).get("phase")
            except ApiException as exc:  # the demo has not applied it yet
                if exc.status != 404:
                    raise
                phase = None
            return phase in ("Benchmarking", "Succeeded", "Failed") or demo.poll() is not None
        env.wait(benchmarking, 700, f"{first} benchmarking", interval=2)
        assert demo.poll() in (None, 0), demo_log.read_text()[-4000:]
        env.create(second)
        assert demo.wait(timeout=900) == 0, demo_log.read_text()[-4000:]
        # The demo stops its operator once the run it follows is done: a fresh one adopts the sibling's Jobs.
        env.start_operator()
        env.wait_phase(second["metadata"]["name"], ("Succeeded", "Failed"), 600)
        a, b = (env.get(n)["status"] for n in (first, second["metadata"]["name"]))
        print(demo_log.read_text()[-2500:])
        print("corpus:", a["benchmark"].get("corpus"), b["benchmark"].get("corpus"))
        assert a["phase"] == b["phase"] == "Succeeded", (a, b)
        assert a["verdict"] == "improvement", a["benchmark"]  # 200 steps beat the untrained tiny model, surely
        assert a["benchmark"]["reason"] == "Improvement" and a["benchmark"]["rule"] == "paired"
        assert condition(env.get(second["metadata"]["name"]), "DataReady")["reason"] == "ReusedFromSibling"
        ca, cb = a["benchmark"]["corpus"], b["benchmark"]["corpus"]
        assert ca["hash"] == cb["hash"] and ca["clips"] == cb["clips"] > 0
        assert ca["reused"] is False and ca["bytesWritten"] > 0
        assert cb["reused"] is True and cb["bytesWritten"] == 0
        for status in (a, b):
            assert set(status["benchmark"]["heads"]) == {"ctc"} and status["benchmark"]["verdictHead"] == "ctc"
            assert status["benchmark"]["leakage"]["exactAudio"] == 0  # held-out voices: nothing leaked
            assert status["benchmark"]["artifact"]["precision"] == "fp32"
    finally:
        if demo.poll() is None:
            demo.terminate()
            demo.wait(30)
        env.close()
