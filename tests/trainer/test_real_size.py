"""The production architecture at its real size (~115 M parameters, random weights) through the trainer's own
path on CPU: v1's freeze, 2 ctcOnly + 2 hybrid steps (CPU RNNT loss) at batch 2 x 10 s, fp32 and fp16
model.nemo, restore. Runs scripts/bench_real_size.py in a subprocess (its peak RSS is the run's alone) and
prints its figures; the script itself asserts the trainer's counts against realsize's by-name count."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from fixtures_model import REPO, cli_env

# NeMo's FastConformer hybrid large with a 1,024-piece BPE (the published model: "115 M"):
PARAMS = 114_621_442
LAYER = 6_312_448  # one conformer layer at d_model 512, 8 heads, ff x4, kernel 9
SUBSAMPLING = 1_450_496  # encoder.pre_encode: dw_striding x8, 256 channels
CTC_HEAD = 525_825  # 512 -> 1,025 (1,024 pieces + blank), 1x1 conv
# v1's freeze stops preprocessor (no parameters) + layers 0..9 + RNNT decoder and joint; the subsampling
# block stays trainable (model.freeze freezes encoder.layers[:N] only).
TRAINABLE_V1 = (17 - 10) * LAYER + SUBSAMPLING + CTC_HEAD


@pytest.mark.slow
def test_real_size_architecture_trains_exports_and_restores_on_cpu(tmp_path, request):
    work = tmp_path / "work"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_real_size.py"), "--out", str(work)],
                          cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("real-size:")]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n" + "\n".join(lines) + "\n" + json.dumps({k: figures[k] for k in (
            "params", "trainable", "nemo_bytes_fp32", "nemo_bytes_fp16", "peak_rss_mib", "peak_rss_mib_ctc",
            "peak_rss_mib_hybrid", "s_per_step_ctc", "s_per_step_hybrid", "first_step_seconds_ctc",
            "first_step_seconds_hybrid", "torch_threads", "loadAverage")}), flush=True)

    assert figures["params"] == PARAMS and figures["encoder_layers"] == 17
    assert set(figures["encoder_layer_params"]) == {LAYER}
    groups = figures["parameter_groups"]
    assert groups["encoder.pre_encode"] == SUBSAMPLING and groups["ctc_decoder"] == CTC_HEAD
    assert 17 * LAYER + sum(groups.values()) == PARAMS
    assert figures["trainable"] == figures["trainable_expected"] == TRAINABLE_V1
    assert not figures["subsampling_frozen"]
    # fp32 weights are 4 bytes a parameter (plus the tokenizer and config); fp16 about half of that.
    assert 4 * PARAMS <= figures["nemo_bytes_fp32"] < 4 * PARAMS * 1.01
    assert 2 * PARAMS <= figures["nemo_bytes_fp16"] < 2 * PARAMS * 1.02
    assert figures["s_per_step_ctc"] > 0 and figures["s_per_step_hybrid"] > 0
    assert set(figures["losses_hybrid"]) == {"total", "ctc", "rnnt"} and set(figures["losses_ctc"]) == {"total", "ctc"}
    assert figures["precision"] == "32" and figures["peak_rss_mib"] > 1000
    assert not work.exists()  # the script removes its ~2 GB of models and checkpoints


def _gpu_check(tmp_path, **env) -> tuple[int, dict, str]:
    out = tmp_path / "gpu-check.json"
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), str(out)], cwd=tmp_path,
                          env={**cli_env(), "PYTHON": sys.executable, **env}, capture_output=True, text=True,
                          timeout=120)
    return proc.returncode, json.loads(out.read_text()), proc.stderr


def test_gpu_check_fails_clearly_without_a_gpu(tmp_path):
    """scripts/gpu_check.sh (for a GPU machine) stops at its first gate here, with exit 5 and a JSON saying why."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: run scripts/gpu_check.sh itself")
    if shutil.which("nvidia-smi") is None:
        rc, doc, stderr = _gpu_check(tmp_path)
        assert rc == 5 and doc == {"ok": False, "error": "no nvidia-smi: this check needs a machine with an NVIDIA "
                                                           "GPU and its driver"}, stderr
        assert "gpu_check: no nvidia-smi" in stderr
    # A driver that answers, but torch sees no GPU (a CPU-only torch, or no device in the container).
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA Test GPU, 999.99, 1 MiB'\n")
    (fake / "nvidia-smi").chmod(0o755)
    rc, doc, stderr = _gpu_check(tmp_path, PATH=f"{fake}{os.pathsep}{os.environ['PATH']}")
    assert rc == 5 and doc["ok"] is False and "torch.cuda.is_available() is False" in doc["error"], stderr
    if shutil.which("shellcheck"):
        lint = subprocess.run(["shellcheck", str(REPO / "scripts" / "gpu_check.sh")], capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout
