"""Atomic step checkpoints in runs/<name>/checkpoints, and finding the one to resume from.

A checkpoint is written to a hidden temp name and renamed only when complete, so a pod killed while saving
leaves at most a stray temp file, never a truncated `step-*.ckpt`. Lightning restores model, optimiser,
scheduler and loop state from it (`fit(ckpt_path=...)`).
"""
from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import Callable

from lightning.pytorch import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

_NAME = re.compile(r"^step-(\d{8})\.ckpt$")
_TEMP = re.compile(r"^\.step-\d{8}\.ckpt\.tmp-\d+$")
KEEP = 2  # the newest two: if the newest turns out unreadable we can still fall back


def checkpoint_path(ckpt_dir: Path, step: int) -> Path:
    return ckpt_dir / f"step-{step:08d}.ckpt"


def list_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def is_readable(path: Path) -> bool:
    # torch.save writes a zip archive; the CRC check catches files damaged after they were renamed.
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.testzip() is None
    except (OSError, zipfile.BadZipFile):
        return False


def latest_checkpoint(ckpt_dir: Path) -> tuple[int, Path] | None:
    for step, path in reversed(list_checkpoints(ckpt_dir)):
        if is_readable(path):
            return step, path
    return None


def remove_stale_temps(ckpt_dir: Path) -> list[Path]:
    """Delete temp files a killed writer left (one run has one writer at a time: global rank 0 of one Job);
    each can be as big as a checkpoint."""
    if not ckpt_dir.is_dir():
        return []
    stale = [p for p in ckpt_dir.iterdir() if _TEMP.match(p.name) and not p.name.endswith(f".tmp-{os.getpid()}")]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def save_atomic(trainer, ckpt_dir: Path, *, writer: bool = True) -> Path:
    """Save the step's checkpoint; returns its path. Under DDP every rank calls this (Lightning's
    save_checkpoint is collective: global rank 0 writes, then all meet in a barrier); `writer` (global rank 0
    only) makes the file complete, renames it into place and prunes old ones."""
    target = checkpoint_path(ckpt_dir, trainer.global_step)
    tmp = ckpt_dir / f".{target.name}.tmp-{os.getpid()}"
    if writer:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(str(tmp))
    if not writer:
        return target
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    for _, old in list_checkpoints(ckpt_dir)[:-KEEP]:
        old.unlink(missing_ok=True)
    return target


class StepCheckpoint(Callback):
    """Saves every `every_n_steps` optimiser steps, and once more when SIGTERM stops the fit loop.

    `on_saved(step)` is called once a checkpoint is complete (after the rename), e.g. to report it. Under DDP
    every rank has one (the save is collective); only the `writer` (global rank 0) writes, logs and reports.
    """

    def __init__(self, ckpt_dir: Path, every_n_steps: int, log=print,
                 on_saved: Callable[[int], None] | None = None, writer: bool = True):
        self.ckpt_dir = ckpt_dir
        self.writer = writer
        self.every_n_steps = every_n_steps
        self._log = log
        self._on_saved = on_saved
        self.last_saved_step: int | None = None
        self.last_path: Path | None = None
        self.preempted = False

    def _save(self, trainer) -> None:
        if trainer.global_step == self.last_saved_step or trainer.global_step == 0:
            return
        path = save_atomic(trainer, self.ckpt_dir, writer=self.writer)
        self.last_saved_step, self.last_path = trainer.global_step, path
        if not self.writer:
            return
        self._log(f"checkpoint: {path}")
        if self._on_saved:
            self._on_saved(trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self._save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        # A retry after the last step (e.g. killed while exporting) resumes here and only re-exports.
        self._save(trainer)

    def on_exception(self, trainer, pl_module, exception) -> None:
        # Lightning's signal connector turns SIGTERM into SIGTERMException between two batches, so the
        # loop state is consistent here: save it, and the caller exits 143 for the Job to retry. Under DDP
        # all ranks get here after the same batch (quranft.trainer.ddp.GroupSync).
        if isinstance(exception, SIGTERMException):
            self.preempted = True
            self._save(trainer)
