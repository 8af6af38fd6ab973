#!/usr/bin/env python
"""Operator latency and scale on the embedded cluster, with stub stages, kube's own Job controller side by side.

Four measurements, in this order, against one operator:

1. Stage hop (--hop-runs N, one run at a time): how long the operator takes from a stage Job's completion to the
   next stage's Job (prepare -> train, train -> benchmark), p50/p99 over the 2 N hops, plus create -> prepare Job.
   Times are the client's own watch clock (the moment the Job watch delivered the Job's Complete condition, and
   the moment it delivered the next Job's ADDED): creationTimestamps and condition times have one second
   resolution, far too coarse for a hop that should take well under a second.
2. Job controller (--count N, unless --no-jobcontroller): N plain Jobs created the same way in a namespace of
   their own, Job creationTimestamp -> its Pod's creationTimestamp (p50/p99): what kube's own controller does at
   the same burst on the same API server. The pods ask for a node label no node has, so they stay Pending and
   cost the machine nothing; the namespace is deleted before the next part.
3. Burst (--count N): N QuranFineTunes created as fast as possible; creationTimestamp -> first Job's (its prepare
   Job: each run has its own data spec) and -> training Job's creationTimestamp (p50/p99/max), the wall time.
4. Idle training (--idle-seconds S, after the burst): the N runs sit in a long training stage (a shell-loop stub
   that prints a progress line every --progress-seconds, cheap enough for 1,000 pods); once every training pod
   runs and a --idle-warmup passed, S seconds of: the operator's RSS and CPU (s per minute), and the API requests
   the operator made per minute per run, from the API server's own metrics: a FlowSchema (APF) matching the
   operator's ServiceAccount counts them in apiserver_flowcontrol_dispatched_requests_total (every request, watches
   included), next to the pod-log reads (apiserver_request_total, subresource log: how progress reached the
   operator) and status writes per minute per run.

    python scripts/bench_operator_scale.py --hop-runs 10 --count 1000 --namespaces 10 --json
    python scripts/bench_operator_scale.py --hop-runs 10 --count 0 --json    # the hop alone, JSON last line

The burst's runs are spread over --namespaces namespaces (<prefix>-<random>-<i>), each with one PVC "ws" that its
runs share. The hop runs have a namespace of their own. The embedded cluster needs room for N training pods (110
pods per node): start it with e.g. QURANFT_NODES=12 QURANFT_NODE_CPU=64 QURANFT_NODE_MEMORY=256Gi for N = 1,000.
Uses the running embedded cluster (`quranft cluster up`, or $QURANFT_CLUSTER_DIR) or starts one; deletes its
namespaces at the end. With --json the last line is one JSON object of FIGURES (hop_p50_s, burst_runs,
burst_p99_s, jobcontroller_p99_s, rss_mib, api_requests_per_min_per_run, ...; null for a part not run).

The CI gate (tests/operator/test_perf_gate.py) runs the configuration recorded in tests/operator/perf_thresholds.json
and fails when a GATED figure exceeds its threshold (mean of the recorded runs x 1.2 + a slack per figure). Re-record after a deliberate
change, on the machine CI runs on:

    python scripts/bench_operator_scale.py --hop-runs 5 --count 20 --namespaces 2 --idle-seconds 30 \
        --no-jobcontroller --repeat 3 --record-thresholds tests/operator/perf_thresholds.json
"""
from __future__ import annotations

import argparse
import json
import math
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
for folder in ("contract", "operator", "trainer", "benchmark", "cluster", "tests/support"):
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
        version = None  # resume the watch where it ended; list again only after an error (a list of 2,000 Jobs
        while not self._stop.is_set():  # every few seconds would load the API server and this client)
            try:
                if version is None:
                    listed = batch.list_job_for_all_namespaces(label_selector=self.run_label)
                    for job in listed.items:
                        self._record(job, time.time())
                    version = listed.metadata.resource_version
                stream = watch.Watch().stream(batch.list_job_for_all_namespaces, label_selector=self.run_label,
                                              resource_version=version, timeout_seconds=5)
                for event in stream:
                    if event["type"] == "ERROR":
                        raise RuntimeError(f"watch error: {event['raw_object']}")
                    version = event["object"].metadata.resource_version
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._record(event["object"], time.time())
                    if self._stop.is_set():
                        break
            except Exception:  # noqa: BLE001  a broken watch (e.g. 410 Gone) is restarted from a fresh list
                version = None
                time.sleep(0.2)


