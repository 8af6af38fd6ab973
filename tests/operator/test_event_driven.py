"""Event-driven passes (handlers.py, wakeups.py): what wakes a run's pass loop, when the clock still does, the
safety resync really set by reconcileIntervalSeconds, and on the embedded cluster a stage hop that takes a
moment instead of a timer tick."""
from __future__ import annotations

import asyncio
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import kopf
import pytest
import yaml

from quranft.operator import handlers, wakeups
from quranft.operator.observe import JobView, PodView
from quranft.operator.settings import OperatorSettings, settings_from_env

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def due(spec=None, status=None, jobs=None, progress_in=None):
    return wakeups.next_pass_in(spec or {}, status or {"phase": "Training"}, jobs or {}, NOW,
                                progress_in=progress_in, image_pull_deadline_s=600, default_startup_deadline_s=300)


def job(**kw) -> JobView:
    return JobView(**{"name": "r-train", "stage": "train", "created": ago(30), **kw})


# --- the clock a pass still needs -------------------------------------------------------------------------------

CASES = [
    # (label, kwargs of due(), expected seconds or None)
    ("nothing time-based: only a change wakes it", {}, None),
    ("running pod: the next log read", {"jobs": {"train": job(pods=(PodView("p", "Running", ago(30), running=True),))},
                                        "progress_in": 4.0}, 4.0),
    ("progress overdue: at once", {"progress_in": -3.0}, 0.0),
    ("pending pod: the earliest start-up deadline ahead",
     {"jobs": {"train": job(pods=(PodView("p", "Pending", ago(100), waiting_reason="ContainerCreating"),))}},
     200.25),
    ("pending pod with spec.startupDeadlineSeconds", {"spec": {"startupDeadlineSeconds": 120}, "jobs": {
        "train": job(pods=(PodView("p", "Pending", ago(100)),))}}, 20.25),
    ("pod placed after waiting for a GPU: the operator's deadlines count from its placement",
     {"jobs": {"train": job(pods=(PodView("p", "Pending", ago(1000), scheduled=ago(2)),))}}, 298.25),
    ("Job just created, no pod: read FailedCreate once it is a second old",
     {"jobs": {"train": job(created=ago(0.5))}}, 0.75),
    ("Job without pods for a while: FailedCreate is no watched change", {"jobs": {"train": job(created=ago(30))}},
     wakeups.UNWATCHED_RECHECK_S),
    ("queued by Kueue: its Workload is not watched", {"spec": {"queueName": "q"},
                                                      "jobs": {"train": job(suspended=True)}},
     wakeups.UNWATCHED_RECHECK_S),
    ("suspended by spec.suspend: the spec change wakes it", {"jobs": {"train": job(suspended=True)}}, None),
    ("finished, pod state not here yet: the observation grace",
     {"jobs": {"train": job(complete=True, completion_time=ago(5))}}, 15.25),
    ("finished long ago: nothing", {"jobs": {"train": job(complete=True, completion_time=ago(500), created=ago(600))}},
     None),
    ("terminal with a TTL: the cleanup", {"spec": {"ttlSecondsAfterFinished": 30},
                                          "status": {"phase": "Succeeded", "completionTime": "2026-01-01T11:59:50Z"}},
     20.25),
    ("just ended with ttl 0: the cleanup at once (it runs in the next pass)", {"spec": {"ttlSecondsAfterFinished": 0},
     "status": {"phase": "Succeeded", "completionTime": "2026-01-01T11:59:59Z"}}, 0.25),
    ("terminal, cleaned up: nothing", {"spec": {"ttlSecondsAfterFinished": 30}, "status": {
        "phase": "Succeeded", "completionTime": "2026-01-01T11:00:00Z", "cleanedUp": True}}, None),
    ("terminal without a TTL: nothing", {"status": {"phase": "Failed"}}, None),
]


@pytest.mark.parametrize("label,kwargs,expected", CASES, ids=[c[0] for c in CASES])
def test_next_pass_in(label, kwargs, expected):
    got = due(**kwargs)
    assert got == (pytest.approx(expected) if expected is not None else None), label


def test_a_pod_placed_after_a_long_gpu_wait_gets_the_start_up_deadline_from_its_placement():
    """Event-driven passes see the moment between placement and start (a timer rarely did): a pod that waited
    10 minutes for a GPU and was placed 2 s ago is starting, not past the operator's 5 s start-up deadline."""
    from quranft.operator import status as st

    placed = job(pods=(PodView("p", "Pending", ago(600), scheduled=ago(2)),))
    assert st.startup_problem(placed, NOW, None, image_pull_deadline_s=5, default_deadline_s=5) is None
    late = job(pods=(PodView("p", "Pending", ago(600), scheduled=ago(8)),))
    assert st.startup_problem(late, NOW, None, 5, 5)[0] == "StartupDeadlineExceeded"
    # spec.startupDeadlineSeconds counts every wait, the one for a node included.
    assert st.startup_problem(placed, NOW, 300, 5, 5)[0] == "StartupDeadlineExceeded"


