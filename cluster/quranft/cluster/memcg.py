"""Container memory limits, enforced the way the kubelet (through runc) does: one memory cgroup per container
with the container's `resources.limits.memory` as its hard limit and no swap; the kernel OOM-kills a process
of the container that goes over it, and the container then ends `OOMKilled`.

cgroup v1 (a `cgroup` mount with the `memory` controller, e.g. /sys/fs/cgroup/memory): the limit is
`memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes`, where swap accounting exists, set to the same:
no swap), OOM kills are counted by `oom_kill` in `memory.oom_control`.
cgroup v2 (a `cgroup2` mount whose `cgroup.controllers` lists `memory`): `memory.max`, `memory.swap.max` 0,
and `oom_kill` in `memory.events`.

The container cgroups live in `quranft-pods/` under the agent's own memory cgroup, so whatever bounds the
agent also bounds its pods. The container process joins its cgroup itself, before it execs the command
(sandbox.py), so nothing of the container runs outside it. Without a writable memory controller, `detect`
returns None and limits are not enforced (logged once). On cgroup v2 that includes an agent whose own
cgroup holds other processes and is not the root: the kernel lets such a cgroup hand no controller to
children (run the agent in a delegated cgroup of its own, e.g. a systemd scope with Delegate=yes).
"""
from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from decimal import ROUND_CEILING
from pathlib import Path

log = logging.getLogger("quranft.nodeagent")
PARENT = "quranft-pods"


def memory_limit(container: dict) -> int | None:
    """`resources.limits.memory` in bytes (rounded up, as the kubelet does), None when unset."""
    value = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    if value in (None, ""):
        return None
    from kubernetes.utils.quantity import parse_quantity

    return int(parse_quantity(value).to_integral_value(rounding=ROUND_CEILING))


def _mounts(mountinfo: str) -> list[tuple[str, str, str, str]]:
    """(root, mount point, fstype, super options) of each line of /proc/self/mountinfo."""
    out = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and len(tail) >= 3:
            out.append((fields[3], fields[4].replace("\\040", " "), tail[0], tail[2]))
    return out


def _own_path(proc_cgroup: str, controller: str | None) -> str:
    """This process's cgroup path for `controller` (v1), or the unified one (v2: controller None)."""
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if (controller is None and parts[0] == "0" and parts[1] == "") or \
                (controller is not None and controller in parts[1].split(",")):
            return parts[2]
    return "/"


def _relative(own: str, mount_root: str) -> str:
    """The own cgroup below the mount: a mount of a sub-tree (containers) shows paths from its root."""
    own, mount_root = own.rstrip("/") or "/", mount_root.rstrip("/") or "/"
    if mount_root == "/":
        return own.lstrip("/")
    if own == mount_root or own.startswith(mount_root + "/"):
        return own[len(mount_root):].lstrip("/")
    return ""  # not below the visible root (a cgroup namespace): the mount's root is ours


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _counter(text: str, key: str) -> int | None:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            try:
                return int(value)
            except ValueError:
                return None
    return None


