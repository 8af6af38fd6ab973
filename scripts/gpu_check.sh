#!/usr/bin/env bash
# The GPU check (issue 12): on a machine with an NVIDIA GPU, its driver, and a venv with the trainer's
# requirements (CUDA torch, NeMo, numba-cuda + nvidia-nvvm as in images/trainer.Containerfile), prove what CI
# cannot without a GPU and write one JSON of figures:
#   1. doctor: CUDA, libnvvm, NeMo's RNNT loss kernels compiled to PTX, and train's hybrid start-up check;
#   2. the real-size architecture (~115 M parameters, random weights, v1's freeze) for 20 hybrid steps with
#      the RNNT loss on the GPU in bf16, through the trainer's own path: s/step, samples/s, peak GPU memory;
#   3. transcription RTFx (fp32, 10 s clips) at batch 1 and 16, CTC and RNNT heads.
# Takes about 2-4 minutes; nothing in CI depends on it. Exits 5 (and writes {"ok": false, ...}) without a GPU.
#   scripts/gpu_check.sh [OUT.json]          (default gpu-check.json; PYTHON=/venv/bin/python to choose)
# GPU_CHECK_ALLOW_CPU=1 (with GPU_CHECK_STEPS/BATCH/RTFX/RTFX_CLIPS smaller) runs the same plumbing on a CPU,
# only to test this script; its figures mean nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-gpu-check.json}
py=${PYTHON:-python3}
started=$(date +%s)
work=$(mktemp -d -t gpu-check-XXXXXX)
trap 'rm -rf "$work"' EXIT
export PYTHONPATH="$PWD/contract:$PWD/operator:$PWD/trainer:$PWD/benchmark${PYTHONPATH:+:$PYTHONPATH}"
unset QURANFT_TERMINATION_LOG

# fail CODE MESSAGE: say why on stderr and in the JSON, and stop.
fail() {
  local code=$1; shift
  echo "gpu_check: $*" >&2
  GPU_CHECK_ERROR="$*" "$py" -c 'import json, os, sys; json.dump({"ok": False, "error": os.environ["GPU_CHECK_ERROR"]}, open(sys.argv[1], "w"), indent=1)' "$out" 2>/dev/null \
    || printf '{"ok": false, "error": "%s"}\n' "$*" > "$out"
  exit "$code"
}

steps=${GPU_CHECK_STEPS:-20} batch=${GPU_CHECK_BATCH:-16} rtfx=${GPU_CHECK_RTFX:-1,16}
rtfx_clips=${GPU_CHECK_RTFX_CLIPS:-32} device_flag=--gpu

command -v "$py" > /dev/null || fail 2 "no Python interpreter '$py' (set PYTHON=/path/to/venv/bin/python)"
if [[ ${GPU_CHECK_ALLOW_CPU:-0} == 1 ]]; then
  gpu="none (GPU_CHECK_ALLOW_CPU=1: a plumbing test on CPU)" device_flag=
else
  command -v nvidia-smi > /dev/null \
    || fail 5 "no nvidia-smi: this check needs a machine with an NVIDIA GPU and its driver"
  gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1) \
    || fail 5 "nvidia-smi cannot talk to the driver: $gpu"
  cuda=$("$py" -c 'import torch; print(torch.cuda.is_available(), torch.version.cuda)' 2>&1 | tail -1) \
    || fail 5 "cannot import torch with $py: $cuda"
  [[ $cuda == True* ]] \
    || fail 5 "torch.cuda.is_available() is False with $py (torch CUDA build: ${cuda#* }); a CPU-only torch or no usable GPU"
fi
echo "gpu_check: $gpu"

# 1. doctor, with the hybrid start-up check that train runs (libnvvm + the compile tool chain).
echo "gpu_check: doctor --ptx nemo"
rc=0
timeout 300 "$py" -m quranft.cli trainer doctor --json --ptx nemo --set training.mode=hybrid \
  --termination-log "$work/doctor-summary.json" > "$work/doctor.out" 2> "$work/doctor.err" || rc=$?
if (( rc != 0 )); then
  tail -5 "$work/doctor.err" >&2
  fail 5 "doctor failed (exit $rc): $(tail -1 "$work/doctor.err")"
fi

# 2 + 3. The real-size architecture on the GPU, and transcription speed.
echo "gpu_check: real-size model, $steps hybrid steps at batch $batch x 10 s, RTFx at batch $rtfx"
rc=0
timeout 480 "$py" scripts/bench_real_size.py $device_flag --ctc-steps 0 --hybrid-steps "$steps" --batch-size "$batch" \
  --clip-seconds 10 --rtfx "$rtfx" --rtfx-clips "$rtfx_clips" --out "$work/bench" \
  > "$work/bench.out" 2> "$work/bench.err" || rc=$?
grep '^real-size:' "$work/bench.out" || true
if (( rc != 0 )); then
  tail -20 "$work/bench.err" >&2
  fail 4 "bench_real_size.py failed (exit $rc): $(tail -1 "$work/bench.err")"
fi

"$py" - "$work" "$out" "$gpu" "$started" "$steps" <<'PY'
import json, sys, time
from pathlib import Path

work, out, gpu, started = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
text = (work / "doctor.out").read_text()
doctor = json.JSONDecoder().raw_decode(text[text.index("{"):])[0]
bench = json.loads((work / "bench.out").read_text().strip().splitlines()[-1])
figures = {
    "ok": True, "gpu": gpu, "wallSeconds": round(time.time() - started),
    "doctor": {k: doctor.get(k) for k in ("torch", "cudaVersion", "gpus", "bf16Supported", "numba", "numbaCuda",
                                          "libnvvm", "nvvmVersion", "nvrtcVersion", "cudaWheels", "nemo")},
    "ptx": {arch: {"bytes": t["bytes"], "ptxIsa": t["ptxIsa"]} for arch, t in doctor["ptx"]["targets"].items()},
    "hybrid": {"steps": int(sys.argv[5]), "batchSize": bench["batch_size"], "clipSeconds": bench["clip_seconds"],
               "precision": bench["precision"], "sPerStep": bench["s_per_step_hybrid"],
               "firstStepSeconds": bench["first_step_seconds_hybrid"],
               "samplesPerSecond": bench.get("samples_per_second_hybrid"), "peakGpuMiB": bench.get("peak_gpu_mib_hybrid"),
               "losses": bench["losses_hybrid"]},
    "model": {"params": bench["params"], "trainable": bench["trainable"], "nemoBytesFp16": bench["nemo_bytes_fp16"]},
    "rtfx": bench["rtfx"], "peakRssMiB": bench["peak_rss_mib"],
}
Path(out).write_text(json.dumps(figures, indent=1) + "\n")
print(json.dumps(figures, separators=(",", ":")))
PY
echo "gpu_check: done in $(( $(date +%s) - started )) s -> $out"
