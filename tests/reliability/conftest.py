"""Fixtures of the reliability suites: the seed, the installed CRD/RBAC, and an operator Env per test.

The operator tests' helpers (tests/operator/clusterkit.py: Env, resource, stub_commands) are reused, not
copied: their folder goes on sys.path here, as tests/operator/conftest.py does for its own tests.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for folder in (HERE, HERE.parent / "operator"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

DEFAULT_SEED = 20260707


@pytest.fixture(scope="session")
def seed(request) -> int:
    value = request.config.getoption("seed", default=None)
    if value is None:
        value = int(os.environ.get("QURANFT_SEED", DEFAULT_SEED))
    print(f"\nreliability seed: {value} (rerun with --seed {value} or QURANFT_SEED={value})")
    return value


@pytest.fixture(scope="module")
def installed(cluster):
    from quranft.operator import access

    access.install(cluster.bin_dir / "kubectl", cluster.kubeconfig)
    return cluster


@pytest.fixture
def env(installed, namespace, tmp_path):
    from clusterkit import Env

    e = Env(installed, namespace, tmp_path)
    yield e
    e.close()
