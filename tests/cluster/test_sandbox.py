"""The container launcher on its own: a private mount namespace with bind mounts at absolute paths."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from quranft.cluster.podworker import SANDBOX


def run_sandbox(tmp_path: Path, mounts: list[dict], script: str) -> subprocess.CompletedProcess:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"mounts": mounts, "env": {"PATH": "/usr/bin:/bin"}, "workingDir": mounts[0]["target"],
                                "argv": ["sh", "-c", script], "devStage": str(tmp_path / "dev-stage")}))
    return subprocess.run([sys.executable, "-I", "-S", SANDBOX, str(spec)], capture_output=True, text=True,
                          timeout=30)


def test_binds_are_private_and_read_only_is_enforced(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("hello")
    term = tmp_path / "term"
    term.write_text("")
    target = f"/tmp/quranft-sandbox-{uuid.uuid4().hex[:8]}"
    term_target = f"/dev/quranft-term-{uuid.uuid4().hex[:8]}"
    ro_target = target + "-ro"
    try:
        check_binds(tmp_path, data, term, target, ro_target, term_target)
    finally:
        for path in (target, ro_target):
            if Path(path).is_dir():
                Path(path).rmdir()


def check_binds(tmp_path, data, term, target, ro_target, term_target):
    result = run_sandbox(tmp_path, [
        {"source": str(data), "target": target, "readOnly": False},
        {"source": str(data), "target": ro_target, "readOnly": True},
        {"source": str(term), "target": term_target, "readOnly": False},
    ], f"cat in.txt; echo; echo out > out.txt; echo done > {term_target}; echo x > /dev/null; "
       f"touch {ro_target}/x 2>/dev/null && echo writable || echo readonly")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["hello", "readonly"]
    assert (data / "out.txt").read_text() == "out\n"  # written through the bind mount
    assert term.read_text() == "done\n"
    assert list(Path(target).iterdir()) == []  # on the host the mount point stays empty
    assert not Path(term_target).exists()  # /dev is private: nothing is created in the host's /dev


def test_missing_command_exits_127(tmp_path: Path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"mounts": [], "env": {"PATH": "/nonexistent"}, "workingDir": "/",
                                "argv": ["no-such-binary"]}))
    result = subprocess.run([sys.executable, "-I", "-S", SANDBOX, str(spec)], capture_output=True, text=True)
    assert result.returncode == 127 and "no-such-binary" in result.stderr