def test_waits_on_others_names_the_three_waits():
    def status(ctype, reason, value="False"):
        return {"conditions": [{"type": ctype, "status": value, "reason": reason}]}

    assert wakeups.waits_on_others(status("QuotaAdmitted", "OperatorBudget"))
    assert wakeups.waits_on_others(status("DataReady", "WaitingForSibling"))
    assert wakeups.waits_on_others(status("Benchmarked", "WaitingForBaseline"))
    assert not wakeups.waits_on_others(status("QuotaAdmitted", "WaitingForKueue"))
    assert not wakeups.waits_on_others(status("DataReady", "Preparing"))
    assert not wakeups.waits_on_others(status("QuotaAdmitted", "Admitted", "True"))


def entry(name, ns="a", **kw):
    return {"namespace": ns, "name": name, "claim": "ws", "dataHash": "h1", "gpus": 0, "holding": False,
            "finished": False, "dataReady": False, "preparing": False, "phase": "Pending", "resultsPath": None, **kw}


def test_a_change_wakes_only_the_runs_waiting_on_what_it_touches():
    waiters = wakeups.Waiters()
    waiters.wait(("a", "budget-waiter"), ("budget",))
    waiters.wait(("a", "data-waiter"), ("data", "a", "ws", "h1"))
    waiters.wait(("a", "other-data"), ("data", "a", "ws", "h2"))
    waiters.wait(("a", "baseline-waiter"), ("run", "a", "base"))
    # The preparing sibling's data became ready: only the runs waiting for that data.
    assert waiters.changed(("a", "prep"), entry("prep", preparing=True), entry("prep", dataReady=True), 1.0) == \
        [("a", "data-waiter")]
    # A training run ends: a budget slot frees.
    assert waiters.changed(("a", "t"), entry("t", holding=True), entry("t", finished=True), 2.0) == \
        [("a", "budget-waiter")]
    # A new run frees nothing and brings no data; a deleted one frees its slot and may have been the preparer.
    assert waiters.changed(("a", "new"), None, entry("new"), 3.0) == []
    assert sorted(waiters.changed(("a", "gone"), entry("gone", preparing=True), None, 4.0)) == \
        [("a", "budget-waiter"), ("a", "data-waiter")]
    # The baseline finished its benchmark.
    assert waiters.changed(("a", "base"), entry("base", phase="Benchmarking"),
                           entry("base", phase="Succeeded", resultsPath="/r.json"), 5.0) == [("a", "baseline-waiter")]
    # Another namespace's data is another topic; a run's own change never wakes itself.
    assert waiters.changed(("b", "prep"), entry("prep", ns="b", preparing=True), entry("prep", ns="b"), 6.0) == []
    assert waiters.changed(("a", "data-waiter"), entry("data-waiter"), entry("data-waiter", dataReady=True), 7.0) == []
    assert waiters.changed_since(("data", "a", "ws", "h1"), 7.0) and not waiters.changed_since(("budget",), 4.5)
    waiters.wait(("a", "data-waiter"), None)
    assert ("a", "data-waiter") not in waiters.topic_of and ("data", "a", "ws", "h1") not in waiters.by_topic


def test_wait_topic_from_the_status():
    def status(ctype, reason):
        return {"conditions": [{"type": ctype, "status": "False", "reason": reason}]}

    e = entry("r")
    assert wakeups.wait_topic(status("QuotaAdmitted", "OperatorBudget"), e, None) == ("budget",)
    assert wakeups.wait_topic(status("DataReady", "WaitingForSibling"), e, None) == ("data", "a", "ws", "h1")
    assert wakeups.wait_topic(status("Benchmarked", "WaitingForBaseline"), e, "base") == ("run", "a", "base")
    assert wakeups.wait_topic(status("DataReady", "Preparing"), e, None) is None


