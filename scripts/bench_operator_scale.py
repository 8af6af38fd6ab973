#!/usr/bin/env python
"""Operator latency and scale on the embedded cluster, with no-op stub stages.

Two measurements, in this order, against one operator:

1. Stage hop (--hop-runs N, one run at a time): how long the operator takes from a stage Job's completion to the
   next stage's Job (prepare -> train, train -> benchmark), p50/p99 over the 2 N hops, plus create -> prepare Job.
   Times are the client's own watch clock (the moment the Job watch delivered the Job's Complete condition, and
   the moment it delivered the next Job's ADDED): creationTimestamps and condition times have one second
   resolution, far too coarse for a hop that should take well under a second.
2. Burst (--count N): create N QuranFineTunes as fast as possible and print how long each took from its
   creationTimestamp to its training Job's creationTimestamp (p50/p99/max), the wall time, and the operator's
   peak RSS (VmHWM).

    python scripts/bench_operator_scale.py --hop-runs 10 --count 200 --seed 1
    python scripts/bench_operator_scale.py --hop-runs 10 --count 0 --json    # the hop alone, JSON last line

The burst's runs are spread over --namespaces namespaces (<prefix>-<random>-<i>), each with one PVC "ws" that all
of its runs share with the same data spec: the first run's prepare stage (a 0 s stub) fills the data cache and its
siblings reuse it, so the figure is create -> (one shared prepare) -> train Job. The hop runs have a namespace of
their own and each its own data spec, so each really prepares. The client-side times (create call returned ->
the Job watch saw ADDED) are printed too. Uses the running embedded cluster (`quranft cluster up`, or
$QURANFT_CLUSTER_DIR) or starts one; deletes its namespaces at the end. With --json the last line is one JSON
object: hop_p50_s, hop_p99_s, hop_count, create_to_first_job_p50_s, burst_runs, burst_p99_s, rss_mib (null for a
part not run).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The operator tests' cluster kit (operator subprocess under its ServiceAccount, stub stages) is reused as is.
for folder in ("contract", "operator", "trainer", "benchmark", "tests/support"):
    if str(ROOT / folder) not in sys.path:
        sys.path.insert(0, str(ROOT / folder))


def proc_status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat fields 14 and 15, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


def summary(label: str, values: list[float]) -> str:
    return (f"{label}: p50 {percentile(values, 50):.2f} s  p99 {percentile(values, 99):.2f} s  "
            f"max {max(values):.2f} s  mean {statistics.fmean(values):.2f} s")


def ts(value) -> float:
    return (value if isinstance(value, datetime) else datetime.fromisoformat(value.replace("Z", "+00:00"))).timestamp()


class JobWatch:
    """Records, on the client's clock, when each stage Job of our namespaces was first seen (ADDED, or in the first
    list) and first seen complete (condition Complete=True): one watch over all namespaces."""

    def __init__(self, api, namespaces: set[str]):
        from quranft.operator.builders import LABEL_RUN, LABEL_STAGE

        self.api, self.namespaces = api, namespaces
        self.run_label, self.stage_label = LABEL_RUN, LABEL_STAGE
        self.seen: dict[tuple[str, str, str], float] = {}  # (namespace, run, stage) -> time.time() first seen
        self.created: dict[tuple[str, str, str], float] = {}  # (namespace, run, stage) -> Job creationTimestamp
        self.completed: dict[tuple[str, str, str], float] = {}  # (namespace, run, stage) -> time.time() Complete
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="job-watch")

    def start(self) -> "JobWatch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def count(self, stage: str, namespaces: set[str] | None = None) -> int:
        with self.lock:
            return sum(1 for ns, _, s in self.created if s == stage and (namespaces is None or ns in namespaces))

    def by_stage(self, table: dict, stage: str) -> dict[tuple[str, str], float]:
        """(namespace, run) -> time, for one stage, from one of the three tables."""
        with self.lock:
            return {(ns, run): t for (ns, run, s), t in table.items() if s == stage}

    def _record(self, job, now: float) -> None:
        labels = job.metadata.labels or {}
        key = (job.metadata.namespace, labels.get(self.run_label), labels.get(self.stage_label))
        if key[0] not in self.namespaces:
            return
        complete = any(c.type == "Complete" and c.status == "True" for c in (job.status.conditions or []))
        with self.lock:
            self.seen.setdefault(key, now)
            self.created.setdefault(key, ts(job.metadata.creation_timestamp))
            if complete:
                self.completed.setdefault(key, now)

    def _loop(self) -> None:
        from kubernetes import client, watch

        batch = client.BatchV1Api(self.api)
        while not self._stop.is_set():
            try:
                listed = batch.list_job_for_all_namespaces(label_selector=self.run_label)
                for job in listed.items:
                    self._record(job, time.time())
                stream = watch.Watch().stream(batch.list_job_for_all_namespaces, label_selector=self.run_label,
                                              resource_version=listed.metadata.resource_version,
                                              timeout_seconds=5)
                for event in stream:
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._record(event["object"], time.time())
                    if self._stop.is_set():
                        break
            except Exception:  # noqa: BLE001  a broken watch (e.g. 410 Gone) is restarted from a fresh list
                time.sleep(0.2)


def reconcile_totals(port: int) -> tuple[float, float]:
    """(passes, seconds in passes) so far, from the operator's quranft_reconcile_duration_seconds histogram."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found = dict(re.findall(r"^quranft_reconcile_duration_seconds_(count|sum) (\S+)$", text, re.M))
    return float(found.get("count", 0)), float(found.get("sum", 0))


