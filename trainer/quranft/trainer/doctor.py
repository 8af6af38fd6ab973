"""Runtime checks: torch/CUDA, whether numba can load libnvvm, and whether it can compile the RNNT loss to PTX.

The team's v1 hybrid run died mid-training on a missing libnvvm.so; `check_mode` turns that into a clear
EnvironmentError at start-up. Loading NVVM is not enough: numba-cuda also needs NVRTC and the CUDA runtime
library to compile a kernel. `ptx_check` compiles NeMo's own numba RNNT loss kernels (or, where NeMo is not
installed, a representative kernel) to PTX for the GPUs we target; `numba.cuda.compile_ptx` needs no GPU,
so the image build and CI prove the whole tool chain on machines without one.
"""
from __future__ import annotations

import importlib.util
import platform
import re
import time
from importlib import metadata
from typing import Any, Callable

from quranft.trainer.errors import EnvironmentProblem

PTX_TARGETS: tuple[tuple[int, int], ...] = ((8, 0), (9, 0))  # A100; H100/H200
# The CUDA libraries numba-cuda loads to compile a kernel: pathfinder name -> (what, the pip wheel).
CUDA_LIBRARIES: dict[str, tuple[str, str]] = {
    "nvvm": ("NVVM (libnvvm.so)", "nvidia-nvvm"),
    "nvrtc": ("NVRTC (libnvrtc.so)", "nvidia-cuda-nvrtc"),
    "cudart": ("the CUDA runtime (libcudart.so)", "nvidia-cuda-runtime"),
}
NEMO_KERNELS_MODULE = "nemo.collections.asr.parts.numba.rnnt_loss.utils"


def libnvvm_status() -> tuple[bool, str]:
    """(loadable, detail). Loads NVVM the way numba's CUDA JIT does for the RNNT loss kernels."""
    try:
        from numba.cuda.cudadrv import nvvm

        nvvm.NVVM()
        return True, "libnvvm loaded"
    except Exception as exc:  # numba raises NvvmSupportError / OSError / ImportError variants
        return False, f"{type(exc).__name__}: {exc}".strip()


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def numba_cuda_implementation() -> str | None:
    """'NVIDIA numba-cuda <version>' (the out-of-tree target the image installs) or numba's 'Built-in' one."""
    try:
        from numba import cuda

        impl = getattr(cuda, "implementation", None)
    except Exception as exc:  # numba-cuda fails at import when the CUDA runtime library is missing
        return f"unimportable ({_first_line(exc)})"
    if impl == "NVIDIA":
        return f"NVIDIA numba-cuda {_dist_version('numba-cuda')}"
    return impl


def cuda_library_paths() -> tuple[dict[str, str | None], dict[str, str]]:
    """({library: path or None}, {library: why not found}) as numba-cuda finds them (cuda.pathfinder).

    Empty when cuda.pathfinder is not installed (numba's built-in CUDA target finds libraries itself).
    """
    try:
        from cuda.pathfinder import DynamicLibNotFoundError, load_nvidia_dynamic_lib
    except ImportError:
        return {}, {}
    paths: dict[str, str | None] = {}
    errors: dict[str, str] = {}
    for name in CUDA_LIBRARIES:
        try:
            paths[name] = load_nvidia_dynamic_lib(name).abs_path
        except DynamicLibNotFoundError as exc:
            paths[name] = None
            errors[name] = _first_line(exc)
        except Exception:  # e.g. a pathfinder too old to know the name: the compile itself will tell
            paths[name] = None
    return paths, errors


def nvvm_version() -> str | None:
    """libNVVM's own version (its API, e.g. 2.0) and IR version; the toolkit release is the wheel's version."""
    try:
        from numba.cuda.cudadrv import nvvm

        lib = nvvm.NVVM()
        return f"{'.'.join(map(str, lib.get_version()))} (IR {'.'.join(map(str, lib.get_ir_version()))})"
    except Exception:
        return None


def nvrtc_version() -> str | None:
    """NVRTC's CUDA version (e.g. 13.2), from cuda-bindings (numba-cuda) or numba's built-in wrapper."""
    try:
        from cuda.bindings import nvrtc

        err, major, minor = nvrtc.nvrtcVersion()
        if err == nvrtc.nvrtcResult.NVRTC_SUCCESS:
            return f"{major}.{minor}"
    except Exception:
        pass
    try:
        from numba.cuda.cudadrv.nvrtc import NVRTC

        return ".".join(map(str, NVRTC().get_version()))
    except Exception:
        return None


