"""The verse matcher as it was before phonetic retrieval (issue 13), frozen for side-by-side comparison.

Only `scripts/bench_matcher.py` and one comparison test use it; the benchmark uses `matcher.VerseMatcher`.
Do not change it.

Identify which consecutive verses a transcript recites.

Two stages keep this fast over all 6,236 verses:
1. retrieval: an IDF-weighted character-trigram inverted index proposes a few anchor verses;
2. alignment: runs of consecutive verses around each anchor whose length fits the transcript are scored
   with `rapidfuzz` (`process.extractOne` with a score cutoff), with and without the basmala that opens
   ayah 1 of most surahs. The best run is the prediction.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from rapidfuzz import fuzz, process

from .normalize import normalize_arabic
from .quran_text import QuranText, load_quran
from .scoring import Verse


@dataclass(frozen=True)
class Match:
    verses: list[Verse]
    score: float  # rapidfuzz ratio 0..100 of the transcript against the chosen run's text
    text: str  # the chosen run's normalised text


@dataclass(frozen=True)
class MatcherConfig:
    min_score: float = 60.0  # below this the transcript is not considered a recitation: predict nothing
    anchors_by_weight: int = 5  # top verses by shared trigram weight (long verses, partial recitations)
    anchors_by_coverage: int = 5  # top verses by covered fraction (short verses inside multi-verse clips)
    max_df_fraction: float = 0.08  # trigrams in more verses than this carry almost no identity
    run_length_slack: float = 0.3  # runs of length within |T| * (1 -/+ slack) are candidates
    # a transcript opening (closing) this close to the basmala or another formula may omit it
    basmala_prefix_score: float = 85.0


class VerseMatcher:
    def __init__(self, quran: QuranText | None = None, config: MatcherConfig = MatcherConfig()):
        self.quran = quran or load_quran()
        self.config = config
        q = self.quran
        n = len(q.refs)
        # All verses joined by single spaces; run (s..e) is the slice cum[s] : cum[e + 1] - 1.
        self._joined = " ".join(q.texts)
        self._cum = [0]
        for text in q.texts:
            self._cum.append(self._cum[-1] + len(text) + 1)
        # Verse i lives in surah range [self._surah_start[i], self._surah_end[i]).
        self._surah_start = [0] * n
        self._surah_end = [0] * n
        start = 0
        for i in range(1, n + 1):
            if i == n or q.refs[i][0] != q.refs[start][0]:
                self._surah_start[start:i] = [start] * (i - start)
                self._surah_end[start:i] = [i] * (i - start)
                start = i
        self._build_index()

    # -- retrieval -------------------------------------------------------------------------------
    def _build_index(self) -> None:
        postings: dict[str, list[int]] = defaultdict(list)
        for i, text in enumerate(self.quran.texts):
            for gram in _trigrams(text):
                postings[gram].append(i)
        n = len(self.quran.texts)
        self._postings = {g: np.asarray(v, dtype=np.int32) for g, v in postings.items()}
        self._idf = {g: math.log(n / len(v)) for g, v in postings.items()}
        weight = np.zeros(n)
        for g, v in self._postings.items():
            np.add.at(weight, v, self._idf[g])
        self._verse_weight = weight  # total trigram weight per verse, for the coverage ranking
        self._max_df = max(1, int(self.config.max_df_fraction * n))

    def _anchors(self, text: str) -> list[int]:
        grams = [g for g in _trigrams(text) if g in self._postings]
        if not grams:
            return []
        rare = [g for g in grams if len(self._postings[g]) <= self._max_df]
        if not rare:  # short transcripts of common words: use their five rarest trigrams
            rare = sorted(grams, key=lambda g: len(self._postings[g]))[:5]
        lists = [self._postings[g] for g in rare]
        ids = np.concatenate(lists)
        weights = np.repeat([self._idf[g] for g in rare], [len(v) for v in lists])
        shared = np.bincount(ids, weights=weights, minlength=len(self._verse_weight))
        coverage = shared / np.maximum(self._verse_weight, 1e-9)
        anchors: list[int] = []
        for scores, k in ((shared, self.config.anchors_by_weight), (coverage, self.config.anchors_by_coverage)):
            top = _top_k(scores, k)
            anchors.extend(int(i) for i in top if shared[i] > 0 and int(i) not in anchors)
        return anchors

    # -- alignment -------------------------------------------------------------------------------
    def _runs(self, anchors: list[int], target_len: int) -> list[tuple[int, int]]:
        """Consecutive (first, last) verse runs containing an anchor, sized like the transcript.

        Run lengths come from prefix sums, so each start only visits the ends inside the length window.
        """
        lo = target_len * (1 - self.config.run_length_slack)
        hi = target_len * (1 + self.config.run_length_slack) + 8
        cum = self._cum  # cum[i] = characters (with separating spaces) before verse i
        seen: set[tuple[int, int]] = set()
        runs: list[tuple[int, int]] = []
        for a in anchors:
            first_in_surah, end = self._surah_start[a], self._surah_end[a]
            candidates = [(a, a)]  # a partial recitation of one long verse is still that verse
            # length(s..e) = cum[e + 1] - cum[s] - 1
            s_min = max(first_in_surah, bisect_left(cum, cum[a + 1] - 1 - hi))
            for s in range(a, s_min - 1, -1):
                e_lo = max(a, bisect_left(cum, cum[s] + 1 + lo) - 1)
                e_hi = min(end - 1, bisect_right(cum, cum[s] + 1 + hi) - 2)
                candidates.extend((s, e) for e in range(e_lo, e_hi + 1))
            for run in candidates:
                if run not in seen:
                    seen.add(run)
                    runs.append(run)
        return runs

    def _run_text(self, s: int, e: int) -> str:
        return self._joined[self._cum[s] : self._cum[e + 1] - 1]

    def match(self, transcript: str) -> Match:
        q = self.quran
        best: Match = Match([], 0.0, "")
        for query, penalty, basmala_is_verse in self._queries(normalize_arabic(transcript)):
            cutoff = max(self.config.min_score, best.score + penalty)
            if cutoff > 100.0:  # an earlier query already matched exactly
                break
            anchors = self._anchors(query)
            if basmala_is_verse:
                anchors.insert(0, 0)  # 1:1 is the basmala itself
            choices: list[str] = []
            spans: list[tuple[int, int]] = []
            for s, e in self._runs(anchors, len(query)):
                body = self._run_text(s, e)
                choices.append(body)
                spans.append((s, e))
                if q.opens_with_basmala(s):
                    choices.append(f"{q.basmala} {body}")
                    spans.append((s, e))
            found = process.extractOne(query, choices, scorer=fuzz.ratio, score_cutoff=cutoff)
            # A query without the basmala must beat the one with it by more than `penalty`: on a tie the
            # basmala is part of the recitation (1:1 is the basmala itself).
            if found is not None and found[1] - penalty > best.score:
                s, e = spans[found[2]]
                best = Match(list(q.refs[s : e + 1]), float(found[1]) - penalty, found[0])
        return best

    def _queries(self, text: str) -> list[tuple[str, float, bool]]:
        """(query, penalty, may start with verse 1:1): the transcript without the formulas reciters say
        around a recitation (isti'adha before, "sadaqa Allahu al-azim" after; never verses), then also
        without an opening basmala, which reciters say before any verse, not only before ayah 1."""
        threshold = self.config.basmala_prefix_score
        text = _strip_opening(text, _ISTIADHA, threshold) or text
        text = _strip_closing(text, _CLOSING, threshold) or text
        if not text:
            return []
        without_basmala = _strip_opening(text, self.quran.basmala, threshold)
        if without_basmala:
            return [(text, 0.0, True), (without_basmala, 1.0, False)]
        return [(text, 0.0, False)]

    def predict(self, transcript: str) -> list[Verse]:
        return self.match(transcript).verses


_ISTIADHA = normalize_arabic("أعوذ بالله من الشيطان الرجيم")
_CLOSING = normalize_arabic("صدق الله العظيم")


def _strip_opening(text: str, phrase: str, threshold: float) -> str:
    """`text` without a leading `phrase` (fuzzy, ASR errors allowed); "" when it does not open with it."""
    if len(text) > len(phrase) and fuzz.ratio(text[: len(phrase)], phrase) >= threshold:
        return text[len(phrase) :].strip()
    return ""


def _strip_closing(text: str, phrase: str, threshold: float) -> str:
    if len(text) > len(phrase) and fuzz.ratio(text[-len(phrase) :], phrase) >= threshold:
        return text[: -len(phrase)].strip()
    return ""


def _trigrams(text: str) -> set[str]:
    padded = f" {text} "
    return {padded[i : i + 3] for i in range(len(padded) - 2)}


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, best first; ties go to the earlier verse in mushaf order
    (repeated verses such as 55:13 then resolve to their first occurrence)."""
    k = min(k, len(scores))
    kth = np.partition(scores, len(scores) - k)[len(scores) - k]
    candidates = np.flatnonzero(scores >= kth)  # ascending index
    return candidates[np.lexsort((candidates, -scores[candidates]))][:k]