def test_wakeups_registry_and_sleep():
    async def scenario():
        reg = wakeups.Wakeups()
        assert reg.wake(("ns", "r")) is False  # no loop yet: its first pass comes anyway
        first, second = reg.register(("ns", "r")), reg.register(("ns", "r"))
        assert reg.wake(("ns", "r")) and first.count == second.count == 1
        # A pass that began after that wake (it saw count 1) sleeps; one that began before it (saw 0) does not.
        assert await first.sleep(5.0, seen=0) is True
        started = time.monotonic()
        assert await first.sleep(0.05, seen=1) is False
        assert time.monotonic() - started >= 0.04
        asyncio.get_running_loop().call_later(0.05, reg.wake, ("ns", "r"))
        assert await first.sleep(5.0, seen=1) is True and first.count == 2
        reg.unregister(("ns", "r"), first)
        reg.unregister(("ns", "r"), second)
        assert len(reg) == 0

    asyncio.run(scenario())


def test_fresher_takes_our_write_until_the_watch_catches_up():
    live = {"metadata": {"resourceVersion": "10", "annotations": {"a": "1"}}, "spec": {"s": 1},
            "status": {"phase": "Pending"}}
    written = handlers._kept({"metadata": {"resourceVersion": "12", "annotations": {"a": "1" * 9000}},
                              "spec": {"s": 2}, "status": {"phase": "Training"}})
    assert "annotations" not in written["metadata"]  # the loop keeps no second copy of them
    fresher = handlers._fresher(live, written)
    assert fresher["status"]["phase"] == "Training" and fresher["spec"] == {"s": 2}
    assert fresher["metadata"] == {"resourceVersion": "12", "annotations": {"a": "1"}}
    assert live["metadata"]["resourceVersion"] == "10"  # a copy: kopf's live body is left alone
    assert handlers._fresher({**live, "metadata": {"resourceVersion": "13"}}, written)["metadata"]["resourceVersion"] \
        == "13"
    assert handlers._fresher(live, None) == live and handlers._fresher(live, None) is not live


# --- the loop: wakes, the clock, the resync, the stop ---------------------------------------------------------

class FakeStopped:
    """kopf.DaemonStopped as the loop uses it: truthy once set, awaitable wait()."""

    def __init__(self):
        self.event = asyncio.Event()

    def __bool__(self):
        return self.event.is_set()

    async def wait(self):
        await self.event.wait()


def run_loop(monkeypatch, outcomes, scenario, reconcile_interval=60.0):
    """Runs handlers.passes with reconcile() replaced by a recorder returning `outcomes` in turn (the last repeats);
    `scenario(memo, stopped, calls)` drives it. Returns the monotonic times of the passes."""
    calls: list[float] = []

    def fake_settle(body, memo, logger, *indexes):
        calls.append(time.monotonic())
        return outcomes[min(len(calls), len(outcomes)) - 1]

    monkeypatch.setattr(handlers, "reconcile", fake_settle)

    async def main():
        memo = kopf.Memo(settings=OperatorSettings(reconcile_interval=reconcile_interval),
                         executor=ThreadPoolExecutor(2), wakeups=wakeups.Wakeups(), waiters=wakeups.Waiters())
        stopped = FakeStopped()
        body = {"metadata": {"namespace": "ns", "name": "r", "resourceVersion": "1"}}
        loop = asyncio.create_task(handlers.passes(body=body, stopped=stopped, namespace="ns", name="r", memo=memo,
                                                   logger=handlers.log, run_jobs={}, run_pods={}, runs={}))
        await scenario(memo, stopped, calls)
        stopped.event.set()
        await asyncio.wait_for(loop, 5)
        assert len(memo.wakeups) == 0  # unregistered on exit
        memo.executor.shutdown()

    asyncio.run(main())
    return calls


async def until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_a_wake_runs_a_pass_at_once_and_nothing_runs_without_one(monkeypatch):
    async def scenario(memo, stopped, calls):
        await until(lambda: len(calls) == 1)  # the first pass when the loop starts
        await asyncio.sleep(0.3)
        assert len(calls) == 1  # no clock: nothing until a wake (resync 60 s)
        woken = time.monotonic()
        assert memo.wakeups.wake(("ns", "r"))
        await until(lambda: len(calls) == 2)
        assert calls[1] - woken < 0.2

    run_loop(monkeypatch, [handlers.Outcome()], scenario)


def test_the_resync_is_the_reconcile_interval_setting(monkeypatch):
    async def scenario(memo, stopped, calls):
        await until(lambda: len(calls) == 4)

    calls = run_loop(monkeypatch, [handlers.Outcome()], scenario, reconcile_interval=0.2)
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert all(0.18 <= g < 0.5 for g in gaps), gaps


def test_a_time_based_decision_shortens_the_sleep(monkeypatch):
    async def scenario(memo, stopped, calls):
        await until(lambda: len(calls) == 2)

    calls = run_loop(monkeypatch, [handlers.Outcome(next_in=0.1), handlers.Outcome()], scenario)
    assert 0.08 <= calls[1] - calls[0] < 1.0