def reconcile_totals(port: int) -> tuple[float, float]:
    """(passes, seconds in passes) so far, from the operator's quranft_reconcile_duration_seconds histogram."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found = dict(re.findall(r"^quranft_reconcile_duration_seconds_(count|sum) (\S+)$", text, re.M))
    return float(found.get("count", 0)), float(found.get("sum", 0))


# --- the API server's own count of the operator's requests --------------------------------------------------
# apiserver_request_total has no user label; API Priority and Fairness counts requests by FlowSchema, so a schema
# that matches only the operator's ServiceAccount (at the priority level the default "service-accounts" schema
# gives it, workload-low: nothing about its scheduling changes) counts exactly the operator's requests.
FLOW_SCHEMA = "quranft-bench-operator"


def install_flow_schema(cluster) -> None:
    from quranft.operator import access

    schema = {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema", "metadata": {"name": FLOW_SCHEMA},
        "spec": {"priorityLevelConfiguration": {"name": "workload-low"}, "matchingPrecedence": 800,
                 "distinguisherMethod": {"type": "ByUser"},
                 "rules": [{"subjects": [{"kind": "ServiceAccount", "serviceAccount": {
                     "name": access.SA_NAME, "namespace": access.SA_NAMESPACE}}],
                     "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                        "clusterScope": True, "namespaces": ["*"]}],
                     "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}]}}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(schema, f)
    cluster.kubectl("apply", "-f", f.name)
    os.unlink(f.name)


def apiserver_counts(cluster) -> dict[str, float]:
    """Counters of the API server so far: the operator's requests (its FlowSchema), QuranFineTune status writes
    (PATCH .../status, all codes) and pod-log reads (GET pods/log: the operator reads progress from logs)."""
    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    out = {"operator_requests": 0.0, "status_writes": 0.0, "log_reads": 0.0}
    for name, labels, value in re.findall(r"^(\w+)\{([^}]*)\} (\S+)$", text, re.M):
        if name == "apiserver_flowcontrol_dispatched_requests_total" and f'flow_schema="{FLOW_SCHEMA}"' in labels:
            out["operator_requests"] += float(value)
        elif name == "apiserver_request_total":
            if 'resource="quranfinetunes"' in labels and 'subresource="status"' in labels and 'verb="PATCH"' in labels:
                out["status_writes"] += float(value)
            elif 'resource="pods"' in labels and 'subresource="log"' in labels:
                out["log_reads"] += float(value)
    return out


def status_writes(cluster) -> float:
    return apiserver_counts(cluster)["status_writes"]


# --- stubs cheap enough for a thousand pods: one shell each, no Python ---------------------------------------

def shell_stub_commands(progress_seconds: float) -> dict[str, list[str]]:
    """prepare: writes its termination summary and exits; train: every `progress_seconds` until it is stopped (a
    long training stage) prints a progress line and, when the operator gave it an endpoint, POSTs the same record
    there as the trainer does (trainer/progress_push.py: the env it reads, the projected token read fresh, TLS
    against the CA handed over, the next push when the endpoint's PUSH_AFTER_HEADER says), with curl; benchmark
    is never reached while the runs train."""
    from clusterkit import stub_commands

    from quranft.contract.progress import PROGRESS_PREFIX
    from quranft.contract.push import PUSH_AFTER_HEADER
    from quranft.contract.workspace import data_dir
    from quranft.trainer import progress_push as push

    prepare = json.dumps({"ok": True, "stage": "prepare", "dataSpecHash": "stub", "dataDir": str(data_dir("stub")),
                          "reused": False, "stats": {"train": 8, "val": 2}})
    train = f"""QP='{PROGRESS_PREFIX}'; CA="${{{push.CA_FILE_ENV}:-/tmp/progress-ca.pem}}"
[ -n "${push.CA_ENV}" ] && printf '%s' "${push.CA_ENV}" > "$CA"
i=0; while :; do i=$((i+1))
doc=$(printf '{{"step":%d,"maxSteps":1000000,"epoch":0,"loss":0.5,"updatedAt":"%s"}}' "$i" "$(date -u +%Y-%m-%dT%H:%M:%SZ)")
printf '%s%s\\n' "$QP" "$doc"
now=$(date +%s)
if [ -n "${push.URL_ENV}" ] && [ "$now" -ge "${{next:-0}}" ]; then
after=$(curl -sS -o /dev/null -D - --max-time {push.TIMEOUT_S:g} --cacert "$CA" -H 'Content-Type: application/json' \
  -H "Authorization: Bearer $(cat "${push.TOKEN_FILE_ENV}")" -d "$doc" "${push.URL_ENV}" \
  | tr -d '\\r' | sed -n 's/^{PUSH_AFTER_HEADER}: *//Ip'); after=${{after%.*}}; next=$((now + ${{after:-0}}))
fi
wait=$((${{next:-0}} - $(date +%s))); [ "$wait" -ge 1 ] && [ "$wait" -lt {math.ceil(progress_seconds)} ] || wait={progress_seconds:g}
sleep "$wait"; done"""
    return {"prepare": ["sh", "-c", 'printf %s "$0" > /dev/termination-log', prepare],
            "train": ["sh", "-c", train],
            "benchmark": stub_commands(bench_seconds=0)["benchmark"]}


# --- kube's own Job controller at the same burst ---------------------------------------------------------------

def jobcontroller_burst(cluster, namespace: str, count: int, timeout: float, log) -> list[float]:
    """Create `count` Jobs in `namespace` one after another, as the burst creates runs; seconds from each Job's
    creationTimestamp to its Pod's (the Job controller's reaction). The pods select a node label nobody has."""
    from kubernetes import client

    from quranft.cluster import controlplane

    api = cluster.api_client()
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    try:
        controlplane.create_ready_namespace(core, namespace)
        pod = {"restartPolicy": "Never", "nodeSelector": {"quranft.io/bench": "nowhere"},
               "containers": [{"name": "c", "image": "ghcr.io/quran-finetune/stub-stage:test", "command": ["true"],
                               "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
        t0 = time.time()
        created = in_parallel([{"metadata": {"name": f"jc-{i:04d}"},
                                "spec": {"backoffLimit": 0, "template": {"spec": pod}}} for i in range(count)],
                              lambda body: batch.create_namespaced_job(namespace, body))
        jobs = {job.metadata.name: ts(job.metadata.creation_timestamp) for job in created}
        log(f"  job controller: {count} Jobs created in {time.time() - t0:.1f} s; waiting for their pods")
        deadline, pods = time.monotonic() + timeout, {}
        while time.monotonic() < deadline:
            listed = json.loads(core.list_namespaced_pod(namespace, _preload_content=False).data)["items"]
            pods = {p["metadata"]["labels"].get("job-name"): ts(p["metadata"]["creationTimestamp"]) for p in listed}
            if len(set(pods) & set(jobs)) >= count:
                break
            time.sleep(1)
        return [pods[name] - created for name, created in jobs.items() if name in pods]
    finally:
        core.delete_namespace(namespace, propagation_policy="Background")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # its pods and Jobs go before the operator's burst begins
            try:
                core.read_namespace(namespace)
            except client.ApiException as exc:
                if exc.status == 404:
                    break
            time.sleep(1)
        api.close()


def progress_pushes(port: int) -> float:
    """Progress pushes the operator's endpoint accepted so far (quranft_progress_pushes_total, code 2xx)."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(v) for code, v in re.findall(r'^quranft_progress_pushes_total\{code="(\d+)"\} (\S+)$', text, re.M)
               if code.startswith("2"))


