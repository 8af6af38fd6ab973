"""On-disk record of the pod processes the node agent started, so `cluster down` can stop them even
when the agent itself died without cleaning up."""
from __future__ import annotations

from pathlib import Path

from .procs import Proc, stop


class ProcRegistry:
    def __init__(self, root: Path):
        self.root = root

    def add(self, proc: Proc) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / str(proc.pid)).write_text(str(proc.started))

    def remove(self, proc: Proc) -> None:
        (self.root / str(proc.pid)).unlink(missing_ok=True)

    def recorded(self) -> list[Proc]:
        if not self.root.is_dir():
            return []
        procs = []
        for f in self.root.iterdir():
            try:
                procs.append(Proc(int(f.name), int(f.read_text())))
            except (ValueError, OSError):
                continue
        return procs

    def kill_all(self, grace: float = 5.0) -> None:
        procs = self.recorded()
        stop(procs, grace=grace)
        for proc in procs:
            self.remove(proc)
