"""`quranft trainer doctor --ptx` in a small side venv holding only the CUDA compile tool chain the trainer image
installs (numba, numba-cuda, NVVM, NVRTC, the CUDA runtime; no torch, no GPU): NeMo's RNNT loss kernels (or a
representative one) compile to PTX for sm_80 and sm_90, and a venv without NVRTC fails with exit 5.

The side venv is built once per set of pins (taken from images/, so it follows the image) and cached under
~/.cache/quranft/doctor-venv-<hash>; derived venvs (without NVRTC, or with the project venv appended for
NeMo's own kernels) are hard-linked copies made per test session.
"""
from __future__ import annotations

import ctypes.util
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from importlib import metadata
from pathlib import Path

import pytest

from fixtures_model import REPO, SOURCE_ROOTS

SIDE_VENV_VERSION = 1  # bump to rebuild the cached side venvs


def image_pins() -> list[str]:
    """The wheels of the image's compile tool chain, at the image's versions."""
    containerfile = (REPO / "images" / "trainer.Containerfile").read_text()
    requirements = (REPO / "images" / "requirements" / "trainer.txt").read_text()

    def arg(name: str) -> str:
        return re.search(rf"^ARG {name}=(\S+)", containerfile, re.M).group(1)

    def req(name: str) -> str:
        return re.search(rf"^{re.escape(name)}==(\S+)", requirements, re.M | re.I).group(1)

    # torch's CUDA wheels bring NVRTC and the runtime into the image: the versions the project venv's torch has.
    return [f"numba=={req('numba')}", f"numba-cuda=={arg('NUMBA_CUDA_VERSION')}", f"nvidia-nvvm=={arg('NVVM_VERSION')}",
            f"nvidia-cuda-nvrtc=={metadata.version('nvidia-cuda-nvrtc')}",
            f"nvidia-cuda-runtime=={metadata.version('nvidia-cuda-runtime')}",
            f"pydantic=={req('pydantic')}"]  # the CLI's config module


def cache_root() -> Path:
    return Path(os.environ.get("QURANFT_CACHE_DIR", Path.home() / ".cache" / "quranft"))


def say(request, line: str) -> None:
    """A line on the terminal even when pytest captures output (the figures are wanted in CI's log)."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if capture is None:
        print(line, flush=True)
        return
    with capture.global_and_fixture_disabled():
        print(f"\n{line}", flush=True)


def _pip(python: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check",
                    "--no-input", "-q", *args], check=True, timeout=1200)


def _hardlink_copy(src: Path, dst: Path) -> None:
    def link(a, b):
        try:
            os.link(a, b)
        except OSError:  # another file system: a real copy
            shutil.copy2(a, b)
    shutil.copytree(src, dst, symlinks=True, copy_function=link)


@pytest.fixture(scope="session")
def side_venv(request) -> Path:
    pins = image_pins()
    key = hashlib.sha256(f"{SIDE_VENV_VERSION}|{sys.version_info[:2]}|{' '.join(pins)}".encode()).hexdigest()[:12]
    target = cache_root() / f"doctor-venv-{key}"
    if (target / "COMPLETE").exists():
        say(request, f"doctor side venv: cached {target} ({' '.join(pins)})")
        return target
    started = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    build = target.parent / f".build-{target.name}-{os.getpid()}"
    shutil.rmtree(build, ignore_errors=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(build)], check=True, timeout=300)
        _pip(build / "bin" / "python", "install", *pins)
        (build / "COMPLETE").write_text(" ".join(pins) + "\n")
        try:
            os.rename(build, target)
        except OSError:  # a concurrent builder won
            if not (target / "COMPLETE").exists():
                raise
    finally:
        shutil.rmtree(build, ignore_errors=True)
    say(request, f"doctor side venv: built cold in {time.monotonic() - started:.1f} s -> {target} ({' '.join(pins)})")
    return target


@pytest.fixture(scope="session")
def derived_venvs(side_venv):
    """Per-session hard-linked copies of the side venv (next to it: hard links need one file system)."""
    made: list[Path] = []

    def derive(name: str) -> Path:
        path = side_venv.parent / f".{side_venv.name}-{name}-{os.getpid()}"
        shutil.rmtree(path, ignore_errors=True)
        _hardlink_copy(side_venv, path)
        made.append(path)
        return path

    yield derive
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


def run_doctor(venv: Path, tmp_path: Path, *args: str) -> tuple[int, dict, dict, str]:
    """(exit code, report, termination summary, stderr) of `quranft trainer doctor --json ...` in `venv`."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "QURANFT_TERMINATION_LOG", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = os.pathsep.join(map(str, SOURCE_ROOTS))
    env["PYTHONNOUSERSITE"] = "1"
    term = tmp_path / "termination.json"
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "quranft.cli", "trainer", "doctor", "--json", *args,
                           "--termination-log", str(term)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    start = proc.stdout.find("{\n")
    report = json.JSONDecoder().raw_decode(proc.stdout[start:])[0] if start >= 0 else {}
    return proc.returncode, report, json.loads(term.read_text()), proc.stderr


