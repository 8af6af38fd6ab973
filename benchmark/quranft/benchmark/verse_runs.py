"""Candidate texts for a transcript: runs of consecutive verses within one surah, in every form recited.

A run (s, e) is verses s..e of one surah (indices in mushaf order). Its texts are the verses joined by
single spaces, with every combination of the alternative texts of its verses (muqatta'at said by name),
each also with the basmala before it when s is ayah 1 of a surah that opens with one.

`LengthWindow` is the one rule, shared by anchored retrieval and the full scan, for which texts are
candidates for a query: a single verse always (a partial recitation of one long verse is that verse),
a longer run when its text is sized like the query; and in both cases only when its length still lets
`fuzz.ratio` reach `min_score` (a lossless bound, it only saves work).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np

from .normalize import LETTER_CODES, letter_codes
from .quran_text import QuranText

_SPACE = int(letter_codes(" ")[0])


@dataclass(frozen=True)
class LengthWindow:
    run_lo: float  # a run of 2+ verses is a candidate when its text length lies in [run_lo, run_hi]
    run_hi: float
    feasible_lo: float  # any text outside [feasible_lo, feasible_hi] scores below min_score
    feasible_hi: float

    @classmethod
    def for_query(cls, length: int, slack: float, min_score: float) -> LengthWindow:
        # fuzz.ratio = 200 * LCS / (|q| + |t|) <= 200 * min(|q|, |t|) / (|q| + |t|); >= 100 r needs
        # |t| in [|q| r / (2 - r), |q| (2 - r) / r]. The 1e-6 keeps float rounding on the safe side.
        r = min_score / 100.0
        feasible = (length * r / (2 - r) - 1e-6, length * (2 - r) / r + 1e-6) if r > 0 else (0.0, np.inf)
        return cls(length * (1 - slack), length * (1 + slack) + 8, *feasible)

    def admits(self, length: np.ndarray, single: np.ndarray) -> np.ndarray:
        sized = (length >= self.run_lo) & (length <= self.run_hi)
        return (length >= self.feasible_lo) & (length <= self.feasible_hi) & (single | sized)


@dataclass(frozen=True)
class Candidates:
    """Parallel: texts[i] is a text of run (first[i], last[i])."""

    texts: list[str]
    first: np.ndarray
    last: np.ndarray
    led: np.ndarray  # the text is led by the basmala said before ayah 1 (not part of the run)
    counts: np.ndarray | None = None  # letter histogram of each text (`letter_codes`), when asked for

    @classmethod
    def empty(cls) -> Candidates:
        none = np.zeros(0, dtype=np.int64)
        return cls([], none, none, none.astype(bool), np.zeros((0, LETTER_CODES), dtype=np.int32))

    @classmethod
    def concat(cls, parts: Sequence[Candidates]) -> Candidates:
        parts = [p for p in parts if p.texts]
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return cls.empty()
        counts = None if any(p.counts is None for p in parts) else np.concatenate([p.counts for p in parts])
        return cls([t for p in parts for t in p.texts], *(np.concatenate([getattr(p, f) for p in parts])
                                                         for f in ("first", "last", "led")), counts)

    def select(self, index: np.ndarray) -> Candidates:
        return Candidates([self.texts[i] for i in index.tolist()], self.first[index], self.last[index], self.led[index],
                          None if self.counts is None else self.counts[index])

    def __getitem__(self, part: slice) -> Candidates:
        return Candidates(self.texts[part], self.first[part], self.last[part], self.led[part],
                          None if self.counts is None else self.counts[part])


def letter_counts(texts: Sequence[str]) -> np.ndarray:
    """Letter histogram of each text, one bincount over all their characters."""
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    codes = letter_codes("".join(texts))
    owner = np.repeat(np.arange(len(texts)), lengths)
    return np.bincount(owner * LETTER_CODES + codes, minlength=len(texts) * LETTER_CODES).reshape(
        len(texts), LETTER_CODES).astype(np.int32)


class VerseRuns:
    def __init__(self, quran: QuranText, alternatives: Mapping[int, Sequence[str]]):
        n = len(quran.refs)
        self.size = n
        lengths = np.fromiter(map(len, quran.texts), dtype=np.int64, count=n)
        # cum[i]: characters before verse i in `joined` (verses + separating spaces); run (s, e) is
        # joined[cum[s] : cum[e + 1] - 1]
        self.cum = np.concatenate(([0], np.cumsum(lengths + 1)))
        self._cum = self.cum.tolist()
        self._joined = " ".join(quran.texts)
        surah = np.fromiter((r[0] for r in quran.refs), dtype=np.int64, count=n)
        opens = np.flatnonzero(np.r_[True, surah[1:] != surah[:-1]])
        which = np.searchsorted(opens, np.arange(n), side="right") - 1
        self.surah_start = opens[which]
        self.surah_end = np.r_[opens[1:], n][which]  # exclusive
        self.opens_with_basmala = np.fromiter(map(quran.opens_with_basmala, range(n)), dtype=bool, count=n)
        self.basmala_prefix = quran.basmala + " "
        self._forms = {i: (quran.texts[i], *alts) for i, alts in alternatives.items()}
        has_forms = np.zeros(n, dtype=np.int64)
        has_forms[list(self._forms)] = 1
        self._forms_before = np.concatenate(([0], np.cumsum(has_forms)))
        # letter histograms: of verses i < j, cumulatively (a run adds its separating spaces)
        per_verse = letter_counts(quran.texts)
        self._counts_before = np.concatenate((np.zeros_like(per_verse[:1]), np.cumsum(per_verse, axis=0)))
        self._basmala_counts = letter_counts([self.basmala_prefix])[0]
        longest_form = max((len(f) - len(fs[0]) for fs in self._forms.values() for f in fs), default=0)
        self.max_growth = len(self.basmala_prefix) + longest_form  # longest text minus its plain text

    def plain_length(self, first: np.ndarray, last: np.ndarray) -> np.ndarray:
        return self.cum[last + 1] - self.cum[first] - 1

    # -- which runs ------------------------------------------------------------------------------
    def runs_from(self, starts: np.ndarray, lo: float, hi: float, min_last: np.ndarray | None = None):
        """Runs starting at each of `starts` whose plain text length is in [lo, hi] (ends >= `min_last`
        where given), plus each start's single verse; returns (first, last) arrays."""
        cum = self.cum
        last_lo = np.maximum(starts, np.searchsorted(cum, cum[starts] + 1 + lo, side="left") - 1)
        if min_last is not None:
            last_lo = np.maximum(last_lo, min_last)
        last_hi = np.minimum(self.surah_end[starts] - 1, np.searchsorted(cum, cum[starts] + 1 + hi, side="right") - 2)
        count = np.maximum(0, last_hi - last_lo + 1)
        first, last = np.repeat(starts, count), _ranges(last_lo, count)
        alone = starts[(count == 0) | (last_lo > starts)]  # single verses the ranges did not include
        return np.concatenate((first, alone)), np.concatenate((last, alone))

    def all_runs(self, lo: float, hi: float):
        return self.runs_from(np.arange(self.size), lo, hi)

    def runs_around(self, anchors: Sequence[int], lo: float, hi: float):
        """Runs containing an anchor verse with plain length in [lo, hi], plus each anchor alone; unique,
        in mushaf order."""
        a = np.asarray(anchors, dtype=np.int64)
        if not len(a):
            return a, a
        # the earliest start whose run through the anchor still fits in hi characters
        earliest = np.maximum(self.surah_start[a], np.searchsorted(self.cum, self.cum[a + 1] - 1 - hi, side="left"))
        count = a - np.minimum(earliest, a) + 1
        starts = _ranges(a - count + 1, count)  # earliest..a for each anchor
        first, last = self.runs_from(starts, lo, hi, min_last=np.repeat(a, count))
        first, last = np.concatenate((first, a)), np.concatenate((last, a))
        # a start's own single verse is only wanted when it is the anchor (it contains no anchor otherwise)
        keep = (first < last) | np.isin(first, a)
        key = np.unique(first[keep] * self.size + last[keep])
        return key // self.size, key % self.size

    # -- their texts -----------------------------------------------------------------------------
    def candidates(self, first: np.ndarray, last: np.ndarray, window: LengthWindow,
                   with_basmala: bool = True, counts: bool = False) -> Candidates:
        """The texts of runs (first[i], last[i]) that `window` admits, each with a flag: led by the
        basmala (said before ayah 1). `with_basmala=False` leaves those forms out (used when the query's
        own basmala was recognised and removed); `counts` adds their letter histograms."""
        joined, cum, prefix = self._joined, self._cum, self.basmala_prefix
        length = self.plain_length(first, last)
        single = first == last
        plain = window.admits(length, single)
        led = self.opens_with_basmala[first] & window.admits(length + len(prefix), single) & with_basmala
        texts = [joined[cum[s] : cum[e + 1] - 1] for s, e in zip(first[plain].tolist(), last[plain].tolist())]
        texts += [prefix + joined[cum[s] : cum[e + 1] - 1] for s, e in zip(first[led].tolist(), last[led].tolist())]
        histograms = None
        if counts:
            histograms = np.concatenate((self._run_counts(first[plain], last[plain]),
                                         self._run_counts(first[led], last[led]) + self._basmala_counts))
        parts = [Candidates(texts, np.concatenate((first[plain], first[led])),
                            np.concatenate((last[plain], last[led])),
                            np.concatenate((np.zeros(plain.sum(), dtype=bool), np.ones(led.sum(), dtype=bool))),
                            histograms)]
        spoken = (self._forms_before[last + 1] - self._forms_before[first]) > 0
        extra_texts, extra_runs, extra_led = [], [], []
        for s, e in zip(first[spoken].tolist(), last[spoken].tolist()):
            combos = product(*(self._forms.get(i, (joined[cum[i] : cum[i + 1] - 1],)) for i in range(s, e + 1)))
            next(combos)  # the first combination is the plain text, already above
            for words in combos:
                text = " ".join(words)
                extra_texts.append(text)
                extra_led.append(False)
                if with_basmala and self.opens_with_basmala[s]:
                    extra_texts.append(prefix + text)
                    extra_led.append(True)
                extra_runs += [(s, e)] * (len(extra_texts) - len(extra_runs))
        if extra_runs:
            runs = np.array(extra_runs, dtype=np.int64)
            length = np.fromiter(map(len, extra_texts), dtype=np.int64, count=len(extra_texts))
            keep = np.flatnonzero(window.admits(length, runs[:, 0] == runs[:, 1]))
            kept = [extra_texts[i] for i in keep.tolist()]
            parts.append(Candidates(kept, runs[keep, 0], runs[keep, 1], np.array(extra_led, dtype=bool)[keep],
                                    letter_counts(kept) if counts else None))
        return Candidates.concat(parts)

    def _run_counts(self, first: np.ndarray, last: np.ndarray) -> np.ndarray:
        histograms = self._counts_before[last + 1] - self._counts_before[first]
        histograms[:, _SPACE] += last - first  # the spaces joining the verses
        return histograms


