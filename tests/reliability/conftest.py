"""Fixtures of the reliability suites: the seed. The cluster kit (tests/support/clusterkit.py: Env, resource,
stub_commands) and the `installed`/`env` fixtures (tests/conftest.py) are shared with the operator tests."""
from __future__ import annotations

import os

import pytest

DEFAULT_SEED = 20260707


@pytest.fixture(scope="session")
def seed(request) -> int:
    value = request.config.getoption("seed", default=None)
    if value is None:
        value = int(os.environ.get("QURANFT_SEED", DEFAULT_SEED))
    print(f"\nreliability seed: {value} (rerun with --seed {value} or QURANFT_SEED={value})")
    return value
