"""Training preemption with the real tiny trainer (the cpu-stub-ctc example through `quranft demo`).

1. Eviction API: the evicted training pod gets DisruptionTarget, the Job's podFailurePolicy ignores it
   (backoffLimit 0, so a counted failure would fail the Job), the new pod resumes from the SIGTERM
   checkpoint and the run reaches its verdict. (This found that the embedded node agent dropped
   DisruptionTarget from the pod's final status; see tests/cluster/test_eviction.py.)
2. SIGKILL while a checkpoint is being saved: the leftover `.step-*.ckpt.tmp-<pid>` is ignored (then removed) and the
   retried pod resumes from the newest complete checkpoint, with no load error.

tests/operator/test_e2e_resume.py covers a plain pod deletion; both use tests/support/trainkit.py.
"""
from __future__ import annotations

import ctypes
import os
import re
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from clusterkit import Env, condition
from kubernetes import client, watch

# The resume e2e's helpers (example, logs, training pods) are reused from its module, not copied.
from trainkit import EXAMPLE, RESUMING, ROOT, progress_steps, resumed_pod, train_pods, training_past

from quranft.cluster.procs import start_time
from quranft.operator.builders import LABEL_RUN, LABEL_STAGE
from quranft.trainer.checkpoints import is_readable, list_checkpoints
from quranft.trainer.metrics import PROGRESS_PREFIX

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

TMP = re.compile(r"^\.step-(\d{8})\.ckpt\.tmp-(\d+)$")
# What the trainer or Lightning would print had the resumed checkpoint failed to load.
LOAD_ERROR = re.compile(r"Traceback|Error|unreadable|corrupt|failed to load", re.IGNORECASE)


def example(path: Path, training: dict, resources: dict) -> tuple[str, str]:
    """The cpu-stub-ctc example with `training`/`resources` overrides; returns (run name, claim name)."""
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    run = next(d for d in docs if d["kind"] == "QuranFineTune")
    run["spec"]["training"].update(training)
    run["spec"]["resources"].update(resources)
    path.write_text(yaml.safe_dump_all(docs))
    return run["metadata"]["name"], run["spec"]["storage"]["existingClaim"]


def start_demo(namespace: str, example_path: Path, log_path: Path, timeout: int) -> subprocess.Popen:
    pyenv = dict(os.environ, PYTHONPATH=os.pathsep.join(str(ROOT / d) for d in ("contract", "operator", "trainer", "benchmark")))
    with open(log_path, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "quranft.cli", "demo", "--namespace", namespace,
                                 "--example", str(example_path), "--timeout", str(timeout)],
                                env=pyenv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def stop_demo(demo: subprocess.Popen) -> None:
    if demo.poll() is None:
        demo.terminate()
        demo.wait(30)


def finish(env: Env, name: str, demo: subprocess.Popen, demo_log: Path, timeout: float) -> dict:
    """Wait for `quranft demo` to report the verdict; the run's status."""
    assert demo.wait(timeout=timeout) == 0, demo_log.read_text()[-4000:]
    print(demo_log.read_text()[-1500:])
    status = env.get(name)["status"]
    assert status["phase"] == "Succeeded" and status.get("verdict"), status
    return status


def follow_pods(env: Env, selector: str) -> tuple[list, watch.Watch]:
    """Every version of the matching pods, from a watch (a pod's last status may live for a moment only)."""
    seen: list = []
    w = watch.Watch()

    def run():
        try:
            for ev in w.stream(env.core.list_namespaced_pod, env.ns, label_selector=selector, timeout_seconds=900):
                seen.append(ev["object"])
        except Exception:  # noqa: BLE001 - the stream breaks when the test stops it; the assertions
            pass           # report what was (not) seen
    threading.Thread(target=run, daemon=True).start()
    return seen, w