@dataclass(frozen=True)
class MemoryCgroups:
    version: int  # 1 or 2
    parent: Path  # <own cgroup>/quranft-pods: one child per container

    @property
    def describe(self) -> str:
        knob = "memory.limit_in_bytes" if self.version == 1 else "memory.max"
        return f"cgroup v{self.version} {knob} under {self.parent}"

    def create(self, name: str, limit: int) -> Path:
        """A fresh cgroup `name` limited to `limit` bytes, no swap. Raises OSError."""
        path = self.parent / name
        if path.exists():  # left by an earlier agent (same pod uid and restart): start from a clean one
            self.remove(path)
        try:
            path.mkdir()
        except FileNotFoundError:  # another agent in the same cgroup removed the empty parent on its way out
            _parent(self.parent.parent, self.version)
            path.mkdir()
        try:
            if self.version == 1:
                (path / "memory.limit_in_bytes").write_text(str(limit))
                memsw = path / "memory.memsw.limit_in_bytes"
                if memsw.exists():
                    memsw.write_text(str(limit))
            else:
                (path / "memory.max").write_text(str(limit))
                swap = path / "memory.swap.max"
                if swap.exists():
                    swap.write_text("0")
        except OSError:
            self.remove(path)
            raise
        return path

    def close(self) -> None:
        """Remove the parent when the agent stops, if empty (another agent in the same cgroup may still use it:
        `create` makes it again)."""
        try:
            self.parent.rmdir()
        except OSError:
            pass

    def oom_killed(self, path: Path, signalled: int | None) -> bool:
        """Whether the kernel OOM-killed a process of this container's cgroup."""
        if self.version == 2:
            return (_counter(_read(path / "memory.events"), "oom_kill") or 0) > 0
        control = _read(path / "memory.oom_control")
        kills = _counter(control, "oom_kill")
        if kills is not None:
            return kills > 0
        # Kernels before 4.13 do not count kills: a SIGKILL after the limit was hit is one.
        failcnt = _read(path / "memory.failcnt").strip()
        failures = int(failcnt) if failcnt.isdigit() else 0
        return bool(_counter(control, "under_oom")) or (signalled == signal.SIGKILL and failures > 0)

    def peak(self, path: Path) -> int | None:
        """Highest usage seen, in bytes (v1 counts page cache too; v2 kernels before 5.19 have no memory.peak)."""
        text = _read(path / ("memory.max_usage_in_bytes" if self.version == 1 else "memory.peak")).strip()
        return int(text) if text.isdigit() else None

    def remove(self, path: Path, wait: float = 5.0) -> None:
        """Kill what is left of the container in its cgroup (its main process has exited: as in a pod's pid
        namespace, the rest goes with it), then remove the cgroup. Best effort."""
        deadline = time.monotonic() + wait
        while path.exists():
            pids = [int(p) for p in _read(path / "cgroup.procs").split() if p.isdigit()]
            if not pids:
                try:
                    path.rmdir()
                    return
                except FileNotFoundError:
                    return
                except OSError as err:  # EBUSY while the last exits settle
                    if time.monotonic() > deadline:
                        log.warning("memory cgroup %s not removed: %s", path, err)
                        return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                log.warning("memory cgroup %s still holds pids %s", path, pids)
                return
            time.sleep(0.05)


def detect(root: Path = Path("/"), mountinfo: str | None = None, proc_cgroup: str | None = None
           ) -> MemoryCgroups | None:
    """The memory controller this agent can create container cgroups in, or None. cgroup v1 first: where
    both are mounted (hybrid), the memory controller is bound to the v1 hierarchy."""
    if mountinfo is None:
        mountinfo = _read(Path("/proc/self/mountinfo"))
    if proc_cgroup is None:
        proc_cgroup = _read(Path("/proc/self/cgroup"))
    mounts = _mounts(mountinfo)
    problems = []
    for mroot, point, fstype, options in mounts:
        if fstype == "cgroup" and "memory" in options.split(","):
            base = root / point.lstrip("/") / _relative(_own_path(proc_cgroup, "memory"), mroot)
            try:
                return MemoryCgroups(1, _parent(base, version=1))
            except OSError as err:
                problems.append(f"v1 {base}: {err}")
    for mroot, point, fstype, _ in mounts:
        mount = root / point.lstrip("/")
        if fstype == "cgroup2" and "memory" in _read(mount / "cgroup.controllers").split():
            base = mount / _relative(_own_path(proc_cgroup, None), mroot)
            try:
                return MemoryCgroups(2, _parent(base, version=2))
            except OSError as err:
                problems.append(f"v2 {base}: {err}")
    log.warning("container memory limits are NOT enforced: no writable memory cgroup (%s)",
                "; ".join(problems) or "no memory controller mounted")
    return None


def _parent(base: Path, version: int) -> Path:
    """<base>/quranft-pods, created (v2: with the memory controller delegated to its children). OSError when
    the controller is not writable here."""
    if not base.is_dir():
        raise FileNotFoundError(f"{base} does not exist")
    parent = base / PARENT
    if version == 2:
        _enable_memory(base)
    parent.mkdir(exist_ok=True)
    if version == 1:
        if not (parent / "memory.limit_in_bytes").exists():
            raise OSError(f"{parent} has no memory.limit_in_bytes")
    else:
        _enable_memory(parent)
    # Writable here? (A read-only or foreign hierarchy fails now, not at each pod.) Our own parent stays unlimited.
    (parent / ("memory.limit_in_bytes" if version == 1 else "memory.max")).write_text("-1" if version == 1 else "max")
    return parent


def _enable_memory(cgroup: Path) -> None:
    """v2: let `cgroup`'s children use the memory controller (fails with EBUSY when it holds processes
    itself and is not the root: the no-internal-processes rule)."""
    control = cgroup / "cgroup.subtree_control"
    if "memory" not in _read(control).split():
        control.write_text("+memory")
