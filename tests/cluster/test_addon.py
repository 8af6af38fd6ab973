"""quranft.cluster.addon, the state file, process record and health probe the Kueue and MLflow add-ons share:
with a real process and a real loopback HTTP server."""
from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from quranft.cluster.addon import AddonFiles, AddonState, http_status
from quranft.cluster.procs import Proc


@dataclass
class ProbeState(AddonState):
    ports: dict[str, int] = field(default_factory=dict)


@pytest.fixture
def files(tmp_path):
    f = AddonFiles(tmp_path, "probe", ProbeState)
    f.root.mkdir()
    return f


def test_layout_under_the_cluster_state_dir(tmp_path):
    f = AddonFiles(tmp_path, "probe", ProbeState)
    assert (f.root, f.state, f.log) == (tmp_path / "probe", tmp_path / "probe" / "state.json",
                                        tmp_path / "logs" / "probe.log")


def test_state_round_trips_and_a_missing_or_torn_file_reads_as_empty(files):
    assert files.load() == ProbeState()
    files.save(ProbeState(proc={"pid": 1, "start": 2}, started_at=3.5, ports={"health": 8081}))
    assert files.load() == ProbeState(proc={"pid": 1, "start": 2}, started_at=3.5, ports={"health": 8081})
    assert [p.name for p in files.root.iterdir()] == ["state.json"]  # the temporary file was renamed over
    files.state.write_text('{"proc": {"pid": 1')
    assert files.load() == ProbeState()
    files.state.write_text('{"unknown": 1}')
    assert files.load() == ProbeState()


def test_running_and_stop_follow_the_recorded_process(files):
    assert files.running() is None and files.stop() is False
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        files.save(ProbeState(proc=Proc.of(child.pid).to_json()))
        assert files.running() == files.load()
        assert files.stop(grace=5) is True
        assert child.wait(5) is not None
        assert not files.state.exists() and files.running() is None
    finally:
        child.kill()
        child.wait()


def test_tail_is_the_last_lines_of_the_log(files):
    assert files.tail() == ""
    files.log.parent.mkdir()
    files.log.write_text("".join(f"line {i}\n" for i in range(30)))
    assert files.tail(3) == "line 27\nline 28\nline 29"


class _Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/readyz" else 503)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_http_status_of_a_loopback_endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        assert http_status(f"http://127.0.0.1:{port}/readyz") == 200
        assert http_status(f"http://127.0.0.1:{port}/other") == 503
    finally:
        server.shutdown()
        server.server_close()
    assert http_status(f"http://127.0.0.1:{port}/readyz", timeout=1) == 0  # nothing answers


def test_build_output_is_the_scripts_last_line_and_a_failed_build_raises(tmp_path):
    from quranft.cluster.addon import build_output

    ok = tmp_path / "ok.sh"
    ok.write_text("echo building >&2\necho progress\necho /cache/addon/bin\n")
    assert build_output(ok, RuntimeError) == Path("/cache/addon/bin")
    bad = tmp_path / "bad.sh"
    bad.write_text("exit 3\n")
    with pytest.raises(RuntimeError, match="bad.sh failed with exit code 3"):
        build_output(bad, RuntimeError)
