"""The operator's memory-tracing debug option (quranft.operator.memtrace): off unless asked; a first dump is the
baseline, later ones name what grew since, by allocation site and by object type."""
from __future__ import annotations

import tracemalloc

from quranft.operator import memtrace


def test_off_without_the_variable():
    assert memtrace.install_from_env({}) is False


class Grown:
    pass


def test_a_dump_after_the_baseline_names_the_growth(tmp_path):
    target = tmp_path / "mem.txt"
    tracemalloc.start(5)
    try:
        tracer = memtrace.Tracer(target)
        tracer.dump()
        kept = [Grown() for _ in range(5000)]  # noqa: F841  alive at the second dump
        tracer.dump()
    finally:
        tracemalloc.stop()
    text = target.read_text()
    assert "baseline taken" in text
    assert "grown since the baseline: +" in text
    assert "test_memtrace.py" in text  # the allocation site of `kept`
    assert any(line.split()[-3:-2] == ["Grown"] and int(line.split()[0]) >= 5000
               for line in text.splitlines() if line.strip().endswith(")") and "Grown" in line)
