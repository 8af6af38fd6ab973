"""One pod's life on the node agent: images, volumes, init containers, containers, restarts, deletion.

Each container is a local process (see sandbox.py) in its own process group, so SIGTERM/SIGKILL reach
everything it spawned, and sees the pod's managed /etc/hosts (podhosts.py), bound read-only. A container
with `resources.limits.memory` runs in its own memory cgroup (memcg.py) and ends `OOMKilled` when the
kernel kills it over that limit. CPU limits are not applied, nor are runAsUser and other securityContext
fields: processes run as the agent's user (workloads still declare restricted contexts for the API
server's PodSecurity admission).
"""
from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Protocol

from . import images, podhosts, volumes
from .envvars import ContainerConfigError, command_line, container_env
from .gpus import GpuAllocator, requested
from .kube import Kube
from .memcg import MemoryCgroups, memory_limit
from .podprocs import ProcRegistry
from .podstatus import (ContainerRecord, foreign_conditions, now, pod_phase, pod_status, terminated_state,
                        termination_message)
from .procs import Proc

SANDBOX = str(Path(__file__).with_name("sandbox.py"))
POLL = 0.2  # how often a container's exit is looked for where the kernel has no pidfd (Linux < 5.3)
RESYNC = 5.0  # the longest a worker waits between passes otherwise (a status push that failed is retried then)
log = logging.getLogger("quranft.nodeagent")


def restart_delay(restarts: int) -> float:
    """Back-off before restart number `restarts` (the kubelet uses 10 s doubling to 5 min; a test
    cluster wants quick retries)."""
    return float(min(2 ** max(restarts - 1, 0), 30))


def should_restart(policy: str, exit_code: int) -> bool:
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


class NodeServices(Protocol):
    """What a pod worker needs from the node agent that runs it (nodeagent.NodeAgent provides it; this
    module imports no nodeagent, so the two do not depend on each other)."""

    @property
    def state_dir(self) -> Path: ...  # pods/<uid>/ under it holds each pod's volumes, logs, hosts file

    @property
    def shim_dir(self) -> Path: ...  # the runtimes' `quranft` launcher (images.write_shim)

    @property
    def kube(self) -> Kube: ...  # the pod's status patches and its final deletion

    @property
    def lookup(self) -> volumes.Lookup: ...  # ConfigMaps, Secrets, claims, tokens for volumes and env

    @property
    def api_host_port(self) -> tuple[str, int]: ...  # KUBERNETES_SERVICE_HOST/PORT for the containers

    @property
    def capacity(self) -> dict[str, str]: ...  # the node's, for resourceFieldRef env without a limit

    @property
    def gpus(self) -> GpuAllocator: ...

    @property
    def memcg(self) -> MemoryCgroups | None: ...  # None: memory limits not enforced

    @property
    def registry(self) -> ProcRegistry: ...  # every container process, for `cluster down` to stop

    def event(self, pod: dict, kind: str, reason: str, message: str) -> None: ...

    def worker_done(self, worker: PodWorker) -> None: ...


