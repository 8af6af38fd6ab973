"""Transcriber: decoder heads (asserted through NeMo's own cur_decoder / decoding config), batched decoding,
and loading a model.nemo as written (stored precision)."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from quranft.benchmark.transcribe import default_verdict_head, resolve_heads, stored_precision
from quranft.contract.config import ConfigError

BOTH = ("ctc", "rnnt")


# --- the pure functions ---------------------------------------------------------------------------------

@pytest.mark.parametrize("decoder, mode, available, saved, expected", [
    ("auto", "ctcOnly", BOTH, None, ["ctc"]),
    ("auto", "hybrid", BOTH, None, ["ctc", "rnnt"]),
    ("auto", None, BOTH, "ctc", ["ctc"]),  # a plain model: the head it was saved with
    ("auto", None, BOTH, "rnnt", ["rnnt"]),
    ("auto", None, BOTH, None, ["rnnt"]),  # nothing recorded: NeMo's restore default for a hybrid
    ("auto", None, ("ctc",), None, ["ctc"]),  # a pure CTC baseline
    ("auto", None, ("rnnt",), "ctc", ["rnnt"]),  # a saved head the model lacks is ignored
    ("ctc", "hybrid", BOTH, None, ["ctc"]),
    ("rnnt", None, BOTH, None, ["rnnt"]),
    ("both", "ctcOnly", BOTH, None, ["ctc", "rnnt"]),
    ("both", None, ["rnnt", "ctc"], None, ["ctc", "rnnt"]),
])
def test_resolve_heads(decoder, mode, available, saved, expected):
    assert resolve_heads(decoder, mode, available, saved=saved) == expected


@pytest.mark.parametrize("decoder, mode, available, match", [
    ("ctc", None, ("rnnt",), "needs the ctc head, but the model has only: rnnt"),
    ("both", "hybrid", ("ctc",), "needs the rnnt head"),
    ("auto", "hybrid", ("ctc",), "needs the rnnt head"),
    ("beam", None, BOTH, "benchmark.decoder: 'beam' is not one of"),
    ("auto", "rnntOnly", BOTH, "training.mode: 'rnntOnly'"),
])
def test_resolve_heads_refuses(decoder, mode, available, match):
    with pytest.raises(ConfigError, match=match):
        resolve_heads(decoder, mode, available)


def test_default_verdict_head():
    assert default_verdict_head("ctcOnly") == "ctc" and default_verdict_head("hybrid") == "rnnt"
    assert default_verdict_head(None) == "ctc" and default_verdict_head(None, saved="rnnt") == "rnnt"
    with pytest.raises(ConfigError):
        default_verdict_head("other")


def test_stored_precision_is_the_dtype_of_most_weights():
    import torch

    assert stored_precision({"a": torch.zeros(10), "step": torch.tensor(3)}) == "fp32"
    assert stored_precision({"a": torch.zeros(10, dtype=torch.float16), "b": torch.zeros(2)}) == "fp16"
    assert stored_precision({"a": torch.zeros(4, dtype=torch.bfloat16)}) == "bf16"
    assert stored_precision({"n": torch.tensor(1)}) == "fp32"


# --- real tiny models -----------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread, as the trainer uses on CPU: on the shared 2-core box two threads spin against the
    other processes and made these tests up to 15x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> Path:
    """The untrained tiny hybrid base model, fp32, no decoder recorded (like a hub model)."""
    from quranft.trainer.tiny import write_tiny_model

    path = tmp_path_factory.mktemp("tiny") / "tiny.nemo"
    write_tiny_model(path)
    return path


@pytest.fixture(scope="module")
def clips(recitations) -> list:
    """The 17 shortest clips of the shared corpus (1.4-7.7 s): two batches of 16, with padding."""
    from quranft.benchmark.corpus import decode_audio, load_corpus

    audios = [decode_audio(s.path) for s in load_corpus(recitations).samples]
    return sorted((a for a in audios if len(a) <= 8 * 16_000), key=len)[:17]


@pytest.fixture(scope="module")
def tiny(tiny_path):
    from quranft.benchmark.transcribe import Transcriber

    model = Transcriber(str(tiny_path), device="cpu")
    yield model
    model.close()


def test_tiny_hybrid_has_both_heads_and_restores_with_rnnt(tiny):
    assert tiny.heads == ("ctc", "rnnt")
    assert tiny.saved_head == "rnnt"  # nothing recorded in the file: NeMo's default
    assert tiny.head == "ctc" == tiny.model.cur_decoder  # head="auto": CTC, as the benchmark always did
    info = tiny.info
    assert info.model_class == "EncDecHybridRNNTCTCBPEModel" and info.heads == ("ctc", "rnnt")
    assert info.decoder == "ctc" and info.saved_head == "rnnt"
    assert info.precision == "fp32" and info.compute_dtype == "fp32"


def test_use_head_switches_nemo_to_that_head_with_greedy_batch(tiny, clips):
    from nemo.collections.asr.parts.submodules.ctc_decoding import CTCBPEDecoding
    from nemo.collections.asr.parts.submodules.rnnt_decoding import RNNTBPEDecoding

    few = clips[:3]
    info = tiny.use_head("rnnt")
    assert tiny.model.cur_decoder == "rnnt" and tiny.model.cfg.decoding.strategy == "greedy_batch"
    assert isinstance(tiny.model.decoding, RNNTBPEDecoding)
    assert info.decoder == "rnnt" and tiny.info.decoder == "rnnt"
    rnnt = tiny.transcribe(few)
    tiny.use_head("ctc")
    assert tiny.model.cur_decoder == "ctc" and tiny.model.cfg.aux_ctc.decoding.strategy == "greedy_batch"
    assert isinstance(tiny.model.ctc_decoding, CTCBPEDecoding) and tiny.info.decoder == "ctc"
    ctc = tiny.transcribe(few)
    # the untrained heads answer differently: each call really went through the head asked for
    assert all(isinstance(t, str) and t for t in rnnt + ctc) and rnnt != ctc


@pytest.mark.parametrize("head", ["ctc", "rnnt"])
def test_batch_16_gives_the_texts_of_batch_1(tiny, clips, head):
    tiny.use_head(head)
    tiny.batch_size = 1
    one = [tiny.transcribe([a])[0] for a in clips]
    tiny.batch_size = 16
    batched = tiny.transcribe(clips)
    tiny.batch_size = 1
    assert batched == one
    assert len(set(one)) > 1  # not a degenerate all-equal answer


def _tiny_cfg(**change):
    from omegaconf import OmegaConf

    from quranft.trainer.tiny import tiny_config, tokenizer_dir

    cfg = tiny_config(tokenizer_dir())
    for key, value in change.items():
        if value is None:
            cfg.pop(key)
        else:
            cfg[key] = value
    return OmegaConf.create(cfg)


def test_a_head_the_model_lacks_is_a_config_error_naming_class_and_heads(tmp_path, clips):
    """ctc on a pure-RNNT model (the issue's bad input) and rnnt on a pure CTC model."""
    import torch
    from nemo.collections.asr.models import EncDecCTCModelBPE, EncDecRNNTBPEModel

    from quranft.benchmark.transcribe import Transcriber

    torch.manual_seed(0)
    path = tmp_path / "rnnt.nemo"
    EncDecRNNTBPEModel(cfg=_tiny_cfg(aux_ctc=None)).save_to(str(path))
    rnnt = Transcriber(str(path), device="cpu")  # head="auto": no CTC head, so its saved (only) head
    assert rnnt.heads == ("rnnt",) and rnnt.saved_head == "rnnt" and rnnt.info.decoder == "rnnt"
    assert isinstance(rnnt.transcribe(clips[:1])[0], str)
    with pytest.raises(ConfigError, match=r"EncDecRNNTBPEModel has no ctc head \(it has: rnnt\)"):
        rnnt.use_head("ctc")
    with pytest.raises(ConfigError, match="EncDecRNNTBPEModel has no ctc head"):
        Transcriber(str(path), device="cpu", head="ctc")

    base = _tiny_cfg()
    ctc_cfg = _tiny_cfg(decoder=base.aux_ctc.decoder, decoding={"strategy": "greedy"}, aux_ctc=None, joint=None,
                        loss=None)
    path = tmp_path / "ctc.nemo"
    EncDecCTCModelBPE(cfg=ctc_cfg).save_to(str(path))
    ctc = Transcriber(str(path), device="cpu")
    assert ctc.heads == ("ctc",) and ctc.saved_head == "ctc" and ctc.head == "ctc"
    assert ctc.model.cfg.decoding.strategy == "greedy_batch"
    with pytest.raises(ConfigError, match=r"EncDecCTCModelBPE has no rnnt head \(it has: ctc\)"):
        ctc.use_head("rnnt")


def _file_dtypes(path: Path) -> set:
    import torch

    with tarfile.open(path) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("model_weights.ckpt"))
        weights = torch.load(io.BytesIO(tar.extractfile(member).read()), map_location="cpu")
    return {t.dtype for t in weights.values() if t.is_floating_point()}


