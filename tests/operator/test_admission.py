"""Operator budget: FIFO by creation time, max trainings, GPUs per namespace, no double grant."""
from __future__ import annotations

from quranft.operator.admission import Admission, Entry, decide


def e(name, created, gpus=1, ns="a", holding=False, finished=False):
    return Entry(namespace=ns, name=name, created=f"2026-01-01T00:00:{created:02d}Z", gpus=gpus,
                 holding=holding, finished=finished)


def test_unlimited_admits():
    assert decide(("a", "x"), [e("x", 1)], 0, 0)[0]


def test_fifo_with_two_slots():
    entries = [e("r1", 1, holding=True), e("r2", 2), e("r3", 3), e("r4", 4)]
    assert decide(("a", "r2"), entries, 2, 0)[0]
    assert not decide(("a", "r3"), entries, 2, 0)[0]  # r2 takes the second slot first
    ok, message = decide(("a", "r4"), entries, 2, 0)
    assert not ok and "2" in message


def test_finished_runs_free_their_slot():
    entries = [e("r1", 1, holding=True, finished=True), e("r2", 2, holding=True), e("r3", 3)]
    assert decide(("a", "r3"), entries, 2, 0)[0]


def test_gpus_per_namespace_blocks_only_that_namespace():
    entries = [e("big", 1, gpus=2, ns="a", holding=True), e("a2", 2, gpus=1, ns="a"), e("b1", 3, gpus=1, ns="b")]
    assert not decide(("a", "a2"), entries, 0, 2)[0]
    assert decide(("b", "b1"), entries, 0, 2)[0]


def test_admission_object_never_grants_twice_before_the_index_catches_up():
    adm = Admission(max_trainings=2, max_gpus_per_ns=0)
    entries = [e(f"r{i}", i) for i in range(1, 7)]
    granted = [name for name in ("r3", "r1", "r2", "r4", "r5", "r6") if adm.admit(("a", name), entries)[0]]
    # r3 is not first in line; r1 and r2 are, and once they hold the two slots nobody else gets one.
    assert granted == ["r1", "r2"]
    # r1 finishes training (the index now says so): r3 is next in line.
    entries = [e("r1", 1, finished=True), e("r2", 2, holding=True)] + [e(f"r{i}", i) for i in range(3, 7)]
    assert not adm.admit(("a", "r4"), entries)[0]
    assert adm.admit(("a", "r3"), entries)[0]
