"""Seeded, realistic ASR noise on recitations: what a transcript of a real clip looks like.

Shared by the matcher tests and `scripts/bench_matcher.py`. A clip recites a run of consecutive verses;
its transcript differs from the Tanzil text by, in this order:
1. the reading: opening muqatta'at said by name, a start or end cut inside the first or last verse
   (a partial recitation: that verse is still expected), isti'adha / basmala / "sadaqa Allahu al-azim"
   said around the verses;
2. letter confusions by family (see `CONFUSION_FAMILIES`) at per-family rates, random substitutions,
   deletions, insertions and doubled letters;
3. long vowels dropped or inserted, words merged and split.

The confusion families are this module's own model of reciters and ASR, deliberately not the matcher's
fold map (`confusions.py`): some of them (ق said as a glottal stop, ث as ت) cross its classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .muqattaat import opening_alternatives
from .normalize import normalize_arabic
from .quran_text import QuranText
from .scoring import Verse

ARABIC_LETTERS = np.array(list("ابتثجحخدذرزسشصضطظعغفقكلمنهويء"))
ISTIADHA = normalize_arabic("أعوذ بالله من الشيطان الرجيم")
CLOSING = normalize_arabic("صدق الله العظيم")

# family -> {letter said: letter written}; a letter of a family is replaced at that family's rate.
CONFUSION_FAMILIES: Mapping[str, Mapping[str, str]] = {
    # emphasis lost: the first thing non-native reciters and ASR drop
    "emphatic": {"ص": "س", "ط": "ت", "ض": "د", "ظ": "ز", "ق": "ك"},
    # interdentals said as sibilants, and the ض/ظ merger of most dialects
    "interdental": {"ث": "س", "ذ": "ز", "ظ": "ض"},
    # no pharyngeals: ح as ه, ع as a glottal stop (written ا)
    "pharyngeal": {"ح": "ه", "ع": "ا", "خ": "ح"},
    # colloquial (Egyptian, Levantine) habits: ق as a glottal stop, ث as ت, ذ as د, غ as ق
    "dialect": {"ق": "ا", "ث": "ت", "ذ": "د", "غ": "ق"},
    # hypercorrection: a plain letter written emphatic
    "hypercorrection": {"س": "ص", "ت": "ط", "د": "ض", "ز": "ظ", "ك": "ق", "ه": "ح"},
}
LONG_VOWELS = "اوي"


@dataclass(frozen=True)
class NoiseLevel:
    """Rates of one noise level. Letter rates are per letter, word rates per word or space."""

    name: str
    confusions: Mapping[str, float] = field(default_factory=dict)  # family -> rate per letter of it
    random_substitution: float = 0.0  # any letter written as a random one
    deletion: float = 0.0
    insertion: float = 0.0  # a random letter after this one
    doubling: float = 0.0  # this letter written twice
    long_vowel: float = 0.0  # per word: one long vowel dropped, or an ا inserted (half each)
    merge: float = 0.0  # per space: the two words written as one
    split: float = 0.0  # per word of 4+ letters: a space inside it
    partial: float = 0.0  # the clip starts late or ends early, inside its first or last verse
    partial_max_fraction: float = 0.4  # at most this share of that verse's words is cut (never all)
    istiadha: float = 0.0  # "a'udhu billahi min ash-shaytan ir-rajim" before the verses
    basmala_at_ayah_1: float = 1.0  # before ayah 1 of a surah (not 1, where it is 1:1, nor 9)
    basmala_mid_surah: float = 0.0  # before a verse that is not ayah 1 (not in surahs 1 and 9)
    closing: float = 0.0  # "sadaqa Allahu al-azim" after the verses
    spoken_letters: float = 0.0  # opening muqatta'at said by name ("الف لام ميم")


LEVELS: Mapping[str, NoiseLevel] = {
    # the Tanzil text itself, basmala before ayah 1 as reciters say it
    "clean": NoiseLevel("clean"),
    # a good model on a trained reciter
    "light": NoiseLevel(
        "light", {"emphatic": 0.03, "interdental": 0.03, "pharyngeal": 0.02, "hypercorrection": 0.005},
        random_substitution=0.005, deletion=0.005, insertion=0.005, doubling=0.005, long_vowel=0.05,
        merge=0.02, split=0.01, partial=0.1, istiadha=0.1, basmala_mid_surah=0.05, closing=0.1,
        spoken_letters=0.5),
    # app users and non-native reciters: the level issue 13 is about
    "user": NoiseLevel(
        "user", {"emphatic": 0.25, "interdental": 0.3, "pharyngeal": 0.2, "dialect": 0.05,
                 "hypercorrection": 0.02},
        random_substitution=0.02, deletion=0.02, insertion=0.01, doubling=0.01, long_vowel=0.1,
        merge=0.05, split=0.03, partial=0.25, istiadha=0.3, basmala_at_ayah_1=0.9, basmala_mid_surah=0.15,
        closing=0.25, spoken_letters=0.8),
    # a weak model on a noisy phone recording
    "heavy": NoiseLevel(
        "heavy", {"emphatic": 0.5, "interdental": 0.5, "pharyngeal": 0.4, "dialect": 0.15,
                  "hypercorrection": 0.05},
        random_substitution=0.06, deletion=0.04, insertion=0.03, doubling=0.02, long_vowel=0.2,
        merge=0.1, split=0.05, partial=0.35, istiadha=0.3, basmala_at_ayah_1=0.8, basmala_mid_surah=0.15,
        closing=0.3, spoken_letters=0.8),
}


@dataclass(frozen=True)
class NoisyRecitation:
    expected: list[Verse]
    transcript: str


class AsrNoise:
    """Noisy transcripts of runs of verses from `quran` at one level; same seed, same transcripts."""

    def __init__(self, quran: QuranText, level: NoiseLevel | str, seed: int = 0):
        self.quran = quran
        self.level = LEVELS[level] if isinstance(level, str) else level
        self.rng = np.random.default_rng(seed)
        self._spoken = opening_alternatives(quran)

    def sample(self, n: int, max_verses: int = 5) -> list[NoisyRecitation]:
        """`n` clips, each a run of 1..`max_verses` consecutive verses (fewer at a surah's end) starting
        at a verse drawn uniformly from all 6,236."""
        starts = self.rng.integers(0, len(self.quran.refs), n)
        lengths = self.rng.integers(1, max_verses + 1, n)
        return [self.recitation(int(s), int(k)) for s, k in zip(starts, lengths)]

    def recitation(self, start: int, length: int) -> NoisyRecitation:
        q, rng, lv = self.quran, self.rng, self.level
        surah = q.refs[start][0]
        end = start
        while end + 1 < len(q.refs) and end + 1 - start < length and q.refs[end + 1][0] == surah:
            end += 1
        verses = [self._spoken_or_written(i) for i in range(start, end + 1)]
        self._cut(verses)
        parts = [" ".join(words) for words in verses]
        ayah = q.refs[start][1]
        if q.opens_with_basmala(start):
            basmala = rng.random() < lv.basmala_at_ayah_1
        else:
            basmala = ayah > 1 and surah not in (1, 9) and rng.random() < lv.basmala_mid_surah
        if basmala:
            parts.insert(0, q.basmala)
        if rng.random() < lv.istiadha:
            parts.insert(0, ISTIADHA)
        if rng.random() < lv.closing:
            parts.append(CLOSING)
        text = self._word_noise(self._letter_noise(" ".join(parts)))
        return NoisyRecitation(list(q.refs[start : end + 1]), text)

    def _spoken_or_written(self, index: int) -> list[str]:
        forms = self._spoken.get(index)
        if forms and self.rng.random() < self.level.spoken_letters:
            return forms[self.rng.integers(len(forms))].split()
        return self.quran.texts[index].split()

    def _cut(self, verses: list[list[str]]) -> None:
        """Start late in the first verse or stop early in the last one, leaving at least one word of it."""
        if self.rng.random() >= self.level.partial:
            return
        at_start = self.rng.random() < 0.5
        words = verses[0] if at_start else verses[-1]
        most = min(len(words) - 1, int(len(words) * self.level.partial_max_fraction))
        if most < 1:
            return
        k = int(self.rng.integers(1, most + 1))
        if at_start:
            del words[:k]
        else:
            del words[-k:]

    def _letter_noise(self, text: str) -> str:
        lv, rng = self.level, self.rng
        chars = np.array(list(text))
        said = chars.copy()
        letters = chars != " "
        untouched = letters.copy()  # one confusion per letter: hypercorrection must not undo another
        for family, rate in lv.confusions.items():
            table = CONFUSION_FAMILIES[family]
            hit = untouched & np.isin(said, list(table)) & (rng.random(len(chars)) < rate)
            chars[hit] = [table[c] for c in said[hit]]
            untouched &= ~hit
        garbled = letters & (rng.random(len(chars)) < lv.random_substitution)
        chars[garbled] = rng.choice(ARABIC_LETTERS, garbled.sum())
        # each position becomes itself (kept), nothing (deleted), itself twice (doubled), or itself plus a
        # random letter (insertion)
        copies = np.ones(len(chars), dtype=int)
        copies[letters & (rng.random(len(chars)) < lv.deletion)] = 0
        doubled = letters & (copies == 1) & (rng.random(len(chars)) < lv.doubling)
        inserted = letters & (copies == 1) & ~doubled & (rng.random(len(chars)) < lv.insertion)
        copies[doubled | inserted] = 2
        out = np.repeat(chars, copies)
        second = np.cumsum(copies)[inserted] - 1  # the extra slot of each insertion
        out[second] = rng.choice(ARABIC_LETTERS, len(second))
        return "".join(out)

    def _word_noise(self, text: str) -> str:
        lv, rng = self.level, self.rng
        words = text.split()
        for i in np.flatnonzero(rng.random(len(words)) < lv.long_vowel):
            words[i] = self._long_vowel(words[i])
        for i in np.flatnonzero(rng.random(len(words)) < lv.split):
            if len(words[i]) >= 4:
                cut = int(rng.integers(2, len(words[i]) - 1))
                words[i] = f"{words[i][:cut]} {words[i][cut:]}"
        glue = np.where(rng.random(max(len(words) - 1, 0)) < lv.merge, "", " ")
        return "".join(w + g for w, g in zip(words, [*glue, ""]))

    def _long_vowel(self, word: str) -> str:
        vowels = [i for i in range(1, len(word)) if word[i] in LONG_VOWELS]
        if vowels and self.rng.random() < 0.5:
            i = vowels[self.rng.integers(len(vowels))]
            return word[:i] + word[i + 1 :]
        if len(word) >= 2:
            i = int(self.rng.integers(1, len(word)))
            return word[:i] + "ا" + word[i:]
        return word
