"""Node capacity for the embedded cluster (what the node agent advertises to the scheduler)."""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class NodeConfig:
    name: str
    # Capacity is a scheduling promise, not a limit the agent enforces: processes share the host (each
    # container's own memory limit is enforced, see memcg.py).
    # Defaults are generous enough for the project's Jobs to schedule on a small CI machine.
    cpu: str = "8"
    memory: str = "32Gi"
    gpus: int = 2
    pods: int = 110

    def capacity(self) -> dict[str, str]:
        cap = {"cpu": self.cpu, "memory": self.memory, "pods": str(self.pods),
               "ephemeral-storage": "100Gi"}
        if self.gpus:
            cap["nvidia.com/gpu"] = str(self.gpus)
        return cap


def default_nodes(count: int | None = None, cpu: str | None = None, memory: str | None = None,
                  gpus: int | None = None) -> list[NodeConfig]:
    """`count` nodes named quranft-node-<i>; unset arguments come from QURANFT_NODE_* env vars."""
    env = os.environ
    count = count if count is not None else int(env.get("QURANFT_NODES", "1"))
    cpu = cpu or env.get("QURANFT_NODE_CPU", NodeConfig.cpu)
    memory = memory or env.get("QURANFT_NODE_MEMORY", NodeConfig.memory)
    gpus = gpus if gpus is not None else int(env.get("QURANFT_NODE_GPUS", str(NodeConfig.gpus)))
    return [NodeConfig(f"quranft-node-{i}", cpu, memory, gpus) for i in range(count)]
