"""Where this process sits in a distributed training group, read from the pod's environment (pure: no torch).

Process model. One pod per node (an Indexed Job when `distributed.nodes` > 1); in each pod Lightning's
subprocess launcher starts the `devicesPerNode - 1` extra local ranks by re-running the pod's own command line
(`quranft trainer train ...` or `python -m quranft.cli trainer train ...`) with LOCAL_RANK set, and the pod's
process is local rank 0. The operator sets MASTER_ADDR / MASTER_PORT (rank 0's pod) and NODE_RANK (the Job's
completion index; JOB_COMPLETION_INDEX, which Kubernetes sets in every Indexed Job pod, is the fallback);
WORLD_SIZE, when set, must agree with the config. Global rank = NODE_RANK x devicesPerNode + LOCAL_RANK.
The Lightning side (cluster environment, DDP strategy, data shards, SIGTERM agreement) is quranft.trainer.ddp.

Only global rank 0 writes: checkpoints, model.nemo, training_metadata.json, progress files, the progress line,
the Prometheus endpoint and the success summary. A local rank > 0 never writes the termination message (its
pod's main process owns that file).
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from quranft.contract.config import ConfigError, DistributedSpec
from quranft.trainer.errors import EnvironmentProblem

DEFAULT_MASTER_PORT = 29500  # torchrun's default, used when a multi-node pod has no MASTER_PORT


class RendezvousTimeout(EnvironmentProblem):
    """Not every rank arrived within distributed.rendezvousTimeoutSeconds (exit 5, reason RendezvousTimeout)."""

    failure_reason = "RendezvousTimeout"


@dataclass(frozen=True)
class Placement:
    nodes: int
    devices_per_node: int
    node_rank: int = 0
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None  # None on one node without MASTER_PORT: Lightning picks a free port

    @property
    def world_size(self) -> int:
        return self.nodes * self.devices_per_node

    @property
    def global_rank(self) -> int:
        return self.node_rank * self.devices_per_node + self.local_rank

    @property
    def is_global_zero(self) -> bool:
        return self.global_rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def describe(self) -> str:
        return (f"rank {self.global_rank} of {self.world_size} (node {self.node_rank} of {self.nodes}, "
                f"local rank {self.local_rank} of {self.devices_per_node})")


def _int_env(env: Mapping[str, str], name: str, low: int, high: int, why: str) -> int:
    raw = env[name].strip()
    try:
        value = int(raw)
    except ValueError:
        raise EnvironmentProblem(f"{name}={raw!r} is not an integer") from None
    if not low <= value < high:
        raise EnvironmentProblem(f"{name}={value} is outside 0..{high - 1} ({why})")
    return value


def placement(spec: DistributedSpec, env: Mapping[str, str] | None = None) -> Placement:
    """This process's place in the group; EnvironmentProblem naming what is missing or inconsistent."""
    env = os.environ if env is None else env
    node_var = next((name for name in ("NODE_RANK", "JOB_COMPLETION_INDEX") if env.get(name, "").strip()), None)
    if spec.nodes > 1:
        missing = [name for name, present in (("MASTER_ADDR", bool(env.get("MASTER_ADDR", "").strip())),
                                              ("NODE_RANK (or JOB_COMPLETION_INDEX)", node_var is not None))
                   if not present]
        if missing:
            raise EnvironmentProblem(
                f"distributed.nodes={spec.nodes} needs {' and '.join(missing)} in the environment (the operator "
                "sets them in every pod of the training Job)")
    node_rank = _int_env(env, node_var, 0, spec.nodes, f"distributed.nodes={spec.nodes}") if node_var else 0
    local_rank = (_int_env(env, "LOCAL_RANK", 0, spec.devices_per_node,
                           f"distributed.devicesPerNode={spec.devices_per_node}")
                  if env.get("LOCAL_RANK", "").strip() else 0)
    if env.get("WORLD_SIZE", "").strip() and env["WORLD_SIZE"].strip() != str(spec.world_size):
        raise EnvironmentProblem(f"WORLD_SIZE={env['WORLD_SIZE'].strip()} but the config asks for "
                                 f"{spec.nodes} node(s) x {spec.devices_per_node} = {spec.world_size} ranks")
    port = _int_env(env, "MASTER_PORT", 1, 65536, "a TCP port") if env.get("MASTER_PORT", "").strip() else None
    if port is None and spec.nodes > 1:
        port = DEFAULT_MASTER_PORT
    return Placement(nodes=spec.nodes, devices_per_node=spec.devices_per_node, node_rank=node_rank,
                     local_rank=local_rank, master_addr=env.get("MASTER_ADDR", "").strip() or "127.0.0.1",
                     master_port=port)


