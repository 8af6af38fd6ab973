#!/usr/bin/env python
"""Soak: N QuranFineTunes with stub stages cycling for M minutes (each finished run is deleted and replaced
by a new one); prints the operator's RSS over time and its slope after the warm-up (MiB/h).

    python scripts/reliability/soak.py --resources 500 --minutes 30      # the issue's size
    python scripts/reliability/soak.py --resources 20 --minutes 5        # a quick look
    python scripts/reliability/soak.py --resources 100 --minutes 10 --trace-memory /tmp/op-mem.txt

--trace-memory makes the operator trace its allocations (quranft.operator.memtrace: a baseline after
--trace-every seconds, then what grew since, by traceback and by object type, every --trace-every seconds); it
slows the operator, so its RSS figures are not comparable with a run without it.

Uses the running embedded cluster (`quranft cluster up`) or starts one.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import _paths  # noqa: F401  (sys.path)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


TRANSIENT = (429, 500, 503, 504)  # an overloaded API server; the soak waits and asks again


def transient(exc: Exception) -> bool:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    return isinstance(exc, HTTPError) or (isinstance(exc, ApiException) and exc.status in TRANSIENT)


def retried(call, attempts: int = 6):
    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:
            if not transient(exc) or attempt == attempts - 1:
                raise
            time.sleep(5.0)


class PhaseWatch:
    """Follows the runs' phases in a thread; `finished()` hands out each run that reached Succeeded/Failed once."""

    def __init__(self, env):
        self.env, self.restarts = env, 0
        self._done: dict[str, str] = {}
        self._handed: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # The namespace is still empty: this list is cheap and gives the watch its starting point.
        from clusterkit import GROUP, PLURAL, VERSION
        self._args = (GROUP, VERSION, env.ns, PLURAL)
        self._rv = env.custom.list_namespaced_custom_object(*self._args, limit=1)["metadata"]["resourceVersion"]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            try:
                for event in watch.Watch().stream(self.env.custom.list_namespaced_custom_object, *self._args,
                                                  resource_version=self._rv, timeout_seconds=30,
                                                  allow_watch_bookmarks=True):
                    if event["type"] == "ERROR":
                        raise RuntimeError(f"watch error: {event['object']}")
                    self._note(event["object"], event["type"])
                    if self._stop.is_set():
                        return
            except Exception:  # noqa: BLE001  broken or expired: catch up with one (slow) full list
                self.restarts += 1
                time.sleep(1.0)
                try:
                    listing = self.env.custom.list_namespaced_custom_object(*self._args, _request_timeout=600)
                    for obj in listing["items"]:
                        self._note(obj, "LISTED")
                    self._rv = listing["metadata"]["resourceVersion"]
                except Exception:  # noqa: BLE001  try again on the next round
                    pass

    def _note(self, obj: dict, kind: str) -> None:
        self._rv = obj["metadata"].get("resourceVersion", self._rv)
        phase = (obj.get("status") or {}).get("phase")
        if kind != "DELETED" and phase in ("Succeeded", "Failed") and not obj["metadata"].get("deletionTimestamp"):
            with self._lock:
                self._done.setdefault(obj["metadata"]["name"], phase)

    def finished(self) -> list[tuple[str, str]]:
        with self._lock:
            new = [(n, p) for n, p in self._done.items() if n not in self._handed]
            self._handed.update(n for n, _ in new)
        return new

    def stop(self) -> None:
        self._stop.set()


def slope_mib_per_hour(samples: list[tuple[float, float]]) -> float:
    if len(samples) < 3:
        return float("nan")
    fit = statistics.linear_regression([t for t, _ in samples], [r for _, r in samples])
    return fit.slope * 3600


