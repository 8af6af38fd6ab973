"""Process bookkeeping shared by the control plane and the node agent.

A recorded process is (pid, start time from /proc): the start time guards against killing an unrelated
process that reused the pid after a reboot. Every process we start leads its own session, so signalling
its process group (-pid) also reaches whatever it spawned.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (clock ticks since boot), None when the process is gone."""
    try:
        raw = open(f"/proc/{pid}/stat", "rb").read().decode()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # the command name may contain spaces and parens
    if fields[0] == "Z":  # a zombie has exited; only its parent's wait() remains
        return None
    return int(fields[19])


@dataclass(frozen=True)
class Proc:
    pid: int
    started: int

    @classmethod
    def of(cls, pid: int) -> "Proc":
        return cls(pid, start_time(pid) or 0)

    def alive(self) -> bool:
        _reap(self.pid)
        return start_time(self.pid) == self.started

    def to_json(self) -> dict:
        return {"pid": self.pid, "started": self.started}

    @classmethod
    def from_json(cls, data: dict) -> "Proc":
        return cls(int(data["pid"]), int(data["started"]))


def _reap(pid: int) -> None:
    """Collect the exit status if `pid` is our child, so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def signal_group(proc: Proc, sig: int) -> None:
    if not proc.alive():
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:  # not a group leader after all: signal the process alone
        os.kill(proc.pid, sig)


def stop(procs: list[Proc], grace: float = 10.0) -> None:
    """SIGTERM each process group, wait up to `grace` seconds, then SIGKILL what is left."""
    procs = [p for p in procs if p.alive()]  # never signal a group id whose leader was not ours
    for proc in procs:
        signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(p.alive() for p in procs):
        time.sleep(0.05)
    for proc in procs:
        if proc.alive():
            signal_group(proc, signal.SIGKILL)
    # Group members that outlive their leader (they ignored SIGTERM) still get SIGKILL.
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        _reap(proc.pid)