def representative_kernel() -> list[tuple[str, Callable, tuple]]:
    """A kernel in the style of NeMo's RNNT loss (for environments without NeMo, e.g. CI's side venv).

    An alpha (forward variable) recursion like `compute_alphas_kernel`, then a warp reduction like NeMo's
    reduce kernels: libdevice exp/log1p, shared memory, syncthreads, shfl_down_sync, 2-D int64 labels.
    """
    import math

    from numba import cuda, float32, int64

    def rnnt_like_alphas(acts, denom, alphas, loglike, xlen, ylen, labels, max_t, max_u, vocab, blank):
        b = cuda.blockIdx.x
        u = cuda.threadIdx.x
        t_len = xlen[b]
        u_len = ylen[b] + 1
        offset = b * max_t * max_u
        if u == 0:
            alphas[offset] = 0.0
        cuda.syncthreads()
        for n in range(1, t_len + u_len - 1):
            t = n - u
            if u == 0:
                if 0 < t < t_len:
                    i = offset + (t - 1) * max_u
                    alphas[offset + t * max_u] = alphas[i] + acts[i * vocab + blank] - denom[i]
            elif u < u_len:
                if t == 0:
                    i = offset + u - 1
                    alphas[offset + u] = alphas[i] + acts[i * vocab + labels[b, u - 1]] - denom[i]
                elif 0 < t < t_len:
                    i = offset + (t - 1) * max_u + u
                    j = offset + t * max_u + u - 1
                    no_emit = alphas[i] + acts[i * vocab + blank] - denom[i]
                    emit = alphas[j] + acts[j * vocab + labels[b, u - 1]] - denom[j]
                    alphas[offset + t * max_u + u] = max(emit, no_emit) + math.log1p(math.exp(-abs(emit - no_emit)))
            cuda.syncthreads()
        storage = cuda.shared.array(shape=(32,), dtype=float32)
        x = alphas[offset + u] if u < u_len else float32(-math.inf)
        step = 16
        while step > 0:
            x = max(x, cuda.shfl_down_sync(0xFFFFFFFF, x, step))
            step //= 2
        storage[u % 32] = x
        cuda.syncthreads()
        if u == 0:
            last = offset + (t_len - 1) * max_u + u_len - 1
            loglike[b] = alphas[last] + acts[last * vocab + blank] - denom[last] + 0.0 * storage[0]

    f1, i1, i2 = float32[::1], int64[::1], int64[:, ::1]
    return [("rnnt_like_alphas", rnnt_like_alphas, (f1, f1, f1, f1, i1, i1, i2, int64, int64, int64, int64))]


# Kernels of NeMo's reduce module call non-inline device functions, which numba compiles for the current
# GPU only; they need a GPU and are left out here (scripts/gpu_check.sh runs the whole loss on one).
NEMO_KERNELS_NEEDING_A_GPU = {
    "reduce._reduce_rows": "calls non-inline device functions, which numba compiles for the current GPU only",
    "reduce._reduce_minus": "calls non-inline device functions, which numba compiles for the current GPU only",
}


def nemo_rnnt_kernels() -> list[tuple[str, Callable, tuple]]:
    """NeMo's numba RNNT loss kernels (the ones its default `warprnnt_numba` loss launches), with the argument
    types NeMo passes them: float32 activations and workspaces, int64 lengths and labels."""
    from numba import float32, float64, int64

    from nemo.collections.asr.parts.numba.rnnt_loss.utils import rnnt_helper
    from nemo.collections.asr.parts.numba.rnnt_loss.utils.cuda_utils import gpu_rnnt_kernel as k

    f1, i1, i2 = float32[::1], int64[::1], int64[:, ::1]
    ints = (int64,) * 5  # minibatch, maxT, maxU, alphabet_size, blank
    recursion = (f1, f1, f1, f1, i1, i1, i2, *ints)
    return [
        ("gpu_rnnt_kernel.compute_alphas_kernel", k.compute_alphas_kernel.py_func, recursion),
        ("gpu_rnnt_kernel.compute_betas_kernel", k.compute_betas_kernel.py_func, recursion),
        ("gpu_rnnt_kernel.compute_grad_kernel", k.compute_grad_kernel.py_func,
         (f1, f1, f1, f1, f1, f1, i1, i1, i2, *ints, float64, float64)),
        ("rnnt_helper.compute_costs_data", rnnt_helper.compute_costs_data.py_func, (f1, f1, float64)),
    ]


def _ptx_header(ptx: str) -> tuple[str | None, str | None]:
    """(PTX ISA version, target) from a PTX module's `.version` and `.target` lines."""
    isa = re.search(r"^\.version\s+(\S+)", ptx, re.M)
    target = re.search(r"^\.target\s+([^\s,]+)", ptx, re.M)
    return (isa.group(1) if isa else None), (target.group(1) if target else None)


