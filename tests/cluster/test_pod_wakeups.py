"""A pod worker sleeps until something happens (a container exits, deletion is asked), not on a 0.2 s clock:
that poll was 5,000 wake-ups/s across the agents at 1,000 running pods (issue 14's 1,000-run benchmark)."""
from __future__ import annotations

import os
import subprocess
import threading
import time
from types import SimpleNamespace

from quranft.cluster.podworker import PodWorker, _pidfd

POD = {"metadata": {"name": "p", "namespace": "ns", "uid": "u-wake"},
       "spec": {"containers": [{"name": "c", "image": "quranft-stub"}]}}
PATIENCE_S = 30.0  # far above the wake-up times below: passing means woken, not timed out


def worker(tmp_path) -> PodWorker:
    return PodWorker(SimpleNamespace(state_dir=tmp_path), POD)


def test_a_container_exit_wakes_the_worker(tmp_path):
    pod = worker(tmp_path)
    child = subprocess.Popen(["sleep", "0.3"])
    pod.pidfds["c"] = _pidfd(child.pid)
    assert pod.pidfds["c"] is not None  # this kernel has pidfds (Linux >= 5.3)
    started = time.monotonic()
    assert pod._sleep(PATIENCE_S) is False  # woken by the exit: deletion was not asked
    assert time.monotonic() - started < PATIENCE_S / 2
    assert child.poll() == 0  # the pidfd did not reap it: the worker's _reap still reads its exit code
    pod._close_wakers()


def test_a_deletion_wakes_the_worker(tmp_path):
    pod = worker(tmp_path)
    threading.Timer(0.2, pod.request_delete, args=(5,)).start()
    started = time.monotonic()
    assert pod._sleep(PATIENCE_S) is True
    assert time.monotonic() - started < PATIENCE_S / 2
    assert pod.grace == 5
    pod._close_wakers()


def test_nothing_happening_sleeps_the_whole_timeout(tmp_path):
    pod = worker(tmp_path)
    child = subprocess.Popen(["sleep", "30"])
    pod.pidfds["c"] = _pidfd(child.pid)
    started = time.monotonic()
    assert pod._sleep(0.5) is False
    assert time.monotonic() - started >= 0.45
    child.kill()
    child.wait()
    pod._close_wakers()


def test_deletion_after_the_worker_finished_writes_nowhere(tmp_path):
    """The agent's watch may deliver the deletion after _finish closed the pipe; its number may by then
    belong to another file, which must not receive the wake-up byte."""
    pod = worker(tmp_path)
    pod._close_wakers()
    reused = os.open(tmp_path / "other-file", os.O_CREAT | os.O_WRONLY)
    try:
        pod.request_delete(None)
        assert pod.delete_requested.is_set()
        assert (tmp_path / "other-file").read_bytes() == b""
    finally:
        os.close(reused)
