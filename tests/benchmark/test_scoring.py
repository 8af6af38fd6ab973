"""Pins the team's historical scoring semantics (issue 4, "Scoring")."""

import pytest

from quranft.benchmark.scoring import (
    SampleScore,
    aggregate,
    parse_verse,
    parse_verses,
    score_sample,
    score_sequence,
)

A, B, C, D = (1, 1), (1, 2), (1, 3), (1, 4)


@pytest.mark.parametrize(
    ("expected", "predicted", "recall", "precision", "seq"),
    [
        ([A], [A], 1.0, 1.0, 1.0),
        ([A], [B], 0.0, 0.0, 0.0),
        # empty cases
        ([], [], 1.0, 1.0, 1.0),
        ([], [A, B], 1.0, 1.0, 1.0),
        ([A], [], 0.0, 0.0, 0.0),
        # multi-verse
        ([A, B, C], [A, B, C], 1.0, 1.0, 1.0),
        ([A, B, C], [A, B], 2 / 3, 1.0, 0.0),
        ([A, B], [A, B, C, D], 1.0, 0.5, 0.0),
        ([A, B, C], [A, D, C], 2 / 3, 2 / 3, 0.0),
        # reordering: the cursor only moves forward, so a swapped pair matches once
        ([A, B], [B, A], 0.5, 0.5, 0.0),
        ([A, B, C], [C, B, A], 1 / 3, 1 / 3, 0.0),
        # a missing expected verse does not move the cursor
        ([A, D, B], [A, B], 2 / 3, 1.0, 0.0),
        # duplicates: each prediction is consumed at most once
        ([A, A], [A], 0.5, 1.0, 0.0),
        ([A], [A, A], 1.0, 0.5, 0.0),
        ([A, A], [A, A], 1.0, 1.0, 1.0),
        ([A, B, A], [A, A, B], 2 / 3, 2 / 3, 0.0),
    ],
)
def test_score_sequence(expected, predicted, recall, precision, seq):
    s = score_sequence(expected, predicted)
    assert (s.recall, s.precision, s.sequence_accuracy) == pytest.approx((recall, precision, seq))


def test_also_accept_keeps_best_and_says_which():
    # 3:23 and 4:44 start identically; the clip may legitimately be either.
    s = score_sample([(3, 23)], [(4, 44)], also_accept=[[(2, 2)], [(4, 44)]])
    assert s == SampleScore(1.0, 1.0, 1.0, accepted=2)


def test_also_accept_tie_keeps_expected():
    s = score_sample([A], [A], also_accept=[[A]])
    assert s.accepted == 0


def test_also_accept_absent_or_ignored_scores_expected_only():
    assert score_sample([(3, 23)], [(4, 44)]) == SampleScore(0.0, 0.0, 0.0, 0)
    assert score_sample([(3, 23)], [(4, 44)], also_accept=[]) == SampleScore(0.0, 0.0, 0.0, 0)


def test_also_accept_ranks_recall_first():
    # alternative 1 gives better precision, alternative 2 better recall: recall wins
    s = score_sample([D], [A, B], also_accept=[[A], [A, B, C]])
    assert s.accepted == 1  # recall 1.0 (precision 0.5) beats recall 2/3 (precision 1.0)
    assert (s.recall, s.precision) == (1.0, 0.5)


def test_aggregate_is_mean_over_scored():
    agg = aggregate([SampleScore(1, 1, 1), SampleScore(0.5, 0.25, 0)])
    assert (agg.recall, agg.precision, agg.sequence_accuracy, agg.scored) == (0.75, 0.625, 0.5, 2)
    assert aggregate([]).scored == 0


@pytest.mark.parametrize("value", [{"surah": 3, "ayah": 23}, [3, 23], (3, 23), "3:23", {"surah": "3", "ayah": "23"}])
def test_parse_verse_shapes(value):
    assert parse_verse(value) == (3, 23)


def test_parse_verse_rejects_garbage():
    with pytest.raises(ValueError):
        parse_verse([1, 2, 3])
    assert parse_verses(None) == []