def _ranges(lo: np.ndarray, count: np.ndarray) -> np.ndarray:
    """lo[0] .. lo[0] + count[0] - 1, lo[1] .. lo[1] + count[1] - 1, ... as one array."""
    offset = np.cumsum(count) - count
    return np.repeat(lo - offset, count) + np.arange(count.sum())


class FullScanTable:
    """Every candidate text up to `cap` characters, built once and sorted by length, so a full scan of a
    query is a few slices (no text is built per query). Texts of longer runs are made on demand.

    Before any pruning, `scan` returns the same set as `runs.candidates` over every run,
    `runs.all_runs(window.run_lo - runs.max_growth, window.run_hi)` (tests/benchmark/test_matcher_oracle.py).
    """

    # the letter-count bound is only worth computing for a high cutoff: at 60, unrelated texts of
    # the same length share ~80 % of their letters and it prunes nothing
    bound_from = 70.0

    def __init__(self, runs: VerseRuns, cap: int):
        self.runs, self.cap = runs, cap
        every = LengthWindow(0, cap, 0, np.inf)  # runs up to cap characters, single verses of any length
        table = runs.candidates(*runs.all_runs(0, cap), every, counts=True)
        single = table.first == table.last
        # (plain | basmala-led) x (all | single verses only), each sorted by text length
        self._parts = {
            (led, only_single): self._sorted(table.select(np.flatnonzero((table.led == led) & (single | ~only_single))))
            for led in (False, True) for only_single in (False, True)
        }

    @staticmethod
    def _sorted(c: Candidates) -> tuple[np.ndarray, Candidates]:
        length = np.fromiter(map(len, c.texts), dtype=np.int64, count=len(c.texts))
        order = np.argsort(length, kind="stable")
        return length[order], c.select(order)

    @staticmethod
    def _slice(part: tuple[np.ndarray, Candidates], lo: int, hi: int) -> Candidates:
        """Entries whose text length is in the closed range [lo, hi]."""
        length, c = part
        return c[np.searchsorted(length, lo, side="left") : np.searchsorted(length, hi, side="right")]

    def scan(self, query: str, window: LengthWindow, with_basmala: bool = True, cutoff: float = 0.0) -> Candidates:
        """The candidates for `query`, less those whose letter counts show they score below `cutoff`."""
        c = self._all_candidates(window, with_basmala)
        if cutoff < self.bound_from or not c.texts:
            return c
        # fuzz.ratio = 200 LCS / (|q| + |t|), and LCS <= sum over letters of min(count in q, count in t)
        shared = np.minimum(c.counts, letter_counts([query])[0]).sum(axis=1)
        length = np.fromiter(map(len, c.texts), dtype=np.int64, count=len(c.texts))
        return c.select(np.flatnonzero(200.0 * shared >= (cutoff - 1e-9) * (len(query) + length)))

    def _all_candidates(self, window: LengthWindow, with_basmala: bool) -> Candidates:
        # Texts have integer lengths: admitted are single verses in [f_lo, f_hi] and longer runs in
        # [lo, hi]; per kind of text, the three slices below are disjoint and cover exactly that up to
        # cap characters, and the runs above cap are made now.
        f_lo, f_hi = math.ceil(window.feasible_lo), math.floor(min(window.feasible_hi, 1e9))
        lo = max(math.ceil(window.run_lo), f_lo)
        hi = min(math.floor(window.run_hi), f_hi)
        table_hi = min(hi, self.cap)
        parts = []
        for led in (False, True) if with_basmala else (False,):
            everything, singles = self._parts[(led, False)], self._parts[(led, True)]
            parts += [
                self._slice(everything, lo, table_hi),  # runs and single verses sized like the query
                self._slice(singles, f_lo, lo - 1),  # shorter single verses
                self._slice(singles, max(table_hi + 1, lo), f_hi),  # longer single verses
            ]
        if hi > self.cap:
            longer = LengthWindow(max(lo, self.cap + 1), hi, window.feasible_lo, window.feasible_hi)
            first, last = self.runs.all_runs(self.cap + 1 - self.runs.max_growth, hi)
            multi = first < last
            parts.append(self.runs.candidates(first[multi], last[multi], longer, with_basmala, counts=True))
        return Candidates.concat(parts)