CREATE_WORKERS = 8  # both bursts create with this many concurrent clients (one client would pace the burst)


def in_parallel(items: list, create, workers: int = CREATE_WORKERS) -> list:
    """create(item) for every item from `workers` threads, results in order."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(create, items))


def running_train_pods(core, namespaces: list[str]) -> int:
    from clusterkit import LABEL_STAGE

    return sum(len(json.loads(core.list_namespaced_pod(
        ns, label_selector=f"{LABEL_STAGE}=train", field_selector="status.phase=Running",
        _preload_content=False).data)["items"]) for ns in namespaces)


def runs_with_progress(custom, namespaces: list[str]) -> int:
    from clusterkit import GROUP, PLURAL, VERSION

    return sum(1 for ns in namespaces
               for item in json.loads(custom.list_namespaced_custom_object(
                   GROUP, VERSION, ns, PLURAL, _preload_content=False).data)["items"]
               if ((item.get("status") or {}).get("progress") or {}).get("step"))


def patiently(read, log, *args, tries: int = 6, pause_s: float = 10.0):
    """read(*args), asked again on failure: with 1,000 pods running a loaded API server may time a list out
    (504) or drop the stream; a measurement read is worth a retry, not the whole run."""
    for attempt in range(1, tries + 1):
        try:
            return read(*args)
        except Exception as err:  # noqa: BLE001  ApiException, urllib3 protocol errors, kubectl exiting 1
            if attempt == tries:
                raise
            log(f"  {read.__name__} failed ({str(err).splitlines()[0][:120] if str(err) else type(err).__name__}); "
                f"asking again in {pause_s:g} s")
            time.sleep(pause_s)


def idle_training(args, cluster, core, custom, names: list[str], pid: int, proc, metrics_port: int, log) -> dict:
    """Once all N training pods run (and a warm-up passed): the operator's cost of N runs that only train."""
    deadline = time.monotonic() + args.timeout
    running = 0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"operator exited with {proc.returncode}")
        running = patiently(running_train_pods, log, core, names)
        log(f"  {running}/{args.count} training pods running, operator RSS "
            f"{proc_status_kib(pid, 'VmRSS') / 1024:.0f} MiB")
        if running >= args.count:
            break
        time.sleep(5)
    time.sleep(args.idle_warmup)
    log(f"idle training: {running} runs, measuring {args.idle_seconds:g} s")
    before, cpu0, t0 = patiently(apiserver_counts, log, cluster), cpu_seconds(pid), time.monotonic()
    before["pushes"] = progress_pushes(metrics_port)
    rss = []
    while time.monotonic() - t0 < args.idle_seconds:
        rss.append(proc_status_kib(pid, "VmRSS") / 1024)
        time.sleep(min(5.0, max(0.1, args.idle_seconds - (time.monotonic() - t0))))
    after, cpu1, minutes = patiently(apiserver_counts, log, cluster), cpu_seconds(pid), (time.monotonic() - t0) / 60
    after["pushes"] = progress_pushes(metrics_port)
    rss.append(proc_status_kib(pid, "VmRSS") / 1024)
    per_run_min = lambda key: round((after[key] - before[key]) / minutes / max(running, 1), 3)  # noqa: E731
    return {"idle_runs": running, "idle_minutes": round(minutes, 2), "idle_rss_mib": round(max(rss), 1),
            "idle_cpu_s_per_min": round((cpu1 - cpu0) / minutes, 2),
            "api_requests_per_min_per_run": per_run_min("operator_requests"),
            "log_reads_per_min_per_run": per_run_min("log_reads"),
            "status_writes_per_min_per_run": per_run_min("status_writes"),
            "pushes_per_min_per_run": per_run_min("pushes"),
            # what an idle run costs besides its status.progress writes (watches, reads, other writes)
            "other_requests_per_min_per_run": round(per_run_min("operator_requests") - per_run_min("status_writes"), 3),
            "idle_runs_with_progress": patiently(runs_with_progress, log, custom, names)}


