#!/usr/bin/env python
"""Operator scale: create N QuranFineTunes with no-op stub stages as fast as possible and print how long each
took from its creationTimestamp to its training Job's creationTimestamp (p50/p99/max), the wall time, and
the operator's peak RSS (VmHWM).

    python scripts/bench_operator_scale.py --count 200 --seed 1
    python scripts/bench_operator_scale.py --count 20 --namespaces 1      # a quick look

The runs are spread over --namespaces namespaces (<prefix>-<random>-<i>), each with one PVC "ws" that all of
its runs share with the same data spec: the first run's prepare stage (a 0 s stub) fills the data cache and its
siblings reuse it, so the figure is create -> (one shared prepare) -> train Job. creationTimestamps have one
second resolution, so the client-side times (create call returned -> the Job watch saw ADDED) are printed too.
Uses the running embedded cluster (`quranft cluster up`) or starts one; deletes its namespaces at the end.
"""
from __future__ import annotations

import argparse
import random
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
for folder in ("operator", "trainer", "benchmark", "tests/support"):
    if str(ROOT / folder) not in sys.path:
        sys.path.insert(0, str(ROOT / folder))


def proc_status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} for pid {pid}")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


def summary(label: str, values: list[float]) -> str:
    return (f"{label}: p50 {percentile(values, 50):.2f} s  p99 {percentile(values, 99):.2f} s  "
            f"max {max(values):.2f} s  mean {statistics.fmean(values):.2f} s")


def ts(value) -> float:
    return (value if isinstance(value, datetime) else datetime.fromisoformat(value.replace("Z", "+00:00"))).timestamp()


class TrainJobWatch:
    """Records the local time at which each training Job in our namespaces was first seen (watch, all namespaces)."""

    def __init__(self, api, namespaces: set[str]):
        from quranft.operator.builders import LABEL_RUN, LABEL_STAGE

        self.api, self.namespaces = api, namespaces
        self.selector = f"{LABEL_STAGE}=train"
        self.run_label = LABEL_RUN
        self.seen: dict[tuple[str, str], float] = {}  # (namespace, run) -> time.time()
        self.created: dict[tuple[str, str], float] = {}  # (namespace, run) -> Job creationTimestamp
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="train-job-watch")

    def start(self) -> "TrainJobWatch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def count(self) -> int:
        with self.lock:
            return len(self.created)

    def _record(self, job) -> None:
        key = (job.metadata.namespace, (job.metadata.labels or {}).get(self.run_label))
        if key[0] in self.namespaces:
            with self.lock:
                self.seen.setdefault(key, time.time())
                self.created.setdefault(key, ts(job.metadata.creation_timestamp))

    def _loop(self) -> None:
        from kubernetes import client, watch

        batch = client.BatchV1Api(self.api)
        while not self._stop.is_set():
            try:
                listed = batch.list_job_for_all_namespaces(label_selector=self.selector)
                for job in listed.items:
                    self._record(job)
                stream = watch.Watch().stream(batch.list_job_for_all_namespaces, label_selector=self.selector,
                                              resource_version=listed.metadata.resource_version,
                                              timeout_seconds=5)
                for event in stream:
                    if event["type"] == "ADDED":
                        self._record(event["object"])
                    if self._stop.is_set():
                        break
            except Exception:  # noqa: BLE001  a broken watch (e.g. 410 Gone) is restarted from a fresh list
                time.sleep(0.2)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=200, help="QuranFineTunes to create")
    p.add_argument("--seed", type=int, default=1, help="seeds the order in which runs go to namespaces")
    p.add_argument("--namespace-prefix", default="bench-scale")
    p.add_argument("--namespaces", type=int, default=4, help="namespaces the runs are spread over")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for all training Jobs")
    p.add_argument("--sample-seconds", type=float, default=1.0, help="operator RSS sampling period")
    args = p.parse_args(argv)

    from clusterkit import script_cluster

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731  progress to stderr, figures to stdout
    with script_cluster(log=log) as cluster:
        return run(args, cluster, log)