def drive(monkeypatch, settle, scenario, settings=None, executor=None):
    """Runs handlers.passes with reconcile() replaced by `settle(memo)`, until `scenario(memo)` returns."""
    monkeypatch.setattr(handlers, "reconcile", lambda body, memo, logger, *indexes: settle(memo))

    async def main():
        memo = kopf.Memo(settings=settings or OperatorSettings(), executor=executor or ThreadPoolExecutor(1),
                         wakeups=wakeups.Wakeups(), waiters=wakeups.Waiters())
        stopped = FakeStopped()
        task = asyncio.create_task(handlers.passes(body={"metadata": {"resourceVersion": "1"}}, stopped=stopped,
                                                   namespace="ns", name="r", memo=memo, logger=handlers.log,
                                                   run_jobs={}, run_pods={}, runs={}))
        await scenario(memo)
        stopped.event.set()
        await asyncio.wait_for(task, 5)
        memo.executor.shutdown()

    asyncio.run(main())


def test_a_waiter_passes_again_when_another_run_changed_during_its_pass(monkeypatch):
    """The wake-up for a change that came while the first pass ran went to nobody (the run was not a waiter yet):
    the loop sees the change count moved and passes again at once instead of sleeping until the resync."""
    calls: list[float] = []

    def settle(memo):
        calls.append(time.monotonic())
        if len(calls) == 1:  # another run ends training while this pass runs
            memo.waiters.changed(("ns", "other"), entry("other", holding=True), entry("other", finished=True),
                                 time.monotonic())
            return handlers.Outcome(topic=("budget",))
        return handlers.Outcome()

    async def scenario(memo):
        await until(lambda: len(calls) == 2)
        await until(lambda: ("ns", "r") not in memo.waiters.topic_of)

    drive(monkeypatch, settle, scenario)
    assert calls[1] - calls[0] < 0.5


def test_a_waiter_is_registered_and_woken_by_another_runs_change(monkeypatch):
    calls: list[float] = []

    def settle(memo):
        calls.append(time.monotonic())
        return handlers.Outcome(topic=("data", "ns", "ws", "h1") if len(calls) == 1 else None)

    async def scenario(memo):
        await until(lambda: ("ns", "r") in memo.waiters.topic_of)
        await asyncio.sleep(0.05)
        for waiter in memo.waiters.changed(("ns", "prep"), entry("prep", ns="ns", preparing=True),
                                           entry("prep", ns="ns", dataReady=True), time.monotonic()):
            memo.wakeups.wake(waiter)
        await until(lambda: len(calls) == 2)

    drive(monkeypatch, settle, scenario)
    assert calls[1] - calls[0] < 1.0


def test_wakes_before_a_pass_began_cost_no_second_pass(monkeypatch):
    """Under load a pass waits for a thread; the wakes that come meanwhile are seen by that pass when it runs."""
    executor, free = ThreadPoolExecutor(1), threading.Event()
    executor.submit(free.wait)  # the only thread is busy: the first pass waits in the queue
    calls: list[float] = []

    def settle(memo):
        calls.append(time.monotonic())
        return handlers.Outcome()

    async def scenario(memo):
        await until(lambda: len(memo.wakeups) == 1)
        for _ in range(3):
            memo.wakeups.wake(("ns", "r"))
        free.set()
        await until(lambda: len(calls) == 1)
        await asyncio.sleep(0.3)
        assert len(calls) == 1
        memo.wakeups.wake(("ns", "r"))  # a change after the pass: one more
        await until(lambda: len(calls) == 2)

    drive(monkeypatch, settle, scenario, executor=executor)


def test_a_failed_pass_is_retried_after_its_delay(monkeypatch):
    calls: list[float] = []

    def settle(memo):
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise kopf.TemporaryError("old Job still exists", delay=0.1)
        return handlers.Outcome()

    async def scenario(memo):
        await until(lambda: len(calls) == 2)

    drive(monkeypatch, settle, scenario)
    assert 0.08 <= calls[1] - calls[0] < 1.0


# --- the resync reaches the loop from the chart ------------------------------------------------------------------

def test_chart_sets_the_resync_and_its_default_is_the_settings_default():
    values = yaml.safe_load((ROOT / "charts/quran-finetune/values.yaml").read_text())
    assert values["operator"]["reconcileIntervalSeconds"] == OperatorSettings().reconcile_interval == 60
    template = (ROOT / "charts/quran-finetune/templates/deployment.yaml").read_text()
    assert re.search(r"name: QURANFT_OPERATOR_RECONCILE_INTERVAL, value: \{\{ \.Values\.operator\."
                     r"reconcileIntervalSeconds \| quote \}\}", template)
    assert settings_from_env({"QURANFT_OPERATOR_RECONCILE_INTERVAL": "90"}).reconcile_interval == 90