def stage_hops(watcher: JobWatch, keys: list[tuple[str, str]]) -> list[float]:
    """Seconds from a stage Job seen complete to the next stage's Job seen (prepare -> train, train -> benchmark)
    for each run in `keys`."""
    hops = []
    for done, following in (("prepare", "train"), ("train", "benchmark")):
        finished, started = watcher.by_stage(watcher.completed, done), watcher.by_stage(watcher.seen, following)
        hops += [started[k] - finished[k] for k in keys if k in finished and k in started]
    return hops


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hop-runs", type=int, default=10, help="runs for the stage hop, one at a time (0: skip)")
    p.add_argument("--count", type=int, default=200, help="QuranFineTunes to create in the burst (0: skip)")
    p.add_argument("--seed", type=int, default=1, help="seeds the order in which runs go to namespaces")
    p.add_argument("--namespace-prefix", default="bench-scale")
    p.add_argument("--namespaces", type=int, default=4, help="namespaces the burst's runs are spread over")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for all training Jobs")
    p.add_argument("--hop-timeout", type=float, default=120, help="seconds one hop run may take to succeed")
    p.add_argument("--sample-seconds", type=float, default=1.0, help="operator RSS sampling period")
    p.add_argument("--no-jobcontroller", dest="jobcontroller", action="store_false",
                   help="skip kube's Job controller at the same burst")
    p.add_argument("--idle-seconds", type=float, default=60,
                   help="after the burst, measure the runs idling in training this long (0: skip)")
    p.add_argument("--idle-warmup", type=float, default=15, help="seconds after all training pods run, first")
    p.add_argument("--progress-seconds", type=float, default=10, help="the stub trainer's progress line period")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    p.add_argument("--repeat", type=int, default=1, help="measure this many times (fresh namespaces each)")
    p.add_argument("--record-thresholds", type=Path, metavar="FILE",
                   help=f"write the CI gate's thresholds (mean of the runs x {MARGIN}) to FILE")
    p.add_argument("--check-thresholds", type=Path, metavar="FILE", help="exit 1 if a gated figure exceeds FILE's")
    args = p.parse_args(argv)
    if args.hop_runs < 0 or args.count < 0 or args.namespaces < 1 or args.repeat < 1:
        p.error("--hop-runs and --count must be >= 0, --namespaces and --repeat >= 1")
    return args


