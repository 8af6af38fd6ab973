"""heap.py: the periodic malloc_trim gives a burst's freed heap back to the OS."""
from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

from quranft.operator import glibc, heap


def rss_mib() -> float:
    return int(re.search(r"^VmRSS:\s+(\d+)", Path(f"/proc/{os.getpid()}/status").read_text(), re.M).group(1)) / 1024


def test_trim_returns_the_free_pages_a_burst_left_behind_a_few_live_blocks():
    trim = glibc.load_malloc_trim()
    assert trim is not None  # glibc (Debian, the images)
    burst = [os.urandom(1) * 3000 for _ in range(60_000)]  # ~180 MiB of blocks above pymalloc's 512 B, from malloc
    kept = burst[::500]  # a few live ones scattered through the heap pin it: glibc cannot shrink it from the top
    del burst
    before = rss_mib()
    trim(0)
    after = rss_mib()
    assert len(kept) == 120 and before - after > 100, (before, after)


def test_trim_forever_trims_until_cancelled(monkeypatch):
    calls = []
    monkeypatch.setattr(glibc, "load_malloc_trim", lambda: calls.append)

    async def scenario():
        task = asyncio.get_running_loop().create_task(heap.trim_forever(every=0.01))
        await asyncio.sleep(0.1)
        task.cancel()
        return task
    task = asyncio.run(scenario())
    assert task.cancelled() and len(calls) >= 3 and set(calls) == {0}
