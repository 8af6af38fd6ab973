"""quranft.operator.memstats reads what it says: glibc's mmapped bytes see a big buffer, obmalloc's live bytes
see many small objects (the soak's allocator figures in the README come from these two readings)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from quranft.operator import memstats


def test_glibc_counts_a_64_mib_buffer_as_mmapped():
    # In a fresh interpreter: a long test process's heap may already hold a freed run of 64 MiB or more, and
    # malloc serves the buffer from that free chunk before it considers mmap (CI read a growth of 0.0).
    probe = textwrap.dedent("""
        from quranft.operator import memstats
        before = memstats.glibc()
        assert before is not None  # this machine's libc is glibc >= 2.33
        buffer = bytearray(64 * 2**20)  # above glibc's largest mmap threshold (32 MiB): its own mapping
        print(memstats.glibc()["mmapped_mib"] - before["mmapped_mib"])
    """)
    grown = float(subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                                 text=True).stdout)
    assert 63 <= grown <= 66


def test_obmalloc_counts_small_objects_as_live():
    before = memstats.obmalloc()["live_mib"]
    small = [(i, str(i)) for i in range(200_000)]  # tuples and short strings: obmalloc's size classes
    grown = memstats.obmalloc()["live_mib"] - before
    del small
    assert grown >= 10


def test_a_sample_has_every_figure():
    assert set(memstats.sample()) == {"rss_mib", "obmalloc", "glibc", "threads", "fds"}
