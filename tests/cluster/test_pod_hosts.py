"""A pod's managed /etc/hosts and the runtime paths its volumes must not hide: the pure functions, and the
container launcher resolving names through the hosts file bound into its mount namespace."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from pathlib import Path

from quranft.cluster import podhosts
from quranft.cluster.envvars import container_env
from quranft.cluster.gpus import GpuAllocator
from quranft.cluster.podworker import SANDBOX
from quranft.cluster.volumes import Mount, hidden_runtime

JOB = {"metadata": {"name": "train"}, "spec": {"completionMode": "Indexed", "completions": 3, "parallelism": 3}}
SERVICE = {"metadata": {"name": "train-ranks"}, "spec": {"clusterIP": "None", "selector": {"run": "r1"}}}


def indexed_pod(index: int = 1, **spec) -> dict:
    """A pod as the Job controller creates it for an Indexed Job whose template sets a subdomain."""
    annotation = {podhosts.COMPLETION_INDEX: str(index)}
    return {"metadata": {"name": f"train-{index}-x7k2p", "namespace": "team-a", "uid": "u-1",
                         "labels": {"run": "r1", **annotation}, "annotations": annotation,
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "train",
                                              "controller": True, "uid": "j-1"}]},
            "spec": {"hostname": f"train-{index}", "subdomain": "train-ranks", **spec}}


def entries(text: str) -> dict[str, str]:
    """name -> address, from a hosts file."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split("#")[0].split()
        for name in fields[1:]:
            out.setdefault(name, fields[0])
    return out


def test_indexed_job_pod_resolves_itself_and_every_peer_through_the_subdomain():
    pod = indexed_pod(1)
    assert podhosts.publishes(SERVICE, pod)
    peers = podhosts.peer_hostnames(pod, JOB)
    assert peers == ["train-0", "train-1", "train-2"]
    text = podhosts.hosts_file(pod, published=True, peers=peers, node_hostname="node-host")
    assert text.startswith("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ")
    names = entries(text)
    for i in range(3):
        for name in (f"train-{i}.train-ranks", f"train-{i}.train-ranks.team-a",
                     f"train-{i}.train-ranks.team-a.svc", f"train-{i}.train-ranks.team-a.svc.cluster.local"):
            assert names.pop(name) == "127.0.0.1", name
    # Its own bare hostname resolves (the kubelet's line); a peer's bare name does not, as with cluster DNS.
    assert names.pop("train-1") == "127.0.0.1"
    assert names.pop("node-host") == "127.0.0.1"
    assert set(names) == {"localhost", "ip6-localhost", "ip6-loopback", "ip6-localnet", "ip6-mcastprefix",
                          "ip6-allnodes", "ip6-allrouters"}
    # The kubelet's own line, fully qualified name first.
    assert "127.0.0.1\ttrain-1.train-ranks.team-a.svc.cluster.local\t" in text


def test_subdomain_names_need_a_headless_service_that_selects_the_pod():
    pod = indexed_pod(0)
    assert not podhosts.publishes(None, pod)
    assert not podhosts.publishes({"spec": {"clusterIP": "10.0.0.9", "selector": {"run": "r1"}}}, pod)
    assert not podhosts.publishes({"spec": {"clusterIP": "None", "selector": {"run": "other"}}}, pod)
    assert not podhosts.publishes({"spec": {"clusterIP": "None"}}, pod)  # no selector: no endpoints
    names = entries(podhosts.hosts_file(pod, published=False, peers=["train-0", "train-1"], node_hostname=""))
    assert names["train-0"] == "127.0.0.1"
    assert not [n for n in names if "train-ranks" in n or n == "train-1"]


def test_peers_only_for_indexed_jobs():
    pod = indexed_pod(0)
    assert podhosts.peer_hostnames(pod, {"spec": {"completions": 3}}) == []  # NonIndexed
    assert podhosts.peer_hostnames(pod, None) == []
    plain = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {}}
    assert podhosts.peer_hostnames(plain, JOB) == []
    assert podhosts.completion_index(pod) == 0 and podhosts.owning_job(pod) == "train"


def test_plain_pod_gets_its_name_and_host_aliases():
    long_name = "a" * 62 + "-b"
    pod = {"metadata": {"name": long_name, "namespace": "ns"},
           "spec": {"hostAliases": [{"ip": "10.1.2.3", "hostnames": ["foo.local", "bar.local"]}]}}
    assert podhosts.pod_hostname(pod) == "a" * 62  # cut to 63, trailing '-' dropped
    text = podhosts.hosts_file(pod, published=False, peers=[], node_hostname="localhost")
    assert text.endswith(f"127.0.0.1\t{'a' * 62}\n\n# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n")
    assert podhosts.wants_managed_hosts(pod, {"name": "c"})
    assert not podhosts.wants_managed_hosts({"spec": {"hostNetwork": True}}, {"name": "c"})
    assert not podhosts.wants_managed_hosts(pod, {"volumeMounts": [{"name": "h", "mountPath": "/etc/hosts"}]})


