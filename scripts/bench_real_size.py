#!/usr/bin/env python3
"""Figures for the production architecture at its real size (issue 12): random weights, the trainer's own path.

Writes the published FastConformer hybrid (17 x 512, 8 heads, 8x dw_striding, 1,024-piece Quran BPE; see
quranft.trainer.realsize) as a base .nemo, prepares a few synthetic clips, then runs `train` twice with
v1's freeze (preprocessor + 10 encoder layers + RNNT decoder/joint): ctcOnly (fp32 model.nemo) and hybrid
with the RNNT loss (fp16 model.nemo via halfPrecisionWeights), restores both and transcribes a clip.
Asserts the parameter counts (trainable counted by name, independently of model.freeze) and the fp16
weights; prints the figures, ending with one JSON line.

s/step is the median optimiser step after the first (the first includes numba's JIT of the RNNT loss);
peak RSS is this process's. On a GPU (`--gpu`, used by scripts/gpu_check.sh) the steps run in the
trainer's GPU precision (bf16-mixed) and the JSON adds samples/s, peak GPU memory and transcription RTFx.
Usage: PYTHONPATH=contract:operator:trainer:benchmark python scripts/bench_real_size.py [--ctc-steps 2]
       [--hybrid-steps 2] [--batch-size 2] [--clip-seconds 10] [--out DIR] [--gpu] [--rtfx 1,16]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shutil
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

MIB = 1024 * 1024


class StepClock:
    """Times each optimiser step of `train` by wrapping the trainer's own Telemetry callback (measurement only)."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.marks: list[float] = []
        self.samples = 0

    @contextlib.contextmanager
    def running(self):
        from quranft.trainer.callbacks import Telemetry

        start, end = Telemetry.on_train_start, Telemetry.on_train_batch_end
        clock = self

        def on_train_start(tel, trainer, pl_module):
            clock.marks = [time.perf_counter()]
            return start(tel, trainer, pl_module)

        def on_train_batch_end(tel, trainer, pl_module, outputs, batch, batch_idx):
            if clock.cuda:
                import torch

                torch.cuda.synchronize()
            clock.marks.append(time.perf_counter())
            clock.samples += int(batch[0].shape[0])
            return end(tel, trainer, pl_module, outputs, batch, batch_idx)

        Telemetry.on_train_start, Telemetry.on_train_batch_end = on_train_start, on_train_batch_end
        try:
            yield self
        finally:
            Telemetry.on_train_start, Telemetry.on_train_batch_end = start, end

    @property
    def steps(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:])]

    def steady(self) -> float | None:
        """Median step after the first; the first alone when there is only one."""
        steps = self.steps
        return round(statistics.median(steps[1:] if len(steps) > 1 else steps), 3) if steps else None


