"""Operator chaos: SIGKILL the operator at seeded random moments while stub runs go through their stages.

Shared by tests/reliability/test_chaos.py (a few kills, CI) and scripts/reliability/chaos.py (50 kills).
A Tracker polls the namespace in a thread and records, per run, when each phase was first seen and every
Job uid per (run, stage, generation): a Job deleted and created again under the same name counts twice.
"""
from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from clusterkit import GROUP, PLURAL, VERSION, Env, resource, stub_commands

from quranft.operator.builders import LABEL_GENERATION, LABEL_RUN, LABEL_STAGE

TERMINAL = ("Succeeded", "Failed")
STAGES = ("prepare", "train", "benchmark")
KILL_STAGES = ("Pending", "PreparingData", "Training", "Benchmarking")


class Tracker:
    """Polls the QuranFineTunes and Jobs of one namespace (its own API client; thread-safe reads)."""

    def __init__(self, cluster, namespace: str, interval: float = 0.25):
        from kubernetes import client

        self.ns, self.interval = namespace, interval
        self.api = cluster.api_client()
        self.custom = client.CustomObjectsApi(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.lock = threading.Lock()
        self.created: dict[str, float] = {}  # run -> monotonic time the test created it
        self.first_seen: dict[str, dict[str, float]] = defaultdict(dict)  # run -> phase -> monotonic time
        self.phase: dict[str, str | None] = {}
        self.status: dict[str, dict] = {}
        self.status_changes: list[float] = []  # monotonic times at which some run's status changed
        self.job_uids: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="tracker")
        self.errors = 0

    def __enter__(self) -> "Tracker":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)
        self.api.close()

    def mark_created(self, name: str) -> None:
        with self.lock:
            self.created[name] = time.monotonic()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # noqa: BLE001  a failed poll is retried; counted for the report
                self.errors += 1
            self._stop.wait(self.interval)

    def poll(self) -> None:
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL)["items"]
        jobs = self.batch.list_namespaced_job(self.ns, label_selector=LABEL_RUN).items
        now = time.monotonic()
        with self.lock:
            for item in items:
                name, status = item["metadata"]["name"], item.get("status") or {}
                phase = status.get("phase")
                if name in self.status and status != self.status[name]:
                    self.status_changes.append(now)
                self.phase[name], self.status[name] = phase, status
                if phase and phase not in self.first_seen[name]:
                    self.first_seen[name][phase] = now
            for job in jobs:
                labels = job.metadata.labels
                key = (labels[LABEL_RUN], labels[LABEL_STAGE], labels.get(LABEL_GENERATION, "?"))
                self.job_uids[key].add(job.metadata.uid)

    def phases(self) -> dict[str, str | None]:
        with self.lock:
            return dict(self.phase)

    def wait_phase(self, name: str, phase: str, timeout: float) -> float:
        """Monotonic time `name` was first seen in `phase` (its create time for Pending); waits for it.
        A run that skipped the phase or already finished returns the time of its latest phase."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                seen = self.first_seen[name]
                if phase == "Pending" and name in self.created:
                    return self.created[name]
                if phase in seen:
                    return seen[phase]
                if self.phase.get(name) in TERMINAL or time.monotonic() > deadline:
                    return max(seen.values(), default=time.monotonic())
            time.sleep(0.05)

    def changes(self) -> list[float]:
        with self.lock:
            return list(self.status_changes)

    def finished(self, names) -> bool:
        phases = self.phases()
        return all(phases.get(n) in TERMINAL for n in names)

    def duration(self, name: str) -> float | None:
        """Seconds from create to the first terminal phase seen."""
        with self.lock:
            end = min((t for p, t in self.first_seen[name].items() if p in TERMINAL), default=None)
            return None if end is None or name not in self.created else end - self.created[name]

    def kills_during(self, name: str, kill_times: list[float]) -> int:
        with self.lock:
            start = self.created.get(name, float("inf"))
            end = min((t for p, t in self.first_seen[name].items() if p in TERMINAL), default=float("inf"))
        return sum(1 for t in kill_times if start <= t <= end)

    def jobs_per_stage(self, names) -> dict[str, Counter]:
        """run -> Counter(Jobs per (stage, generation)); every value must be 1."""
        with self.lock:
            out: dict[str, Counter] = {n: Counter() for n in names}
            for (run, stage, gen), uids in self.job_uids.items():
                if run in out:
                    out[run][f"{stage}/g{gen}"] = len(uids)
            return out


@dataclass
class ChaosReport:
    seed: int
    kills: int
    runs: list[str]
    reference_seconds: float
    verdicts: dict[str, str | None]
    durations: dict[str, float | None]
    jobs: dict[str, Counter]
    kill_phases: Counter = field(default_factory=Counter)
    restart_seconds: list[float] = field(default_factory=list)
    kills_during: dict[str, int] = field(default_factory=dict)  # run -> kills while it was unfinished
    overrun_per_kill_limit: float = 30.0

    @property
    def duplicates(self) -> dict[str, dict]:
        return {r: {k: v for k, v in c.items() if v != 1} for r, c in self.jobs.items() if any(v != 1 for v in c.values())}

    @property
    def missing_stages(self) -> dict[str, list[str]]:
        out = {}
        for run, counts in self.jobs.items():
            stages = {k.split("/")[0] for k in counts}
            if set(STAGES) - stages:
                out[run] = sorted(set(STAGES) - stages)
        return out

    @property
    def max_overrun(self) -> float:
        return max((d - self.reference_seconds for d in self.durations.values() if d is not None), default=float("nan"))

    @property
    def over_budget(self) -> dict[str, str]:
        """Runs that took longer than the normal time + limit for each kill they lived through."""
        out = {}
        for run, took in self.durations.items():
            kills = max(1, self.kills_during.get(run, 0))
            if took is None or took - self.reference_seconds > self.overrun_per_kill_limit * kills:
                out[run] = f"{took and took - self.reference_seconds:.1f} s over with {kills} kill(s)"
        return out

    def summary(self) -> str:
        ok = sum(1 for v in self.verdicts.values() if v == "Succeeded")
        per_stage = Counter()
        for counts in self.jobs.values():
            for key, n in counts.items():
                per_stage[(key.split("/")[0], n)] += 1
        stage_text = ", ".join(f"{stage}: {sum(c for (s, n), c in per_stage.items() if s == stage and n == 1)} runs x1"
                               + "".join(f", {c} runs x{n}" for (s, n), c in sorted(per_stage.items())
                                         if s == stage and n != 1)
                               for stage in STAGES)
        restarts = sorted(self.restart_seconds)
        return "\n".join([
            f"chaos seed={self.seed}: {self.kills} SIGKILLs of the operator over {len(self.runs)} stub runs",
            f"  kill moments by phase of the newest run: {dict(sorted(self.kill_phases.items()))}",
            f"  Jobs per stage per generation: {stage_text}; duplicates: {self.duplicates or 'none'}",
            f"  verdicts: {ok}/{len(self.runs)} Succeeded",
            f"  normal run time {self.reference_seconds:.1f} s; max overrun {self.max_overrun:.1f} s "
            f"(slowest run {max((d for d in self.durations.values() if d), default=0):.1f} s); kills lived through "
            f"per run: {dict(sorted(Counter(self.kills_during.values()).items()))}; max overrun per kill "
            f"{max(((d - self.reference_seconds) / max(1, self.kills_during.get(r, 0)) for r, d in self.durations.items() if d), default=float('nan')):.1f} s; "
            f"runs over {self.overrun_per_kill_limit:.0f} s per kill: {self.over_budget or 'none'}",
            f"  operator restart to first status write: median "
            f"{restarts[len(restarts) // 2] if restarts else float('nan'):.1f} s, max {max(restarts, default=float('nan')):.1f} s",
        ])


def chaos_commands() -> dict[str, list[str]]:
    # Long enough stages that kills land inside each of them; short enough for CI.
    return stub_commands(prepare_seconds=1.5, train_seconds=3.0, bench_seconds=1.5)


def chaos_resource(name: str, index: int) -> dict:
    # A distinct data spec per run, so no run reuses a sibling's prepared data: every run has all 3 stages.
    return resource(name, commands=chaos_commands(), data={"source": "local", "localPath": f"/workspace/synth-{index}"})


def run_reference(env: Env, tracker: Tracker, timeout: float = 180) -> float:
    """Normal time of one stub run with nobody killing the operator."""
    env.create(chaos_resource("reference", 0))
    tracker.mark_created("reference")
    env.wait(lambda: tracker.finished(["reference"]), timeout, "the reference run to finish")
    assert tracker.phases()["reference"] == "Succeeded", tracker.status.get("reference")
    return tracker.duration("reference")


def run_chaos(env: Env, tracker: Tracker, *, seed: int, kills: int, max_in_flight: int = 2,
              max_down: float = 2.0, timeout: float = 600, log=print) -> ChaosReport:
    """Create one run per kill; kill the operator at a seeded moment of the new run's life; restart it."""
    rng = random.Random(seed)
    if env.proc is None or env.proc.poll() is not None:
        env.start_operator()
    reference = run_reference(env, tracker)
    log(f"reference stub run: {reference:.1f} s")
    runs: list[str] = []
    kill_phases: Counter = Counter()
    kill_times: list[float] = []
    restart_times: list[float] = []
    deadline = time.monotonic() + timeout
    for i in range(kills):
        env.wait(lambda: sum(1 for r in runs if tracker.phases().get(r) not in TERMINAL) < max_in_flight,
                 max(1.0, deadline - time.monotonic()), "a free slot for the next run")
        name = f"chaos-{i:03d}"
        env.create(chaos_resource(name, i + 1))
        tracker.mark_created(name)
        runs.append(name)
        # A seeded moment inside a seeded stage of the newest run (just after create, or some time into
        # data preparation, training or benchmarking, which ends with the verdict being written).
        target, offset = rng.choice(KILL_STAGES), rng.uniform(0.0, 3.0)
        reached = tracker.wait_phase(name, target, timeout=120)
        time.sleep(max(0.0, reached + offset - time.monotonic()))
        kill_phases[tracker.phases().get(name) or "Pending"] += 1
        kill_times.append(time.monotonic())
        env.kill_operator()
        time.sleep(rng.uniform(0.0, max_down))
        env.start_operator()
        restart_times.append(time.monotonic())
        log(f"kill {i + 1}/{kills}: phases {[tracker.phases().get(r) for r in runs[-max_in_flight:]]}")
    env.wait(lambda: tracker.finished(runs), max(30.0, deadline - time.monotonic()), "every chaos run to finish")
    tracker.poll()
    return ChaosReport(seed=seed, kills=kills, runs=runs, reference_seconds=reference,
                       verdicts={r: tracker.phases().get(r) for r in runs},
                       durations={r: tracker.duration(r) for r in runs},
                       jobs=tracker.jobs_per_stage(runs), kill_phases=kill_phases,
                       restart_seconds=restart_latencies(restart_times, kill_times, tracker.changes()),
                       kills_during={r: tracker.kills_during(r, kill_times) for r in runs})


def restart_latencies(restarts: list[float], kills: list[float], changes: list[float]) -> list[float]:
    """Per restart: seconds to the next status write by the operator, if one came before the next kill."""
    out = []
    for i, restarted in enumerate(restarts):
        limit = kills[i + 1] if i + 1 < len(kills) else float("inf")
        first = next((t for t in changes if restarted < t < limit), None)
        if first is not None:
            out.append(first - restarted)
    return out