class PodWorker(threading.Thread):
    def __init__(self, agent: NodeServices, pod: dict):
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.agent, self.pod = agent, pod
        self.ns, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.dir = agent.state_dir / "pods" / self.uid
        spec = pod["spec"]
        self.restart_policy = spec.get("restartPolicy") or "Always"
        self.init = [ContainerRecord(c["name"], c["image"], init=True) for c in spec.get("initContainers") or []]
        self.main = [ContainerRecord(c["name"], c["image"]) for c in spec["containers"]]
        for rec in self.init:
            rec.state = {"waiting": {"reason": "PodInitializing"}}
        self.specs = {c["name"]: c for c in (spec.get("initContainers") or []) + spec["containers"]}
        self.procs: dict[str, tuple[subprocess.Popen, Proc, str]] = {}  # name -> (popen, proc, started)
        self.logs: dict[str, list[Path]] = {}
        self.term_files: dict[str, Path] = {}
        self.cgroups: dict[str, Path] = {}  # container name -> its memory cgroup while it runs
        self.restart_at: dict[str, float] = {}
        self.volume_paths: dict[str, str] = {}
        self.hosts_path: Path | None = None  # the pod's managed /etc/hosts (podhosts.py)
        self.runtimes: dict[str, images.Runtime] = {}
        self.since: dict[str, str] = {}
        self.start_time = now()
        self.started_mono = time.monotonic()
        self.phase, self.reason, self.message = "Pending", None, None
        self.failed_init = False
        self.delete_requested = threading.Event()
        # A worker sleeps in poll() on its containers' pidfds and this pipe (written on deletion), so a
        # running pod costs nothing until something happens: a 0.2 s poll per pod was 5,000 wake-ups/s at 1,000.
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wake_lock = threading.Lock()  # request_delete may come after _finish closed the pipe
        self.pidfds: dict[str, int | None] = {}  # container name -> pidfd of its process (None: no pidfd)
        self.grace = 30
        self.gone = False
        self._pushed: dict | None = None
        self._push_failed = False  # the last status patch failed (not 404): to be sent again
        self._events_sent: set[str] = set()

    # ------------------------------------------------------------------ called from the agent's watch

    def on_update(self, pod: dict) -> None:
        self.pod = pod
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            self.request_delete(meta.get("deletionGracePeriodSeconds"))

    def request_delete(self, grace: int | None, gone: bool = False) -> None:
        if grace is not None:
            self.grace = int(grace)
        self.gone = self.gone or gone
        self.delete_requested.set()
        with self._wake_lock:
            if self._wake_w >= 0:
                try:
                    os.write(self._wake_w, b"x")
                except BlockingIOError:  # a full pipe: woken already
                    pass

    # --------------------------------------------------------------------------------- queries

    def log_file(self, container: str, previous: bool = False) -> Path | None:
        files = self.logs.get(container) or []
        index = -2 if previous else -1
        return files[index] if len(files) >= (2 if previous else 1) else None

    def is_running(self, container: str) -> bool:
        return container in self.procs

    # ---------------------------------------------------------------------------------- lifecycle

    def run(self) -> None:
        try:
            self._run()
        except Exception:  # a bug must not take the agent down; report it on the pod
            log.exception("pod %s/%s: worker crashed", self.ns, self.name)
            self.reason, self.message = "NodeAgentError", "the embedded node agent failed; see its log"
            self.phase = "Failed"
            self._push()
            self._idle_until_deleted()
        finally:
            self._finish()

    def _run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if (self.pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            self.delete_requested.wait()  # finished before this agent started; only deletion remains
            return
        self._push()
        if not self._resolve_images() or not self._prepare_volumes():
            self._idle_until_deleted()
            return
        for rec in self.init:
            if not self._run_init(rec):
                return
        self._push()
        for rec in self.main:
            self._start(rec)
        self._supervise()
        self.agent.gpus.release_prefix(f"{self.uid}/")  # a finished pod no longer counts for the scheduler
        self._idle_until_deleted()

    def _idle_until_deleted(self) -> None:
        """Wait for deletion, re-sending the last status every 2 s while sending it fails (API server hiccup).
        Otherwise no wake-up at all: a finished pod a Job keeps (1,000 prepare pods in the scale benchmark) would
        cost the agent a wake-up every 2 s until it is deleted."""
        while not self.delete_requested.wait(2.0 if self._push_failed else None):
            self._push()

    def _resolve_images(self) -> bool:
        shim = str(self.agent.shim_dir)
        missing = []
        for rec in self.init + self.main:
            runtime = images.resolve(rec.image, shim)
            if runtime is None:
                rec.state = {"waiting": {"reason": "ErrImagePull", "message": images.pull_error(rec.image)}}
                missing.append(rec)
            else:
                self.runtimes[rec.name] = runtime
        if missing:
            self._push()
            for rec in missing:
                self._event("Warning", "Failed", images.pull_error(rec.image))
        return not missing

    def _prepare_volumes(self) -> bool:
        while not self.delete_requested.is_set():
            try:
                self.volume_paths = volumes.prepare(self.pod, self.dir, self.agent.lookup)
                self.hosts_path = self._write_hosts()
                return True
            except volumes.VolumeNotReady as err:
                for rec in self.init[:1] + self.main:
                    rec.state = {"waiting": {"reason": "ContainerCreating" if not rec.init else "PodInitializing",
                                             "message": str(err)}}
                self._push()
                self._event("Warning", "FailedMount", str(err))
                self.delete_requested.wait(1.0)
        return False

    def _write_hosts(self) -> Path:
        """The pod's /etc/hosts, written once before its containers start, as the kubelet does. The names of
        its subdomain resolve only while its headless Service selects it, as with cluster DNS; the Service
        must exist when the pod starts (nothing is rewritten later)."""
        subdomain = self.pod["spec"].get("subdomain")
        job_name = podhosts.owning_job(self.pod)
        try:
            service = self.agent.lookup.get("Service", self.ns, subdomain) if subdomain else None
            published = podhosts.publishes(service, self.pod)
            job = self.agent.lookup.get("Job", self.ns, job_name) if published and job_name else None
        except Exception as err:  # noqa: BLE001 - the API server is unavailable: retried like a mount
            raise volumes.VolumeNotReady(f"cannot read the pod's Service/Job for its hosts file: {err}") from err
        if subdomain and not published:
            self._event("Warning", "SubdomainNotPublished",
                        f"no headless Service {subdomain!r} selects this pod: "
                        f"{podhosts.pod_hostname(self.pod)}.{subdomain} does not resolve")
        path = self.dir / "etc-hosts"
        peers = podhosts.peer_hostnames(self.pod, job)
        path.write_text(podhosts.hosts_file(self.pod, published=published, peers=peers,
                                            node_hostname=socket.gethostname()))
        return path

    def _run_init(self, rec: ContainerRecord) -> bool:
        """Run one init container to success (restarting unless the policy is Never); False to stop."""
        while True:
            if not self._start(rec):
                if self.delete_requested.wait(1.0):
                    return False
                continue
            self._push()
            while rec.name in self.procs:
                if self._sleep(RESYNC):
                    return False
                self._reap(rec)
            code = rec.terminated["exitCode"]
            if code == 0:
                return True
            if self.restart_policy == "Never":
                self.failed_init = True
                self.phase = "Failed"
                self._push()
                self._idle_until_deleted()
                return False
            self._schedule_restart(rec)
            self._push()
            if self.delete_requested.wait(max(0.0, self.restart_at.pop(rec.name) - time.monotonic())):
                return False

    def _supervise(self) -> None:
        deadline = self.pod["spec"].get("activeDeadlineSeconds")
        while not self.delete_requested.is_set():
            for rec in self.main:
                if rec.name in self.procs:
                    self._reap(rec)
                    if rec.terminated and should_restart(self.restart_policy, rec.terminated["exitCode"]):
                        self._schedule_restart(rec)
                due = self.restart_at.get(rec.name)
                if due is not None and time.monotonic() >= due:
                    del self.restart_at[rec.name]
                    self._start(rec)
            if deadline and time.monotonic() - self.started_mono > deadline:
                self._kill_all(0)
                self.phase, self.reason = "Failed", "DeadlineExceeded"
                self.message = f"Pod was active on the node longer than the specified deadline ({deadline} s)"
                self._push()
                return
            self.phase = pod_phase(self.init, self.main, self.restart_policy, self.failed_init)
            self._push()
            if self.phase in ("Succeeded", "Failed"):
                return
            wake = [RESYNC] + [due - time.monotonic() for due in self.restart_at.values()]
            if deadline:
                wake.append(self.started_mono + deadline - time.monotonic())
            self._sleep(max(0.0, min(wake)))

    def _sleep(self, timeout: float) -> bool:
        """Until a container process exits, deletion is requested or `timeout` s pass; True if deletion was."""
        if self.delete_requested.is_set():
            return True
        pidfds = list(self.pidfds.values())
        if None in pidfds:
            timeout = min(timeout, POLL)
        waiter = select.poll()  # not select(): an agent with a few hundred pods passes FD_SETSIZE (1024)
        for fd in [self._wake_r, *(fd for fd in pidfds if fd is not None)]:
            waiter.register(fd, select.POLLIN)
        waiter.poll(timeout * 1000)
        return self.delete_requested.is_set()

    # ---------------------------------------------------------------------------------- containers

    def _schedule_restart(self, rec: ContainerRecord) -> None:
        rec.last_state, rec.restart_count = rec.state, rec.restart_count + 1
        delay = restart_delay(rec.restart_count)
        rec.state = {"waiting": {"reason": "CrashLoopBackOff",
                                 "message": f"back-off {delay:.0f}s restarting failed container={rec.name} "
                                            f"pod={self.name}_{self.ns}({self.uid})"}}
        self.restart_at[rec.name] = time.monotonic() + delay

    def _service_env(self) -> dict[str, str]:
        """What the kubelet injects for the `kubernetes` Service, pointed at the real loopback endpoint."""
        host, port = self.agent.api_host_port
        return {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": str(port),
                "KUBERNETES_SERVICE_PORT_HTTPS": str(port), "KUBERNETES_PORT": f"tcp://{host}:{port}",
                "KUBERNETES_PORT_443_TCP": f"tcp://{host}:{port}", "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
                "KUBERNETES_PORT_443_TCP_PORT": str(port), "KUBERNETES_PORT_443_TCP_ADDR": host}

    def _start(self, rec: ContainerRecord) -> bool:
        spec = self.specs[rec.name]
        runtime = self.runtimes[rec.name]
        try:
            base = {**runtime.base_env(), **self._service_env()}
            gpus = requested(spec)
            if gpus:
                devices = ",".join(map(str, self.agent.gpus.allocate(
                    f"{self.uid}/{rec.name}", self.pod["spec"].get("nodeName", ""), gpus)))
                base.update({"CUDA_VISIBLE_DEVICES": devices, "NVIDIA_VISIBLE_DEVICES": devices})
            env = container_env(self.pod, spec, base, self.agent.lookup.get, self.agent.capacity)
            argv = command_line(spec, env)
        except ContainerConfigError as err:
            rec.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(err)}}
            self.restart_at[rec.name] = time.monotonic() + 1.0  # retried until the referenced object exists
            self._event("Warning", "Failed", f"Error: {err}")
            return False
        run_id = f"{rec.name}-{rec.restart_count}"
        cgroup = None
        limit = memory_limit(spec)
        if limit and self.agent.memcg is not None:
            try:
                cgroup = self.agent.memcg.create(f"{self.uid}-{run_id}", limit)
            except OSError as err:
                rec.state = {"waiting": {"reason": "CreateContainerError",
                                         "message": f"memory cgroup for limit {limit} bytes: {err}"}}
                self.restart_at[rec.name] = time.monotonic() + 1.0
                self._event("Warning", "Failed", f"Error: cannot create the memory cgroup: {err}")
                return False
        for sub in ("logs", "term", "run"):
            (self.dir / sub).mkdir(exist_ok=True)
        log_path = self.dir / "logs" / f"{run_id}.log"
        term_file = self.dir / "term" / run_id
        term_file.write_bytes(b"")
        mounts = volumes.container_mounts(spec, self.volume_paths)
        mounts.append(volumes.Mount(str(term_file), spec.get("terminationMessagePath") or "/dev/termination-log"))
        if self.hosts_path is not None and podhosts.wants_managed_hosts(self.pod, spec):
            mounts.append(volumes.Mount(str(self.hosts_path), "/etc/hosts", read_only=True))
        mounts += volumes.hidden_runtime(runtime.paths(), mounts)
        spec_file = self.dir / "run" / f"{run_id}.json"
        spec_file.write_text(json.dumps({"mounts": [m.to_json() for m in mounts], "env": env, "argv": argv,
                                         "workingDir": spec.get("workingDir") or "",
                                         "devStage": str(self.dir / "run" / f"{run_id}-dev"),
                                         "cgroup": str(cgroup) if cgroup else ""}))
        with open(log_path, "ab") as out:
            popen = subprocess.Popen([sys.executable, "-I", "-S", SANDBOX, str(spec_file)], stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env={},
                                     cwd="/", close_fds=True)
        proc = Proc.of(popen.pid)
        self.agent.registry.add(proc)
        self.pidfds[rec.name] = _pidfd(popen.pid)
        started = now()
        self.procs[rec.name] = (popen, proc, started)
        self.logs.setdefault(rec.name, []).append(log_path)
        self.term_files[rec.name] = term_file
        if cgroup:
            self.cgroups[rec.name] = cgroup
        rec.state = {"running": {"startedAt": started}}
        rec.container_id = f"quranft://{self.uid[:8]}-{run_id}-{popen.pid}"
        self._event("Normal", "Started", f"Started container {rec.name}", once=False)
        return True

    def _reap(self, rec: ContainerRecord, block: bool = False) -> None:
        popen, proc, started = self.procs[rec.name]
        code = popen.wait() if block else popen.poll()
        if code is None:
            return
        del self.procs[rec.name]
        _close(self.pidfds.pop(rec.name, None))
        self.agent.registry.remove(proc)
        sig = -code if code < 0 else None
        exit_code = 128 + sig if sig else code
        reason = None
        cgroup = self.cgroups.pop(rec.name, None)
        if cgroup is not None:
            # As with containerd: an OOM kill in the container's cgroup makes the reason OOMKilled, whatever
            # process it hit (the main one dies of SIGKILL: exit code 137).
            if self.agent.memcg.oom_killed(cgroup, sig):
                reason = "OOMKilled"
            peak = self.agent.memcg.peak(cgroup)
            log.info("pod %s/%s container %s exited %s%s; peak memory %s MiB", self.ns, self.name, rec.name,
                     exit_code, " (OOMKilled)" if reason else "", peak // 2**20 if peak is not None else "?")
            self.agent.memcg.remove(cgroup)
        spec = self.specs[rec.name]
        text = self.term_files[rec.name].read_bytes()[:4096].decode(errors="replace")
        message = termination_message(text, exit_code, spec.get("terminationMessagePolicy") or "File",
                                      _tail(self.logs[rec.name][-1]))
        rec.state = terminated_state(exit_code, started, message, sig, reason)

    def _kill_all(self, grace: float) -> None:
        """SIGTERM every container's process group, wait up to `grace` s, then SIGKILL."""
        running = [self.procs[r.name][1] for r in self.init + self.main if r.name in self.procs]
        for proc in running:
            _killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.procs and time.monotonic() < deadline:
            for rec in self.init + self.main:
                if rec.name in self.procs:
                    self._reap(rec)
            time.sleep(0.05)
        for proc in running:  # also catches children that outlived their group leader
            _killpg(proc.pid, signal.SIGKILL)
        for rec in self.init + self.main:
            if rec.name in self.procs:
                self._reap(rec, block=True)

    # ------------------------------------------------------------------------------------ deletion

    def _finish(self) -> None:
        if self.procs:
            self._event("Normal", "Killing", "Stopping container(s)")
            self._kill_all(self.grace)
            if self.phase not in ("Succeeded", "Failed") and all(r.terminated for r in self.main):
                # A deleted pod ends in a terminal phase, as the kubelet does (1.27+): the Job controller
                # waits for it before creating a replacement when the Job has a podFailurePolicy.
                self.phase = pod_phase(self.init, self.main, "Never", self.failed_init)
            if not self.gone:
                self._push()
        volumes.release(self.dir)
        self.agent.gpus.release_prefix(f"{self.uid}/")
        if self.delete_requested.is_set() and not self.gone:
            # Confirm the deletion, as the kubelet does once the containers are gone.
            self.agent.kube.delete(f"/api/v1/namespaces/{self.ns}/pods/{self.name}",
                                   {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}})
        if self.delete_requested.is_set():
            shutil.rmtree(self.dir, ignore_errors=True)
        self._close_wakers()
        self.agent.worker_done(self)

    def _close_wakers(self) -> None:
        with self._wake_lock:
            for fd in [self._wake_r, self._wake_w, *self.pidfds.values()]:
                _close(fd)
            self._wake_r = self._wake_w = -1
        self.pidfds.clear()

    # ------------------------------------------------------------------------------------ API calls

    def _push(self) -> None:
        if self.gone:
            return
        # Without the server's foreign conditions the final Failed status would drop DisruptionTarget, and
        # a Job's podFailurePolicy (Ignore on DisruptionTarget) would count an evicted pod as a failure.
        # No race on eviction/preemption: the condition is written before the deletion that makes us push.
        keep = foreign_conditions((self.pod.get("status") or {}).get("conditions"))
        status = pod_status(self.phase, self.init, self.main, self.start_time, self.since, self.reason,
                            self.message, keep_conditions=keep)
        if status == self._pushed:
            return
        try:
            self.agent.kube.merge_patch(f"/api/v1/namespaces/{self.ns}/pods/{self.name}/status",
                                        {"status": status})
            self._pushed = json.loads(json.dumps(status))
            self._push_failed = False
        except Exception as err:  # noqa: BLE001 - a 404 means the pod is gone; anything else retries later
            if getattr(err, "status", None) == 404:
                self.gone = True
                self.delete_requested.set()
            else:
                self._push_failed = True
                log.warning("pod %s/%s: status update failed: %s", self.ns, self.name, err)

    def _event(self, kind: str, reason: str, message: str, once: bool = True) -> None:
        key = f"{reason}:{message}"
        if once and key in self._events_sent:
            return
        self._events_sent.add(key)
        self.agent.event(self.pod, kind, reason, message)


def _pidfd(pid: int) -> int | None:
    """A descriptor that turns readable when the (not yet reaped) process `pid` exits; None without pidfds."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # Python without it, Linux < 5.3, or a seccomp filter refusing it
        return None


def _close(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path, size: int = 8192) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(path) - size))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""
