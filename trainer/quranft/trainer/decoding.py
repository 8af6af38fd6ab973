"""Decoder heads of a NeMo ASR model, and the head a `model.nemo` is meant to decode with.

NeMo 3.0 does not persist which head of a hybrid RNNT+CTC model is current:
- both constructors end with an unconditional `self.cur_decoder = "rnnt"`
  (nemo/collections/asr/models/hybrid_rnnt_ctc_models.py:89, hybrid_rnnt_ctc_bpe_models.py:136), and
  `restore_from` only builds the instance from its cfg and loads the weights
  (nemo/core/connectors/save_restore_connector.py:193, :286);
- `change_decoding_strategy(decoding_cfg, decoder_type=...)` writes that head's *decoding config* into the cfg
  (`cfg.decoding` for rnnt, `cfg.aux_ctc.decoding` for ctc: hybrid_rnnt_ctc_bpe_models.py:472-511) but not
  which head is current;
- NeMo's own consumers take the head from their caller (`decoder_type` of examples/asr/transcribe_speech.py,
  the ctc/rnnt classes of nemo/collections/asr/inference/model_wrappers/).
So the choice is recorded next to those decoding configs under the top-level cfg key `decoder_type` (NeMo's
own name for it), and `apply_saved_head` applies it after a restore. A plain `ASRModel.restore_from` of a
ctcOnly model.nemo still starts on NeMo's RNNT default; the benchmark (and anything restoring through
`apply_saved_head`) decodes with the recorded head.
"""
from __future__ import annotations

from typing import Any

from quranft.contract.config import ConfigError

HEAD_KEY = "decoder_type"  # top-level model cfg key holding the head the model ships with
HEADS = ("ctc", "rnnt")
GREEDY = "greedy_batch"


def heads_of(model: Any) -> tuple[str, ...]:
    """The decoder heads `model` has, by NeMo class: hybrid → (ctc, rnnt), CTC → (ctc,), RNNT → (rnnt,)."""
    from nemo.collections.asr.models import EncDecCTCModel, EncDecHybridRNNTCTCModel, EncDecRNNTModel

    if isinstance(model, EncDecHybridRNNTCTCModel):  # before EncDecRNNTModel: it is a subclass
        return HEADS
    if isinstance(model, EncDecCTCModel):
        return ("ctc",)
    if isinstance(model, EncDecRNNTModel):
        return ("rnnt",)
    return ()


def _is_hybrid(model: Any) -> bool:
    from nemo.collections.asr.models import EncDecHybridRNNTCTCModel

    return isinstance(model, EncDecHybridRNNTCTCModel)


def current_head(model: Any) -> str | None:
    """The head `model.transcribe` decodes with now (NeMo's `cur_decoder` for a hybrid model)."""
    if _is_hybrid(model):
        return model.cur_decoder
    heads = heads_of(model)
    return heads[0] if heads else None


def decoding_config(model: Any, head: str | None = None):
    """The decoding config NeMo uses for `head` (default: the current one): a node of `model.cfg`."""
    head = head or current_head(model)
    if _is_hybrid(model) and head == "ctc":
        return model.cfg.aux_ctc.get("decoding")
    return model.cfg.get("decoding")


def use_head(model: Any, head: str, strategy: str | None = GREEDY) -> None:
    """Decode with `head` from now on, through NeMo's `change_decoding_strategy`; `strategy` None keeps the
    head's stored search strategy. ConfigError (naming the class and its heads) when the model lacks it."""
    from omegaconf import OmegaConf, open_dict

    heads = heads_of(model)
    if head not in heads:
        have = ", ".join(heads) if heads else "no CTC or RNNT head"
        raise ConfigError(f"decoder: {type(model).__name__} has no {head} head (it has: {have})")
    stored = decoding_config(model, head)
    cfg = OmegaConf.create(OmegaConf.to_container(stored) if stored is not None else {})
    if strategy is not None:
        with open_dict(cfg):
            cfg.strategy = strategy
    if _is_hybrid(model):
        model.change_decoding_strategy(decoding_cfg=cfg, decoder_type=head, verbose=False)
    else:
        model.change_decoding_strategy(decoding_cfg=cfg, verbose=False)


def record_head(model: Any, head: str) -> None:
    """Before `save_to`: switch to `head` with greedy batched search (NeMo writes that decoding config into
    the cfg) and record the choice under `decoder_type`, so a restore can come back to it."""
    from omegaconf import open_dict

    use_head(model, head, GREEDY)
    with open_dict(model.cfg):
        model.cfg[HEAD_KEY] = head


def saved_head(model: Any) -> str | None:
    """The head recorded in the model's cfg (None when absent, or not one the model has)."""
    head = model.cfg.get(HEAD_KEY) if getattr(model, "cfg", None) is not None else None
    return head if head in heads_of(model) else None


def apply_saved_head(model: Any) -> str | None:
    """After a restore: switch to the recorded head (its stored decoding config); returns the head the model
    now decodes with: the recorded one, else NeMo's restore default (RNNT for a hybrid model)."""
    head = saved_head(model)
    if head is not None and head != current_head(model):
        use_head(model, head, strategy=None)
    return current_head(model)


__all__ = ["GREEDY", "HEADS", "HEAD_KEY", "apply_saved_head", "current_head", "decoding_config", "heads_of",
           "record_head", "saved_head", "use_head"]
