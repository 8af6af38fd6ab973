"""The Lightning side of distributed training: cluster environment, DDP strategy, training-data shards, and the
ranks' per-batch agreement on SIGTERM and on the loss (quranft.trainer.distributed says where a process sits).

Data order, the same for every world size, so a checkpoint from N ranks resumes on M ranks: each epoch is a
permutation of the training set drawn from (training.seed, epoch) by torch's DistributedSampler, and rank r of W
takes the permutation's positions r, r + W, r + 2W, ... (an epoch is padded to a multiple of W with its first
samples). At the same global batch, global step k of an epoch trains on the same samples for any W. Lightning
restores the step, epoch, optimiser, LR scheduler and loop counters from a checkpoint, not the position inside an
epoch: a resumed run starts its interrupted epoch again from the first sample (same permutation), whatever the
world size; the step count continues. On M ranks instead of N the global batch becomes batchSize x gradAccum x M.

Learning rate: training.learningRate is used as given, whatever the world size (NeMo does not scale it either);
the schedule (warmup, cosine to maxSteps) counts optimiser steps, so more ranks means more samples per step at the
same learning rate. Scale learningRate yourself when you change the global batch and want the old dynamics.
"""
from __future__ import annotations

import signal
import threading
from datetime import timedelta
from typing import Any

from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch import Callback

from quranft.trainer.callbacks import LOSS_KEYS
from quranft.contract.config import TrainingSpec
from quranft.trainer.distributed import Placement


class PodEnvironment(LightningEnvironment):
    """LightningEnvironment with this pod's placement.

    Passed explicitly, so none that Lightning detects from a pod's env vars (TorchElastic, SLURM, LSF, MPI) takes
    over, and KubeflowEnvironment (one process per pod, WORLD_SIZE and RANK per process) is never used; the node
    rank may come from JOB_COMPLETION_INDEX (quranft.trainer.distributed.placement).
    """

    def __init__(self, place: Placement):
        super().__init__()
        self._place = place

    @property
    def main_address(self) -> str:
        return self._place.master_addr

    @property
    def main_port(self) -> int:
        return self._place.master_port if self._place.master_port is not None else super().main_port

    def node_rank(self) -> int:
        return self._place.node_rank


def unused_parameters(spec: TrainingSpec) -> bool:
    """Whether some trainable parameters get no gradient: DDP must then look for them each step.

    ctcOnly never runs the RNNT decoder and joint (trainable when freeze.rnntDecoder is false); a hybrid run with
    ctcWeight 0 never runs the CTC head. NeMo's find_unused_parameters=False is kept everywhere else.
    """
    return (spec.mode == "ctcOnly" and not spec.freeze.rnnt_decoder) or (spec.mode == "hybrid" and spec.ctc_weight == 0)


def trainer_settings(place: Placement, backend: str, timeout_s: int, find_unused: bool,
                     cuda: bool) -> dict[str, Any]:
    """Lightning Trainer arguments for this placement; one device and Lightning's defaults at world size 1.

    The DDP settings are NeMo's (examples/asr/conf/fastconformer/hybrid_transducer_ctc/*.yaml: strategy ddp,
    sync_batchnorm true; gradient_as_bucket_view, find_unused_parameters=False). torch's SyncBatchNorm runs on
    GPUs only ("SyncBatchNorm layers only work with GPU modules"): on CPU each rank's BatchNorm normalises its
    own micro-batch. The timeout bounds the rendezvous and, after it, any one collective (a rank waiting that
    long for its peers fails instead of hanging).
    """
    if not place.distributed:
        return {"devices": 1}
    from lightning.pytorch.strategies import DDPStrategy

    strategy = DDPStrategy(cluster_environment=PodEnvironment(place), process_group_backend=backend,
                           timeout=timedelta(seconds=timeout_s), gradient_as_bucket_view=True,
                           find_unused_parameters=find_unused)
    return {"devices": place.devices_per_node, "num_nodes": place.nodes, "strategy": strategy, "sync_batchnorm": cuda}


def shard_train_loader(loader, place: Placement, seed: int):
    """NeMo's training DataLoader with this rank's DistributedSampler (every world size, 1 included: the global
    order is then the same for all; see the module docstring). Lightning keeps a DistributedSampler it finds."""
    from torch.utils.data import DataLoader, DistributedSampler

    sampler = DistributedSampler(loader.dataset, num_replicas=place.world_size, rank=place.global_rank,
                                 shuffle=True, seed=seed, drop_last=False)
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, collate_fn=loader.collate_fn,
                      drop_last=loader.drop_last, num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                      worker_init_fn=loader.worker_init_fn, persistent_workers=loader.persistent_workers)


class GroupSync(Callback):
    """World size > 1: after every training batch the ranks agree whether any of them got SIGTERM, and average
    the losses each logged (one all-reduce of a few floats, beside DDP's gradient all-reduce).

    Why: Lightning's SIGTERM handling is per process (its handler sets trainer.received_sigterm and the loop
    raises SIGTERMException after the batch). The kubelet signals a container's main process only, and a
    preemption signals one pod of a multi-node group: ranks that stop at different batches deadlock, one in the
    checkpoint's barrier, the others in the next gradient all-reduce. Here a SIGTERM only marks its rank; the
    all-reduce tells every rank, all raise Lightning's SIGTERMException after the same batch, save one checkpoint
    together (StepCheckpoint) and exit 143.
    """

    def __init__(self) -> None:
        self.rendezvoused = False  # the process group formed (Lightning calls `setup` after it)
        self.sigterm = False  # this rank received SIGTERM
        self.stopped_by_peer = False  # the group stopped for another rank's SIGTERM
        self.losses: dict[str, float] = {}  # mean over ranks of the last batch's logged losses

    def setup(self, trainer, pl_module, stage) -> None:
        self.rendezvoused = True

    def _take_sigterm(self) -> None:
        # Lightning registers its own handler when fit/validate starts (before these hooks); ours replaces it for
        # the stage, and Lightning's teardown restores the handler that was there before.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        self.sigterm = True

    def on_train_start(self, trainer, pl_module) -> None:
        self._take_sigterm()

    def on_validation_start(self, trainer, pl_module) -> None:
        self._take_sigterm()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        import torch

        logged = trainer.callback_metrics
        values = [1.0 if self.sigterm else 0.0]
        for key in LOSS_KEYS.values():
            value = logged.get(key)
            values += [float(value), 1.0] if value is not None else [0.0, 0.0]
        total = trainer.strategy.reduce(torch.tensor(values, dtype=torch.float64, device=pl_module.device),
                                        reduce_op="sum").tolist()
        self.losses = {kind: total[1 + 2 * i] / total[2 + 2 * i]
                       for i, kind in enumerate(LOSS_KEYS) if total[2 + 2 * i] > 0}
        if total[0] > 0 and not trainer.received_sigterm:
            self.stopped_by_peer = not self.sigterm
            # The flag Lightning's own handler would have set: its loop raises SIGTERMException after this batch.
            trainer._signal_connector.received_sigterm = True