def test_side_venv_compiles_a_representative_kernel_to_ptx_for_sm80_and_sm90(side_venv, tmp_path, request):
    rc, report, summary, stderr = run_doctor(side_venv, tmp_path, "--ptx")
    assert rc == 0, stderr[-3000:]
    assert report["torch"] is None and report["nemo"] is None  # nothing but the tool chain
    assert report["libnvvm"] and report["numbaCuda"].startswith("NVIDIA numba-cuda ")
    assert report["nvrtcVersion"].startswith("13.") and report["nvvmVersion"]
    ptx = report["ptx"]
    assert ptx["ok"] and ptx["kernels"] == "representative"
    assert set(ptx["targets"]) == {"sm_80", "sm_90"} and all(t["bytes"] > 10_000 for t in ptx["targets"].values())
    assert all(t["target"] == arch for arch, t in ptx["targets"].items())
    assert all(str(side_venv) in path for path in ptx["libraries"].values())  # the wheels, not the system
    assert summary == {"ok": True, "stage": "doctor", "cudaAvailable": False, "libnvvm": True,
                       "ptx": {arch: t["bytes"] for arch, t in ptx["targets"].items()}}
    say(request, f"doctor --ptx (side venv): NVVM {report['nvvmVersion']}, NVRTC {report['nvrtcVersion']}, "
                 f"wheels {report['cudaWheels']}, PTX ISA {ptx['targets']['sm_90']['ptxIsa']}, "
                 f"bytes {summary['ptx']}, {ptx['seconds']} s")


def test_without_nvrtc_the_ptx_check_is_an_environment_error_exit_5(side_venv, derived_venvs, tmp_path):
    if ctypes.util.find_library("nvrtc"):
        pytest.skip("this machine has a system NVRTC, which numba would find")
    venv = derived_venvs("no-nvrtc")
    _pip(venv / "bin" / "python", "uninstall", "-y", "nvidia-cuda-nvrtc")  # unlinks the copy's files only
    assert not list(venv.rglob("libnvrtc*"))
    assert list(side_venv.rglob("libnvrtc.so*"))  # the cached venv is untouched
    rc, report, summary, stderr = run_doctor(venv, tmp_path, "--ptx")
    assert rc == 5, stderr[-3000:]
    assert summary["ok"] is False and summary["reason"] == "EnvironmentError" and summary["stage"] == "doctor"
    assert "NVRTC" in summary["message"] and "nvidia-cuda-nvrtc" in summary["message"]
    assert "NVRTC" in stderr and "Traceback" not in stderr  # a clear one-line failure, no stack
    assert report["libnvvm"] is True and report["nvrtcVersion"] is None  # NVVM alone loads, but cannot compile
    assert report["ptx"]["ok"] is False


def test_nemo_rnnt_kernels_compile_to_ptx(side_venv, derived_venvs, tmp_path, request):
    """NeMo's own kernels: the side venv with the project venv (torch, NeMo) appended after its own packages."""
    venv = derived_venvs("with-nemo")
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "zz-project-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    rc, report, summary, stderr = run_doctor(venv, tmp_path, "--ptx", "nemo")
    assert rc == 0, stderr[-3000:]
    ptx = report["ptx"]
    assert ptx["kernels"] == "nemo" and report["nemo"] and report["numbaCuda"].startswith("NVIDIA")
    for arch in ("sm_80", "sm_90"):
        assert ptx["targets"][arch]["target"] == arch
        assert set(ptx["targets"][arch]["kernels"]) == {
            "gpu_rnnt_kernel.compute_alphas_kernel", "gpu_rnnt_kernel.compute_betas_kernel",
            "gpu_rnnt_kernel.compute_grad_kernel", "rnnt_helper.compute_costs_data"}
    assert str(venv) in ptx["libraries"]["nvvm"]  # NVVM only exists in the side venv
    say(request, f"doctor --ptx nemo: {json.dumps({a: t['kernels'] for a, t in ptx['targets'].items()})}, "
                 f"{ptx['seconds']} s")


def test_hybrid_on_gpu_checks_the_whole_compile_tool_chain_at_start_up(monkeypatch):
    """check_mode (train's start-up check) fails on a missing NVRTC too, not only on a missing libnvvm."""
    from quranft.trainer import doctor
    from quranft.trainer.errors import EnvironmentProblem, classify

    monkeypatch.setattr(doctor, "libnvvm_status", lambda: (True, "libnvvm loaded"))
    monkeypatch.setattr(doctor, "cuda_library_paths", lambda: (
        {"nvvm": "/x/libnvvm.so.4", "nvrtc": None, "cudart": "/x/libcudart.so.13"},
        {"nvrtc": 'DynamicLibNotFoundError: Failure finding "libnvrtc.so.13"'}))
    with pytest.raises(EnvironmentProblem, match=r"NVRTC \(libnvrtc.so\) \(pip wheel nvidia-cuda-nvrtc\)") as info:
        doctor.check_mode("hybrid", cuda=True)
    assert classify(info.value) == ("EnvironmentError", 5)


def test_project_venv_without_nvvm_fails_the_ptx_check_with_exit_5(tmp_path, capsys):
    """The project's CPU venv has NVRTC and the runtime (torch's wheels) but no NVVM: --ptx says so."""
    from quranft.trainer.cli import main

    try:
        pytest.skip(f"this venv has nvidia-nvvm {metadata.version('nvidia-nvvm')}")
    except metadata.PackageNotFoundError:
        pass
    term = tmp_path / "term.json"
    assert main(["doctor", "--json", "--ptx", "--termination-log", str(term)]) == 5
    summary = json.loads(term.read_text())
    assert summary["reason"] == "EnvironmentError" and "NVVM (libnvvm.so) (pip wheel nvidia-nvvm)" in summary["message"]
    report = json.JSONDecoder().raw_decode(capsys.readouterr().out)[0]
    assert report["ptx"]["ok"] is False and report["libnvvm"] is False