def stage_hops(watcher: JobWatch, keys: list[tuple[str, str]]) -> list[float]:
    """Seconds from a stage Job seen complete to the next stage's Job seen (prepare -> train, train -> benchmark)
    for each run in `keys`."""
    hops = []
    for done, following in (("prepare", "train"), ("train", "benchmark")):
        finished, started = watcher.by_stage(watcher.completed, done), watcher.by_stage(watcher.seen, following)
        hops += [started[k] - finished[k] for k in keys if k in finished and k in started]
    return hops


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hop-runs", type=int, default=10, help="runs for the stage hop, one at a time (0: skip)")
    p.add_argument("--count", type=int, default=200, help="QuranFineTunes to create in the burst (0: skip)")
    p.add_argument("--seed", type=int, default=1, help="seeds the order in which runs go to namespaces")
    p.add_argument("--namespace-prefix", default="bench-scale")
    p.add_argument("--namespaces", type=int, default=4, help="namespaces the burst's runs are spread over")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for all training Jobs")
    p.add_argument("--hop-timeout", type=float, default=120, help="seconds one hop run may take to succeed")
    p.add_argument("--sample-seconds", type=float, default=1.0, help="operator RSS sampling period")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = p.parse_args(argv)
    if args.hop_runs < 0 or args.count < 0 or args.namespaces < 1:
        p.error("--hop-runs and --count must be >= 0 and --namespaces >= 1")

    from clusterkit import script_cluster

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731  progress to stderr, figures to stdout
    with script_cluster(log=log) as cluster:
        return run(args, cluster, log)


def hop_runs(args, hop_env, watcher: JobWatch, log) -> tuple[list[float], list[float]]:
    """One run at a time, each with its own data spec (so it really prepares): (stage hops, create -> prepare)."""
    from clusterkit import resource, stub_commands

    commands = stub_commands(prepare_seconds=0, train_seconds=0, bench_seconds=0)
    keys, creates = [], []
    for i in range(args.hop_runs):
        name = f"hop-{i:03d}"
        returned = time.time()
        hop_env.create(resource(name, commands=commands,
                                data={"source": "local", "localPath": f"/workspace/synth-hop-{i}"}))
        returned = (returned + time.time()) / 2  # the create call's midpoint
        hop_env.wait_phase(name, ("Succeeded", "Failed"), timeout=args.hop_timeout)
        key = (hop_env.ns, name)
        hop_env.wait(lambda: watcher.by_stage(watcher.completed, "benchmark").get(key), 30,
                     f"{name}'s benchmark Job seen complete", interval=0.1)
        keys.append(key)
        first = watcher.by_stage(watcher.seen, "prepare").get(key)
        if first is not None:
            creates.append(first - returned)
        got = stage_hops(watcher, [key])
        log(f"  {name}: hops {', '.join(f'{h:.2f}' for h in got)} s")
    return stage_hops(watcher, keys), creates


