"""The CPU stub's base model: tokenizer on the Quran text (cached), tiny hybrid model, .nemo round trip."""
from __future__ import annotations

import pytest

from quranft.contract.config import ConfigError, FreezeSpec


@pytest.fixture(scope="module")
def tiny_model():
    from quranft.trainer.tiny import build_tiny_model

    return build_tiny_model()


def test_tokenizer_covers_every_normalised_verse_and_is_cached(tmp_path, monkeypatch):
    import sentencepiece as spm

    from quranft.trainer import tiny

    monkeypatch.setenv("QURANFT_CACHE_DIR", str(tmp_path))
    first = tiny.tokenizer_dir()
    stamp = (first / "tokenizer.model").stat().st_mtime_ns
    assert tiny.tokenizer_dir() == first  # second call reuses the build
    assert (first / "tokenizer.model").stat().st_mtime_ns == stamp
    assert not list(first.parent.glob(".build-*"))  # no temp dirs left behind
    sp = spm.SentencePieceProcessor(model_file=str(first / "tokenizer.model"))
    assert sp.get_piece_size() == tiny.TOKENIZER_VOCAB_SIZE
    texts = tiny.quran_training_text()
    assert len(texts) == 6237  # 6,236 verses + the basmala
    unk = sp.unk_id()
    assert all(unk not in sp.encode(t) for t in texts)


def test_tiny_model_is_a_small_hybrid_fastconformer(tiny_model):
    from nemo.collections.asr.models import EncDecHybridRNNTCTCBPEModel

    from quranft.trainer import tiny

    assert isinstance(tiny_model, EncDecHybridRNNTCTCBPEModel)
    assert len(tiny_model.encoder.layers) == tiny.ENCODER_LAYERS
    assert tiny_model.encoder.d_model == tiny.D_MODEL
    params = sum(p.numel() for p in tiny_model.parameters())
    assert 200_000 < params < 1_500_000


def test_freeze_counts_layers_and_rejects_too_many(tiny_model):
    from quranft.trainer.model import freeze, frozen_modules, parameter_counts

    with pytest.raises(ConfigError, match="encoderLayers: 5 exceeds the 4"):
        frozen_modules(tiny_model, FreezeSpec(encoder_layers=5))
    before = parameter_counts(tiny_model)
    freeze(tiny_model, FreezeSpec(preprocessor=True, encoder_layers=2, rnnt_decoder=True))
    layers = tiny_model.encoder.layers
    assert not any(p.requires_grad for layer in layers[:2] for p in layer.parameters())
    assert all(p.requires_grad for layer in layers[2:] for p in layer.parameters())
    assert not any(p.requires_grad for p in tiny_model.decoder.parameters())
    assert not any(p.requires_grad for p in tiny_model.joint.parameters())
    assert all(p.requires_grad for p in tiny_model.ctc_decoder.parameters())
    after = parameter_counts(tiny_model)
    assert after["total"] == before["total"] and after["trainable"] < before["trainable"]


def test_tiny_model_nemo_round_trip(tmp_path):
    import torch
    from nemo.collections.asr.models import ASRModel, EncDecHybridRNNTCTCBPEModel

    from quranft.trainer.tiny import write_tiny_model

    out = tmp_path / "base.nemo"
    info = write_tiny_model(out, seed=7)
    assert out.is_file() and info["sizeBytes"] == out.stat().st_size < 10_000_000
    assert not list(tmp_path.glob(".*tmp*"))
    restored = ASRModel.restore_from(str(out), map_location="cpu")
    assert isinstance(restored, EncDecHybridRNNTCTCBPEModel)
    again = write_tiny_model(tmp_path / "again.nemo", seed=7)
    twin = ASRModel.restore_from(again["path"], map_location="cpu")
    a, b = restored.state_dict(), twin.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # the seed makes the untrained baseline reproducible
