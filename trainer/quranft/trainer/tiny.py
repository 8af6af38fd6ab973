"""The CPU stub's base model: a small FastConformer hybrid RNNT+CTC model built from config.

Same class as the production model (`EncDecHybridRNNTCTCBPEModel`), so every code path of the trainer
and the benchmark runs unchanged; only the sizes differ (~0.5 M parameters instead of 115 M).
The SentencePiece tokenizer is trained on the normalised Quran text and cached on disk.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

TOKENIZER_VOCAB_SIZE = 128
TOKENIZER_TYPE = "bpe"
TOKENIZER_VERSION = 1  # bump when the training text or options change, to invalidate caches
D_MODEL = 64
ENCODER_LAYERS = 4


def cache_root() -> Path:
    return Path(os.environ.get("QURANFT_CACHE_DIR", Path.home() / ".cache" / "quranft"))


def quran_training_text() -> list[str]:
    """Every verse once, normalised exactly as transcripts are scored (quranft.benchmark.normalize)."""
    from quranft.benchmark.quran_text import load_quran

    quran = load_quran()
    return [quran.basmala, *quran.texts]


def tokenizer_dir(vocab_size: int = TOKENIZER_VOCAB_SIZE) -> Path:
    """Build (once) and return the directory holding `tokenizer.model` + `vocab.txt` for NeMo."""
    lines = quran_training_text()
    key = hashlib.sha256(
        f"{TOKENIZER_VERSION}|{TOKENIZER_TYPE}|{vocab_size}|".encode() + "\n".join(lines).encode()
    ).hexdigest()[:12]
    target = cache_root() / "tokenizers" / f"quran-{TOKENIZER_TYPE}{vocab_size}-{key}"
    if (target / "tokenizer.model").exists():
        return target
    from nemo.collections.common.tokenizers.sentencepiece_tokenizer import create_spt_model

    target.parent.mkdir(parents=True, exist_ok=True)
    # Build next to the target and rename: concurrent builders never see (or leave) a half-written one.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        text_file = Path(tmp) / "quran.txt"
        text_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        out = Path(tmp) / "spt"
        create_spt_model(str(text_file), vocab_size, sample_size=-1, do_lower_case=False,
                         tokenizer_type=TOKENIZER_TYPE, output_dir=str(out))
        try:
            os.rename(out, target)
        except OSError:
            if not (target / "tokenizer.model").exists():
                raise
    return target


def tiny_config(tok_dir: Path) -> dict[str, Any]:
    """Model config in the shape of NeMo's fastconformer_hybrid_transducer_ctc_bpe.yaml, shrunk.

    No dropout and no SpecAugment: the stub must overfit a few synthetic clips quickly.
    """
    sr = 16_000
    ds = {"manifest_filepath": None, "sample_rate": sr, "batch_size": 4, "shuffle": True, "num_workers": 0,
          "pin_memory": False, "max_duration": 30.0, "min_duration": 0.1}
    return {
        "sample_rate": sr,
        "compute_eval_loss": False,
        "log_prediction": False,
        "skip_nan_grad": False,
        "model_defaults": {"enc_hidden": D_MODEL, "pred_hidden": D_MODEL, "joint_hidden": D_MODEL},
        "train_ds": dict(ds),
        "validation_ds": {**ds, "shuffle": False},
        "tokenizer": {"dir": str(tok_dir), "type": "bpe"},
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "sample_rate": sr, "normalize": "per_feature", "window_size": 0.025, "window_stride": 0.01,
            "window": "hann", "features": 80, "n_fft": 512, "log": True, "frame_splicing": 1,
            "dither": 0.0, "pad_to": 0, "pad_value": 0.0,
        },
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConformerEncoder",
            "feat_in": 80, "feat_out": -1, "n_layers": ENCODER_LAYERS, "d_model": D_MODEL,
            "subsampling": "dw_striding", "subsampling_factor": 8, "subsampling_conv_channels": D_MODEL,
            "causal_downsampling": False, "ff_expansion_factor": 4,
            "self_attention_model": "rel_pos", "n_heads": 4, "att_context_size": [-1, -1],
            "att_context_style": "regular", "xscaling": True, "untie_biases": True, "pos_emb_max_len": 5000,
            "conv_kernel_size": 9, "conv_norm_type": "batch_norm", "conv_context_size": None,
            "dropout": 0.0, "dropout_pre_encoder": 0.0, "dropout_emb": 0.0, "dropout_att": 0.0,
        },
        "decoder": {
            "_target_": "nemo.collections.asr.modules.RNNTDecoder",
            "normalization_mode": None, "random_state_sampling": False, "blank_as_pad": True,
            "prednet": {"pred_hidden": D_MODEL, "pred_rnn_layers": 1, "t_max": None, "dropout": 0.0},
        },
        "joint": {
            "_target_": "nemo.collections.asr.modules.RNNTJoint",
            "log_softmax": None, "preserve_memory": False, "fuse_loss_wer": True, "fused_batch_size": 4,
            "jointnet": {"joint_hidden": D_MODEL, "activation": "relu", "dropout": 0.0},
        },
        "aux_ctc": {
            "ctc_loss_weight": 0.3, "use_cer": False, "ctc_reduction": "mean_batch",
            "decoder": {"_target_": "nemo.collections.asr.modules.ConvASRDecoder", "feat_in": None,
                        "num_classes": -1, "vocabulary": []},
            "decoding": {"strategy": "greedy"},
        },
        "decoding": {"strategy": "greedy_batch", "greedy": {"max_symbols": 10}},
        "loss": {"loss_name": "default", "warprnnt_numba_kwargs": {"fastemit_lambda": 0.0, "clamp": -1.0}},
        "optim": {"name": "adamw", "lr": 3e-3, "betas": [0.9, 0.98], "weight_decay": 0.0},
    }


def build_tiny_model():
    """A freshly initialised tiny hybrid model (random weights, real tokenizer)."""
    from omegaconf import OmegaConf
    from nemo.collections.asr.models import EncDecHybridRNNTCTCBPEModel

    cfg = OmegaConf.create(tiny_config(tokenizer_dir()))
    return EncDecHybridRNNTCTCBPEModel(cfg=cfg, trainer=None)


def write_tiny_model(out: Path, seed: int = 1234) -> dict[str, Any]:
    """Write an untrained tiny base model as .nemo (atomically); returns size and parameter count."""
    import torch

    torch.manual_seed(seed)
    model = build_tiny_model()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    model.save_to(str(tmp))
    os.replace(tmp, out)
    return {"path": str(out), "sizeBytes": out.stat().st_size,
            "parameters": sum(p.numel() for p in model.parameters())}