def run(args, cluster, log) -> int:
    from clusterkit import Env, release_runs, resource, stub_commands
    from kubernetes import client

    from quranft.cluster import controlplane

    api = cluster.api_client()
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    tag = uuid.uuid4().hex[:6]
    names = [f"{args.namespace_prefix}-{tag}-{i}" for i in range(args.namespaces if args.count else 0)]
    hop_ns = f"{args.namespace_prefix}-{tag}-hop" if args.hop_runs else None
    workdir = Path(tempfile.mkdtemp(prefix="quranft-bench-scale-"))
    envs: list[Env] = []
    commands = stub_commands(prepare_seconds=0, train_seconds=0, bench_seconds=0)
    rng = random.Random(args.seed)
    placement = [rng.randrange(args.namespaces) for _ in range(args.count)]
    watcher = JobWatch(api, set(names) | ({hop_ns} if hop_ns else set()))
    created: dict[tuple[str, str], tuple[float, float]] = {}  # key -> (creationTimestamp, local time returned)
    rss: list[float] = []
    operator_env = None
    hops: list[float] = []
    creates: list[float] = []
    hop_passes = burst_passes = (0.0, 0.0)  # (reconcile passes, seconds in them)
    hop_cpu = burst_cpu = 0.0  # operator CPU seconds (user + system)
    create_seconds = wall = 0.0
    rss_start = peak_kib = 0.0
    try:
        for name in ([hop_ns] if hop_ns else []) + names:
            controlplane.create_ready_namespace(core, name)
            env = Env(cluster, name, workdir / name)
            env.workdir.mkdir(parents=True)
            env.claim()
            envs.append(env)
        operator_env = envs[0]
        operator_env.start_operator(*[a for e in envs[1:] for a in ("--namespace", e.ns)])
        watcher.start()
        pid = operator_env.proc.pid
        time.sleep(3)  # let kopf list and start its watches; runs created earlier would only be "resumed"
        if operator_env.proc.poll() is not None:
            raise SystemExit(f"operator exited with {operator_env.proc.returncode}:\n{operator_env.log_tail()}")
        rss_start = proc_status_kib(pid, "VmRSS") / 1024
        if hop_ns:
            log(f"stage hop: {args.hop_runs} runs one at a time in {hop_ns}")
            cpu_start = cpu_seconds(pid)
            hops, creates = hop_runs(args, envs[0], watcher, log)
            hop_passes = reconcile_totals(operator_env.metrics_port)
            hop_cpu = cpu_seconds(pid) - cpu_start
        burst_envs = envs[1:] if hop_ns else envs
        if args.count:
            log(f"creating {args.count} runs in {args.namespaces} namespaces ({names[0]} ...)")
            t0, cpu_start = time.time(), cpu_seconds(pid)
            for i, slot in enumerate(placement):
                env = burst_envs[slot]
                obj = env.create(resource(f"run-{i:04d}", commands=commands))
                created[(env.ns, obj["metadata"]["name"])] = (ts(obj["metadata"]["creationTimestamp"]), time.time())
            create_seconds = time.time() - t0
            log(f"created in {create_seconds:.1f} s; waiting for training Jobs")
            deadline = time.monotonic() + args.timeout
            next_sample = 0.0
            while watcher.count("train", set(names)) < args.count and time.monotonic() < deadline:
                if operator_env.proc.poll() is not None:
                    raise SystemExit(f"operator exited with {operator_env.proc.returncode}:\n"
                                     f"{operator_env.log_tail()}")
                if time.monotonic() >= next_sample:
                    rss.append(proc_status_kib(pid, "VmRSS") / 1024)
                    next_sample = time.monotonic() + args.sample_seconds
                    log(f"  {time.time() - t0:6.1f} s: {watcher.count('train', set(names))}/{args.count} training "
                        f"Jobs, operator RSS {rss[-1]:.0f} MiB")
                time.sleep(0.2)
            seen = watcher.by_stage(watcher.seen, "train")
            wall = max((seen[k] for k in created if k in seen), default=time.time()) - t0
            total = reconcile_totals(operator_env.metrics_port)
            burst_cpu = cpu_seconds(pid) - cpu_start
            burst_passes = (total[0] - hop_passes[0], total[1] - hop_passes[1])
        peak_kib = proc_status_kib(pid, "VmHWM")
    finally:
        watcher.stop()
        log("cleaning up")
        release_runs(envs, core, custom, log)
        api.close()

    train_created, train_seen = watcher.by_stage(watcher.created, "train"), watcher.by_stage(watcher.seen, "train")
    server = [train_created[k] - created[k][0] for k in created if k in train_created]
    client_side = [train_seen[k] - created[k][1] for k in created if k in train_seen]
    print(f"bench_operator_scale: stub stages (0 s each), seed {args.seed}")
    if hop_ns:
        print(f"  stage hop, {args.hop_runs} runs one at a time: {len(hops)}/{2 * args.hop_runs} hops measured")
        if hops:
            print("  " + summary("Job complete seen -> next stage's Job seen (client watch)", hops))
        if creates:
            print("  " + summary("create returned -> prepare Job seen (client watch)", creates))
        print(f"  reconcile passes: {hop_passes[0]:.0f} ({hop_passes[0] / max(args.hop_runs, 1):.1f} per run), "
              f"{hop_passes[1]:.2f} s in them; operator CPU {hop_cpu:.1f} s ({hop_cpu / max(args.hop_runs, 1):.2f} s per run)")
    if args.count:
        print(f"  burst: {args.count} QuranFineTunes in {args.namespaces} namespaces, created in "
              f"{create_seconds:.1f} s ({args.count / max(create_seconds, 1e-9):.1f}/s)")
        print(f"  training Jobs created: {len(server)}/{args.count}")
        if server:
            print("  " + summary("create -> train Job (creationTimestamps, 1 s resolution)", server))
            print("  " + summary("create returned -> train Job seen (client clock)", client_side))
        print(f"  wall time (first create -> last train Job seen): {wall:.1f} s")
        print(f"  reconcile passes until then: {burst_passes[0]:.0f} ({burst_passes[0] / args.count:.1f} per run), "
              f"{burst_passes[1]:.2f} s in them; operator CPU {burst_cpu:.1f} s")
    print(f"  operator RSS: {rss_start:.1f} MiB at the start, peak (VmHWM) {peak_kib / 1024:.1f} MiB")
    print(f"  operator log: {operator_env.log_path if operator_env else '-'}")
    if args.json:
        print(json.dumps({
            "hop_p50_s": round(percentile(hops, 50), 3) if hops else None,
            "hop_p99_s": round(percentile(hops, 99), 3) if hops else None,
            "hop_count": len(hops),
            "create_to_first_job_p50_s": round(percentile(creates, 50), 3) if creates else None,
            "burst_runs": args.count if args.count else None,
            "burst_p99_s": round(percentile(server, 99), 3) if server else None,
            "rss_mib": round(peak_kib / 1024, 1) if peak_kib else None,
        }))
    ok_hops = len(hops) == 2 * args.hop_runs
    return 0 if ok_hops and len(server) == args.count else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
