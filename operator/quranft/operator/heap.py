"""Give freed heap memory back to the OS once a minute (glibc's malloc_trim).

glibc returns freed memory by itself only from the top of its heap; a burst (1,000 runs created at once: their
events, bodies and passes) leaves most of the heap free but kept behind a few live blocks, and RSS stays at the
burst's peak (the 500-run soak: 97 of 155 MiB of glibc's heap free, quranft.operator.memstats). malloc_trim(0)
hands every wholly free page back (madvise, glibc >= 2.8; glibc's manual, "Memory Allocation Tunables"); it walks
the heap in a few ms, on the event loop. Elsewhere (musl, macOS) it is a no-op.
"""
from __future__ import annotations

import asyncio
import logging

from . import glibc

TRIM_EVERY_S = 60.0
log = logging.getLogger(__name__)


async def trim_forever(every: float = TRIM_EVERY_S) -> None:
    trim = glibc.load_malloc_trim()
    if trim is None:
        log.info("no glibc malloc_trim here: freed heap memory is left to the allocator")
        return
    while True:
        await asyncio.sleep(every)
        trim(0)