def peak_rss_mib() -> float:
    """This process's peak RSS over its whole life."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def reset_phase_peak() -> bool:
    """Restart the kernel's VmHWM (peak RSS) count, so VmHWM covers one phase (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def proc_status_mib(field: str) -> float | None:
    """VmHWM (peak RSS since the last reset) or VmRSS (now) of this process, in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def run_config(out: Path, data: Path, name: str, *, mode: str, steps: int, batch: int, half: bool,
               base: Path) -> dict:
    from quranft.trainer.realsize import V1_FREEZE

    return {
        "run": {"name": name, "namespace": "bench", "workspace": str(out / "ws")},
        "data": {"source": "local", "localPath": str(data)},
        "training": {"baseModel": str(base), "mode": mode, "maxSteps": steps, "batchSize": batch,
                     "learningRate": 5e-5, "warmupSteps": 0, "valCheckInterval": steps,
                     # No checkpoint inside the timed steps: the one `train` writes at the end is enough.
                     "checkpointEveryNSteps": 1_000_000, "freeze": V1_FREEZE.model_dump(by_alias=True),
                     "halfPrecisionWeights": half},
        "metrics": {"port": 0, "progressIntervalSeconds": 60},
    }


def weight_dtypes(nemo: Path) -> set[str]:
    import torch

    with tarfile.open(nemo) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("model_weights.ckpt"))
        weights = torch.load(io.BytesIO(tar.extractfile(member).read()), map_location="cpu")
    return {str(t.dtype) for t in weights.values() if t.is_floating_point()}


def rtfx(model, paths: list[str], seconds: float, batch_sizes: list[int], cuda: bool) -> dict:
    """Real-time factor (audio seconds / wall seconds) of model.transcribe, per head and batch size."""
    import torch

    out: dict[str, float] = {}
    for head in ("ctc", "rnnt"):
        model.change_decoding_strategy(decoder_type=head, verbose=False)
        model.transcribe(paths[:2], batch_size=2, verbose=False)  # warm-up (kernels, cudnn autotune)
        for batch in batch_sizes:
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model.transcribe(paths, batch_size=batch, verbose=False)
            if cuda:
                torch.cuda.synchronize()
            out[f"{head}_b{batch}"] = round(len(paths) * seconds / (time.perf_counter() - t0), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ctc-steps", type=int, default=2)
    parser.add_argument("--hybrid-steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--clip-seconds", type=float, default=10.0)
    parser.add_argument("--gpu", action="store_true", help="require CUDA; report GPU memory and samples/s")
    parser.add_argument("--rtfx", default="", help="comma-separated transcription batch sizes, e.g. 1,16")
    parser.add_argument("--rtfx-clips", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None, help="work directory (default: a temp dir, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if args.ctc_steps < 0 or args.hybrid_steps < 0 or args.ctc_steps + args.hybrid_steps == 0:
        parser.error("--ctc-steps/--hybrid-steps: at least one positive")

    import torch

    from quranft.contract.config import RunConfig
    from quranft.trainer.prepare import prepare
    from quranft.trainer.realsize import (SUBSAMPLING_CONV_CHANNELS, V1_FREEZE, VOCAB_SIZE, build_real_size_model,
                                          expected_trainable, parameter_groups, write_clip_dataset)
    from quranft.trainer.train import export_model, train

    cuda = torch.cuda.is_available()
    if args.gpu and not cuda:
        raise SystemExit("bench_real_size: --gpu but torch.cuda.is_available() is False")
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-real-size-"))
    out.mkdir(parents=True, exist_ok=True)
    figures: dict = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "cpus": os.cpu_count(),
                     "loadAverage": [round(x, 2) for x in os.getloadavg()], "batch_size": args.batch_size,
                     "clip_seconds": args.clip_seconds, "vocab_size": VOCAB_SIZE}
    log = (lambda msg: print(msg, flush=True))
    quiet = (lambda _msg: None)
    try:
        # 1. The base model: built from config, random weights, written by the trainer's own export.
        t0 = time.monotonic()
        torch.manual_seed(1234)
        model = build_real_size_model()
        params = sum(p.numel() for p in model.parameters())
        groups = parameter_groups(model)
        expected = expected_trainable(model, V1_FREEZE)
        base = out / "real-size.nemo"
        export_model(model, base, half=False)
        del model
        layers = [g for g in groups if g.startswith("encoder.layers.")]
        figures.update(params=params, build_and_save_seconds=round(time.monotonic() - t0, 1),
                       base_nemo_bytes=base.stat().st_size, encoder_layers=len(layers),
                       encoder_layer_params=[groups[g] for g in layers],
                       parameter_groups={g: n for g, n in groups.items() if g not in layers},
                       trainable_expected=expected)
        log(f"real-size: {params:,} parameters ({len(layers)} layers x {groups['encoder.layers.0']:,}, "
            f"subsampling {groups['encoder.pre_encode']:,} with "
            f"{SUBSAMPLING_CONV_CHANNELS} channels); base .nemo {base.stat().st_size / MIB:.0f} MiB "
            f"in {figures['build_and_save_seconds']} s")
        assert 114_000_000 <= params <= 116_000_000, params

        # 2. Data: short synthetic clips through the real `prepare`.
        clips = max(2 * args.batch_size, 4)
        data = write_clip_dataset(out / "clips", seconds=args.clip_seconds, train=clips, val=2)
        prepare(RunConfig.model_validate(run_config(out, data, "prep", mode="ctcOnly", steps=1, batch=1,
                                                    half=False, base=base)), log=quiet)

        # 3. ctcOnly then hybrid (RNNT loss), both with v1's freeze, through `train`.
        runs = {}
        for mode, steps, half in (("ctcOnly", args.ctc_steps, False), ("hybrid", args.hybrid_steps, True)):
            if steps == 0:
                continue
            key = "ctc" if mode == "ctcOnly" else "hybrid"
            cfg = RunConfig.model_validate(run_config(out, data, key, mode=mode, steps=steps,
                                                      batch=args.batch_size, half=half, base=base))
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            clock = StepClock(cuda)
            phase = reset_phase_peak()
            figures[f"rss_at_start_mib_{key}"] = proc_status_mib("VmRSS")  # what earlier phases left behind
            t0 = time.monotonic()
            with clock.running():
                summary = train(cfg, log=quiet)
            wall = time.monotonic() - t0
            meta = json.loads((cfg.run_dir / "training_metadata.json").read_text())
            counts = meta["parameters"]
            assert summary["step"] == steps, summary
            assert counts["total"] == params, (counts, params)
            assert counts["trainable"] == expected, f"{mode}: trainable {counts['trainable']:,} != {expected:,}"
            runs[key] = Path(summary["modelPath"])
            figures[f"s_per_step_{key}"] = clock.steady()
            figures[f"first_step_seconds_{key}"] = round(clock.steps[0], 2)
            figures[f"train_call_seconds_{key}"] = round(wall, 1)
            figures[f"losses_{key}"] = meta["finalLosses"]
            if phase:
                figures[f"peak_rss_mib_{key}"] = proc_status_mib("VmHWM")  # peak during this train() call
            figures["trainable"] = counts["trainable"]
            figures["precision"] = meta["precision"]
            figures["torch_threads"] = torch.get_num_threads()
            if cuda:
                figures[f"peak_gpu_mib_{key}"] = round(torch.cuda.max_memory_allocated() / MIB)
                steady = clock.steps[1:] or clock.steps
                figures[f"samples_per_second_{key}"] = round(args.batch_size * len(steady) / sum(steady), 1)
            log(f"real-size: {mode} {steps} steps at batch {args.batch_size} x {args.clip_seconds:g} s: "
                f"{clock.steady()} s/step (first {clock.steps[0]:.1f} s), train() {wall:.0f} s, "
                f"{counts['trainable']:,} trainable, losses {meta['finalLosses']}")

        # 4. Restore what the trainer exported: fp32 (ctcOnly) and fp16 weights (hybrid).
        from nemo.collections.asr.models import ASRModel, EncDecHybridRNNTCTCBPEModel

        if "ctc" in runs:
            figures["nemo_bytes_fp32"] = runs["ctc"].stat().st_size
            assert weight_dtypes(runs["ctc"]) == {"torch.float32"}
        else:
            figures["nemo_bytes_fp32"] = base.stat().st_size
        wav = next((cfg.data_dir / "audio").rglob("*.wav"))
        for key, path in runs.items():
            t0 = time.monotonic()
            restored = ASRModel.restore_from(str(path), map_location="cpu")
            assert type(restored) is EncDecHybridRNNTCTCBPEModel, type(restored)
            assert sum(p.numel() for p in restored.parameters()) == params
            restored.change_decoding_strategy(decoder_type="ctc", verbose=False)
            hyp = restored.transcribe([str(wav)], batch_size=1, verbose=False)[0]
            figures[f"restore_and_transcribe_seconds_{key}"] = round(time.monotonic() - t0, 1)
            del restored
        if "hybrid" in runs:
            figures["nemo_bytes_fp16"] = runs["hybrid"].stat().st_size
            assert weight_dtypes(runs["hybrid"]) == {"torch.float16"}
        log(f"real-size: model.nemo fp32 {figures['nemo_bytes_fp32'] / MIB:.0f} MiB, fp16 "
            f"{figures.get('nemo_bytes_fp16', 0) / MIB:.0f} MiB; both restore and transcribe "
            f"(last hypothesis {len(getattr(hyp, 'text', hyp))} characters)")

        # 5. Transcription speed (GPU check).
        if args.rtfx:
            import numpy as np
            import soundfile as sf

            sizes = [int(b) for b in args.rtfx.split(",") if b.strip()]
            rng = np.random.default_rng(7)
            (out / "rtfx").mkdir(parents=True, exist_ok=True)
            paths = []
            for i in range(args.rtfx_clips):
                path = out / "rtfx" / f"{i:03d}.wav"
                noise = 0.1 * rng.standard_normal(int(args.clip_seconds * 16_000))
                sf.write(path, noise.astype("float32"), 16_000)
                paths.append(str(path))
            model = ASRModel.restore_from(str(runs.get("hybrid") or runs["ctc"]),
                                          map_location="cuda" if cuda else "cpu")
            model.eval()
            figures["rtfx"] = rtfx(model, paths, args.clip_seconds, sizes, cuda)
            log(f"real-size: transcription RTFx (fp32, {args.rtfx_clips} x {args.clip_seconds:g} s) {figures['rtfx']}")
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    figures["peak_rss_mib"] = peak_rss_mib()
    figures["subsampling_frozen"] = False  # model.freeze stops encoder.layers[:N] only (realsize.V1_FREEZE)
    phases = ", ".join(f"{key} {figures[f'peak_rss_mib_{key}']:.0f} MiB (from {figures[f'rss_at_start_mib_{key}']:.0f})"
                       for key in ("ctc", "hybrid") if figures.get(f"peak_rss_mib_{key}"))
    log(f"real-size: peak RSS {figures['peak_rss_mib']:.0f} MiB (whole run); during train(): {phases or 'n/a'}")
    keys = ("params", "nemo_bytes_fp32", "nemo_bytes_fp16", "peak_rss_mib", "s_per_step_ctc", "s_per_step_hybrid")
    print(json.dumps({**{k: figures.get(k) for k in keys}, **figures}, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    main()
