"""Debug option: where does the operator's memory go? With `QURANFT_TRACEMALLOC=<file>`, on SIGUSR1 or every
QURANFT_TRACEMALLOC_SECONDS (default 0: only on the signal) the operator appends to <file> what grew since the
first time: the top allocation sites by traceback (tracemalloc snapshot diff) and the live objects by type (gc).
The first time is the baseline, and only then does tracing start (QURANFT_TRACEMALLOC_FRAMES frames, default 12):
what is allocated after the warm-up and still alive is what grows, and the start-up (importing the kubernetes
client under tracemalloc takes minutes) runs at full speed. Slows the operator; never for production.

    QURANFT_TRACEMALLOC=/tmp/op-mem.txt quranft operator ...   # then: kill -USR1 <pid>, twice or more
"""
from __future__ import annotations

import gc
import os
import signal
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path

TOP = 25


def install_from_env(env: dict[str, str] | None = None) -> bool:
    env = dict(os.environ if env is None else env)
    target = env.get("QURANFT_TRACEMALLOC")
    if not target:
        return False
    tracer = Tracer(Path(target), int(env.get("QURANFT_TRACEMALLOC_FRAMES", "12")))
    due = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: due.set())
    interval = float(env.get("QURANFT_TRACEMALLOC_SECONDS", "0")) or None
    threading.Thread(target=tracer.loop, args=(due, interval), daemon=True, name="memtrace").start()
    return True


def type_counts() -> Counter:
    return Counter(type(o).__qualname__ for o in gc.get_objects())


class Tracer:
    def __init__(self, path: Path, frames: int = 12):
        self.path, self.frames = path, frames
        self.baseline: tracemalloc.Snapshot | None = None
        self.baseline_types: Counter = Counter()
        self.started = time.monotonic()

    def loop(self, due: threading.Event, interval: float | None) -> None:
        while True:
            due.wait(interval)
            due.clear()
            self.dump()

    def dump(self) -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(self.frames)
        gc.collect()
        snapshot = tracemalloc.take_snapshot().filter_traces((
            tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)))
        types = type_counts()
        current, peak = tracemalloc.get_traced_memory()
        lines = [f"=== t={time.monotonic() - self.started:.0f} s traced {current / 2**20:.1f} MiB "
                 f"(peak {peak / 2**20:.1f} MiB)"]
        if self.baseline is None:
            self.baseline, self.baseline_types = snapshot, types
            lines.append("baseline taken")
        else:
            diff = snapshot.compare_to(self.baseline, "traceback")
            grown = sum(d.size_diff for d in diff)
            lines.append(f"grown since the baseline: {grown / 2**20:+.2f} MiB")
            for d in diff[:TOP]:
                lines.append(f"--- {d.size_diff / 1024:+.1f} KiB, {d.count_diff:+d} blocks")
                lines += ["    " + line for line in d.traceback.format(most_recent_first=True)]
            lines.append("live objects by type, grown since the baseline:")
            for name, delta in (types - self.baseline_types).most_common(TOP):
                lines.append(f"    {delta:+8d} {name} (now {types[name]})")
        with self.path.open("a") as f:
            f.write("\n".join(lines) + "\n")
