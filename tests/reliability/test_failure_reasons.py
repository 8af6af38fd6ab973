"""Item 10: failure reasons provoked for real on the embedded cluster, not only in status.py's table.

One operator, four runs at once (each mostly waits, so together they take about as long as the slowest):
  OOMKilled                a training pod over its memory limit, killed by the node agent's memory cgroup
  DataError                the real `quranft trainer prepare` over a local dataset of corrupt parquet files
  ImagePullFailure         spec.images.trainer names an image no node can pull (operator's pull deadline)
  StartupDeadlineExceeded  a user-set spec.startupDeadlineSeconds and a training pod no node can place
Each ends Failed with that reason in its Failed condition, and the message says what to do.
"""
from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest
from clusterkit import condition, resource, stub_commands

pytestmark = pytest.mark.cluster
PULL_DEADLINE = 10  # the operator's --image-pull-deadline-seconds here
USER_DEADLINE = 10  # spec.startupDeadlineSeconds of the unschedulable run
HOG = "x = b'x' * (300 * 2**20); print('allocated 300 MB', flush=True)"  # every page written: really charged


def _claim_dir(env, claim: str = "ws") -> Path:
    """The host directory behind the claim (the embedded cluster's `local` volumes are hostPath)."""
    def bound():
        pvc = env.core.read_namespaced_persistent_volume_claim(claim, env.ns)
        return pvc.spec.volume_name if pvc.status.phase == "Bound" else None
    volume = env.wait(bound, 60, f"claim {claim} bound")
    return Path(env.core.read_persistent_volume(volume).spec.host_path.path)


def _seconds(start: str, end: str | None) -> int | None:
    parse = lambda t: datetime.fromisoformat(t.replace("Z", "+00:00"))  # noqa: E731
    return round((parse(end) - parse(start)).total_seconds()) if end else None


def test_failure_reasons_on_the_embedded_cluster(env):
    max_gpus = max(n.gpus for n in env.cluster.nodes)
    assert max_gpus < 16, "the unschedulable run asks for 16 GPUs, more than any node has"
    env.claim()
    corrupt = _claim_dir(env) / "corrupt-data"
    corrupt.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation"):
        (corrupt / f"{split}-00000-of-00001.parquet").write_bytes(b"PAR1 this is not a parquet file \x00\xff" * 64)
    env.start_operator("--image-pull-deadline-seconds", str(PULL_DEADLINE))

    def run(name: str, index: int, commands: dict, **spec) -> dict:
        spec.setdefault("data", {"source": "local", "localPath": f"/workspace/fr-{index}"})
        return resource(name, commands=commands, startupDeadlineSeconds=spec.pop("startupDeadlineSeconds", None),
                        **spec)

    quick = stub_commands(prepare_seconds=0.3, train_seconds=1.0, bench_seconds=0.3)
    runs = {
        "oom": run("oom", 0, dict(quick, train=["python", "-c", HOG]),
                   resources={"gpus": 0, "cpu": "100m", "memory": "100Mi", "backoffLimit": 0}),
        # No prepare override: the real `quranft trainer prepare` (it imports datasets: more than 256Mi).
        "data-error": run("data-error", 1, {k: v for k, v in quick.items() if k != "prepare"},
                          data={"source": "local", "localPath": "/workspace/corrupt-data"},
                          resources={"gpus": 0, "cpu": "500m", "memory": "2Gi"}),
        "image-pull": run("image-pull", 2, quick, images={"trainer": "ghcr.io/quran-finetune/no-such-image:0.0"}),
        "deadline": run("deadline", 3, quick, startupDeadlineSeconds=USER_DEADLINE,
                        resources={"gpus": 16, "cpu": "100m", "memory": "256Mi"}),
    }
    t0 = time.monotonic()
    for body in runs.values():
        env.create(body)
    # All four run at once; the total is about the slowest one.
    results = {name: env.wait_phase(name, ("Succeeded", "Failed"), 300) for name in runs}
    failed = {name: condition(obj, "Failed") for name, obj in results.items()}
    took = {name: _seconds(obj["metadata"]["creationTimestamp"], obj["status"].get("completionTime"))
            for name, obj in results.items()}
    print(f"\nfailure reasons ({time.monotonic() - t0:.0f} s for all four): "
          + ", ".join(f"{n}={(c or {}).get('reason')} after {took[n]} s" for n, c in failed.items()))
    for name, obj in results.items():
        assert obj["status"]["phase"] == "Failed", (name, obj["status"])

    oom = failed["oom"]
    assert oom["reason"] == "OOMKilled", oom
    assert "resources.memory" in oom["message"] and "batchSize" in oom["message"], oom
    train = [p for p in env.pods("oom") if p.metadata.labels.get("quranft.io/stage") == "train"]
    state = train[-1].status.container_statuses[0].state.terminated
    assert (state.reason, state.exit_code) == ("OOMKilled", 137)

    data = failed["data-error"]
    assert data["reason"] == "DataError", data
    assert "corrupt-data" in data["message"], data
    assert not [j for j in env.jobs("data-error") if j.metadata.labels.get("quranft.io/stage") == "train"]

    pull = failed["image-pull"]
    assert pull["reason"] == "ImagePullFailure", pull
    assert "no-such-image" in pull["message"] and f"{PULL_DEADLINE}s" in pull["message"], pull

    late = failed["deadline"]
    assert late["reason"] == "StartupDeadlineExceeded", late
    assert f"{USER_DEADLINE}s (spec.startupDeadlineSeconds)" in late["message"], late
    assert "Insufficient nvidia.com/gpu" in late["message"], late
    # The stuck pods are stopped (the Job is suspended), the Jobs stay for inspection.
    for name in ("image-pull", "deadline"):
        env.wait(lambda n=name: not [p for p in env.pods(n) if p.status.phase == "Pending"], 60,
                 f"{name}'s stuck pod removed")
