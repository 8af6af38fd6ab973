"""Identify which consecutive verses a transcript recites.

What the matcher accepts is defined by the *full scan*; the fast path only finds the same answer sooner.

Query. The transcript is normalised and the formulas said around a recitation are stripped (isti'adha
before, "sadaqa Allahu al-azim" after, fuzzily: ASR errors, merged words). An opening basmala is
stripped too: reciters say it before any verse, so it is no evidence for which verse follows; a run the
rest matches from 1:2 then starts at 1:1 (the basmala is 1:1).

Full scan. The candidates are the texts of every run of consecutive verses within one surah
(`verse_runs`): single verses always, longer runs when their text is within `run_length_slack` of the
query's length; each run in all its forms (muqatta'at written or said by name, and, unless the query's
basmala was stripped, led by the basmala at ayah 1: a garbled basmala may survive stripping). A
candidate's score is `fuzz.ratio` (0..100) of query and text. Nothing scoring below `min_score` is
accepted; if nothing is left, the transcript is not a recitation and nothing is predicted. Exact
shortcuts only (a text length or letter count that cannot reach the cutoff is not scored).

Choice among near-ties. Runs scoring within `tie_margin` of the best are a near-tie (short clips, a
verse repeated in several surahs, a run that may or may not include a short next verse). The most
common reading wins, deterministically: the run whose text shares the longest exact prefix with the
query, then the higher score, then the earlier run in mushaf order. The others are reported in
`Match.alternatives` (at most `max_alternatives`), so a person can see the near-tie.

Fast path. Queries of up to `scan_up_to_chars` go straight to the full scan (it is cheap there, and
a few trigrams retrieve badly). Otherwise IDF-weighted trigram retrieval proposes anchor verses in the
exact view, and also in the phonetically folded view (`confusions.py`) when the exact view's best is
below `fold_below`; only runs through an anchor are scored, with the same candidate rule and scorer, so
the fast path's best can only be lower than the full scan's. When it is below `min_score +
fallback_margin` the full scan decides. tests/benchmark/test_matcher_oracle.py checks on thousands of
noisy transcripts that the fast path predicts what the full scan predicts whenever the latter accepts.

The matcher before this design is kept, unchanged, in `matcher_v1` for side-by-side benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from rapidfuzz import fuzz, process
from rapidfuzz.distance import Prefix

from .confusions import fold_confusions
from .muqattaat import opening_alternatives
from .normalize import normalize_arabic
from .quran_text import QuranText, load_quran
from .scoring import Verse, verses_to_json
from .trigram_index import TrigramIndex
from .verse_runs import Candidates, FullScanTable, LengthWindow, VerseRuns


@dataclass(frozen=True)
class Match:
    verses: list[Verse]
    score: float  # rapidfuzz ratio 0..100 of the query against the chosen run's text
    text: str  # the chosen run's normalised text, in the form that scored (without a stripped basmala)
    # near-tie runs not chosen, best first, JSON-ready: [{"verses": [{"surah", "ayah"}, ...], "score"}]
    alternatives: list[dict[str, Any]] = field(default_factory=list)
    full_scan: bool = False  # the full scan decided (the fast path's best was below the margin)


@dataclass(frozen=True)
class MatcherConfig:
    min_score: float = 60.0  # below this the transcript is not considered a recitation: predict nothing
    anchors_by_weight: int = 3  # per view: top verses by shared trigram weight (long verses, partial clips)
    anchors_by_coverage: int = 3  # per view: top verses by covered fraction (short verses in long clips)
    max_df_fraction: float = 0.08  # trigrams in more verses than this carry almost no identity
    run_length_slack: float = 0.3  # runs of length within |T| * (1 -/+ slack) are candidates
    # A transcript opening (closing) this close to the basmala or the isti'adha ("sadaqa Allahu al-azim")
    # says it. No run of verses opens closer than 73 to either opening formula; a few verse endings
    # ("والله ذو الفضل العظيم") come within 86 of the closing one, but cutting those words leaves a
    # partial recitation of the same verse (each of the 6,236 verses alone is still matched).
    basmala_prefix_score: float = 75.0
    fallback_margin: float = 10.0  # fast path's best below min_score + this: the full scan decides
    scan_up_to_chars: int = 24  # queries this short go straight to the full scan (cheap; few trigrams)
    fold_below: float = 80.0  # the folded view is consulted when the exact view's best is below this
    tie_margin: float = 2.0  # runs within this of the best are a near-tie
    max_alternatives: int = 5
    # rapidfuzz threads for a full scan (-1: all cores). cdist splits its work by query rows, so with
    # workers != 1 a scan is scored as candidates x [query]: twice the CPU of one row, ahead in wall time from
    # about three cores. The benchmark's figures are single-threaded.
    workers: int = 1
    full_scan_table_chars: int = 480  # run texts up to this long are built once for the full scan


@dataclass(frozen=True)
class _Query:
    text: str  # the transcript without the formulas around it, and without an opening basmala if it had one
    after_basmala: bool  # it opened with the basmala: a run from 1:2 then starts at 1:1 (the basmala)
    window: LengthWindow


class VerseMatcher:
    def __init__(self, quran: QuranText | None = None, config: MatcherConfig = MatcherConfig()):
        self.quran = quran or load_quran()
        self.config = config
        q = self.quran
        alternatives = opening_alternatives(q)
        self._runs = VerseRuns(q, alternatives)
        docs = list(q.texts) + [t for alts in alternatives.values() for t in alts]
        doc_verse = list(range(len(q.texts))) + [i for i, alts in alternatives.items() for _ in alts]
        self._views = (
            (_exact_view, TrigramIndex(docs, doc_verse, config.max_df_fraction)),
            (fold_confusions, TrigramIndex([fold_confusions(d) for d in docs], doc_verse, config.max_df_fraction)),
        )

    @cached_property
    def _table(self) -> FullScanTable:
        """Built on the first full scan (a fraction of a second, ~50 MB); most transcripts need none."""
        return FullScanTable(self._runs, self.config.full_scan_table_chars)

    # -- public ----------------------------------------------------------------------------------
    def match(self, transcript: str) -> Match:
        """Fast path: anchored retrieval; the full scan for short queries and when the best anchored
        score is below min_score + fallback_margin."""
        cfg = self.config
        query = self._query(normalize_arabic(transcript))
        if query is None:
            return Match([], 0.0, "")
        if len(query.text) <= cfg.scan_up_to_chars:
            return self._scan(query)
        exact_view, folded_view = self._views
        anchors = self._anchors(query, *exact_view)
        scores, candidates = self._score(query, self._around(query, anchors))
        best = float(scores.max()) if len(scores) else 0.0
        if best < cfg.fold_below:  # exact trigrams may be broken by confusions: the folded view too
            more = [a for a in self._anchors(query, *folded_view) if a not in anchors]
            if more:  # runs through both kinds of anchor are scored twice; _choose keeps one
                more_scores, more_candidates = self._score(query, self._around(query, more))
                scores = np.concatenate((scores, more_scores))
                candidates = Candidates.concat([candidates, more_candidates])
                best = float(scores.max()) if len(scores) else 0.0
        if best < cfg.min_score + cfg.fallback_margin:
            # the full scan's best is at least this one: no need to score what cannot be a near-tie
            return self._scan(query, floor=best - cfg.tie_margin)
        return self._choose(query, scores, candidates)

    def match_full_scan(self, transcript: str, floor: float = 0.0) -> Match:
        """What the matcher accepts, by definition: every candidate run scored (see the module doc).

        `floor`: a score that some candidate is known to reach (e.g. what the fast path found); texts
        that cannot come within `tie_margin` of it are not scored. The result is the same.
        """
        query = self._query(normalize_arabic(transcript))
        return self._scan(query, floor - self.config.tie_margin) if query else Match([], 0.0, "")

    def predict(self, transcript: str) -> list[Verse]:
        return self.match(transcript).verses

    # -- candidates ------------------------------------------------------------------------------
    def _anchors(self, query: _Query, view, index: TrigramIndex) -> list[int]:
        cfg = self.config
        return index.anchors(view(query.text), cfg.anchors_by_weight, cfg.anchors_by_coverage)

    def _around(self, query: _Query, anchors: list[int]) -> Candidates:
        """Candidates of the runs through any of `anchors`."""
        w = query.window
        runs = self._runs.runs_around(anchors, w.run_lo - self._runs.max_growth, w.run_hi)
        return self._runs.candidates(*runs, w, with_basmala=not query.after_basmala)

    def _scan(self, query: _Query, floor: float = 0.0) -> Match:
        cutoff = max(self.config.min_score, floor)
        candidates = self._table.scan(query.text, query.window, not query.after_basmala, cutoff)
        return self._choose(query, *self._score(query, candidates, floor), full_scan=True)

    # -- scoring and choice ----------------------------------------------------------------------
    def _score(self, query: _Query, candidates: Candidates, floor: float = 0.0) -> tuple[np.ndarray, Candidates]:
        """Scores of the candidates that reach min_score (and `floor`), and those candidates. One
        `cdist` pass: it batches short texts with SIMD, where `extractOne`'s rising cutoff does not pay."""
        cutoff = max(self.config.min_score, floor)
        if not candidates.texts:
            return np.zeros(0), candidates
        workers = self.config.workers
        if workers == 1 or len(candidates.texts) < _PARALLEL_FROM:
            scores = process.cdist([query.text], candidates.texts, scorer=fuzz.ratio, score_cutoff=cutoff,
                                   dtype=np.float64)[0]
        else:  # one row per candidate, so that the rows can be spread over threads (ratio is symmetric)
            scores = process.cdist(candidates.texts, [query.text], scorer=fuzz.ratio, score_cutoff=cutoff,
                                   dtype=np.float64, workers=workers)[:, 0]
        keep = np.flatnonzero(scores >= cutoff)
        return scores[keep], candidates.select(keep)

    def _choose(self, query: _Query, scores: np.ndarray, pool: Candidates, full_scan: bool = False) -> Match:
        if not len(scores):
            return Match([], 0.0, "", full_scan=full_scan)
        near = np.flatnonzero(scores >= scores.max() - self.config.tie_margin)
        # per run: (longest exact prefix with the transcript, best score, text of the best score)
        runs: dict[tuple[int, int], tuple[int, float, str]] = {}
        for i in near.tolist():
            run, score, text = (int(pool.first[i]), int(pool.last[i])), float(scores[i]), pool.texts[i]
            prefix = int(Prefix.similarity(query.text, text))
            held = runs.get(run)
            runs[run] = (prefix, score, text) if held is None else (max(prefix, held[0]), *max((score, text), held[1:]))
        order = sorted(runs, key=lambda r: (-runs[r][0], -runs[r][1], r))
        verses = [self._verses(query, run) for run in order[: 1 + self.config.max_alternatives]]
        alternatives = [{"verses": verses_to_json(v), "score": round(runs[r][1], 2)}
                        for v, r in zip(verses[1:], order[1:])]
        _, score, text = runs[order[0]]
        return Match(verses[0], score, text, alternatives, full_scan)

    def _verses(self, query: _Query, run: tuple[int, int]) -> list[Verse]:
        first, last = run
        if query.after_basmala and first == 1:  # the basmala said before 1:2 is 1:1
            first = 0
        return list(self.quran.refs[first : last + 1])

    def _query(self, text: str) -> _Query | None:
        """The transcript without the formulas said around a recitation (isti'adha before, "sadaqa
        Allahu al-azim" after; never verses) and without an opening basmala, which reciters say before
        any verse, not only before ayah 1: it is no evidence for which verse follows."""
        threshold = self.config.basmala_prefix_score
        text = _strip_opening(text, _ISTIADHA, threshold) or text
        text = _strip_closing(text, _CLOSING, threshold) or text
        if not text:
            return None
        without_basmala = _strip_opening(text, self.quran.basmala, threshold)
        text = without_basmala or text
        window = LengthWindow.for_query(len(text), self.config.run_length_slack, self.config.min_score)
        return _Query(text, bool(without_basmala), window)