def test_evicted_training_pod_is_retried_uncounted_and_resumes(cluster, namespace, tmp_path):
    every, evict_after = 10, 20
    name, _ = example(tmp_path / "evict.yaml", {"maxSteps": 50, "checkpointEveryNSteps": every},
                      {"backoffLimit": 0})  # only the podFailurePolicy's Ignore can keep the Job alive
    env = Env(cluster, namespace, tmp_path)
    demo_log = tmp_path / "demo.log"
    t0 = time.monotonic()
    demo = start_demo(namespace, tmp_path / "evict.yaml", demo_log, 780)
    seen, pod_watch = follow_pods(env, f"{LABEL_RUN}={name},{LABEL_STAGE}=train")
    try:
        first, evict_step = env.wait(training_past(env, name, evict_after, demo, demo_log), 600,
                                     f"training past step {evict_after}", interval=2)
        t_evict = time.monotonic()
        env.core.create_namespaced_pod_eviction(first.metadata.name, namespace, client.V1Eviction(
            metadata=client.V1ObjectMeta(name=first.metadata.name, namespace=namespace)))
        print(f"evicted {first.metadata.name} at step {evict_step}, {t_evict - t0:.0f}s after start")

        second, log = env.wait(resumed_pod(env, name, {first.metadata.uid}, demo, demo_log), 300,
                               "a new training pod resuming from a checkpoint", interval=2)
        resumed_step, first_step = int(RESUMING.search(log).group(1)), progress_steps(log)[0]
        print(f"new pod {second} resumed from step {resumed_step} (first progress step {first_step}), "
              f"{time.monotonic() - t_evict:.0f}s after the eviction")

        # The evicted pod, as the Job controller judged it: terminal, exit 143 (SIGTERM -> checkpoint),
        # and still carrying the DisruptionTarget the API server added on eviction.
        versions = [p for p in seen if p.metadata.uid == first.metadata.uid]
        marks = [(p.status.phase, {c.type: (c.status, c.reason) for c in p.status.conditions or []}
                  .get("DisruptionTarget")) for p in versions]
        print("evicted pod versions (phase, DisruptionTarget):", marks)
        final = [p for p in versions if p.status.phase in ("Failed", "Succeeded")]
        assert final, f"never saw the evicted pod end: {marks}"
        assert final[-1].status.phase == "Failed"
        assert final[-1].status.container_statuses[0].state.terminated.exit_code == 143
        assert all(m[1] == ("True", "EvictionByEvictionAPI") for p, m in zip(versions, marks)
                   if p.status.phase == "Failed"), marks
        assert resumed_step >= evict_step  # the SIGTERM checkpoint, not an older periodic one or step 0
        assert first_step >= resumed_step

        status = finish(env, name, demo, demo_log, 800)
        job = env.jobs(name, "train")[0]
        print(f"job {job.metadata.name}: succeeded={job.status.succeeded} failed={job.status.failed} "
              f"conditions={[(c.type, c.status, c.reason) for c in job.status.conditions or []]}; "
              f"run resumeCount={status.get('resumeCount')}, lastCheckpoint={status.get('lastCheckpoint')}; "
              f"total {time.monotonic() - t0:.0f}s")
        assert not any(c.type == "Failed" and c.status == "True" for c in job.status.conditions or [])
        assert job.status.succeeded == 1 and not job.status.failed  # the eviction was not counted
        preempted = condition(env.get(name), "Preempted")
        assert preempted and preempted["status"] == "True", env.get(name)["status"].get("conditions")
        assert len(env.jobs(name, "train")) == 1
        assert status.get("resumeCount") == 1, status  # the evicted pod vanished; its name was kept
    finally:
        pod_watch.stop()
        stop_demo(demo)
        env.close()


class DirEvents:
    """inotify on one directory: names created or renamed into it, as soon as the kernel reports them
    (a poll loop would compete for the 2 CPUs with the trainer and still react later)."""

    IN_MOVED_TO, IN_CREATE = 0x80, 0x100

    def __init__(self, path: Path):
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if self._libc.inotify_add_watch(self.fd, os.fsencode(path), self.IN_MOVED_TO | self.IN_CREATE) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")

    def names(self, timeout: float) -> list[str]:
        if not select.select([self.fd], [], [], timeout)[0]:
            return []
        buf, out, i = os.read(self.fd, 65536), [], 0
        while i < len(buf):
            _, _, _, size = struct.unpack_from("iIII", buf, i)
            out.append(buf[i + 16:i + 16 + size].rstrip(b"\0").decode())
            i += 16 + size
        return out

    def close(self) -> None:
        os.close(self.fd)


def container_pid(pod) -> int | None:
    """The node agent names its container `quranft://<uid>-<container>-<restarts>-<pid>`; the sandbox
    execs the command, so that pid is the trainer's."""
    statuses = pod.status.container_statuses or []
    cid = statuses[0].container_id if statuses else None
    return int(cid.rsplit("-", 1)[1]) if cid and statuses[0].state.running else None


def is_trainer_of(pid: int, run: str) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"QURANFT_RUN={run}".encode() in environ and b"train" in cmdline