def test_rank_env_from_the_completion_index_annotation_and_hostname():
    pod = indexed_pod(1)
    pod["spec"]["nodeName"] = "n0"
    container = {"name": "c", "env": [
        {"name": "NODE_RANK", "valueFrom": {"fieldRef": {
            "fieldPath": f"metadata.annotations['{podhosts.COMPLETION_INDEX}']"}}},
        {"name": "RANK_LABEL", "valueFrom": {"fieldRef": {
            "fieldPath": f"metadata.labels['{podhosts.COMPLETION_INDEX}']"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}}]}
    env = container_env(pod, container, {}, lambda *a: None)
    assert (env["NODE_RANK"], env["RANK_LABEL"], env["NODE"], env["IP"], env["UID"]) == (
        "1", "1", "n0", "127.0.0.1", "u-1")
    assert env["HOSTNAME"] == "train-1"  # spec.hostname, as the container runtime sets it


def test_two_gpu_request_gets_two_distinct_devices():
    alloc = GpuAllocator({"n0": 2})
    assert alloc.allocate("pod-a/main", "n0", 2) == [0, 1]
    assert alloc.allocate("pod-a/init", "n0", 0) == []


def test_runtime_paths_hidden_by_a_volume_are_bound_back():
    runtime = [("/tmp/co/operator", True), ("/tmp/co/trainer", True), ("/root/venv", True),
               ("/tmp/hf", False), ("/workspace", True)]
    mounts = [Mount("/pods/u/volumes/tmp", "/tmp"), Mount("/pvc", "/workspace"), Mount("/t", "/dev/termination-log")]
    assert hidden_runtime(runtime, mounts) == [Mount("/tmp/co/operator", "/tmp/co/operator", True),
                                               Mount("/tmp/co/trainer", "/tmp/co/trainer", True),
                                               Mount("/tmp/hf", "/tmp/hf", False)]
    # Nested runtime paths are bound once, through the outer one; nothing is hidden without a cover.
    outer = [Mount("/tmp/co", "/tmp/co", True)]
    assert hidden_runtime([("/tmp/co", True), ("/tmp/co/operator", True)], mounts) == outer
    assert hidden_runtime([("/tmp/co/operator", True), ("/tmp/co", True)], mounts) == outer
    assert hidden_runtime(runtime, [Mount("/x", "/data")]) == []


def run_sandbox(tmp_path: Path, mounts: list[dict], argv: list[str]) -> subprocess.CompletedProcess:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"mounts": mounts, "env": {"PATH": "/usr/bin:/bin"}, "workingDir": "/",
                                "argv": argv, "devStage": str(tmp_path / "dev-stage")}))
    return subprocess.run([sys.executable, "-I", "-S", SANDBOX, str(spec)], capture_output=True, text=True,
                          timeout=30)


def test_glibc_resolves_through_the_bound_hosts_file(tmp_path: Path):
    name = f"train-0.ranks-{uuid.uuid4().hex[:8]}"
    hosts = tmp_path / "etc-hosts"
    hosts.write_text(f"127.0.0.1\tlocalhost\n127.0.0.1\t{name}\n")
    try:
        socket.getaddrinfo(name, None)
        raise AssertionError(f"{name} resolves on the host: the test would prove nothing")
    except socket.gaierror:
        pass
    mounts = [{"source": str(hosts), "target": "/etc/hosts", "readOnly": True}]
    script = (f"import socket; print(socket.gethostbyname({name!r}))\n"
              "try:\n    open('/etc/hosts', 'a')\nexcept OSError:\n    print('read-only')")
    result = run_sandbox(tmp_path, mounts, [sys.executable, "-I", "-c", script])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["127.0.0.1", "read-only"]
    getent = run_sandbox(tmp_path, mounts, ["getent", "hosts", name])  # glibc's NSS, outside Python
    assert getent.returncode == 0 and getent.stdout.split() == ["127.0.0.1", name], getent


def test_sources_under_a_covered_path_are_the_hosts(tmp_path: Path):
    """An emptyDir at /tmp must not hide the sources of later mounts that live under the host's /tmp, nor
    the runtime paths bound back on top of it."""
    cover = tmp_path / "emptydir"
    cover.mkdir()
    data = Path("/tmp") / f"quranft-src-{uuid.uuid4().hex[:8]}"
    data.mkdir()
    try:
        (data / "f.txt").write_text("from the host's /tmp")
        mounts = [{"source": str(cover), "target": "/tmp", "readOnly": False},
                  {"source": str(data), "target": "/tmp/view", "readOnly": True},
                  {"source": str(data), "target": str(data), "readOnly": True}]
        result = run_sandbox(tmp_path, mounts, ["sh", "-c", f"cat /tmp/view/f.txt; echo; cat {data}/f.txt; echo; "
                                                            "echo x > /tmp/new; ls /tmp"])
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == ["from the host's /tmp", "from the host's /tmp", "new", data.name,
                                              "view"]
        assert (cover / "new").read_text() == "x\n"  # /tmp is the emptyDir
    finally:
        (data / "f.txt").unlink()
        data.rmdir()
