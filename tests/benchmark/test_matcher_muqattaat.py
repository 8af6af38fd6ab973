"""Huruf muqatta'at: the 29 letter-opened surahs are matched when the letters are said by name."""

from __future__ import annotations

import pytest

from quranft.benchmark.muqattaat import OPENING_LETTERS, opening_alternatives, spoken_forms

SURAHS = {2, 3, 7, 10, 11, 12, 13, 14, 15, 19, 20, 26, 27, 28, 29, 30, 31, 32, 36, 38, 40, 41, 42, 43, 44, 45,
          46, 50, 68}


def test_the_29_surahs_and_their_letters_as_tanzil_writes_them(quran, index):
    assert {s for s, _ in OPENING_LETTERS} == SURAHS
    assert len(OPENING_LETTERS) == 30  # 42 has two letter verses: حم, عسق
    for ref, letters in OPENING_LETTERS.items():
        assert quran.texts[index[ref]].split()[0] == letters


@pytest.mark.parametrize(
    "letters, said",
    [("يس", "ياسين"), ("يس", "يا سين"), ("طه", "طاها"), ("طه", "طاء هاء"), ("حم", "حا ميم"), ("حم", "حاميم"),
     ("الم", "الف لام ميم"), ("الر", "الف لام راء"), ("كهيعص", "كاف ها يا عين صاد"), ("ص", "صاد"), ("ن", "نون"),
     ("عسق", "عين سين قاف")],
)
def test_spoken_forms_include_the_common_spellings(letters, said):
    assert said in spoken_forms(letters)


def test_alternatives_keep_the_rest_of_the_verse(quran, index):
    alternatives = opening_alternatives(quran)
    assert alternatives[index[(38, 1)]][0] == "صاد والقران ذي الذكر"
    assert "الف لام را تلك ايات الكتاب الحكيم" in alternatives[index[(10, 1)]]


@pytest.mark.parametrize("ref", sorted(OPENING_LETTERS))
def test_opening_verse_said_by_name(matcher, quran, index, ref):
    """Every spelling of the letters said by name is matched to the verse, or, where several surahs open
    with the same letters-only verse (الم, حم, طسم), to the first of them (a tie: mushaf order), the
    others listed as alternatives."""
    same_text = sorted(r for r in OPENING_LETTERS if quran.texts[index[r]] == quran.texts[index[ref]])
    for said in opening_alternatives(quran)[index[ref]]:
        found = matcher.match(said)
        assert (found.verses, found.score) == ([same_text[0]], 100.0), said
        listed = [(v["verses"][0]["surah"], v["verses"][0]["ayah"]) for v in found.alternatives]
        assert listed[: len(same_text) - 1] == same_text[1 : 1 + matcher.config.max_alternatives], said


@pytest.mark.parametrize("ref", sorted(OPENING_LETTERS))
def test_opening_verse_said_by_name_then_the_next_verses(matcher, quran, index, ref):
    """With the verses after it the clip is that surah's opening, exactly, with or without basmala."""
    first = index[ref]
    run = list(quran.refs[first : first + 3])
    forms = opening_alternatives(quran)
    said = forms[first][-1]  # the last spelling: run together, names with hamza
    rest = [forms[i][0] if i in forms else quran.texts[i] for i in range(first + 1, first + 3)]
    transcript = " ".join([said, *rest])
    assert matcher.predict(transcript) == run
    if quran.opens_with_basmala(first):
        assert matcher.predict(f"{quran.basmala} {transcript}") == run