def gate_args(recorded: dict) -> argparse.Namespace:
    """The arguments of the configuration a thresholds file was recorded with."""
    c = recorded["config"]
    return parse(["--hop-runs", str(c["hop_runs"]), "--count", str(c["count"]), "--namespaces", str(c["namespaces"]),
                  "--seed", str(c["seed"]), "--idle-seconds", str(c.get("idle_seconds", 0)),
                  *([] if c.get("jobcontroller") else ["--no-jobcontroller"])])


def config_of(args: argparse.Namespace) -> dict:
    return {"hop_runs": args.hop_runs, "count": args.count, "namespaces": args.namespaces, "seed": args.seed,
            "idle_seconds": args.idle_seconds, "jobcontroller": args.jobcontroller}


def main(argv: list[str]) -> int:
    args = parse(argv)
    from clusterkit import script_cluster

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731  progress to stderr, figures to stdout
    with script_cluster(log=log) as cluster:
        install_flow_schema(cluster)
        runs = []
        for _ in range(args.repeat):
            runs.append(run(args, cluster, log))
            report(args, runs[-1])
    rc = 0 if all(r["ok"] for r in runs) else 1
    if args.record_thresholds:
        args.record_thresholds.write_text(json.dumps(thresholds(config_of(args), runs), indent=2) + "\n")
        print(f"thresholds from {len(runs)} runs written to {args.record_thresholds}")
    if args.check_thresholds:
        problems = regressions(runs[-1], json.loads(args.check_thresholds.read_text()))
        print("regressions: " + ("; ".join(problems) if problems else "none"))
        rc = rc or (1 if problems else 0)
    if args.json:
        print(json.dumps({k: runs[-1][k] for k in FIGURES}))
    return rc


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


