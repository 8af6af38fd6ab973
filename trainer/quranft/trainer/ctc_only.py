"""CTC-only fine-tuning of a hybrid RNNT+CTC model.

NeMo's hybrid training step always runs the RNNT prediction network and loss (numba; on GPU it needs
libnvvm, which is how the team's v1 run died). In ctcOnly mode we train and validate through the CTC head
alone: the RNNT branch is never called, and validation still reports CTC WER (the team's v1 script
dropped validation entirely).
"""
from __future__ import annotations

import types

import torch


class CtcOnlySteps:
    """Mixin placed in front of the model's class; everything else (optimiser, data, saving) is NeMo's."""

    def training_step(self, batch, batch_nb):
        signal, signal_len, transcript, transcript_len = batch[:4]
        encoded, encoded_len = self.forward(input_signal=signal, input_signal_length=signal_len)
        log_probs = self.ctc_decoder(encoder_output=encoded)
        loss = self.ctc_loss(log_probs=log_probs, targets=transcript, input_lengths=encoded_len,
                             target_lengths=transcript_len)
        self.log_dict({
            "train_loss": loss,
            "train_ctc_loss": loss,
            "learning_rate": self._optimizer.param_groups[0]["lr"],
            "global_step": torch.tensor(self.trainer.global_step, dtype=torch.float32),
        })
        return {"loss": loss}

    def validation_pass(self, batch, batch_idx, dataloader_idx=0):
        signal, signal_len, transcript, transcript_len = batch[:4]
        encoded, encoded_len = self.forward(input_signal=signal, input_signal_length=signal_len)
        log_probs = self.ctc_decoder(encoder_output=encoded)
        logs = {}
        if self.compute_eval_loss:
            logs["val_loss"] = self.ctc_loss(log_probs=log_probs, targets=transcript, input_lengths=encoded_len,
                                             target_lengths=transcript_len)
        self.ctc_wer.update(predictions=log_probs, targets=transcript, targets_lengths=transcript_len,
                            predictions_lengths=encoded_len)
        wer, num, denom = self.ctc_wer.compute()
        self.ctc_wer.reset()
        # NeMo's epoch-end aggregation reads both the main and the `_ctc` keys; here both are the CTC head.
        logs.update({"val_wer_num": num, "val_wer_denom": denom, "val_wer": wer,
                     "val_wer_num_ctc": num, "val_wer_denom_ctc": denom, "val_wer_ctc": wer})
        return logs


_CLASSES: dict[type, type] = {}


def enable_ctc_only(model) -> None:
    """Switch `model` to CTC-only steps (in place); `save_to` still writes the original class's config."""
    base = type(model)
    if issubclass(base, CtcOnlySteps):
        return
    cls = _CLASSES.setdefault(base, type(f"CtcOnly{base.__name__}", (CtcOnlySteps, base), {}))
    model.__class__ = cls
    # ModelPT.__init__ stores a wrapped *bound* training_step on the instance, which would shadow the class
    # swap and keep running the RNNT loss: re-wrap ours the same way.
    from nemo.utils.model_utils import wrap_training_step

    model.training_step = wrap_training_step(types.MethodType(CtcOnlySteps.training_step, model))
    # The epoch-end aggregation only adds `val_wer_ctc` when the CTC weight is positive.
    model.ctc_loss_weight = 1.0
    model.change_decoding_strategy(decoder_type="ctc", verbose=False)
