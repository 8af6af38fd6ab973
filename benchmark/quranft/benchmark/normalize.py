"""Arabic text normalisation shared by the verse index and the transcripts.

Both sides go through the same function, so the choice of canonical letter only has to be consistent,
not linguistically perfect. We fold the variants ASR models and Tanzil's scripts disagree on.
"""

from __future__ import annotations

import re

import numpy as np

# Harakat, Quranic annotation marks (small high letters, stop signs), superscript alef and tatweel carry
# no identity for matching and are written inconsistently by ASR output.
_STRIP = re.compile(
    "[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed\u0640\u08d3-\u08ff]"
)
_FOLD = str.maketrans(
    {
        "\u0622": "\u0627",  # آ -> ا
        "\u0623": "\u0627",  # أ -> ا
        "\u0625": "\u0627",  # إ -> ا
        "\u0671": "\u0627",  # ٱ (alef wasla) -> ا
        "\u0672": "\u0627",
        "\u0673": "\u0627",
        "\u0675": "\u0627",
        "\u0649": "\u064a",  # ى -> ي
        "\u06cc": "\u064a",  # Farsi yeh -> ي
        "\u0626": "\u064a",  # ئ -> ي
        "\u0624": "\u0648",  # ؤ -> و
        "\u0629": "\u0647",  # ة -> ه
        "\u06a9": "\u0643",  # Keheh -> ك
    }
)
# After folding, only Arabic letters (incl. hamza) and spaces remain.
_NON_LETTER = re.compile("[^\u0621-\u064a ]+")
_SPACES = re.compile(r"\s+")


def normalize_arabic(text: str) -> str:
    """Return `text` without diacritics/tatweel, with letter variants folded and whitespace collapsed."""
    text = _STRIP.sub("", text)
    text = text.translate(_FOLD)
    text = _NON_LETTER.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


# Integer codes of what `normalize_arabic` leaves: 0 anything else, 1 space, 2.. the letters U+0621..U+064A.
LETTER_CODES = 2 + 0x64B - 0x621  # how many codes there are
_CODE = np.zeros(0x700, dtype=np.int64)
_CODE[ord(" ")] = 1
_CODE[0x621:0x64B] = np.arange(2, LETTER_CODES)


def letter_codes(normalized: str) -> np.ndarray:
    """One code per character of a `normalize_arabic` text, for numpy work on letters."""
    points = np.frombuffer(normalized.encode("utf-32-le"), dtype=np.uint32)
    return _CODE[np.minimum(points, len(_CODE) - 1)]