def run(args, cluster, log) -> dict:
    """One measurement on fresh namespaces; returns its figures (FIGURES, plus the details report() prints)."""
    from clusterkit import Env, release_runs, resource
    from kubernetes import client

    from quranft.cluster import controlplane

    api = cluster.api_client()
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    tag = uuid.uuid4().hex[:6]
    names = [f"{args.namespace_prefix}-{tag}-{i}" for i in range(args.namespaces if args.count else 0)]
    hop_ns = f"{args.namespace_prefix}-{tag}-hop" if args.hop_runs else None
    workdir = Path(tempfile.mkdtemp(prefix="quranft-bench-scale-"))
    envs: list[Env] = []
    commands = shell_stub_commands(args.progress_seconds)  # the burst's runs train until they are deleted
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
    hop_writes = 0.0  # QuranFineTune status writes during the hop runs
    jobcontroller: list[float] = []  # kube's Job controller: Job -> Pod, same burst
    idle: dict = {}
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
            cpu_start, writes_start = cpu_seconds(pid), status_writes(cluster)
            hops, creates = hop_runs(args, envs[0], watcher, log)
            hop_passes = reconcile_totals(operator_env.metrics_port)
            hop_cpu = cpu_seconds(pid) - cpu_start
            hop_writes = status_writes(cluster) - writes_start
            log(f"stage hop done: p50 {percentile(hops, 50):.3f} s, p99 {percentile(hops, 99):.3f} s over {len(hops)} "
                f"hops" if hops else "stage hop done: no hop measured")
        burst_envs = envs[1:] if hop_ns else envs
        if args.count and args.jobcontroller:
            log(f"kube's Job controller: {args.count} Jobs in {args.namespace_prefix}-{tag}-jobs")
            jobcontroller = jobcontroller_burst(cluster, f"{args.namespace_prefix}-{tag}-jobs", args.count,
                                                args.timeout, log)
            if jobcontroller:  # each part's figures as it ends: a later part may not finish on a small machine
                log(f"job controller done: Job -> Pod p50 {percentile(jobcontroller, 50):.2f} s, p99 "
                    f"{percentile(jobcontroller, 99):.2f} s ({len(jobcontroller)}/{args.count} pods)")
        if args.count:
            log(f"creating {args.count} runs in {args.namespaces} namespaces ({names[0]} ...)")
            t0, cpu_start = time.time(), cpu_seconds(pid)
            def create(item: tuple[int, int]) -> tuple[str, dict, float]:
                i, slot = item
                env = burst_envs[slot]
                # Its own data spec: its first Job is its prepare Job (no wait on a sibling's data).
                obj = env.create(resource(f"run-{i:04d}", commands=commands, resources=BURST_RESOURCES,
                                          data={"source": "local", "localPath": f"/workspace/synth-{i}"},
                                          startupDeadlineSeconds=BURST_STARTUP_DEADLINE_S))
                return env.ns, obj, time.time()
            for ns, obj, returned in in_parallel(list(enumerate(placement)), create):
                created[(ns, obj["metadata"]["name"])] = (ts(obj["metadata"]["creationTimestamp"]), returned)
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
            firsts = watcher.by_stage(watcher.created, "prepare")
            first_so_far = [firsts[k] - created[k][0] for k in created if k in firsts]
            if first_so_far:
                log(f"burst done: create -> first Job p50 {percentile(first_so_far, 50):.2f} s, p99 "
                    f"{percentile(first_so_far, 99):.2f} s ({len(first_so_far)}/{args.count} runs); training Jobs "
                    f"for {watcher.count('train', set(names))} in {wall:.0f} s; operator RSS "
                    f"{proc_status_kib(pid, 'VmRSS') / 1024:.0f} MiB")
            if args.idle_seconds:
                idle = idle_training(args, cluster, core, custom, names, pid, operator_env.proc,
                                     operator_env.metrics_port, log)
                log("idle training done: " + json.dumps({k: idle.get(k) for k in IDLE_FIGURES}))
        peak_kib = proc_status_kib(pid, "VmHWM")
    finally:
        watcher.stop()
        log("cleaning up")
        release_runs(envs, core, custom, log)
        api.close()

    train_created, train_seen = watcher.by_stage(watcher.created, "train"), watcher.by_stage(watcher.seen, "train")
    server = [train_created[k] - created[k][0] for k in created if k in train_created]
    first_created = watcher.by_stage(watcher.created, "prepare")
    first = [first_created[k] - created[k][0] for k in created if k in first_created]
    per_hop_run = 1 / max(args.hop_runs, 1)

    def stat(values: list[float], q: float) -> float | None:
        return round(percentile(values, q), 3) if values else None
    return {
        # FIGURES (the --json line, the CI gate's metrics)
        "hop_p50_s": stat(hops, 50), "hop_p99_s": stat(hops, 99), "hop_count": len(hops),
        "create_to_first_job_p50_s": stat(creates, 50),
        "hop_passes_per_run": round(hop_passes[0] * per_hop_run, 1) if hop_ns else None,
        "hop_status_writes_per_run": round(hop_writes * per_hop_run, 1) if hop_ns else None,
        "hop_cpu_s_per_run": round(hop_cpu * per_hop_run, 3) if hop_ns else None,
        "burst_runs": args.count or None, "burst_p50_s": stat(first, 50), "burst_p99_s": stat(first, 99),
        "burst_train_p50_s": stat(server, 50), "burst_train_p99_s": stat(server, 99),
        "jobcontroller_p50_s": stat(jobcontroller, 50), "jobcontroller_p99_s": stat(jobcontroller, 99),
        "burst_passes_per_run": round(burst_passes[0] / args.count, 1) if args.count else None,
        "rss_mib": round(peak_kib / 1024, 1) if peak_kib else None,
        **{k: idle.get(k) for k in IDLE_FIGURES},
        "progress_mechanism": progress_mechanism(idle),
        # details
        "ok": (len(hops) == 2 * args.hop_runs and len(server) == args.count and len(first) == args.count
               and len(jobcontroller) == (args.count if args.jobcontroller else 0)
               and (not args.idle_seconds or not args.count or idle.get("idle_runs") == args.count)),
        "first": first, "jobcontroller": jobcontroller,
        "hops": hops, "creates": creates, "server": server,
        "client_side": [train_seen[k] - created[k][1] for k in created if k in train_seen],
        "hop_passes": hop_passes, "hop_cpu": hop_cpu, "burst_passes": burst_passes, "burst_cpu": burst_cpu,
        "create_seconds": create_seconds, "wall": wall, "rss_start": rss_start,
        "log": str(operator_env.log_path) if operator_env else "-",
    }


