"""Helpers for end-to-end runs of the real tiny trainer on the embedded cluster (the CPU-stub example): its
training pods, their logs and the progress and resume lines in them."""
from __future__ import annotations

import json
import re
from pathlib import Path

from kubernetes import client

from quranft.trainer.metrics import PROGRESS_PREFIX

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "manifests" / "examples" / "cpu-stub-ctc.yaml"
RESUMING = re.compile(r"train: resuming from \S+ \(step (\d+)\)")


def progress_steps(log: str) -> list[int]:
    return [json.loads(line[len(PROGRESS_PREFIX):])["step"] for line in log.splitlines()
            if line.startswith(PROGRESS_PREFIX)]


def train_pods(env, name: str) -> list:
    jobs = env.jobs(name, "train")
    if not jobs:
        return []
    return env.core.list_namespaced_pod(env.ns, label_selector=f"job-name={jobs[0].metadata.name}").items


def pod_log(env, pod: str) -> str:
    try:
        return env.core.read_namespaced_pod_log(pod, env.ns)
    except client.ApiException:
        return ""


def training_past(env, name: str, step: int, demo, demo_log: Path):
    """A predicate for env.wait: (pod, last step) once a running training pod has logged `step` or more; fails
    at once if the `quranft demo` process driving the run has exited."""
    def check():
        for pod in train_pods(env, name):
            if pod.status.phase == "Running" and pod.metadata.deletion_timestamp is None:
                steps = progress_steps(pod_log(env, pod.metadata.name))
                if steps and steps[-1] >= step:
                    return pod, steps[-1]
        assert demo.poll() is None, demo_log.read_text()[-4000:]
        return None
    return check


def resumed_pod(env, name: str, gone_uids, demo, demo_log: Path):
    """A predicate for env.wait: (pod name, log) once a training pod other than `gone_uids` logged that it
    resumed from a checkpoint and made progress."""
    def check():
        for pod in train_pods(env, name):
            if pod.metadata.uid not in gone_uids:
                log = pod_log(env, pod.metadata.name)
                if RESUMING.search(log) and progress_steps(log):
                    return pod.metadata.name, log
        assert demo.poll() is None, demo_log.read_text()[-4000:]
        return None
    return check
