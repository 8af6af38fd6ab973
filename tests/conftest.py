"""Shared fixtures: the embedded Kubernetes cluster (once per session), a fresh namespace per test, and the
operator's install plus an Env (tests/support/clusterkit.py) for the operator and reliability suites.

`cluster` reuses a cluster that `quranft cluster up` already started (same state dir), otherwise starts
one (building the binaries on first use) and stops it at the end of the session.
"""
from __future__ import annotations

import uuid

import pytest


@pytest.fixture(scope="session")
def cluster():
    from quranft.cluster import controlplane

    existing = controlplane.attach()
    handle = existing or controlplane.up(log=lambda msg: print(msg))
    yield handle
    if existing is None:
        controlplane.down(log=lambda msg: None)


@pytest.fixture
def namespace(cluster):
    """A random namespace, ready for pods (its default ServiceAccount exists); deleted afterwards."""
    from kubernetes import client

    from quranft.cluster.controlplane import create_ready_namespace

    api = cluster.api_client()
    core = client.CoreV1Api(api)
    name = create_ready_namespace(core, f"t-{uuid.uuid4().hex[:10]}")
    yield name
    core.delete_namespace(name)
    api.close()


@pytest.fixture(scope="module")
def installed(cluster):
    """The cluster with the CRD and the operator's RBAC (manifests/) applied."""
    from quranft.operator import access

    access.install(cluster.bin_dir / "kubectl", cluster.kubeconfig)
    return cluster


@pytest.fixture
def env(installed, namespace, tmp_path):
    """A clusterkit Env (clients, the operator as a subprocess) in a fresh namespace."""
    from clusterkit import Env

    e = Env(installed, namespace, tmp_path)
    yield e
    e.close()


def pytest_addoption(parser):
    # Here, not in tests/reliability/conftest.py: pytest only reads options from conftests loaded at
    # start-up, so `pytest tests --seed N` needs it at the root.
    parser.addoption("--seed", type=int, default=None,
                     help="Seed of every random choice in tests/reliability (env QURANFT_SEED).")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Every test that uses the embedded cluster carries the `cluster` marker, however it got the fixture:
    `make test` runs the cluster tests that also train (`cluster` and `slow`) and the rest as two concurrent
    pytest processes selected by it."""
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()) and item.get_closest_marker("cluster") is None:
            item.add_marker(pytest.mark.cluster)
