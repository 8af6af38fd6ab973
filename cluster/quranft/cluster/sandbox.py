"""Container launcher: `python -I -S sandbox.py SPEC.json` enters a private mount namespace, bind-mounts
the pod's volumes at the paths the spec names, then execs the container's command.

Stdlib only and run by path (not imported), so it starts in milliseconds and never sees the agent's
modules. Needs root (CAP_SYS_ADMIN), which CI has. Missing mount points outside /dev are created on the
host as empty directories/files (e.g. /workspace); what is mounted on them is visible only inside the
namespace. /dev gets a private copy (see private_dev) so nothing is created there.

With a memory limit the spec names the container's memory cgroup (memcg.py): the launcher joins it first,
so the container's whole process tree is charged there and nothing of it runs outside the limit.

Every mount source is opened (O_PATH) before the first mount and bound from that descriptor: a source is
the host's path even when an earlier mount covers it (an emptyDir at /tmp over a cluster state dir or a
checkout under /tmp, whose runtime paths the agent binds back on top; see volumes.hidden_runtime).
"""
from __future__ import annotations

import ctypes
import json
import os
import stat
import sys

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, flags: int) -> None:
    _check(_libc.mount(source.encode() if source else None, target.encode(), None, flags, None),
           f"mount {source} -> {target}")


def enter_namespace() -> None:
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    # Private propagation: our binds must not leak back to the host (`unshare --propagation private`).
    _mount(None, "/", MS_REC | MS_PRIVATE)


def private_dev(stage: str) -> None:
    """Give the namespace its own /dev: a tmpfs holding binds of every host /dev entry (devices, pts,
    shm, GPUs). Mount points created there (e.g. /dev/termination-log) never appear on the host, where
    a file at that path would change what host processes see."""
    os.makedirs(stage, exist_ok=True)
    _mount("/dev", stage, MS_BIND | MS_REC)
    _check(_libc.mount(b"tmpfs", b"/dev", b"tmpfs", 0, b"mode=755"), "mount tmpfs on /dev")
    for entry in os.scandir(stage):
        src, dst = entry.path, "/dev/" + entry.name
        if entry.is_symlink():
            os.symlink(os.readlink(src), dst)
        elif entry.is_dir(follow_symlinks=False):
            os.mkdir(dst)
            _mount(src, dst, MS_BIND | MS_REC)
        else:
            open(dst, "w").close()
            _mount(src, dst, MS_BIND)
    _libc.umount2(stage.encode(), MNT_DETACH)


def open_source(path: str) -> int:
    """A descriptor of the host's `path`, taken before any mount can cover it (closed on exec)."""
    return os.open(path, os.O_PATH)


def bind(source_fd: int, source: str, target: str, read_only: bool) -> None:
    if stat.S_ISDIR(os.fstat(source_fd).st_mode):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target) or "/", exist_ok=True)
        if not os.path.exists(target):
            open(target, "a").close()
    # The magic link resolves to the descriptor's file itself, not to what the path now shows.
    try:
        _mount(f"/proc/self/fd/{source_fd}", target, MS_BIND | MS_REC)
    except OSError as err:
        raise OSError(err.errno, f"mount {source} -> {target}: {os.strerror(err.errno)}") from None
    if read_only:
        _mount(None, target, MS_REMOUNT | MS_BIND | MS_RDONLY)


def main(argv: list[str]) -> int:
    spec = json.loads(open(argv[1]).read())
    try:
        if spec.get("cgroup"):
            with open(os.path.join(spec["cgroup"], "cgroup.procs"), "w") as procs:
                procs.write(str(os.getpid()))
        enter_namespace()
        # Parents before children, so a mount inside another mount's path lands on top of it.
        mounts = sorted(spec["mounts"], key=lambda m: m["target"].rstrip("/").count("/"))
        # After unshare (a descriptor of another namespace's mount cannot be bound), before any mount.
        sources = []
        for m in mounts:
            try:
                sources.append(open_source(m["source"]))
            except OSError as err:
                raise OSError(err.errno, f"mount source {m['source']}: {os.strerror(err.errno)}") from None
        if spec.get("devStage") and any(m["target"].startswith("/dev/") for m in mounts):
            private_dev(spec["devStage"])
        for m, fd in zip(mounts, sources):
            bind(fd, m["source"], m["target"], m["readOnly"])
        workdir = spec.get("workingDir") or "/"
        os.makedirs(workdir, exist_ok=True)
        os.chdir(workdir)
    except OSError as err:
        print(f"embedded node agent: cannot set up the container: {err}", file=sys.stderr, flush=True)
        return 128
    argv_ = spec["argv"]
    try:
        os.execvpe(argv_[0], argv_, spec["env"])
    except OSError as err:
        print(f"exec {argv_[0]!r} failed: {err.strerror}", file=sys.stderr, flush=True)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv))