IDLE_FIGURES = ("idle_runs", "idle_minutes", "idle_rss_mib", "idle_cpu_s_per_min", "api_requests_per_min_per_run",
                "log_reads_per_min_per_run", "status_writes_per_min_per_run", "pushes_per_min_per_run",
                "other_requests_per_min_per_run",
                "idle_runs_with_progress")
FIGURES = ("hop_p50_s", "hop_p99_s", "hop_count", "create_to_first_job_p50_s", "hop_passes_per_run",
           "hop_status_writes_per_run", "hop_cpu_s_per_run", "burst_runs", "burst_p50_s", "burst_p99_s",
           "burst_train_p50_s", "burst_train_p99_s", "jobcontroller_p50_s", "jobcontroller_p99_s",
           "burst_passes_per_run", "rss_mib", *IDLE_FIGURES, "progress_mechanism")
def progress_mechanism(idle: dict) -> str | None:
    """How progress reached the operator while the runs idled, from what was counted."""
    if not idle:
        return None
    ways = [way for way, key in (("pushed", "pushes_per_min_per_run"), ("pod-log reads", "log_reads_per_min_per_run"))
            if idle[key] > 0]
    return " + ".join(ways) or "none"


BURST_RESOURCES = {"gpus": 0, "cpu": "10m", "memory": "64Mi"}  # a shell loop; 1,000 of them fit the nodes
# The embedded node agent (one process for every node) starts 1,000 pods on 2 cores in minutes, not the test
# resources' 120 s: 175 of 1,000 runs failed StartupDeadlineExceeded in this stop's first 1,000-run try.
BURST_STARTUP_DEADLINE_S = 1800


