"""The wheel holds every module of the source tree, and each imports from the installed wheel alone.

Catches a package missing from pyproject's explicit list (it would be missing from every image too).
"""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = ("contract", "operator", "trainer", "benchmark", "cluster")


def source_modules() -> list[str]:
    modules = []
    for root in SOURCE_ROOTS:
        for path in sorted((REPO / root / "quranft").rglob("*.py")):
            rel = path.relative_to(REPO / root).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            if rel.name != "__main__":
                modules.append(".".join(parts))
    return modules


def test_wheel_contains_and_imports_every_module(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(REPO)], check=True)
    wheel = next((tmp_path / "dist").glob("quran_finetune-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = source_modules()
    missing = [m for m in modules if f"{m.replace('.', '/')}.py" not in names
               and f"{m.replace('.', '/')}/__init__.py" not in names]
    assert not missing, f"not in the wheel: {missing}"
    assert not any(n.startswith("quranft/__init__") or n.startswith("operator/") for n in names)

    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)
    # Import from the unpacked wheel only: run outside the repo, with the repo's source roots off the path.
    probe = (
        "import importlib, sys, pathlib\n"
        f"target = pathlib.Path({str(target)!r})\n"
        f"repo = {str(REPO)!r}\n"
        "sys.path[:] = [str(target)] + [p for p in sys.path if p and not p.startswith(repo)]\n"
        f"for name in {modules!r}:\n"
        "    mod = importlib.import_module(name)\n"
        "    assert pathlib.Path(mod.__file__).is_relative_to(target), (name, mod.__file__)\n"
        "print('imported', len(" + repr(modules) + "))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"imported {len(modules)}" in out.stdout
