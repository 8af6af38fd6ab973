"""Image -> runtime table: which images the node agent can "run" and with what environment.

No registry is reachable, so the project's images (and generic `python` ones, for smoke tests) are mapped
to the project's own Python environment; anything else fails like a pull would (ErrImagePull).
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

PROJECT_IMAGES = ("trainer", "trainer-cpu", "operator", "stub-stage")
_PROJECT = re.compile(r"^(?:ghcr\.io/)?quran-finetune/(?P<name>[a-z0-9-]+)(?::[\w.-]+|@sha256:[0-9a-f]+)?$")
_PYTHON = re.compile(r"^(?:docker\.io/)?(?:library/)?python(?::[\w.-]+|@sha256:[0-9a-f]+)?$")
# Source roots of the implicit namespace package `quranft` (contract/, operator/, ... in the repo).
_REPO = Path(__file__).resolve().parents[3]
SOURCE_ROOTS = tuple(str(_REPO / d) for d in ("contract", "operator", "trainer", "benchmark", "cluster")
                     if (_REPO / d).is_dir())
# What a real image bakes into its environment; here taken from the agent's own environment.
PASS_ENV = ("HF_HOME", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "TORCH_HOME",
            "NEMO_CACHE_DIR", "CUDA_VISIBLE_DEVICES", "LANG", "LC_ALL", "TZ")
CACHE_ENV = ("HF_HOME", "TORCH_HOME", "NEMO_CACHE_DIR")  # of PASS_ENV, the directories (written to)


@dataclass(frozen=True)
class Runtime:
    """The process environment an image provides before the pod's own env is applied."""

    image: str
    venv: str  # its bin dir goes first on PATH, so `python` and `quranft` resolve there
    shim_dir: str  # holds a `quranft` launcher for when the venv has no console script

    def base_env(self) -> dict[str, str]:
        env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
        env.update({
            "PATH": os.pathsep.join([f"{self.venv}/bin", self.shim_dir, "/usr/local/bin", "/usr/bin", "/bin",
                                     "/usr/local/sbin", "/usr/sbin", "/sbin"]),
            "HOME": "/root",
            "PYTHONUNBUFFERED": "1",
            # The image would have the package installed; the source tree is the same code.
            "PYTHONPATH": os.pathsep.join(SOURCE_ROOTS),
            "VIRTUAL_ENV": self.venv,
        })
        return env

    def paths(self) -> list[tuple[str, bool]]:
        """The host paths this runtime stands for, `(path, read_only)`: what a real image has in its root
        file system. A pod's volumes must not hide them (volumes.hidden_runtime)."""
        code = [self.venv, self.shim_dir, *SOURCE_ROOTS, *_interpreter_home(self.venv)]
        caches = [os.environ[k] for k in CACHE_ENV if os.path.isabs(os.environ.get(k, ""))]
        return [(p, True) for p in code if os.path.exists(p)] + [(c, False) for c in caches if os.path.isdir(c)]


def _interpreter_home(venv: str) -> list[str]:
    """The installation a venv's interpreter comes from (`home` in pyvenv.cfg is its bin directory)."""
    try:
        lines = Path(venv, "pyvenv.cfg").read_text().splitlines()
    except OSError:
        return []
    homes = [line.partition("=")[2].strip() for line in lines if line.partition("=")[0].strip() == "home"]
    return [str(Path(h).parent) for h in homes if h]


def runtime_venv() -> str:
    return os.environ.get("QURANFT_RUNTIME_VENV") or sys.prefix


def resolve(image: str, shim_dir: str) -> Runtime | None:
    """The runtime for `image`, or None when the node cannot provide it."""
    image = image.strip()
    match = _PROJECT.match(image)
    if (match and match["name"] in PROJECT_IMAGES) or _PYTHON.match(image):
        return Runtime(image, runtime_venv(), shim_dir)
    return None


def pull_error(image: str) -> str:
    return (f'Failed to pull image "{image}": the embedded node agent runs only '
            f"ghcr.io/quran-finetune/{{{','.join(PROJECT_IMAGES)}}}:<tag> and python[:<tag>] images")


def write_shim(shim_dir: Path) -> Path:
    """A `quranft` launcher using the runtime venv's interpreter."""
    shim_dir.mkdir(parents=True, exist_ok=True)
    shim = shim_dir / "quranft"
    shim.write_text(f"#!{runtime_venv()}/bin/python\nimport sys\nfrom quranft.cli import main\n"
                    "sys.exit(main())\n")
    shim.chmod(0o755)
    return shim_dir
