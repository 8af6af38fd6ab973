"""Phonetic confusion classes: the folded view of a text that verse retrieval indexes next to the exact one.

Arabic ASR output, and recitations by users and non-native reciters, swap letters that sound alike, drop
or double letters and merge or split words. Each of those breaks the exact character trigrams the
retrieval index is built from, so a clearly recognisable reading of a verse may never propose it. The
folded view maps every letter of a confusion class to one representative, drops the letters that come
and go with spelling and pronunciation, removes spaces and collapses doubled letters; both the index
and the query go through the same fold, so a confusion inside one class costs nothing in that view.

Folding is for retrieval only: run scores are always computed on the exact (`normalize_arabic`) text,
so `MatcherConfig.min_score` keeps its meaning.
"""

from __future__ import annotations

import re

# (letters, representative or "" to drop, why the class exists). Input is `normalize_arabic` output, so
# hamza carriers are already folded (أ إ آ -> ا, ؤ -> و, ئ -> ي) and ة is ه.
CONFUSION_CLASSES: tuple[tuple[str, str, str], ...] = (
    ("سصث", "س", "ص is the emphatic of س; ث is said as س by most dialect speakers and non-native reciters"),
    ("تط", "ت", "ط is the emphatic of ت; emphasis is the first thing non-native reciters and ASR lose"),
    ("دضظذز", "د",
     "ض is the emphatic of د; ظ and ض merged in most dialects; ذ and ظ are said as ز or د (interdentals"
     " lost), so the pairs ض/د, ض/ظ, ظ/ز, ذ/ز and ذ/د chain into one class"),
    ("قك", "ك", "ق is said as ك by many non-native reciters and is a frequent ASR confusion"),
    ("حهخ", "ه", "ح is said as ه (no pharyngeal); خ/ح is the same confusion one step back in the throat"),
    ("اءعوي", "",
     "ع is said as a glottal stop or dropped (ع/أ); hamza is spelled or not; long vowels ا و ي are"
     " lengthened into existence or shortened away (الرحمن/الرحمان, ذلك/ذالك, داود/داوود) by ASR spelling"),
)

_FOLD_TABLE = str.maketrans({ch: rep for letters, rep, _ in CONFUSION_CLASSES for ch in letters} | {" ": ""})
_DOUBLED = re.compile(r"(.)\1+")  # shadda is not written: a doubled letter is an ASR or spelling artefact


def fold_confusions(normalized: str) -> str:
    """The folded view of a `normalize_arabic` text: one letter per confusion class, no vowel letters,
    no spaces (merged and split words look alike), no doubled letters."""
    return _DOUBLED.sub(r"\1", normalized.translate(_FOLD_TABLE))
