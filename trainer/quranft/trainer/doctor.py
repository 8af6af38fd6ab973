"""Runtime checks: torch/CUDA, and whether numba can load libnvvm (needed by the RNNT loss on GPU).

The team's v1 hybrid run died mid-training on a missing libnvvm.so; `check_mode` turns that into a clear
EnvironmentError at start-up.
"""
from __future__ import annotations

import platform
from typing import Any

from quranft.trainer.errors import EnvironmentProblem


def libnvvm_status() -> tuple[bool, str]:
    """(loadable, detail). Loads NVVM the way numba's CUDA JIT does for the RNNT loss kernels."""
    try:
        from numba.cuda.cudadrv import nvvm

        nvvm.NVVM()
        return True, "libnvvm loaded"
    except Exception as exc:  # numba raises NvvmSupportError / OSError / ImportError variants
        return False, f"{type(exc).__name__}: {exc}".strip()


def report() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "cudaAvailable": torch.cuda.is_available(), "cudaVersion": torch.version.cuda}
    if info["cudaAvailable"]:
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["bf16Supported"] = torch.cuda.is_bf16_supported()
    try:
        import numba

        info["numba"] = numba.__version__
    except ImportError:
        info["numba"] = None
    info["libnvvm"], info["libnvvmDetail"] = libnvvm_status()
    for name in ("nemo", "lightning"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    # Hybrid on GPU needs libnvvm; on CPU numba's CPU RNNT loss is used, and ctcOnly needs neither.
    info["hybridOk"] = (not info["cudaAvailable"]) or info["libnvvm"]
    return info


def check_mode(mode: str, cuda: bool) -> None:
    if mode != "hybrid" or not cuda:
        return
    ok, detail = libnvvm_status()
    if not ok:
        raise EnvironmentProblem(
            "training.mode=hybrid on GPU needs numba's libnvvm for the RNNT loss, which cannot be loaded "
            f"({detail}). Use training.mode=ctcOnly, or an image with the CUDA NVVM libraries "
            "(`quranft trainer doctor` shows the details).")