def print_memstats(path: Path, warmup: float) -> None:
    """Where the growth after the warm-up went (quranft.operator.memstats): Python's arenas, glibc, threads."""
    import json

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["t"] >= warmup] or rows
    first, last = rows[0], rows[-1]
    for label, get in (("RSS MiB", lambda r: r["rss_mib"]), ("obmalloc arenas (1 MiB)", lambda r: r["obmalloc"]["arenas"]),
                       ("obmalloc live MiB", lambda r: r["obmalloc"]["live_mib"]),
                       ("glibc in use MiB", lambda r: (r["glibc"] or {}).get("in_use_mib")),
                       ("glibc free, kept MiB", lambda r: (r["glibc"] or {}).get("free_mib")),
                       ("glibc mmapped MiB", lambda r: (r["glibc"] or {}).get("mmapped_mib")),
                       ("threads", lambda r: r["threads"]), ("fds", lambda r: r["fds"])):
        print(f"  memstats {label:<24} t={first['t']:.0f} s: {get(first)}  t={last['t']:.0f} s: {get(last)}")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resources", type=int, default=20, help="runs in flight at once")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--warmup-minutes", type=float, default=None, help="default: a third of --minutes")
    p.add_argument("--sample-seconds", type=float, default=5.0)
    p.add_argument("--train-seconds", type=float, default=3.0)
    p.add_argument("--poll-seconds", type=float, default=2.0, help="how often finished runs are replaced")
    p.add_argument("--trace-memory", type=Path, metavar="FILE", help="operator's tracemalloc dumps go to FILE")
    p.add_argument("--trace-every", type=float, default=120.0, help="seconds between those dumps")
    p.add_argument("--memstats", type=Path, metavar="FILE",
                   help="the operator samples its allocators into FILE every minute (quranft.operator.memstats: "
                        "cheap, RSS stays comparable); first and last after the warm-up are printed")
    args = p.parse_args(argv)
    warmup = 60 * (args.warmup_minutes if args.warmup_minutes is not None else args.minutes / 3)
    if args.trace_memory:  # the operator subprocess inherits the environment (clusterkit.Env.start_operator)
        os.environ.update(QURANFT_TRACEMALLOC=str(args.trace_memory.resolve()),
                          QURANFT_TRACEMALLOC_SECONDS=str(args.trace_every))

    if args.memstats:
        os.environ["QURANFT_MEMSTATS"] = str(args.memstats.resolve())

    from clusterkit import resource, scratch_env, script_cluster, stub_commands
    from kubernetes.client.exceptions import ApiException

    commands = stub_commands(prepare_seconds=0.5, train_seconds=args.train_seconds, bench_seconds=0.5)
    generation = [0] * args.resources
    finished, failed, api_errors = 0, 0, 0
    samples: list[tuple[float, float]] = []

    def launch(env, slot: int) -> None:
        name = f"soak-{slot}-{generation[slot]}"
        body = resource(name, commands=commands,
                        data={"source": "local", "localPath": f"/workspace/soak-{slot}-{generation[slot]}"})
        try:
            retried(lambda: env.create(body))
        except ApiException as exc:
            if exc.status != 409:  # 409: an earlier try that timed out had created it
                raise

    with script_cluster() as cluster, scratch_env(cluster, "soak") as env:
        # Phases come from a watch: a list of 500 runs takes the loaded embedded API server over a minute.
        phases = PhaseWatch(env)
        env.start_operator()
        for slot in range(args.resources):
            launch(env, slot)
        t0 = time.monotonic()
        next_sample = t0
        while time.monotonic() - t0 < 60 * args.minutes:
            if env.proc.poll() is not None:
                raise SystemExit(f"operator exited with {env.proc.returncode}; log {env.log_path}")
            while time.monotonic() >= next_sample:
                samples.append((time.monotonic() - t0, rss_mib(env.proc.pid)))
                next_sample += args.sample_seconds
                print(f"  t={samples[-1][0]:6.0f} s  RSS {samples[-1][1]:7.1f} MiB  finished {finished}",
                      file=sys.stderr, flush=True)
            for name, phase in phases.finished():
                finished += 1
                failed += phase == "Failed"
                try:
                    retried(lambda: env.delete(name))
                except ApiException as exc:
                    if exc.status != 404:
                        raise
                slot = int(name.split("-")[1])
                generation[slot] += 1
                launch(env, slot)
            time.sleep(args.poll_seconds)
        api_errors = phases.restarts
        phases.stop()

    after = [(t, r) for t, r in samples if t >= warmup]
    print(f"soak: {args.resources} resources cycling for {args.minutes:g} min: {finished} runs finished "
          f"({failed} Failed), {len(samples)} RSS samples, {api_errors} restarts of the soak's own watch")
    for t, r in samples[:: max(1, len(samples) // 12)]:
        print(f"  t={t:6.0f} s  RSS {r:7.1f} MiB")
    print(f"  RSS first {samples[0][1]:.1f} MiB, last {samples[-1][1]:.1f} MiB, peak {max(r for _, r in samples):.1f} MiB")
    print(f"  RSS slope after {warmup / 60:.1f} min warm-up: {slope_mib_per_hour(after):+.1f} MiB/h "
          f"(over {len(after)} samples; whole run {slope_mib_per_hour(samples):+.1f} MiB/h)")
    if args.memstats and args.memstats.exists():
        print_memstats(args.memstats, warmup)
    print(f"  operator log: {env.log_path}")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
