"""IDF-weighted character-trigram retrieval: a few anchor verses for a transcript, in one text view.

Documents are texts of verses (a verse may have several: its muqatta'at said by name); the matcher keeps
one index per view (exact and phonetically folded) and merges their anchors. Trigrams are integer codes
(three 6-bit letter codes), so a query is numpy gathers, not Python loops over its trigrams.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .normalize import letter_codes


def trigram_codes(text: str) -> np.ndarray:
    """The distinct trigrams of " text " as integers (three 6-bit letter codes), ascending."""
    codes = letter_codes(f" {text} ")
    return np.unique((codes[:-2] << 12) | (codes[1:-1] << 6) | codes[2:])


class TrigramIndex:
    """Postings in compressed-row form (gram id -> documents, ascending)."""

    tie_tolerance = 0.05  # documents within 5 % of the k-th score are near-tied with it
    most_tied = 3  # ... and up to 3 k of them are kept

    def __init__(self, docs: Sequence[str], doc_verse: Sequence[int], max_df_fraction: float):
        # Identical texts are one document naming all their verses: a refrain (فباي الاء ربكما تكذبان,
        # 31 times in surah 55) takes one place in the ranking, not all of them, and every copy is anchored.
        # Documents are numbered in the mushaf order of their first verse, so ties in a ranking go to
        # the earlier verse (a repeated verse resolves to its first occurrence).
        verse_of = np.asarray(doc_verse, dtype=np.int64)
        texts, which = np.unique(np.asarray(docs, dtype=object), return_inverse=True)
        first_verse = np.full(len(texts), len(verse_of) + verse_of.max())
        np.minimum.at(first_verse, which, verse_of)
        rank = np.empty(len(texts), dtype=np.int64)
        rank[np.argsort(first_verse, kind="stable")] = np.arange(len(texts))
        texts, which = texts[np.argsort(first_verse, kind="stable")], rank[which]
        order = np.lexsort((verse_of, which))  # by document, then verse
        self._verse_start = np.searchsorted(which[order], np.arange(len(texts) + 1))
        self._verses = verse_of[order]  # document d: _verses[_verse_start[d] : _verse_start[d + 1]]
        n = len(texts)
        doc_grams = [trigram_codes(text) for text in texts]
        grams = np.concatenate(doc_grams)
        owner = np.repeat(np.arange(n), [len(g) for g in doc_grams])
        by_gram = np.lexsort((owner, grams))
        codes, self._df = np.unique(grams[by_gram], return_counts=True)
        self._docs = owner[by_gram]
        self._start = np.concatenate(([0], np.cumsum(self._df)))  # gram i: _docs[_start[i] : _start[i + 1]]
        self._gram_id = np.full(1 << 18, -1, dtype=np.int64)
        self._gram_id[codes] = np.arange(len(codes))
        self._idf = np.log(n / self._df)
        # total trigram weight per document (each of its trigrams once), for the coverage ranking
        self._doc_weight = np.bincount(self._docs, weights=np.repeat(self._idf, self._df), minlength=n)
        self._max_df = max(1, int(max_df_fraction * n))

    def anchors(self, text: str, by_weight: int, by_coverage: int) -> list[int]:
        """Verses of the `by_weight` documents sharing most trigram weight with `text` (long verses,
        partial recitations) and of the `by_coverage` documents whose weight it covers most (short
        verses inside multi-verse clips); best first, no repeats."""
        ids = self._gram_id[trigram_codes(text)]
        ids = ids[ids >= 0]
        if not len(ids):
            return []
        rare = ids[self._df[ids] <= self._max_df]
        if not len(rare):  # short transcripts of common words: use their five rarest trigrams
            rare = ids[np.lexsort((ids, self._df[ids]))[:5]]
        count = self._df[rare]
        shared = np.bincount(self._docs[_ranges(self._start[rare], count)], weights=np.repeat(self._idf[rare], count),
                             minlength=len(self._doc_weight))
        docs = np.flatnonzero(shared)  # ascending: in mushaf order
        shared = shared[docs]
        coverage = shared / self._doc_weight[docs]
        anchors: list[int] = []
        for scores, k in ((shared, by_weight), (coverage, by_coverage)):
            for d in docs[top_k(scores, k, self.tie_tolerance, self.most_tied * k)].tolist():
                for verse in self._verses[self._verse_start[d] : self._verse_start[d + 1]].tolist():
                    if verse not in anchors:
                        anchors.append(verse)
        return anchors


def _ranges(lo: np.ndarray, count: np.ndarray) -> np.ndarray:
    """lo[0] .. lo[0] + count[0] - 1, lo[1] .. lo[1] + count[1] - 1, ... as one array."""
    return np.repeat(lo - (np.cumsum(count) - count), count) + np.arange(count.sum())


def top_k(scores: np.ndarray, k: int, tolerance: float = 0.0, most: int | None = None) -> np.ndarray:
    """Indices of the k largest scores, best first, plus up to `most` in all of those within `tolerance`
    (relative) of the k-th: a family of near-identical verses (ان المتقين في جنات ...) ties on its
    shared words, and the member a garbled last word would tell apart must not be cut off by mushaf
    order. Ties go to the earlier index."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    kth = np.partition(scores, len(scores) - k)[len(scores) - k]
    candidates = np.flatnonzero(scores >= kth * (1 - tolerance))  # ascending index
    return candidates[np.lexsort((candidates, -scores[candidates]))][: max(k, most or k)]
