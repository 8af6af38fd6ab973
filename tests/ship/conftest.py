"""Fixtures for the shipping artefacts: the chart, the manifests, the monitoring files and their tools."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest



@pytest.fixture(scope="session")
def bin_dir() -> Path:
    """helm and kubectl come with the embedded cluster's binaries (tests/cluster/build.sh builds them)."""
    from quranft.cluster.binaries import ensure_binaries

    return ensure_binaries()


@pytest.fixture(scope="session")
def helm(bin_dir, tmp_path_factory):
    home = tmp_path_factory.mktemp("helm-home")
    # Keep helm's cache/config out of the user's home (and away from other tests).
    env = {"HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data"), "PATH": "/usr/bin:/bin"}

    def run(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        out = subprocess.run([str(bin_dir / "helm"), *args], capture_output=True, text=True, env=env,
                             timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return out
    return run


def _debian_tool(name: str) -> str:
    """promtool and prometheus come with Debian's `prometheus` package; install it when missing."""
    path = shutil.which(name)
    if path is None:
        subprocess.run(["apt-get", "install", "-y", "-q", "prometheus"], check=True, capture_output=True,
                       timeout=600)
        path = shutil.which(name)
    assert path, f"{name} not found after installing the prometheus package"
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return _debian_tool("promtool")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return _debian_tool("prometheus")
