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


def test_a_run_is_charged_nodes_times_gpus():
    from specs import body

    from quranft.operator.admission import charged_gpus

    cases = [({"gpus": 1}, 1), ({"gpus": 8}, 8), ({"nodes": 2, "gpus": 8}, 16),
             ({"nodes": 2, "gpus": 0, "distributedBackend": "gloo"}, 0)]
    for resources, gpus in cases:
        assert charged_gpus(body(spec_overrides={"resources": resources})["spec"]) == gpus, resources


def test_a_two_node_run_fills_a_namespace_budget_of_sixteen():
    two_by_eight = e("v4-2x8", 1, gpus=16, ns="a", holding=True)
    one = e("v1", 2, gpus=1, ns="a")
    ok, message = decide(("a", "v1"), [two_by_eight, one], 0, 16)
    assert not ok and "16/16" in message and "needs 1" in message
    # Admitted while it waits: a 2 x 8 run asking for 16 of 16 with nothing held gets the namespace whole.
    assert decide(("a", "v4-2x8"), [e("v4-2x8", 1, gpus=16), e("v1", 2, gpus=1)], 0, 16)[0]
    assert not decide(("a", "v1"), [e("v4-2x8", 1, gpus=16), e("v1", 2, gpus=1)], 0, 16)[0]


def test_the_operators_index_entry_charges_the_whole_group():
    from specs import body

    from quranft.operator.handlers import run_entry

    b = body(spec_overrides={"resources": {"nodes": 2, "gpus": 8}})
    entry = run_entry("a", "v3", b["metadata"], b["spec"], {})
    assert entry["gpus"] == 16
