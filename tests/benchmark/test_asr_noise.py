"""The ASR noise generator: seeded, labelled with the verses recited, and as noisy as its level says."""

from __future__ import annotations

import numpy as np
import pytest
from rapidfuzz import fuzz

from quranft.benchmark.asr_noise import CLOSING, CONFUSION_FAMILIES, ISTIADHA, LEVELS, AsrNoise, NoiseLevel
from quranft.benchmark.muqattaat import spoken_forms


def test_same_seed_same_transcripts_other_seed_others(quran):
    first = AsrNoise(quran, "user", seed=7).sample(50)
    assert first == AsrNoise(quran, "user", seed=7).sample(50)
    assert first != AsrNoise(quran, "user", seed=8).sample(50)


def test_clips_are_runs_of_one_surah(quran, index):
    for clip in AsrNoise(quran, "heavy", seed=1).sample(300, max_verses=4):
        positions = [index[r] for r in clip.expected]
        assert 1 <= len(positions) <= 4
        assert positions == list(range(positions[0], positions[0] + len(positions)))
        assert len({s for s, _ in clip.expected}) == 1


def test_clean_is_the_text_with_the_basmala_before_ayah_1(quran, index):
    for clip in AsrNoise(quran, "clean", seed=2).sample(200):
        first = index[clip.expected[0]]
        text = " ".join(quran.texts[index[r]] for r in clip.expected)
        assert clip.transcript == (f"{quran.basmala} {text}" if quran.opens_with_basmala(first) else text)


def _letter_rate(quran, level: NoiseLevel, letters: str, n: int = 400) -> float:
    """Share of `letters` in the verse texts that the level rewrote, over clips without cuts or words
    changes (only letter noise on)."""
    only_letters = NoiseLevel("probe", level.confusions, basmala_at_ayah_1=0.0)
    clips = AsrNoise(quran, only_letters, seed=3).sample(n, max_verses=1)
    index = {ref: i for i, ref in enumerate(quran.refs)}
    said = "".join(quran.texts[index[c.expected[0]]] for c in clips)
    written = "".join(c.transcript for c in clips)
    assert len(said) == len(written)  # substitutions only
    chars = np.array(list(said))
    hit = np.isin(chars, list(letters))
    return float(np.mean(chars[hit] != np.array(list(written))[hit]))


@pytest.mark.parametrize("level", ["light", "user", "heavy"])
def test_confusion_rates_are_the_levels(quran, level):
    rates = LEVELS[level].confusions
    emphatic = "صطض"  # only the emphatic family (and hypercorrection, none of these) rewrites these
    assert _letter_rate(quran, LEVELS[level], emphatic) == pytest.approx(rates["emphatic"], abs=0.03)


def test_noise_grows_with_the_level(quran, index):
    def mean_ratio(level: str) -> float:
        clips = AsrNoise(quran, level, seed=4).sample(300)
        texts = [" ".join(quran.texts[index[r]] for r in c.expected) for c in clips]
        return float(np.mean([fuzz.ratio(t, c.transcript) for t, c in zip(texts, clips)]))

    ratios = [mean_ratio(level) for level in ("light", "user", "heavy")]
    assert ratios == sorted(ratios, reverse=True)
    assert ratios[-1] > 60  # heavy is noisy, not garbage


def test_framing_appears_at_the_levels_rates(quran):
    transcripts = [c.transcript for c in AsrNoise(quran, "user", seed=5).sample(1000)]
    # the formulas get letter noise like everything else: count near matches
    opened = np.mean([fuzz.ratio(t[: len(ISTIADHA)], ISTIADHA) > 75 for t in transcripts])
    closed = np.mean([fuzz.ratio(t[-len(CLOSING) :], CLOSING) > 75 for t in transcripts])
    assert opened == pytest.approx(LEVELS["user"].istiadha, abs=0.06)
    assert closed == pytest.approx(LEVELS["user"].closing, abs=0.06)


def test_opening_letters_said_by_name(quran, index):
    say = NoiseLevel("say", spoken_letters=1.0, basmala_at_ayah_1=0.0)
    said = {AsrNoise(quran, say, seed=s).recitation(index[(36, 1)], 1).transcript for s in range(20)}
    assert said <= set(spoken_forms("يس")) and len(said) > 1
    write = NoiseLevel("write", basmala_at_ayah_1=0.0)
    assert AsrNoise(quran, write).recitation(index[(36, 1)], 1).transcript == "يس"


def test_partial_recitations_cut_inside_the_first_or_last_verse(quran, index):
    cut_only = NoiseLevel("cut", partial=1.0, basmala_at_ayah_1=0.0)
    cut = 0
    for clip in AsrNoise(quran, cut_only, seed=9).sample(300, max_verses=3):
        verses = [quran.texts[index[r]].split() for r in clip.expected]
        full, said = sum(verses, []), clip.transcript.split()
        k = len(full) - len(said)
        cut += k > 0
        at_start, at_end = said == full[k:], said == full[: len(full) - k]
        assert at_start or at_end
        # never the whole verse, never more than partial_max_fraction of it
        verse = verses[0] if at_start else verses[-1]
        assert k < len(verse) and k <= len(verse) * cut_only.partial_max_fraction
    assert cut > 200  # most verses have words to cut


def test_confusion_families_only_map_letters_to_letters():
    for table in CONFUSION_FAMILIES.values():
        for said, written in table.items():
            assert len(said) == len(written) == 1 and said != written
