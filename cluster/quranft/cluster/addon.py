"""What the embedded cluster's add-on processes (kueue.py, mlflow_addon.py) share: a state file recording the
process and ports under the cluster's state directory, its log, and a probe of a loopback health endpoint.

Layout: <cluster state>/<name>/state.json and <cluster state>/logs/<name>.log."""
from __future__ import annotations

import contextlib
import json
import subprocess
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from .procs import Proc, stop as stop_procs


@dataclass
class AddonState:
    proc: dict = field(default_factory=dict)  # Proc.to_json() of the add-on's process; {} when none
    started_at: float = 0.0


S = TypeVar("S", bound=AddonState)


class AddonFiles(Generic[S]):
    """One add-on's state file and log. Callers hold the cluster's StateDir lock around changes."""

    def __init__(self, cluster_root: Path, name: str, state_type: type[S]):
        self.root = cluster_root / name
        self.state = self.root / "state.json"
        self.log = cluster_root / "logs" / f"{name}.log"
        self.state_type = state_type

    def load(self) -> S:
        """The recorded state; an empty one when there is none or it is unreadable (then nothing runs)."""
        try:
            return self.state_type(**json.loads(self.state.read_text()))
        except (OSError, ValueError, TypeError):
            return self.state_type()

    def save(self, state: S) -> None:
        """Written to a temporary file and renamed over: a reader never sees half a file."""
        tmp = self.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        tmp.replace(self.state)

    def running(self) -> S | None:
        """The recorded state when its process is still alive."""
        state = self.load()
        return state if state.proc and Proc.from_json(state.proc).alive() else None

    def stop(self, grace: float = 10.0) -> bool:
        """Stop the recorded process (if any) and forget it; True when it was running."""
        state = self.load()
        was = bool(state.proc) and Proc.from_json(state.proc).alive()
        if state.proc:
            stop_procs([Proc.from_json(state.proc)], grace=grace)
        self.state.unlink(missing_ok=True)
        return was

    def tail(self, lines: int = 20) -> str:
        """The last lines of the log, for an error message."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def build_output(script: Path, error: type[Exception]) -> Path:
    """The path an add-on's build script built or reused: the last line it prints."""
    out = subprocess.run(["bash", str(script)], stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        raise error(f"{script} failed with exit code {out.returncode}")
    return Path(out.stdout.strip().splitlines()[-1])


def http_status(url: str, timeout: float = 2.0) -> int:
    """Status of a plain GET (the add-ons' health endpoints are HTTP on loopback); 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0
