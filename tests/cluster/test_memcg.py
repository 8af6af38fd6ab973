"""Container memory limits on the node agent (memcg.py): a memory cgroup per container, as the kubelet does,
and a container over its limit ends OOMKilled with exit code 137."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_cluster import PY, pod_body, wait_for

from quranft.cluster import memcg

MIB = 2**20
# Touches every page (b"x" * n writes them), so the memory is really charged.
HOG = "import sys; x = b'x' * ({mib} * 2**20); print('allocated', flush=True)"


def test_memory_limit_in_bytes():
    assert memcg.memory_limit({"resources": {"limits": {"memory": "100Mi"}}}) == 100 * MIB
    assert memcg.memory_limit({"resources": {"limits": {"memory": "1.5G"}}}) == 1_500_000_000
    assert memcg.memory_limit({"resources": {"limits": {"memory": "1001m"}}}) == 2  # millibytes round up
    assert memcg.memory_limit({"resources": {"requests": {"memory": "1Gi"}}}) is None
    assert memcg.memory_limit({}) is None


V1_MOUNTINFO = """31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V1_CGROUP = "9:name=systemd:/\n4:memory:/process_api/abc\n0::/\n"


def test_detect_v1_nests_under_the_agents_own_cgroup(tmp_path: Path):
    own = tmp_path / "sys/fs/cgroup/memory/process_api/abc"
    (own / memcg.PARENT).mkdir(parents=True)
    (own / memcg.PARENT / "memory.limit_in_bytes").write_text("9223372036854771712")
    found = memcg.detect(tmp_path, V1_MOUNTINFO, V1_CGROUP)
    assert found == memcg.MemoryCgroups(1, own / memcg.PARENT)
    assert "memory.limit_in_bytes" in found.describe


def test_detect_v2_delegates_the_memory_controller(tmp_path: Path):
    mountinfo = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    root = tmp_path / "sys/fs/cgroup"
    own = root / "agent.slice"
    own.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (own / "cgroup.subtree_control").write_text("")
    found = memcg.detect(tmp_path, mountinfo, "0::/agent.slice\n")
    assert found == memcg.MemoryCgroups(2, own / memcg.PARENT)
    assert (own / "cgroup.subtree_control").read_text() == "+memory"
    assert (own / memcg.PARENT / "cgroup.subtree_control").read_text() == "+memory"
    cg = found.create("pod-main-0", 100 * MIB)
    assert (cg / "memory.max").read_text() == str(100 * MIB)
    (cg / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n")
    assert found.oom_killed(cg, 9)


def test_detect_without_a_memory_controller(tmp_path: Path):
    mountinfo = ("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
                 "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n")
    (tmp_path / "sys/fs/cgroup/unified").mkdir(parents=True)
    (tmp_path / "sys/fs/cgroup/unified/cgroup.controllers").write_text("hugetlb\n")
    assert memcg.detect(tmp_path, mountinfo, "0::/\n") is None


def test_relative_path_inside_a_cgroup_namespace():
    assert memcg._relative("/process_api/abc", "/") == "process_api/abc"
    assert memcg._relative("/docker/x/inner", "/docker/x") == "inner"
    assert memcg._relative("/elsewhere", "/docker/x") == ""


def _kernel() -> memcg.MemoryCgroups:
    found = memcg.detect()
    if found is None:
        pytest.skip("no writable memory cgroup on this machine")
    return found


def _run_in(cg: Path, script: str) -> int:
    join = f"import os; open({str(cg / 'cgroup.procs')!r}, 'w').write(str(os.getpid()))\n"
    return subprocess.run([sys.executable, "-c", join + script], capture_output=True, timeout=60).returncode


def test_kernel_enforces_the_limit_and_counts_the_oom_kill():
    cgroups = _kernel()
    name = f"test-{os.getpid()}"
    cg = cgroups.create(name, 64 * MIB)
    try:
        assert _run_in(cg, HOG.format(mib=256)) == -9
        assert cgroups.oom_killed(cg, 9)
    finally:
        cgroups.remove(cg)
    assert not cg.exists()
    cgroups.close()  # e.g. another agent in this cgroup stopping: the empty parent goes, and comes back
    cg = cgroups.create(name, 64 * MIB)  # the same name again: a fresh cgroup, no OOM counted
    try:
        orphan = "\nimport subprocess; subprocess.Popen(['sleep', '300'], stdout=-3, stderr=-3)"  # -3: DEVNULL
        assert _run_in(cg, HOG.format(mib=8) + orphan) == 0
        assert not cgroups.oom_killed(cg, None)
        assert (cg / "cgroup.procs").read_text().split()  # the orphaned sleep is still in the container's cgroup
    finally:
        cgroups.remove(cg)  # ... and goes with it, as in a pod's pid namespace
    assert not cg.exists()


@pytest.mark.cluster
def test_pod_over_its_memory_limit_ends_oomkilled(cluster, namespace):
    from kubernetes import client

    api = cluster.api_client()
    core = client.CoreV1Api(api)
    body = pod_body("hog", HOG.format(mib=300), container={"resources": {"limits": {"memory": "100Mi"}}})
    body["spec"]["containers"].append({"name": "fits", "image": PY, "command": ["python", "-c", HOG.format(mib=20)],
                                       "resources": {"limits": {"memory": "100Mi"}}})
    # A shell that outlives its OOM-killed child: still OOMKilled (as containerd reports it), exit code the shell's.
    body["spec"]["containers"].append({"name": "child", "image": PY, "command": [
        "sh", "-c", f"python -c \"{HOG.format(mib=300)}\"; exit 3"], "resources": {"limits": {"memory": "100Mi"}}})
    core.create_namespaced_pod(namespace, body)
    try:
        wait_for(lambda: core.read_namespaced_pod("hog", namespace).status.phase == "Failed", 90, "pod Failed")
        statuses = core.read_namespaced_pod("hog", namespace).status.container_statuses
        states = {s.name: s.state.terminated for s in statuses}
        assert (states["main"].reason, states["main"].exit_code) == ("OOMKilled", 137)
        assert (states["fits"].reason, states["fits"].exit_code) == ("Completed", 0)
        assert (states["child"].reason, states["child"].exit_code) == ("OOMKilled", 3)
        assert "allocated" in core.read_namespaced_pod_log("hog", namespace, container="fits")
    finally:
        core.delete_namespaced_pod("hog", namespace, grace_period_seconds=0)
        api.close()
