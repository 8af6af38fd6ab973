"""Shared fixtures for the benchmark tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus_helpers import RECITATIONS


@pytest.fixture(scope="session")
def recitations() -> Path:
    # The team's shared corpus is the acceptance data: a test that needs it fails loudly without it.
    assert (RECITATIONS / "manifest.json").is_file(), f"missing shared corpus {RECITATIONS}"
    return RECITATIONS




# One verse index per test session: building it is the matcher's start-up cost.
@pytest.fixture(scope="session")
def quran():
    from quranft.benchmark.quran_text import load_quran

    return load_quran()


@pytest.fixture(scope="session")
def matcher(quran):
    from quranft.benchmark.matcher import VerseMatcher

    return VerseMatcher(quran)


@pytest.fixture(scope="session")
def index(quran):
    """Verse reference -> its position in mushaf order."""
    return {ref: i for i, ref in enumerate(quran.refs)}
