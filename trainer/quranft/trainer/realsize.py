"""The production architecture at its real size, with random weights: proof without the hub or a GPU.

`real_size_config` is NeMo's published FastConformer hybrid RNNT+CTC BPE config
(examples/asr/conf/fastconformer/hybrid_transducer_ctc/fastconformer_hybrid_transducer_ctc_bpe.yaml, the
recipe of `nvidia/stt_ar_fastconformer_hybrid_large_pcd_v1.0`, ~115 M parameters) with a SentencePiece BPE
tokenizer of the published size trained on the Quran text (tiny.py's cached tokenizer, at 1,024 pieces).
`write_real_size_model` writes it as a `.nemo`, so the trainer's normal path (`training.baseModel:
/path/real.nemo`, prepare -> train -> export) runs it unchanged. scripts/bench_real_size.py measures it.

Only what does not change the architecture differs from the published recipe: greedy CTC decoding (the
recipe's CTC beam search is a decoding choice, not weights) and the trainer's own optimiser settings.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from quranft.contract.config import FreezeSpec
from quranft.trainer.tiny import tiny_config, tokenizer_dir

VOCAB_SIZE = 1024  # the published model's SentencePiece vocabulary (+1 blank for RNNT/CTC outputs)
N_LAYERS = 17
D_MODEL = 512
N_HEADS = 8
SUBSAMPLING = "dw_striding"
SUBSAMPLING_FACTOR = 8
SUBSAMPLING_CONV_CHANNELS = 256
FF_EXPANSION = 4
CONV_KERNEL = 9
PRED_HIDDEN = 640
JOINT_HIDDEN = 640

# The team's v1 freeze (manifests/examples/v1-ctc-baseline.yaml): preprocessor + the first 10 conformer
# layers + the RNNT prediction network and joint. `model.freeze` freezes `encoder.layers[:N]` only: the
# subsampling block in front of them (`encoder.pre_encode`, ~1.4 M parameters here) stays trainable.
V1_FREEZE = FreezeSpec(preprocessor=True, encoder_layers=10, rnnt_decoder=True)

# Everything that differs from tiny_config, with the published values.
_PUBLISHED: dict[str, Any] = {
    "model_defaults": {"enc_hidden": D_MODEL, "pred_hidden": PRED_HIDDEN, "joint_hidden": JOINT_HIDDEN},
    "preprocessor": {"dither": 1e-5},
    "spec_augment": {"_target_": "nemo.collections.asr.modules.SpectrogramAugmentation",
                     "freq_masks": 2, "time_masks": 10, "freq_width": 27, "time_width": 0.05},
    "encoder": {
        "n_layers": N_LAYERS, "d_model": D_MODEL, "n_heads": N_HEADS,
        "subsampling": SUBSAMPLING, "subsampling_factor": SUBSAMPLING_FACTOR,
        "subsampling_conv_channels": SUBSAMPLING_CONV_CHANNELS, "ff_expansion_factor": FF_EXPANSION,
        "conv_kernel_size": CONV_KERNEL, "self_attention_model": "rel_pos", "att_context_size": [-1, -1],
        "xscaling": True, "pos_emb_max_len": 5000, "conv_norm_type": "batch_norm",
        "dropout": 0.1, "dropout_pre_encoder": 0.1, "dropout_emb": 0.0, "dropout_att": 0.1,
        "stochastic_depth_drop_prob": 0.0, "stochastic_depth_mode": "linear", "stochastic_depth_start_layer": 1,
    },
    "decoder": {"prednet": {"pred_hidden": PRED_HIDDEN, "pred_rnn_layers": 1, "t_max": None, "dropout": 0.2}},
    "joint": {"fuse_loss_wer": True, "fused_batch_size": 4,
              "jointnet": {"joint_hidden": JOINT_HIDDEN, "activation": "relu", "dropout": 0.2}},
    "aux_ctc": {"ctc_loss_weight": 0.4},
    "train_ds": {"max_duration": 20},
}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def real_size_config(tok_dir: Path) -> dict[str, Any]:
    """The published architecture: tiny_config's shape (same keys, same classes) at the published sizes."""
    return _merge(tiny_config(tok_dir), _PUBLISHED)


