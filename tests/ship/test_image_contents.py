"""What each image installs of the project: the wheel pip builds from the source roots its Containerfile
copies. The embedded cluster (cluster/) is its own component and in no image (issue 14 item 6)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTAINERFILES = sorted((REPO / "images").glob("*.Containerfile"))
COPY_TO_SRC = re.compile(r"^COPY\s+(\S+)\s+/src/\S*\s*$", re.M)


def copied_sources(containerfile: Path) -> list[str]:
    """The repository paths a Containerfile copies into its build's /src."""
    return COPY_TO_SRC.findall(containerfile.read_text())


def wheel_packages(sources: list[str], workdir: Path) -> set[str]:
    """The `quranft.*` packages of the wheel built from exactly `sources` (as `pip install /src` would)."""
    src = workdir / "src"
    for rel in sources:
        path = REPO / rel
        if path.is_dir():
            shutil.copytree(path, src / rel, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, src / rel)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(workdir / "dist"), str(src)], check=True, cwd=workdir)
    wheel = next((workdir / "dist").glob("quran_finetune-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    return {".".join(Path(n).parts[:2]) for n in names if n.startswith("quranft/")}


def test_every_containerfile_copies_the_project_into_src():
    assert len(CONTAINERFILES) >= 3
    for containerfile in CONTAINERFILES:
        assert "pyproject.toml" in copied_sources(containerfile), containerfile.name


@pytest.mark.parametrize("containerfile", CONTAINERFILES, ids=lambda p: p.stem)
def test_image_installs_the_components_and_not_the_embedded_cluster(containerfile, tmp_path):
    packages = wheel_packages(copied_sources(containerfile), tmp_path)
    assert {"quranft.cli", "quranft.contract", "quranft.operator", "quranft.trainer"} <= packages
    assert "quranft.cluster" not in packages


def test_the_full_tree_builds_the_cluster_too(tmp_path):
    """The same discovery with cluster/ present (the dev install) does include it: the test above can fail."""
    packages = wheel_packages(["pyproject.toml", "contract", "operator", "trainer", "benchmark", "cluster"], tmp_path)
    assert "quranft.cluster" in packages