def report(args, f: dict) -> None:
    print(f"bench_operator_scale: stub stages (hop: 0 s each; burst: shell stubs, training until deleted), "
          f"seed {args.seed}")
    if args.hop_runs:
        print(f"  stage hop, {args.hop_runs} runs one at a time: {len(f['hops'])}/{2 * args.hop_runs} hops measured")
        if f["hops"]:
            print("  " + summary("Job complete seen -> next stage's Job seen (client watch)", f["hops"]))
        if f["creates"]:
            print("  " + summary("create returned -> prepare Job seen (client watch)", f["creates"]))
        passes, seconds = f["hop_passes"]
        print(f"  reconcile passes: {passes:.0f} ({f['hop_passes_per_run']} per run), {seconds:.2f} s in them; "
              f"status writes {f['hop_status_writes_per_run']} per run; operator CPU {f['hop_cpu']:.1f} s "
              f"({f['hop_cpu_s_per_run']:.2f} s per run)")
    if args.count:
        print(f"  burst: {args.count} QuranFineTunes in {args.namespaces} namespaces, created in "
              f"{f['create_seconds']:.1f} s ({args.count / max(f['create_seconds'], 1e-9):.1f}/s)")
        if f["jobcontroller"]:
            print("  " + summary(f"kube's Job controller, {len(f['jobcontroller'])} Jobs: Job -> Pod "
                                 "(creationTimestamps)", f["jobcontroller"]))
        print(f"  first (prepare) Jobs created: {len(f['first'])}/{args.count}")
        if f["first"]:
            print("  " + summary("create -> first Job (creationTimestamps, 1 s resolution)", f["first"]))
        print(f"  training Jobs created: {len(f['server'])}/{args.count}")
        if f["server"]:
            print("  " + summary("create -> train Job (creationTimestamps, 1 s resolution)", f["server"]))
            print("  " + summary("create returned -> train Job seen (client clock)", f["client_side"]))
        print(f"  wall time (first create -> last train Job seen): {f['wall']:.1f} s")
        passes, seconds = f["burst_passes"]
        print(f"  reconcile passes until then: {passes:.0f} ({f['burst_passes_per_run']} per run), {seconds:.2f} s "
              f"in them; operator CPU {f['burst_cpu']:.1f} s")
    if f["idle_runs"] is not None:
        print(f"  idle training, {f['idle_runs']} runs for {f['idle_minutes']} min: operator RSS up to "
              f"{f['idle_rss_mib']} MiB, CPU {f['idle_cpu_s_per_min']} s/min; per run per minute: "
              f"{f['api_requests_per_min_per_run']} API requests (APF FlowSchema {FLOW_SCHEMA}), "
              f"{f['pushes_per_min_per_run']} progress pushes, {f['log_reads_per_min_per_run']} pod-log reads, "
              f"{f['status_writes_per_min_per_run']} status writes ({f['other_requests_per_min_per_run']} requests "
              "besides them); "
              f"{f['idle_runs_with_progress']} runs show progress; progress by {f['progress_mechanism']}")
    print(f"  operator RSS: {f['rss_start']:.1f} MiB at the start, peak (VmHWM) {f['rss_mib']} MiB")
    print(f"  operator log: {f['log']}")


# --- the CI gate (tests/operator/test_perf_gate.py), in the spirit of Kueue's performance tests: a small
# configuration, thresholds recorded from a few runs and kept in the repo, a failure on a regression.
# Gated: what the operator alone decides. Not gated (printed): the burst's latencies, which on a shared 2-core
# machine measure mostly the node agent's pod start-up and the load (20-run bursts recorded p50 2, 3 and 4 s), and
# the passes per run, which fall as load coalesces more wakes (a quiet machine runs more, cheaper, passes).
GATED = ("hop_p50_s", "hop_p99_s", "hop_status_writes_per_run", "rss_mib")
MARGIN = 1.2  # a threshold is the mean of the recorded runs x this
# Added to a threshold: the gate runs beside the CPU-bound half of the suite. The hop p50 stayed under 0.25 s at
# load 15-20, its p99 over 10 hops (near their max) was seen at 0.44-1.29 s there (0.04-0.07 s quiet): both far
# below what a regression to clock-driven passes costs (hop p50 3.9 s with the 5 s timer). Under load a condition
# change can land one pass later as its own write (5.0-5.4 writes per run quiet, 6.0-6.8 at load 15-20); a run that
# writes on every pass writes tens.
SLACK = {"hop_p50_s": 0.25, "hop_p99_s": 1.0, "hop_status_writes_per_run": 1.5, "rss_mib": 0.0}


def thresholds(config: dict, runs: list[dict]) -> dict:
    """The thresholds file: the configuration, each gated figure's mean over `runs` and its threshold."""
    out: dict = {"config": config, "margin": MARGIN, "slack": SLACK, "metrics": {}}
    for name in GATED:
        values = [r[name] for r in runs if r.get(name) is not None]
        if not values:
            continue
        mean = statistics.fmean(values)
        limit = mean * MARGIN + SLACK[name]
        out["metrics"][name] = {"mean": round(mean, 3), "threshold": round(limit, 3),
                                "runs": [round(v, 3) for v in values]}
    return out


def regressions(figures: dict, recorded: dict) -> list[str]:
    """The gated figures above their thresholds (or missing), one line each."""
    problems = []
    for name, spec in recorded["metrics"].items():
        value = figures.get(name)
        if value is None:
            problems.append(f"{name}: not measured")
        elif value > spec["threshold"]:
            problems.append(f"{name}: {value} > threshold {spec['threshold']} (recorded mean {spec['mean']})")
    return problems


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
