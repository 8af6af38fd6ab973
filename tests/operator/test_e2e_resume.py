"""End to end on the embedded cluster: a training pod killed mid-run resumes from its checkpoint.

`quranft demo` runs the CPU-stub CTC example (real tiny trainer) with a checkpoint every 20 steps; once
training passes step 40 the test deletes the training pod (SIGTERM -> checkpoint, exit 143). The Job's
next pod must resume from that checkpoint, not from step 0, and the run must still reach its verdict."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from clusterkit import Env
from trainkit import EXAMPLE, RESUMING, ROOT, pod_log, progress_steps, resumed_pod, train_pods, training_past

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

EVERY, KILL_AFTER = 20, 40


def resume_example(path: Path) -> str:
    """The cpu-stub-ctc example with frequent checkpoints; returns the run's name."""
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    run = next(d for d in docs if d["kind"] == "QuranFineTune")
    run["spec"]["training"].update(maxSteps=200, checkpointEveryNSteps=EVERY)
    path.write_text(yaml.safe_dump_all(docs))
    return run["metadata"]["name"]


def test_killed_training_pod_resumes_from_its_checkpoint(cluster, namespace, tmp_path):
    example = tmp_path / "resume.yaml"
    name = resume_example(example)
    env = Env(cluster, namespace, tmp_path)
    demo_log = tmp_path / "demo.log"
    pyenv = dict(os.environ, PYTHONPATH=os.pathsep.join(str(ROOT / d) for d in ("contract", "operator", "trainer", "benchmark")))
    with open(demo_log, "w") as out:
        demo = subprocess.Popen([sys.executable, "-m", "quranft.cli", "demo", "--namespace", namespace,
                                 "--example", str(example), "--timeout", "780"],
                                env=pyenv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        first, kill_step = env.wait(training_past(env, name, KILL_AFTER, demo, demo_log), 600,
                                    f"training past step {KILL_AFTER}", interval=2)
        env.core.delete_namespaced_pod(first.metadata.name, namespace)
        print(f"deleted training pod {first.metadata.name} at step {kill_step}")

        try:
            second, log = env.wait(resumed_pod(env, name, {first.metadata.uid}, demo, demo_log), 240,
                                   "a new training pod resuming from a checkpoint", interval=2)
        except AssertionError:
            for job in env.jobs(name, "train"):
                print("job status:", job.status)
            for pod in train_pods(env, name):
                print(pod.metadata.name, pod.status.phase, pod.metadata.deletion_timestamp,
                      pod.status.container_statuses, pod_log(env, pod.metadata.name)[-1500:])
            raise
        resumed_step = int(RESUMING.search(log).group(1))
        first_step = progress_steps(log)[0]
        print(f"new pod {second}: resumed from step {resumed_step}, first progress step {first_step}")
        assert resumed_step >= max(EVERY, kill_step - EVERY)
        assert first_step >= resumed_step

        assert demo.wait(timeout=800) == 0, demo_log.read_text()[-4000:]
        obj = env.get(name)
        status = obj["status"]
        print(demo_log.read_text()[-3000:])
        assert status["phase"] == "Succeeded" and status.get("verdict")
        assert int(status.get("resumeCount") or 0) >= 1
        # Copied from the trainer's lastCheckpointStep and kept once set; no checkpoint exists before step EVERY.
        assert int((status.get("lastCheckpoint") or {}).get("step") or 0) >= EVERY, status.get("lastCheckpoint")
        assert len(env.jobs(name, "train")) == 1
    finally:
        if demo.poll() is None:
            demo.terminate()
            demo.wait(30)
        env.close()