def run(args, cluster, log) -> int:
    from clusterkit import Env, release_runs, resource, stub_commands
    from kubernetes import client

    from quranft.cluster import controlplane

    api = cluster.api_client()
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    tag = uuid.uuid4().hex[:6]
    names = [f"{args.namespace_prefix}-{tag}-{i}" for i in range(args.namespaces)]
    workdir = Path(tempfile.mkdtemp(prefix="quranft-bench-scale-"))
    envs: list[Env] = []
    commands = stub_commands(prepare_seconds=0, train_seconds=0, bench_seconds=0)
    rng = random.Random(args.seed)
    placement = [rng.randrange(args.namespaces) for _ in range(args.count)]
    watcher = TrainJobWatch(api, set(names))
    created: dict[tuple[str, str], tuple[float, float]] = {}  # key -> (creationTimestamp, local time returned)
    rss: list[float] = []
    operator_env = None
    try:
        for name in names:
            controlplane.create_ready_namespace(core, name)
            env = Env(cluster, name, workdir / name)
            env.workdir.mkdir(parents=True)
            env.claim()
            envs.append(env)
        operator_env = envs[0]
        operator_env.start_operator(*[a for n in names[1:] for a in ("--namespace", n)])
        watcher.start()
        pid = operator_env.proc.pid
        time.sleep(3)  # let kopf list and start its watches; runs created earlier would only be "resumed"
        if operator_env.proc.poll() is not None:
            raise SystemExit(f"operator exited with {operator_env.proc.returncode}:\n{operator_env.log_tail()}")
        rss_start = proc_status_kib(pid, "VmRSS") / 1024
        log(f"creating {args.count} runs in {args.namespaces} namespaces ({names[0]} ...)")
        t0 = time.time()
        for i, slot in enumerate(placement):
            env = envs[slot]
            obj = env.create(resource(f"run-{i:04d}", commands=commands))
            created[(env.ns, obj["metadata"]["name"])] = (ts(obj["metadata"]["creationTimestamp"]), time.time())
        create_seconds = time.time() - t0
        log(f"created in {create_seconds:.1f} s; waiting for training Jobs")
        deadline = time.monotonic() + args.timeout
        next_sample = 0.0
        while watcher.count() < args.count and time.monotonic() < deadline:
            if operator_env.proc.poll() is not None:
                raise SystemExit(f"operator exited with {operator_env.proc.returncode}:\n{operator_env.log_tail()}")
            if time.monotonic() >= next_sample:
                rss.append(proc_status_kib(pid, "VmRSS") / 1024)
                next_sample = time.monotonic() + args.sample_seconds
                log(f"  {time.time() - t0:6.1f} s: {watcher.count()}/{args.count} training Jobs, "
                    f"operator RSS {rss[-1]:.0f} MiB")
            time.sleep(0.2)
        with watcher.lock:
            wall = (max(watcher.seen.values()) if watcher.seen else time.time()) - t0
        peak_kib = proc_status_kib(pid, "VmHWM")
    finally:
        watcher.stop()
        log("cleaning up")
        release_runs(envs, core, custom, log)
        api.close()

    with watcher.lock:
        server = [watcher.created[k] - created[k][0] for k in created if k in watcher.created]
        client_side = [watcher.seen[k] - created[k][1] for k in created if k in watcher.seen]
    print(f"bench_operator_scale: {args.count} QuranFineTunes (stub stages, 0 s each) in {args.namespaces} "
          f"namespaces, seed {args.seed}")
    print(f"  created in {create_seconds:.1f} s ({args.count / create_seconds:.1f}/s)")
    print(f"  training Jobs created: {len(server)}/{args.count}")
    if server:
        print("  " + summary("create -> train Job (creationTimestamps, 1 s resolution)", server))
        print("  " + summary("create returned -> train Job seen (client clock)", client_side))
    print(f"  wall time (first create -> last train Job seen): {wall:.1f} s")
    print(f"  operator RSS: {rss_start:.1f} MiB before the creates, peak (VmHWM) {peak_kib / 1024:.1f} MiB")
    print(f"  operator log: {operator_env.log_path if operator_env else '-'}")
    return 0 if len(server) == args.count else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