def test_a_half_precision_export_is_loaded_and_run_as_written(tmp_path, tiny_path, clips):
    """The trainer's export with halfPrecisionWeights: fp16 in the file, fp16 here (CPU runs it), CTC saved."""
    import torch
    from nemo.collections.asr.models import ASRModel

    from quranft.benchmark.transcribe import Transcriber
    from quranft.trainer.train import export_model

    model = ASRModel.restore_from(str(tiny_path), map_location="cpu").eval()
    path = tmp_path / "model.nemo"
    export_model(model, path, half=True, head="ctc")
    assert _file_dtypes(path) == {torch.float16}
    in_process = [h.text for h in model.transcribe(clips[:4], batch_size=4, verbose=False)]  # fp16, CTC head

    shipped = Transcriber(str(path), device="cpu", head=None)  # start on the head the file restores with
    info = shipped.info
    assert info.precision == "fp16" and info.compute_dtype == "fp16"
    assert {p.dtype for p in shipped.model.parameters()} == {torch.float16}
    assert info.size_bytes == path.stat().st_size and info.sha256 and len(info.sha256) == 64
    assert shipped.saved_head == "ctc" and shipped.model.cur_decoder == "ctc"
    shipped.batch_size = 4
    assert shipped.transcribe(clips[:4]) == in_process


def test_a_bf16_file_reports_bf16(tmp_path, tiny_path, clips):
    import torch
    from nemo.collections.asr.models import ASRModel

    from quranft.benchmark.transcribe import Transcriber

    path = tmp_path / "bf16.nemo"
    ASRModel.restore_from(str(tiny_path), map_location="cpu").to(torch.bfloat16).save_to(str(path))
    model = Transcriber(str(path), device="cpu")
    assert model.info.precision == "bf16" and model.info.compute_dtype == "bf16"
    assert isinstance(model.transcribe(clips[:1])[0], str)
