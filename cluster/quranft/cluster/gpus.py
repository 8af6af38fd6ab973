"""nvidia.com/gpu device assignment, as the NVIDIA device plugin does for a real kubelet: a container
that requests N GPUs gets N device indices of its node in CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES.
Containers that request none keep the host's view (there is no device isolation to enforce)."""
from __future__ import annotations

import logging
import threading

log = logging.getLogger("quranft.nodeagent")


def requested(container: dict) -> int:
    resources = container.get("resources") or {}
    value = (resources.get("limits") or {}).get("nvidia.com/gpu") or (resources.get("requests") or {}).get(
        "nvidia.com/gpu") or 0
    return int(value)


class GpuAllocator:
    def __init__(self, counts: dict[str, int]):
        self.counts = counts  # node name -> advertised GPUs
        self.held: dict[str, tuple[str, list[int]]] = {}  # owner -> (node, indices)
        self._lock = threading.Lock()

    def allocate(self, owner: str, node: str, count: int) -> list[int]:
        with self._lock:
            if owner in self.held:
                return self.held[owner][1]
            busy = {i for n, idx in self.held.values() if n == node for i in idx}
            free = [i for i in range(self.counts.get(node, 0)) if i not in busy]
            if len(free) < count:  # the scheduler prevents this; share rather than refuse to run
                log.warning("%s wants %d GPUs on %s, only %d free: sharing devices", owner, count, node, len(free))
                free = free + [i for i in range(self.counts.get(node, 0)) if i in busy]
            self.held[owner] = (node, free[:count])
            return self.held[owner][1]

    def release_prefix(self, prefix: str) -> None:
        with self._lock:
            for owner in [o for o in self.held if o.startswith(prefix)]:
                del self.held[owner]
