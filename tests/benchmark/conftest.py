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