def build_real_size_model():
    """A freshly initialised real-size hybrid model (random weights, the Quran BPE tokenizer)."""
    from nemo.collections.asr.models import EncDecHybridRNNTCTCBPEModel
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(real_size_config(tokenizer_dir(VOCAB_SIZE)))
    return EncDecHybridRNNTCTCBPEModel(cfg=cfg, trainer=None)


def write_real_size_model(out: Path, seed: int = 1234) -> dict[str, Any]:
    """Write an untrained real-size base model as .nemo (atomically, fp32); returns size and parameters."""
    import torch

    from quranft.trainer.train import export_model

    torch.manual_seed(seed)
    model = build_real_size_model()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    export_model(model, out, half=False)
    return {"path": str(out), "sizeBytes": out.stat().st_size,
            "parameters": sum(p.numel() for p in model.parameters()),
            "parameterGroups": parameter_groups(model)}


def parameter_groups(model) -> dict[str, int]:
    """Parameters per top-level part, the encoder split into its subsampling block and its layers."""
    groups: dict[str, int] = {}
    for name, param in model.named_parameters():
        parts = name.split(".")
        if parts[0] == "encoder" and parts[1] == "layers":
            key = f"encoder.layers.{parts[2]}"
        elif parts[0] == "encoder":
            key = f"encoder.{parts[1]}"
        else:
            key = parts[0]
        groups[key] = groups.get(key, 0) + param.numel()
    return groups


def frozen_prefixes(spec: FreezeSpec) -> tuple[str, ...]:
    """Parameter-name prefixes a freeze spec stops, written from the spec alone (not from model.freeze)."""
    prefixes = ["preprocessor."] if spec.preprocessor else []
    prefixes += [f"encoder.layers.{i}." for i in range(spec.encoder_layers)]
    if spec.rnnt_decoder:
        prefixes += ["decoder.", "joint."]
    return tuple(prefixes)


def expected_trainable(model, spec: FreezeSpec) -> int:
    """Trainable parameters after `spec`, counted by name: the independent check of model.freeze."""
    prefixes = frozen_prefixes(spec)
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith(prefixes))


def write_clip_dataset(out: Path, *, seconds: float = 10.0, train: int = 4, val: int = 2, seed: int = 0) -> Path:
    """A local dataset (synth.py's parquet layout) of `seconds`-long noisy-tone clips labelled with verses.

    The weights are random, so what the audio says does not matter; its length sets the encoder's work
    (10 s: 125 encoder frames). Returns the directory to use as `data.localPath`.
    """
    import numpy as np

    from quranft.trainer.synth import SAMPLE_RATE, _write_split, surah_verses, wav_bytes

    rng = np.random.default_rng(seed)
    verses = [v for v in surah_verses([2]) if 15 <= len(v[2].split()) <= 30]  # about 10 s when recited
    t = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    out = Path(out)
    for split, count in (("train", train), ("validation", val)):
        rows = []
        for i in range(count):
            surah, ayah, text = verses[(len(rows) + (0 if split == "train" else train)) % len(verses)]
            pitch = rng.uniform(110, 260)
            audio = (0.2 * np.sin(2 * np.pi * pitch * t * (1 + 0.05 * np.sin(2 * np.pi * 0.5 * t)))
                     + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
            rows.append({"audio": {"bytes": wav_bytes(audio), "path": f"{split}-{i:03d}.wav"}, "text": text,
                         "duration": seconds, "surah": surah, "ayah": ayah})
        _write_split(rows, out / "data" / f"{split}-00000-of-00001.parquet")
    return out