def resolve_backend(requested: str, cuda: bool) -> str:
    """auto: nccl on CUDA, gloo on CPU; nccl without a GPU is an EnvironmentProblem (the config is fine on a GPU)."""
    if requested == "auto":
        return "nccl" if cuda else "gloo"
    if requested == "nccl" and not cuda:
        raise EnvironmentProblem("distributed.backend: nccl needs GPUs and none is visible here (use gloo or auto)")
    return requested


def check_devices(place: Placement, cuda: bool, visible_gpus: int) -> None:
    """On a GPU node every rank of this node needs its own GPU."""
    if cuda and place.devices_per_node > visible_gpus:
        raise EnvironmentProblem(
            f"distributed.devicesPerNode={place.devices_per_node} but {visible_gpus} GPU(s) are visible "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')})")


def check_shards(train_samples: int, world_size: int) -> None:
    """Every rank needs a sample of its own. No divisibility rule beyond that: DistributedSampler pads an epoch
    to a multiple of the world size with its first samples (at most worldSize - 1 repeats per epoch)."""
    if train_samples < world_size:
        raise ConfigError(f"distributed: {world_size} ranks but only {train_samples} training samples; "
                          "each rank needs at least one of its own")


_JOINED = re.compile(r"(\d+)/(\d+) clients joined")


def rendezvous_failure(exc: BaseException, place: Placement, timeout_s: int) -> EnvironmentProblem | None:
    """The EnvironmentProblem for a torch.distributed error raised before the group formed; None for others.

    torch's TCPStore says `Timed out after N seconds waiting for clients. K/W clients joined.` on rank 0 and
    `The client socket has timed out after Nms while trying to connect to (host, port).` on the others.
    """
    if not any(cls.__name__ == "DistError" for cls in type(exc).__mro__):
        return None
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    where = (f"MASTER_ADDR={place.master_addr} MASTER_PORT={place.master_port or '<free port>'}; "
             f"this is {place.describe()}")
    if joined := _JOINED.search(text):
        return RendezvousTimeout(f"only the ranks that arrived ({joined.group(1)} of {joined.group(2)}) met within "
                                 f"{timeout_s}s; {where}")
    if "timed out" in text.lower():
        return RendezvousTimeout(f"only the ranks that arrived met within {timeout_s}s: this rank could not reach "
                                 f"rank 0 ({where}): {text}")
    return EnvironmentProblem(f"the ranks could not meet ({where}): {text}")


def is_launcher_child(env: Mapping[str, str] | None = None) -> bool:
    """A local rank > 0, started inside the pod by Lightning's launcher (the operator never sets LOCAL_RANK)."""
    env = os.environ if env is None else env
    return env.get("LOCAL_RANK", "").strip() not in ("", "0")


def wait_for_launcher_exit(timeout: float, poll: float = 0.2) -> bool:
    """Wait (at most `timeout` s) until the process that launched this one has exited; True when it has.

    Lightning's child-process observer SIGKILLs the pod's main process within 5 s of a child exiting non-zero
    (lightning/fabric/strategies/launchers/subprocess_script.py, _ChildProcessObserver). A child that stops with
    the main process (SIGTERM, a rendezvous timeout) waits for it first, so the main process still writes the
    pod's termination message and exits with its own code (143, 5) instead of 137.
    """
    parent = os.getppid()
    deadline = time.monotonic() + timeout
    while os.getppid() == parent and time.monotonic() < deadline:
        time.sleep(poll)
    return os.getppid() != parent