def test_sigkill_during_checkpoint_write_resumes_from_previous_complete_checkpoint(cluster, namespace, tmp_path):
    every, attempts = 2, 3
    max_steps = 40
    name, claim = example(tmp_path / "kill.yaml", {"maxSteps": max_steps, "checkpointEveryNSteps": every},
                          {"backoffLimit": attempts + 1})  # each SIGKILL is a counted failure
    env = Env(cluster, namespace, tmp_path)
    demo_log = tmp_path / "demo.log"
    t0 = time.monotonic()
    demo = start_demo(namespace, tmp_path / "kill.yaml", demo_log, 780)
    try:
        def workspace_dir():  # the embedded provisioner's PVs are hostPath directories
            try:
                volume = env.core.read_namespaced_persistent_volume_claim(claim, namespace).spec.volume_name
            except client.ApiException as exc:
                if exc.status == 404:  # not applied yet
                    return None
                raise
            return Path(env.core.read_persistent_volume(volume).spec.host_path.path) if volume else None
        workspace = env.wait(workspace_dir, 300, "the workspace volume bound", interval=2)
        ckpt_dir = workspace / "runs" / name / "checkpoints"
        print(f"checkpoints on the host: {ckpt_dir}")

        killed: list[str] = []  # pod uids
        caught = None
        for attempt in range(1, attempts + 1):
            def trainer_with_a_checkpoint():
                for pod in train_pods(env, name):
                    pid = container_pid(pod)
                    if pod.metadata.uid not in killed and pod.metadata.deletion_timestamp is None and pid \
                            and is_trainer_of(pid, name) and list_checkpoints(ckpt_dir):
                        return pod, pid
                assert demo.poll() is None, demo_log.read_text()[-4000:]
                return None
            pod, pid = env.wait(trainer_with_a_checkpoint, 600, "a training process with a checkpoint written",
                                interval=1)
            events = DirEvents(ckpt_dir)
            try:
                deadline, hit = time.monotonic() + 120, None
                while hit is None and time.monotonic() < deadline:
                    for entry in events.names(1.0):
                        m = TMP.match(entry)
                        if m:
                            assert int(m.group(2)) == pid, f"{entry} is not written by the trainer pid {pid}"
                            os.kill(pid, signal.SIGKILL)
                            hit = entry, int(m.group(1)), time.monotonic()
                            break
            finally:
                events.close()
            assert hit, f"no checkpoint write seen in 120s (pid {pid}); {sorted(os.listdir(ckpt_dir))}"
            tmp_name, target_step, t_kill = hit
            killed.append(pod.metadata.uid)
            while start_time(pid) is not None:  # dead (a zombie counts) once the agent's reaper gets it
                time.sleep(0.01)
            left = (ckpt_dir / tmp_name).exists()
            done = list_checkpoints(ckpt_dir)
            complete = [step for step, _ in done]
            # Lightning writes the checkpoint under $TMPDIR and moves it here: a copy across mounts, so a
            # kill inside it leaves a truncated file (sizes printed), within our fsync+rename a whole one.
            print(f"attempt {attempt}: SIGKILL pid {pid} ({pod.metadata.name}) on {tmp_name}; tmp left: {left}"
                  + (f" ({(ckpt_dir / tmp_name).stat().st_size} bytes, a readable zip: "
                     f"{is_readable(ckpt_dir / tmp_name)})" if left else "")
                  + f"; complete checkpoints {complete} ({done[-1][1].stat().st_size} bytes each); "
                  f"{t_kill - t0:.0f}s after start")
            if left:
                caught = tmp_name, target_step, complete[-1], t_kill
                break
            print(f"attempt {attempt}: the write finished before the kill landed; trying the next pod")
        assert caught, f"the kill never landed inside a checkpoint write in {attempts} attempts"
        tmp_name, target_step, newest, t_kill = caught
        assert newest < target_step and not (ckpt_dir / f"step-{target_step:08d}.ckpt").exists()

        second, log = env.wait(resumed_pod(env, name, set(killed), demo, demo_log), 300, "the retried pod resuming",
                               interval=2)
        resumed_step = int(RESUMING.search(log).group(1))
        print(f"retried pod {second} resumed from step {resumed_step} (newest complete at the kill: {newest}; "
              f"the interrupted write was step {target_step}), {time.monotonic() - t_kill:.0f}s after the kill")
        assert resumed_step == newest
        ckpt_in_pod = f"/workspace/runs/{name}/checkpoints"
        assert f"train: resuming from {ckpt_in_pod}/step-{newest:08d}.ckpt (step {newest})" in log
        # Loading happens between the resume line and the first progress line: Lightning confirms it,
        # and nothing there may look like an error.
        loading = log[RESUMING.search(log).end():].split(PROGRESS_PREFIX, 1)[0]
        assert f"Restored all states from the checkpoint at {ckpt_in_pod}/step-{newest:08d}.ckpt" in loading, loading
        assert not LOAD_ERROR.search(loading), loading[-3000:]
        assert progress_steps(log)[0] >= resumed_step

        status = finish(env, name, demo, demo_log, 800)
        job = env.jobs(name, "train")[0]
        print(f"job {job.metadata.name}: failed={job.status.failed} succeeded={job.status.succeeded}; "
              f"resumeCount={status.get('resumeCount')}; total {time.monotonic() - t0:.0f}s")
        assert job.status.succeeded == 1 and job.status.failed == len(killed)
        # The retried trainer deleted the stray temp file (never read as a checkpoint, never renamed into one).
        assert f"train: removed {tmp_name}, left by a writer that was killed" in log
        assert not (ckpt_dir / tmp_name).exists()
    finally:
        stop_demo(demo)
        env.close()
