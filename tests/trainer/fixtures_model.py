"""Fixtures for the model-side trainer tests: synthetic recitations (real espeak-ng), a prepared workspace
(real `prepare`), configs for short tiny-model runs, and a helper that runs the CLI in a subprocess."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = [REPO / "contract", REPO / "operator", REPO / "trainer", REPO / "benchmark"]


def ensure_espeak() -> None:
    """The synth tests need espeak-ng; install it (Debian) rather than skip."""
    if shutil.which("espeak-ng"):
        return
    subprocess.run(["apt-get", "install", "-y", "-q", "espeak-ng"], check=True, capture_output=True, timeout=600)
    assert shutil.which("espeak-ng"), "apt-get install espeak-ng did not provide espeak-ng"


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, SOURCE_ROOTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("QURANFT_TERMINATION_LOG", None)
    env.update(extra)
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "quranft.cli", "trainer", *args]


def start_cli(*args: str, log: Path) -> subprocess.Popen:
    fh = open(log, "wb")
    return subprocess.Popen(cli_command(*args), cwd=REPO, env=cli_env(), stdout=fh, stderr=subprocess.STDOUT)


def wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def write_config(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc))
    return path


def run_config(workspace: Path, dataset: Path, name: str, **training) -> dict:
    """A short tiny-model run on the synthetic set (all training fields overridable)."""
    return {
        "run": {"name": name, "namespace": "tests", "workspace": str(workspace)},
        "data": {"source": "local", "localPath": str(dataset), "minDurationSeconds": 0.3},
        "training": {"baseModel": "tiny", "mode": "ctcOnly", "maxSteps": 20, "batchSize": 4,
                     "learningRate": 3e-3, "warmupSteps": 2, "valCheckInterval": 10,
                     "checkpointEveryNSteps": 10, "freeze": {"encoderLayers": 0}, **training},
        "metrics": {"port": 0, "progressIntervalSeconds": 0.5},
    }


@pytest.fixture(scope="session")
def synth_112(tmp_path_factory) -> Path:
    """Synthetic recitations of surah 112 (4 verses): 8 train, 4 validation, 8 held-out clips."""
    from quranft.trainer.synth import write_synth_data

    ensure_espeak()
    out = tmp_path_factory.mktemp("synth-112")
    write_synth_data(out, [112], log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def prepared_workspace(tmp_path_factory, synth_112) -> Path:
    """A workspace whose data/<hash>/ holds the prepared synthetic set (shared by the training tests)."""
    from quranft.contract.config import RunConfig
    from quranft.trainer.prepare import prepare

    workspace = tmp_path_factory.mktemp("workspace")
    prepare(RunConfig.model_validate(run_config(workspace, synth_112 / "dataset", "prep")), log=lambda _: None)
    return workspace
