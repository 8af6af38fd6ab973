"""Huruf muqatta'at: the disjoined letters that open 29 surahs, and how ASR writes them when recited.

A reciter says the letters by name ("alif lam mim"), so ASR writes what it hears: "الف لام ميم" or
"ألم" for الم, "ياسين" for يس, "طاها" for طه, "حا ميم" for حم, "كاف ها يا عين صاد" for كهيعص. Each
opening verse therefore has alternative texts in which its letters are replaced by their spoken names,
and the matcher accepts either form.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import product

from .quran_text import QuranText
from .scoring import Verse

# The verse that carries the letters, as written in the Tanzil SIMPLE text after `normalize_arabic`.
# Surah 42 has two letter verses (حم, then عسق); in 10-15, 27, 38, 50 and 68 the letters open a longer verse.
OPENING_LETTERS: Mapping[Verse, str] = {
    (2, 1): "الم", (3, 1): "الم", (7, 1): "المص", (10, 1): "الر", (11, 1): "الر", (12, 1): "الر",
    (13, 1): "المر", (14, 1): "الر", (15, 1): "الر", (19, 1): "كهيعص", (20, 1): "طه", (26, 1): "طسم",
    (27, 1): "طس", (28, 1): "طسم", (29, 1): "الم", (30, 1): "الم", (31, 1): "الم", (32, 1): "الم",
    (36, 1): "يس", (38, 1): "ص", (40, 1): "حم", (41, 1): "حم", (42, 1): "حم", (42, 2): "عسق",
    (43, 1): "حم", (44, 1): "حم", (45, 1): "حم", (46, 1): "حم", (50, 1): "ق", (68, 1): "ن",
}

# Spoken names, normalised (أ -> ا). The names ending in a long vowel are written with or without the
# final hamza (را / راء): ASR output has both.
LETTER_NAMES: Mapping[str, tuple[str, ...]] = {
    "ا": ("الف",), "ل": ("لام",), "م": ("ميم",), "ص": ("صاد",), "ر": ("را", "راء"), "ك": ("كاف",),
    "ه": ("ها", "هاء"), "ي": ("يا", "ياء"), "ع": ("عين",), "ط": ("طا", "طاء"), "س": ("سين",),
    "ح": ("حا", "حاء"), "ق": ("قاف",), "ن": ("نون",),
}


def spoken_forms(letters: str) -> tuple[str, ...]:
    """Every spelling of `letters` said by name: each name spelling, words spaced ("حا ميم") or run
    together ("حاميم", "ياسين"). A single letter has no run-together form."""
    forms: list[str] = []
    for names in product(*(LETTER_NAMES[ch] for ch in letters)):
        for sep in (" ", "") if len(names) > 1 else (" ",):
            form = sep.join(names)
            if form not in forms:
                forms.append(form)
    return tuple(forms)


def opening_alternatives(quran: QuranText) -> dict[int, tuple[str, ...]]:
    """Verse index -> alternative texts of that verse with its letters spoken (the rest of the verse kept)."""
    index = {ref: i for i, ref in enumerate(quran.refs)}
    alternatives: dict[int, tuple[str, ...]] = {}
    for ref, letters in OPENING_LETTERS.items():
        if ref not in index:  # a partial text (tests); load_quran always has all 6,236 verses
            continue
        text = quran.texts[index[ref]]
        if text != letters and not text.startswith(letters + " "):
            raise ValueError(f"{ref[0]}:{ref[1]} does not open with {letters!r}: {text[:20]!r}")
        rest = text[len(letters) :]
        alternatives[index[ref]] = tuple(form + rest for form in spoken_forms(letters))
    return alternatives
