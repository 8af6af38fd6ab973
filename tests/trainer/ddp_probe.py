"""Test harness for distributed runs: the trainer CLI (`quranft.trainer.cli.main`) with one more Lightning callback
that records, on every rank, what each training batch really held and the rank's own loss.

Run as `python ddp_probe.py train --config ...` with QURANFT_PROBE_DIR set; Lightning's launcher re-executes this
script for local ranks > 0, as it re-executes the console script. Records go to $QURANFT_PROBE_DIR/rank-<r>.jsonl.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from pathlib import Path

from lightning.pytorch import Callback


def clip_ids(signal, lengths) -> list[str]:
    """A content hash of each clip's samples (padding cut off): the same clip hashes the same in any batch."""
    return [hashlib.sha256(signal[i, : int(lengths[i])].detach().cpu().numpy().tobytes()).hexdigest()[:16]
            for i in range(signal.shape[0])]


class BatchRecorder(Callback):
    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        record = {"rank": trainer.global_rank, "worldSize": trainer.world_size, "pid": os.getpid(),
                  "step": trainer.global_step, "epoch": trainer.current_epoch, "clips": clip_ids(batch[0], batch[1]),
                  "loss": float(outputs["loss"])}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / f"rank-{trainer.global_rank}.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")


def read_records(out_dir: Path, rank: int) -> list[dict]:
    path = Path(out_dir) / f"rank-{rank}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def main(argv: list[str]) -> int:
    from quranft.trainer import cli
    from quranft.trainer import train as trainmod

    recorder = BatchRecorder(Path(os.environ["QURANFT_PROBE_DIR"]))
    trainmod.train = functools.partial(trainmod.train, callbacks=[recorder])  # cli._train imports it per call
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