def ptx_check(kernels: str = "auto", targets: tuple[tuple[int, int], ...] = PTX_TARGETS) -> dict[str, Any]:
    """Compile the RNNT loss kernels to PTX for `targets` (no GPU needed); EnvironmentProblem when it cannot.

    kernels: `nemo` (NeMo's own; fails when NeMo cannot be imported), `representative`, or `auto` (NeMo's
    when the `nemo` package is installed, else the representative kernel).
    """
    if kernels not in ("auto", "nemo", "representative"):
        raise ValueError(f"kernels={kernels!r}")
    started = time.monotonic()
    paths, missing = cuda_library_paths()
    if missing:
        what = "; ".join(f"{CUDA_LIBRARIES[name][0]} (pip wheel {CUDA_LIBRARIES[name][1]}): {why}"
                         for name, why in missing.items())
        raise EnvironmentProblem(
            f"numba cannot compile the RNNT loss kernels: {what}. The GPU RNNT loss (training.mode=hybrid) "
            "needs NVVM, NVRTC and the CUDA runtime library; use training.mode=ctcOnly or an image with them.")
    if kernels == "auto":
        kernels = "nemo" if importlib.util.find_spec("nemo") is not None else "representative"
    try:
        chosen = nemo_rnnt_kernels() if kernels == "nemo" else representative_kernel()
    except Exception as exc:
        raise EnvironmentProblem(f"cannot load the {kernels} RNNT kernels for the PTX check: "
                                 f"{_first_line(exc)}") from exc
    from numba import cuda

    result: dict[str, Any] = {"kernels": kernels, "targets": {}, "libraries": paths}
    if kernels == "nemo":
        result["notCompiled"] = NEMO_KERNELS_NEEDING_A_GPU
    for cc in targets:
        arch = f"sm_{cc[0]}{cc[1]}"
        sizes: dict[str, int] = {}
        isa = target = None
        for name, pyfunc, sig in chosen:
            try:
                ptx, _ = cuda.compile_ptx(pyfunc, sig, cc=cc)
            except Exception as exc:
                raise EnvironmentProblem(f"numba could not compile {name} to PTX for {arch}: "
                                         f"{_first_line(exc)}") from exc
            sizes[name] = len(ptx.encode())
            isa, target = _ptx_header(ptx)
        # `target` may differ from `arch` when NVRTC does not know the GPU: numba then picks the closest one.
        result["targets"][arch] = {"bytes": sum(sizes.values()), "ptxIsa": isa, "target": target, "kernels": sizes}
    result["seconds"] = round(time.monotonic() - started, 2)
    return result


def report(ptx: str | None = None) -> dict[str, Any]:
    """The doctor's report; `ptx` (auto|nemo|representative) adds the PTX compile check, which raises
    EnvironmentProblem when it fails (the report is then in the exception's `report` attribute)."""
    info: dict[str, Any] = {"python": platform.python_version()}
    try:
        import torch
    except ImportError:  # CI's side venv: the CUDA compile tool chain only
        info.update(torch=None, cudaAvailable=False, cudaVersion=None)
    else:
        info.update(torch=torch.__version__, cudaAvailable=torch.cuda.is_available(), cudaVersion=torch.version.cuda)
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
    if info["numba"] is not None:
        info["numbaCuda"] = numba_cuda_implementation()
        info["nvvmVersion"] = nvvm_version()
        info["nvrtcVersion"] = nvrtc_version()
        # nvJitLink (optional) lets numba-cuda turn PTX into GPU code itself, not through the driver's JIT,
        # whose CUDA version may be older than NVVM's PTX ISA.
        info["cudaWheels"] = {wheel: _dist_version(wheel)
                              for wheel in [*(w for _, w in CUDA_LIBRARIES.values()), "nvidia-nvjitlink"]}
    if ptx is not None:
        try:
            info["ptx"] = ptx_check(ptx)
        except EnvironmentProblem as exc:
            info["ptx"] = {"ok": False, "error": str(exc)}
            exc.report = info  # type: ignore[attr-defined]
            raise
        info["ptx"]["ok"] = True
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
    # NVVM alone does not compile a kernel (NVRTC and the CUDA runtime library are needed too): prove it
    # now, in about a second, for this GPU, rather than at the first RNNT step.
    try:
        import torch

        targets: tuple[tuple[int, int], ...] = (tuple(torch.cuda.get_device_capability(0)),)  # type: ignore[assignment]
    except Exception:
        targets = PTX_TARGETS
    ptx_check("representative", targets=targets)
