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
