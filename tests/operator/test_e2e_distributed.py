"""End to end on the embedded cluster: distributed training with the real tiny trainer (issue 16).

1. `resources: {nodes: 2, gpus: 0, distributedBackend: gloo}` runs as a 2-pod Indexed Job behind a headless
   Service; the ranks rendezvous at `<job>-0.<service>` (the node agent's per-pod /etc/hosts), train and
   checkpoint. A SIGKILL of rank 1's trainer mid-run fails the group; the operator starts the next attempt
   (`<name>-train-r1`), whose ranks resume from the newest checkpoint, and the run still reaches its verdict.
2. `gpus: 2` in one pod on a 2-GPU node: the node agent hands the pod both devices (CUDA_VISIBLE_DEVICES=0,1),
   the trainer's launcher starts 2 ranks (on this CPU machine: 2 processes over gloo) and the status says
   `worldSize: 2`.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from clusterkit import Env
from kubernetes.client.exceptions import ApiException
from trainkit import EXAMPLE, RESUMING, ROOT, pod_log, progress_steps

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

MULTINODE = ROOT / "manifests" / "examples" / "cpu-stub-multinode.yaml"
INDEX = "batch.kubernetes.io/job-completion-index"
EVERY, KILL_AFTER = 20, 30
RANK_LINE = re.compile(r"train: rank (\d+) of (\d+) \(node (\d+) of (\d+), local rank (\d+) of (\d+)\)")


def example(src: Path, dst: Path, training: dict, resources: dict | None = None) -> str:
    docs = [d for d in yaml.safe_load_all(src.read_text()) if d]
    run = next(d for d in docs if d["kind"] == "QuranFineTune")
    run["spec"]["training"].update(training)
    run["spec"]["resources"].update(resources or {})
    dst.write_text(yaml.safe_dump_all(docs))
    return run["metadata"]["name"]


def start_demo(tmp_path: Path, namespace: str, path: Path, timeout: int) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / "demo.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(ROOT / d) for d in ("contract", "operator", "trainer", "benchmark")))
    with open(log, "w") as out:
        demo = subprocess.Popen([sys.executable, "-m", "quranft.cli", "demo", "--namespace", namespace,
                                 "--example", str(path), "--timeout", str(timeout)],
                                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    return demo, log


def stop(demo: subprocess.Popen) -> None:
    if demo.poll() is None:
        demo.terminate()
        demo.wait(30)


def container_pid(pod) -> int | None:
    """The node agent's container id ends in the pid it exec'd (the trainer's main process)."""
    statuses = pod.status.container_statuses or []
    cid = statuses[0].container_id if statuses else None
    return int(cid.rsplit("-", 1)[1]) if cid and statuses[0].state.running else None


def rank_pods(env: Env, job: str) -> dict[int, object]:
    pods = env.core.list_namespaced_pod(env.ns, label_selector=f"job-name={job}").items
    return {int(p.metadata.annotations[INDEX]): p for p in pods if p.metadata.deletion_timestamp is None}


def test_two_pod_group_rendezvouses_and_restarts_from_its_checkpoint_after_a_rank_is_killed(
        cluster, namespace, tmp_path):
    path = tmp_path / "multinode.yaml"
    name = example(MULTINODE, path, {"maxSteps": 100, "checkpointEveryNSteps": EVERY, "valCheckInterval": 50})
    env = Env(cluster, namespace, tmp_path)
    demo, demo_log = start_demo(tmp_path, namespace, path, 900)
    try:
        first_job = f"{name}-train"

        def both_ranks_past_a_checkpoint():
            assert demo.poll() is None, demo_log.read_text()[-4000:]
            pods = rank_pods(env, first_job)
            if sorted(pods) != [0, 1] or not all(p.status.phase == "Running" for p in pods.values()):
                return None
            steps = progress_steps(pod_log(env, pods[0].metadata.name))
            status = env.get(name).get("status") or {}
            checkpoint = (status.get("lastCheckpoint") or {}).get("step") or 0
            return steps and steps[-1] >= KILL_AFTER and checkpoint >= EVERY and (pods, steps[-1])
        pods, step = env.wait(both_ranks_past_a_checkpoint, 600, f"both ranks past step {KILL_AFTER} with a "
                                                                 "checkpoint", interval=2)
        logs = {i: pod_log(env, p.metadata.name) for i, p in pods.items()}
        for index, log in logs.items():  # each pod is its own node rank of a 2-rank group
            ranks = RANK_LINE.findall(log)
            assert ranks and ranks[0][:4] == (str(index), "2", str(index), "2"), log[-2000:]
        service = env.core.read_namespaced_service(f"{name}-ranks", namespace)
        assert service.spec.cluster_ip == "None"
        assert {p.spec.subdomain for p in pods.values()} == {service.metadata.name}
        assert progress_steps(logs[1]) == [], "only rank 0 prints progress"

        pid = container_pid(pods[1])
        assert pid, pods[1].status
        os.kill(pid, signal.SIGKILL)
        print(f"SIGKILLed rank 1 (pid {pid}, pod {pods[1].metadata.name}) at step ~{step}")

        second_job = f"{name}-train-r1"

        def resumed():
            assert demo.poll() is None or demo.returncode == 0, demo_log.read_text()[-4000:]
            rank0 = rank_pods(env, second_job).get(0)
            log = pod_log(env, rank0.metadata.name) if rank0 else ""
            return RESUMING.search(log) and progress_steps(log) and log
        log = env.wait(resumed, 300, f"the next attempt {second_job} resuming from a checkpoint", interval=2)
        resumed_step = int(RESUMING.search(log).group(1))
        assert resumed_step >= EVERY and progress_steps(log)[0] >= resumed_step, log[-2000:]
        print(f"{second_job}: resumed from step {resumed_step}")

        assert demo.wait(timeout=900) == 0, demo_log.read_text()[-4000:]
        status = env.get(name)["status"]
        print(demo_log.read_text()[-2500:])
        assert status["phase"] == "Succeeded" and status.get("verdict"), status
        training = status["training"]
        assert training["worldSize"] == 2 and training["nodes"] == 2 and training["groupRestarts"] >= 1, training
        assert training["globalBatchSize"] == 8, training  # 2 ranks x batchSize 4
        assert status["jobs"]["train"] == second_job
        assert status["model"]["step"] == 100
    finally:
        stop(demo)
        env.close()


def test_two_gpus_in_one_pod_launch_two_ranks(cluster, namespace, tmp_path):
    path = tmp_path / "two-gpus.yaml"
    name = example(EXAMPLE, path, {"maxSteps": 20, "warmupSteps": 5, "batchSize": 4,
                                   "valCheckInterval": 20, "checkpointEveryNSteps": 20}, {"gpus": 2})
    env = Env(cluster, namespace, tmp_path)
    demo, demo_log = start_demo(tmp_path, namespace, path, 600)
    try:
        def trained():
            assert demo.poll() is None, demo_log.read_text()[-4000:]
            try:
                status = env.get(name).get("status") or {}
            except ApiException as exc:  # the demo applies it once the workspace is seeded
                if exc.status == 404:
                    return None
                raise
            return status.get("phase") in ("Benchmarking", "Succeeded") and status
        status = env.wait(trained, 600, "training to finish", interval=2)
        assert status["training"]["worldSize"] == 2 and status["training"]["devicesPerNode"] == 2, status["training"]
        pod = env.core.list_namespaced_pod(namespace, label_selector=f"job-name={status['jobs']['train']}").items[0]
        log = pod_log(env, pod.metadata.name)
        assert {r[0] for r in RANK_LINE.findall(log)} == {"0", "1"}, log[-3000:]  # both ranks in the pod's log
        assert "world size 2 (1 node(s) x 2 process(es) per node, gloo)" in log, log[-3000:]
        assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "2"
        assert "CUDA_VISIBLE_DEVICES=0,1" in log, log[-3000:]  # the node agent's device assignment
        print(f"2 ranks in pod {pod.metadata.name}; global batch {status['training']['globalBatchSize']}")
    finally:
        stop(demo)
        env.close()
