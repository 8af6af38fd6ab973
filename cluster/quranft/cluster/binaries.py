"""Locate (or build) the control-plane binaries with `tests/cluster/build.sh`.

The script keys its cache by Kubernetes version and go.sum hash, so calling it when the binaries exist
costs a hash of three files; a cold build compiles Kubernetes from its Go modules (minutes).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

TOOLS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "etcd", "helm")
# cluster/quranft/cluster/binaries.py -> repository root
REPO_ROOT = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO_ROOT / "tests" / "cluster" / "build.sh"


class BinariesError(RuntimeError):
    pass


def missing_tools(bin_dir: Path) -> list[str]:
    return [t for t in TOOLS if not os.access(bin_dir / t, os.X_OK)]


def ensure_binaries(build: bool = True) -> Path:
    """The directory holding all of TOOLS.

    `QURANFT_K8S_BIN` overrides the lookup (e.g. an image that ships the binaries). Otherwise build.sh
    runs; its progress goes to our stderr and its last stdout line is the bin dir.
    """
    override = os.environ.get("QURANFT_K8S_BIN")
    if override:
        bin_dir = Path(override)
    elif not BUILD_SCRIPT.exists():
        raise BinariesError(f"{BUILD_SCRIPT} not found; set QURANFT_K8S_BIN to the binaries' directory")
    else:
        if not build:
            raise BinariesError("binaries lookup without build is only possible with QURANFT_K8S_BIN")
        out = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True)
        if out.returncode != 0:
            raise BinariesError(f"{BUILD_SCRIPT} failed with exit code {out.returncode}")
        bin_dir = Path(out.stdout.strip().splitlines()[-1])
    missing = missing_tools(bin_dir)
    if missing:
        raise BinariesError(f"{bin_dir} lacks {', '.join(missing)}")
    return bin_dir
