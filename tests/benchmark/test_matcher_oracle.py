"""Oracle: the fast path (anchored retrieval + fallback) predicts what the full scan predicts.

The full scan scores every candidate run (matcher module doc), so it is what the matcher accepts by
definition; the fast path must never lose a verse it accepts. 5,000 noisy clips of 1-3 verses (short
clips are where trigram retrieval is weakest, and the full scan's cost grows with the square of the
length) plus 500 of 1-5 verses, from the ASR noise generator at its light, user and heavy levels.
"""

from __future__ import annotations

import numpy as np
import pytest

from quranft.benchmark.asr_noise import AsrNoise
from quranft.benchmark.matcher import VerseMatcher
from quranft.benchmark.normalize import normalize_arabic
from quranft.benchmark.verse_runs import LengthWindow

SAMPLES = (("light", 1000, 3, 1), ("user", 2500, 3, 2), ("heavy", 1500, 3, 3), ("user", 500, 5, 4))


@pytest.fixture(scope="module")
def oracle(quran, matcher):
    """(clip, fast-path match, full-scan match) for every sampled clip."""
    rows = []
    for level, n, max_verses, seed in SAMPLES:
        for clip in AsrNoise(quran, level, seed=seed).sample(n, max_verses=max_verses):
            fast = matcher.match(clip.transcript)
            # floor = the fast path's score: an exact shortcut (test_floor_shortcut_is_exact)
            rows.append((clip, fast, matcher.match_full_scan(clip.transcript, floor=fast.score)))
    return rows


def test_fast_path_predicts_what_the_full_scan_accepts(oracle):
    assert len(oracle) >= 5000
    misses = [(clip.expected, clip.transcript, fast.verses, fast.score, full.verses, full.score)
              for clip, fast, full in oracle if full.verses and fast.verses != full.verses]
    assert misses == []
    # and abstains only where the full scan does
    assert all(bool(fast.verses) == bool(full.verses) for _, fast, full in oracle)


def test_oracle_sample_exercises_both_paths(oracle):
    """The oracle means something only if most clips are decided by retrieval alone, some fall back,
    some are close to min_score, and some are not recognised at all."""
    decided_by_anchors = np.mean([not fast.full_scan for _, fast, _ in oracle])
    near_threshold = sum(60 <= full.score < 75 for _, _, full in oracle)
    assert decided_by_anchors > 0.8
    assert sum(fast.full_scan for _, fast, _ in oracle) >= 100
    assert near_threshold >= 100
    assert any(not full.verses for _, _, full in oracle)


def test_floor_shortcut_is_exact(quran, matcher, oracle):
    for clip, _, floored in oracle[::50]:
        plain = matcher.match_full_scan(clip.transcript)
        assert (plain.verses, plain.score, plain.alternatives) == (floored.verses, floored.score, floored.alternatives)


@pytest.mark.parametrize("length", [3, 12, 40, 150, 360, 470, 700])
@pytest.mark.parametrize("with_basmala", [True, False])
def test_full_scan_table_is_every_run(matcher, length, with_basmala):
    """The prebuilt table (with texts beyond its cap made on demand) holds exactly the candidates a
    direct enumeration of every run gives."""
    cfg, runs = matcher.config, matcher._runs
    window = LengthWindow.for_query(length, cfg.run_length_slack, cfg.min_score)
    direct = runs.candidates(*runs.all_runs(window.run_lo - runs.max_growth, window.run_hi), window, with_basmala)
    table = matcher._table.scan("", window, with_basmala)  # cutoff 0: no letter-count pruning
    as_set = lambda c: sorted(zip(c.first.tolist(), c.last.tolist(), c.texts))  # noqa: E731
    assert len(table.texts) == len(set(as_set(table)))  # no duplicates
    assert as_set(table) == as_set(direct)
    assert len(direct.texts) > 0


def test_letter_count_pruning_keeps_every_text_that_reaches_the_cutoff(matcher, quran):
    """The full scan skips texts whose letter counts cannot reach the cutoff: check against scoring all."""
    from rapidfuzz import fuzz, process

    for clip in AsrNoise(quran, "user", seed=5).sample(40):
        query = matcher._query(normalize_arabic(clip.transcript))
        everything = matcher._table.scan(query.text, query.window, not query.after_basmala)
        pruned = matcher._table.scan(query.text, query.window, not query.after_basmala, cutoff=80.0)
        scores = process.cdist([query.text], everything.texts, scorer=fuzz.ratio)[0]
        runs = zip(everything.first, everything.last, everything.texts, scores)
        reaching = {(first, last, text) for first, last, text, score in runs if score >= 80}
        assert reaching <= set(zip(pruned.first, pruned.last, pruned.texts))
        assert len(pruned.texts) < len(everything.texts)


def test_threads_change_nothing_but_speed(quran, matcher, oracle):
    from quranft.benchmark.matcher import MatcherConfig

    threaded = VerseMatcher(quran, MatcherConfig(workers=2))
    for clip, fast, full in oracle[::100]:
        assert threaded.match(clip.transcript) == fast
        assert threaded.match_full_scan(clip.transcript) == matcher.match_full_scan(clip.transcript)