# --- on the embedded cluster -------------------------------------------------------------------------------------

class JobTimes:
    """When this client's watch first saw each stage Job of a namespace, and first saw it complete."""

    def __init__(self, env):
        from kubernetes import client, watch

        self.seen: dict[tuple[str, str], float] = {}
        self.completed: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()
        self._batch, self._watch = client.BatchV1Api(env.api), watch
        self.ns = env.ns
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        from quranft.operator.builders import LABEL_RUN, LABEL_STAGE

        while not self._stop.is_set():
            try:
                for event in self._watch.Watch().stream(self._batch.list_namespaced_job, self.ns,
                                                        label_selector=LABEL_RUN, timeout_seconds=2):
                    job, now = event["object"], time.monotonic()
                    key = (job.metadata.labels[LABEL_RUN], job.metadata.labels[LABEL_STAGE])
                    self.seen.setdefault(key, now)
                    if any(c.type == "Complete" and c.status == "True" for c in job.status.conditions or []):
                        self.completed.setdefault(key, now)
            except Exception:  # noqa: BLE001  a dropped watch is re-listed
                time.sleep(0.1)

    def hops(self, run: str) -> list[float]:
        return [self.seen[(run, nxt)] - self.completed[(run, done)]
                for done, nxt in (("prepare", "train"), ("train", "benchmark"))]

    def close(self):
        self._stop.set()
        self._thread.join(5)


# A timer-driven operator (5 s ticks) hands over within 2 s with chance 2/5 per hop: 4 hops pass ~2.6 %.
HOP_LIMIT_S = 2.0


def test_stage_hops_follow_the_job_not_a_clock(env):
    """Job complete -> next stage's Job created in a moment, for two runs one after the other (each its own data,
    so each prepares); the resync is the 60 s default, so nothing here can be a resync."""
    from clusterkit import resource, stub_commands

    times = JobTimes(env)
    try:
        env.claim()
        env.start_operator()
        commands = stub_commands(prepare_seconds=0, train_seconds=0, bench_seconds=0)
        hops = []
        for i in range(2):
            name = f"hop-{i}"
            env.create(resource(name, commands=commands, data={"source": "local", "localPath": f"/workspace/h{i}"}))
            obj = env.wait_phase(name, ("Succeeded", "Failed"), timeout=120)
            assert obj["status"]["phase"] == "Succeeded", obj["status"]
            env.wait(lambda: (name, "benchmark") in times.completed, 20, f"{name}'s benchmark Job complete", 0.1)
            hops += times.hops(name)
        print(f"stage hops: {', '.join(f'{h:.2f}' for h in hops)} s")
        assert len(hops) == 4 and max(hops) < HOP_LIMIT_S, hops
    finally:
        times.close()


def test_a_freed_budget_slot_wakes_the_queued_run(env):
    """--max-concurrent-trainings 1: the second run waits Queued and starts the moment the first run's training
    Job completes (its index entry changes), not at the next resync."""
    from clusterkit import condition, resource, stub_commands

    times = JobTimes(env)
    try:
        env.claim()
        env.start_operator("--max-concurrent-trainings", "1")
        commands = stub_commands(prepare_seconds=0, train_seconds=2, bench_seconds=0)
        env.create(resource("first", commands=commands))
        env.wait(lambda: ("first", "train") in times.seen, 60, "first's training Job")
        env.create(resource("second", commands=commands))
        queued = env.wait_phase("second", "Queued", timeout=30)
        assert condition(queued, "QuotaAdmitted")["reason"] == "OperatorBudget"
        env.wait(lambda: ("first", "train") in times.completed, 60, "first's training Job complete", 0.1)
        # Same claim and data: the second reuses the first's data, so its next Job is its training Job.
        env.wait(lambda: ("second", "train") in times.seen, 30, "second's training Job", 0.1)
        wait = times.seen[("second", "train")] - times.completed[("first", "train")]
        print(f"slot freed -> queued run's Job: {wait:.2f} s")
        assert wait < HOP_LIMIT_S + 1.0, wait  # two passes and a status write apart, far below the 60 s resync
        assert env.wait_phase("second", ("Succeeded", "Failed"), timeout=120)["status"]["phase"] == "Succeeded"
    finally:
        times.close()