_ISTIADHA = normalize_arabic("أعوذ بالله من الشيطان الرجيم")
_CLOSING = normalize_arabic("صدق الله العظيم")
_MIN_REST = 2  # characters a stripped transcript must keep (no verse is shorter)
_PARALLEL_FROM = 2000  # candidates; fewer are scored faster on one thread than split


def _strip_opening(text: str, phrase: str, threshold: float) -> str:
    """`text` without a leading `phrase` (fuzzy: ASR errors, merged or split words); "" when it does not
    open with it, or is only the phrase (plus a stray letter). The cut is where `text[:cut]` scores best
    against `phrase` (the shortest such)."""
    cuts = range(max(1, int(len(phrase) * 0.75)), min(len(text), int(len(phrase) * 1.25)) + 1)
    if not cuts:
        return ""
    scores = process.cdist([phrase], [text[:k] for k in cuts], scorer=fuzz.ratio)[0]
    best = int(np.argmax(scores))
    rest = text[cuts[best] :].strip()
    return rest if scores[best] >= threshold and len(rest) >= _MIN_REST else ""


def _strip_closing(text: str, phrase: str, threshold: float) -> str:
    """`text` without a trailing `phrase`, as `_strip_opening` does at the other end."""
    stripped = _strip_opening(text[::-1], phrase[::-1], threshold)
    return stripped[::-1]


def _exact_view(text: str) -> str:
    """The exact view: `normalize_arabic` output as it is."""
    return text
