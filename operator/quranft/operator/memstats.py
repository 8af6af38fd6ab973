"""Debug option: whose memory is the operator's RSS? With `QURANFT_MEMSTATS=<file>` a thread appends one JSON
line every QURANFT_MEMSTATS_SECONDS (default 60): RSS, Python's small-object allocator (arenas held vs bytes in
live blocks, from sys._debugmallocstats), glibc's heap (mallinfo2: in use vs free but kept), threads, open fds.
Unlike memtrace.py (tracemalloc) it costs next to nothing, so a soak's RSS stays comparable:

- RSS up with obmalloc arenas up while its live bytes stay flat: the small-object heap fragments;
- glibc in-use bytes up: a native allocation (a C extension, OpenSSL) is kept; free-but-kept up: glibc fragments;
- threads or fds up: something is not closed.

    QURANFT_MEMSTATS=/tmp/op-memstats.jsonl quranft operator ...
"""
from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

from .glibc import load_mallinfo2


def install_from_env(env: dict[str, str] | None = None) -> bool:
    env = dict(os.environ if env is None else env)
    target = env.get("QURANFT_MEMSTATS")
    if not target:
        return False
    interval = float(env.get("QURANFT_MEMSTATS_SECONDS", "60"))
    threading.Thread(target=_loop, args=(Path(target), interval), daemon=True, name="memstats").start()
    return True


def _loop(path: Path, interval: float) -> None:
    started = time.monotonic()
    while True:
        with path.open("a") as out:
            out.write(json.dumps({"t": round(time.monotonic() - started, 1), **sample()}) + "\n")
        time.sleep(interval)


def sample() -> dict:
    status = Path("/proc/self/status").read_text()
    kib = lambda key: int(re.search(rf"^{key}:\s+(\d+)", status, re.M).group(1))  # noqa: E731
    return {"rss_mib": round(kib("VmRSS") / 1024, 1), "obmalloc": obmalloc(), "glibc": glibc(),
            "threads": kib("Threads"), "fds": len(os.listdir("/proc/self/fd"))}


def obmalloc() -> dict:
    """Arenas and bytes of Python's small-object allocator. sys._debugmallocstats writes to the C stderr, so
    fd 2 is pointed at a file for the call (a log line written meanwhile lands there: debug only)."""
    with tempfile.TemporaryFile("w+") as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(capture.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read()
    value = lambda label: int(re.search(rf"^# {label}\s*=\s*([\d,]+)", text, re.M).group(1).replace(",", ""))  # noqa: E731
    return {"arenas": value("arenas allocated current"),  # 1 MiB each (3.10+, 64-bit)
            "live_mib": round(value("bytes in allocated blocks") / 2**20, 1),
            "free_mib": round(value("bytes in available blocks") / 2**20, 1)}


def glibc() -> dict | None:
    mallinfo2 = load_mallinfo2()
    if mallinfo2 is None:
        return None
    info = mallinfo2()
    mib = lambda n: round(n / 2**20, 1)  # noqa: E731
    return {"heap_mib": mib(info.arena), "mmapped_mib": mib(info.hblkhd), "in_use_mib": mib(info.uordblks),
            "free_mib": mib(info.fordblks)}
