"""An MLflow tracking server (PyPI `mlflow`, its own venv built by scripts/mlflow_venv.sh) as an add-on process
of the embedded cluster: `quranft cluster up --with mlflow`, and the MLflow test fixture.

It runs `mlflow server` on a free loopback port with a SQLite backend store and a local artifact directory,
both under the cluster's state directory, and serves artifacts itself (`--serve-artifacts`: clients upload
and download through the server's REST API, so they need no filesystem access to the artifact directory).
Stage pods share the host's network namespace, so they reach it at http://127.0.0.1:<port>, which the
operator passes to them as MLFLOW_TRACKING_URI.

Why a process and not a pod with a PVC: the embedded cluster runs pods from a fixed mapping of images to local
environments and has no image registry or proxy (see quranft.cluster.images), and MLflow's pins clash with
the trainer's venv; a pod would need an `mlflow` image mapping to this same venv, for no gain in what the
tests prove. On a real cluster the chart's `mlflow.trackingUri` points at the team's own server.

State: <cluster state>/mlflow/ (state.json, port, mlflow.db, artifacts/) and the log <cluster state>/logs/mlflow.log.
A restart (after `stop`, or a crash) reuses the store and, when it is free, the port: the tracking URI that the
operator hands to stage pods stays valid.
`stop(wipe=True)` (what `cluster down` does) also removes the store, as `down` wipes etcd: its runs describe
objects that are gone.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from . import addon
from .addon import AddonFiles, AddonState, http_status
from .binaries import REPO_ROOT
from .controlplane import StateDir, free_ports
from .procs import Proc

BUILD_SCRIPT = REPO_ROOT / "scripts" / "mlflow_venv.sh"
# MLflow 3 sends anonymous usage data by default; nothing here may reach out (and the sandbox cannot).
QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


class MlflowError(RuntimeError):
    pass


@dataclass
class MlflowState(AddonState):
    port: int = 0


@dataclass(frozen=True)
class MlflowServer:
    """A running tracking server of one cluster."""

    root: Path
    log: Path
    port: int

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def ensure_build(log=print) -> Path:
    """The `mlflow` executable of the server venv: `QURANFT_MLFLOW_BIN`, or scripts/mlflow_venv.sh's (built once
    per lock, then reused; the script prints the cold build time)."""
    override = os.environ.get("QURANFT_MLFLOW_BIN")
    path = Path(override) if override else addon.build_output(BUILD_SCRIPT, MlflowError)
    if not os.access(path, os.X_OK):
        raise MlflowError(f"{path} is not an executable mlflow")
    return path


# ----------------------------------------------------------------------------------------------- pure


def command(mlflow_bin: Path, root: Path, port: int) -> list[str]:
    """`mlflow server` with the store under `root`, serving its artifacts, on loopback port `port`."""
    return [str(mlflow_bin), "server",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts",
            "--host", "127.0.0.1", "--port", str(port),
            # One worker: SQLite takes one writer at a time, and a test cluster has few clients.
            "--workers", "1"]


# ---------------------------------------------------------------------------------------------- process


class _Paths(AddonFiles[MlflowState]):
    def __init__(self, cluster_root: Path):
        super().__init__(cluster_root, "mlflow", MlflowState)
        self.port = self.root / "port"  # kept across stops: a restarted server keeps its URI


def healthy(uri: str, timeout: float = 2.0) -> bool:
    """The server's own health endpoint answers 200 OK."""
    return http_status(f"{uri}/health", timeout) == 200


def attach(cluster_root: Path) -> MlflowServer | None:
    """The cluster's running, healthy tracking server, or None."""
    paths = _Paths(cluster_root)
    state = paths.running()
    if state is None:
        return None
    server = MlflowServer(paths.root, paths.log, state.port)
    return server if healthy(server.uri) else None


def start(cluster_root: Path, timeout: float = 120.0, log=print) -> MlflowServer:
    """Start the tracking server of the cluster at `cluster_root` (or return the one running); returns once
    /health answers. The store of an earlier start (same state directory) is reused."""
    paths = _Paths(cluster_root)
    with StateDir(cluster_root).lock():
        running = attach(cluster_root)
        if running:
            log(f"mlflow: already running at {running.uri} (log {paths.log})")
            return running
        paths.stop()  # a server left half-started, or whose port is taken
        return _start_locked(paths, timeout, log)


def _start_locked(paths: _Paths, timeout: float, log) -> MlflowServer:
    mlflow_bin = ensure_build(log)
    t0 = time.monotonic()
    (paths.root / "artifacts").mkdir(parents=True, exist_ok=True)
    paths.log.parent.mkdir(parents=True, exist_ok=True)
    port = _port(paths)
    env = {**os.environ, **QUIET_ENV}
    for name in ("MLFLOW_TRACKING_URI", "PYTHONPATH", "VIRTUAL_ENV"):  # the server's venv, not the caller's
        env.pop(name, None)
    with open(paths.log, "ab") as out_log:
        child = subprocess.Popen(command(mlflow_bin, paths.root, port), cwd=paths.root, stdin=subprocess.DEVNULL,
                                 stdout=out_log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
                                 close_fds=True)
    state = MlflowState(proc=Proc.of(child.pid).to_json(), port=port, started_at=time.time())
    paths.save(state)
    server = MlflowServer(paths.root, paths.log, port)
    proc = Proc.from_json(state.proc)
    deadline = time.monotonic() + timeout
    while not healthy(server.uri):
        if not proc.alive():
            paths.stop()
            raise MlflowError(f"mlflow server exited while starting; last lines of {paths.log}:\n{paths.tail()}")
        if time.monotonic() > deadline:
            paths.stop()
            raise MlflowError(f"timed out waiting for {server.uri}/health; log {paths.log}:\n{paths.tail()}")
        time.sleep(0.3)
    log(f"mlflow: ready in {time.monotonic() - t0:.1f} s at {server.uri} (store {paths.root}, log {paths.log})")
    return server


def _port(paths: _Paths) -> int:
    """The port of the previous start when it is free (pods and the operator hold the URI), else a new one."""
    with contextlib.suppress(OSError, ValueError):
        port = int(paths.port.read_text())
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds (TIME_WAIT is fine)
            sock.bind(("127.0.0.1", port))
        return port
    (port,) = free_ports(1)
    paths.port.write_text(str(port))
    return port


def stop(cluster_root: Path, log=print, wipe: bool = False) -> bool:
    """Stop the cluster's tracking server (if any); True when one was running. `wipe` also removes its store
    (the SQLite file and the artifacts)."""
    paths = _Paths(cluster_root)
    with StateDir(cluster_root).lock():
        was = paths.stop()
        if wipe:
            shutil.rmtree(paths.root, ignore_errors=True)
    if was:
        log("mlflow: stopped" + (" and its store removed" if wipe else ""))
    return was
