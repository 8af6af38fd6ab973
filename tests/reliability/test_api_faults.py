"""Item 2: API faults between the operator and the API server (tests/reliability/faultproxy.py), and the
operator being down while resources are created, changed and deleted."""
from __future__ import annotations

import random
import time
from datetime import datetime

import pytest
from chaoslib import Tracker, chaos_resource
from clusterkit import condition, resource, stub_commands
from proxied import ProxiedEnv

pytestmark = pytest.mark.cluster
FAST = stub_commands(prepare_seconds=0.5, train_seconds=2.0, bench_seconds=0.5)


@pytest.fixture
def penv(installed, namespace, tmp_path, seed):
    e = ProxiedEnv(installed, namespace, tmp_path, seed)
    yield e
    e.close()


def _fast(name: str, index: int) -> dict:
    body = chaos_resource(name, index)
    body["metadata"]["annotations"] = resource(name, commands=FAST)["metadata"]["annotations"]
    return body


def _startups(env) -> list[float]:
    """Wall-clock times of the operator's "started" log lines (its kopf startup handler)."""
    out = []
    for line in env.log_path.read_text(errors="replace").splitlines() if env.log_path.exists() else []:
        if "quranft operator started" in line:
            out.append(datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return out


def _assert_one_job_per_stage(tracker: Tracker, names: list[str]) -> None:
    tracker.poll()
    counts = tracker.jobs_per_stage(names)
    assert all(sorted(c.values()) == [1, 1, 1] for c in counts.values()), counts


def test_a_fifth_of_requests_answered_503_every_run_reaches_its_verdict(penv):
    penv.claim()
    penv.proxy.error_rate = 0.2
    penv.start_operator()
    names = [f"flaky-{i}" for i in range(3)]
    with Tracker(penv.cluster, penv.ns) as tracker:
        for i, name in enumerate(names):
            penv.create(_fast(name, i))
            tracker.mark_created(name)
        penv.wait(lambda: tracker.finished(names), 240, "every run to finish behind a flaky API server")
        _assert_one_job_per_stage(tracker, names)
    s = penv.proxy.stats
    print(f"\n503 faults: {s.faults_before} before + {s.faults_after} after forwarding of {s.requests} requests "
          f"({(s.faults_before + s.faults_after) / max(1, s.requests):.0%}); by verb {dict(s.by_verb)}; "
          f"runs: {[f'{tracker.duration(n):.1f}s' for n in names]}")
    assert {n: tracker.phases()[n] for n in names} == {n: "Succeeded" for n in names}
    assert s.faults_after >= 3 and s.faults_before >= 3  # the faults really happened, on both sides


def test_b_silent_watch_then_c_410_gone_a_later_resource_is_handled_and_nothing_missed(penv, seed):
    """(b) and (c) share one operator (start-up is the slow part on a loaded machine)."""
    penv.claim()
    penv.start_operator()
    penv.create(_fast("before", 0))
    penv.wait(lambda: (penv.get("before").get("status") or {}).get("phase"), 60, "the operator to handle a run")
    time.sleep(random.Random(seed).uniform(0.0, 3.0))
    # (b) every open watch stream goes silent; a resource created afterwards is handled within 20 s.
    frozen = penv.proxy.silence()
    assert frozen >= 3, "the operator's watch streams (resources, Jobs, pods) were open"
    created = time.monotonic()
    penv.create(_fast("after", 1))
    penv.wait(lambda: (penv.get("after").get("status") or {}).get("phase"), 30, "the operator to handle it")
    handled = time.monotonic() - created
    print(f"\nsilent watch: {frozen} streams frozen; a resource created afterwards was handled in {handled:.1f} s")
    assert handled <= 20.0
    # (c) every stream reconnects now, and the reconnects are told 410 Gone: re-list, nothing missed.
    penv.proxy.gone_watches = 6
    penv.proxy.silence()
    names = ["gone-1", "gone-2"]
    everyone = ["before", "after", *names]
    with Tracker(penv.cluster, penv.ns) as tracker:
        for i, name in enumerate(names, start=2):
            penv.create(_fast(name, i))
            tracker.mark_created(name)
        penv.wait(lambda: tracker.finished(everyone), 180, "every run to finish")
        _assert_one_job_per_stage(tracker, everyone)
        phases = tracker.phases()
    print(f"410 Gone: {penv.proxy.stats.gone} watch requests answered 410; runs {phases}")
    assert penv.proxy.stats.gone >= 3
    assert all(phases[n] == "Succeeded" for n in everyone), phases


def test_d_operator_down_while_resources_change_latest_state_wins(env, seed):
    rng = random.Random(seed)
    env.claim()
    env.start_operator()
    # Known to the operator before it goes down: one to delete, one to suspend while it is down.
    env.create(chaos_resource("doomed", 0))
    slow = stub_commands(prepare_seconds=0.5, train_seconds=30.0, bench_seconds=0.5)
    env.create(resource("paused", commands=slow, data={"source": "local", "localPath": "/workspace/p"}))
    env.wait(lambda: all(env.get(n).get("metadata", {}).get("finalizers") for n in ("doomed", "paused"))
             and env.jobs("paused", "train"), 90, "both handled, paused training")
    time.sleep(rng.uniform(0.0, 2.0))
    env.kill_operator()
    # While it is down: create, create-then-delete, delete, create-suspended-then-resume, suspend.
    env.create(_fast("born", 1))
    env.create(_fast("ghost", 2))
    env.delete("ghost")
    env.delete("doomed")
    flipped = _fast("flipped", 3)
    flipped["spec"]["suspend"] = True
    env.create(flipped)
    env.custom.patch_namespaced_custom_object("quranft.io", "v1alpha1", env.ns, "quranfinetunes", "flipped",
                                              {"spec": {"suspend": False}})
    env.custom.patch_namespaced_custom_object("quranft.io", "v1alpha1", env.ns, "quranfinetunes", "paused",
                                              {"spec": {"suspend": True}})
    assert env.get("doomed")["metadata"].get("deletionTimestamp")  # held by the finalizer while down
    restarted = time.time()
    starts = len(_startups(env))
    env.start_operator()
    names = {i["metadata"]["name"] for i in env.custom.list_namespaced_custom_object(
        "quranft.io", "v1alpha1", env.ns, "quranfinetunes")["items"]}
    env.wait(lambda: "doomed" not in {i["metadata"]["name"] for i in env.custom.list_namespaced_custom_object(
        "quranft.io", "v1alpha1", env.ns, "quranfinetunes")["items"]}, 30, "the deleted resource to go")
    gone_at = time.time()
    ready_at = env.wait(lambda: _startups(env)[starts:], 30, "the operator's startup line")[0]
    deleted_in, after_ready = gone_at - restarted, gone_at - ready_at
    for name in ("born", "flipped"):
        obj = env.wait_phase(name, ("Succeeded", "Failed"), 150)
        assert obj["status"]["phase"] == "Succeeded", (name, obj["status"])
    paused = env.wait_phase("paused", "Suspended", 60)
    assert condition(paused, "Suspended")["status"] == "True"
    assert env.batch.read_namespaced_job("paused-train", env.ns).spec.suspend is True
    print(f"\noperator down: the deleted resource was gone {deleted_in:.1f} s after the restart "
          f"({ready_at - restarted:.1f} s process start-up + {after_ready:.1f} s after its startup handler ran); "
          f"names at restart {sorted(names)}")
    # Measured from the operator's startup handler: Python's import time on a loaded machine is not the
    # operator's doing (7 s here with 2 busy cores); both figures are printed.
    assert after_ready <= 10.0
    assert env.jobs("ghost") == [] and not [p for p in env.pods() if p.metadata.labels["quranft.io/run"] == "ghost"]
    for name in ("born", "flipped"):
        stages = sorted(j.metadata.labels["quranft.io/stage"] for j in env.jobs(name))
        assert stages == ["benchmark", "prepare", "train"], (name, stages)
    assert len(env.jobs("paused", "train")) == 1
