"""The MLflow add-on's pure parts: the server command line and the port a restart keeps. Starting the real
server (its own venv) is tests/reliability/test_mlflow_real.py's fixture."""
from __future__ import annotations

import socket
import sys
from pathlib import Path

from quranft.cluster import mlflow_addon
from quranft.cluster.mlflow_addon import _Paths, _port, command


def test_server_command_keeps_store_and_artifacts_under_the_state_dir_and_serves_artifacts():
    root = Path("/state/mlflow")
    cmd = command(Path("/venv/bin/mlflow"), root, 5123)
    assert cmd[:2] == ["/venv/bin/mlflow", "server"]
    assert cmd.count("--serve-artifacts") == 1
    args = [a for a in cmd if a != "--serve-artifacts"]
    opts = dict(zip(args[2::2], args[3::2]))
    assert opts == {"--backend-store-uri": "sqlite:////state/mlflow/mlflow.db",
                    "--artifacts-destination": "/state/mlflow/artifacts", "--host": "127.0.0.1", "--port": "5123",
                    "--workers": "1"}


def test_a_restart_keeps_its_port_while_it_is_free(tmp_path):
    paths = _Paths(tmp_path)
    paths.root.mkdir()
    first = _port(paths)
    assert _port(paths) == first  # free again: the tracking URI given to pods stays valid
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first))
        taken.listen()
        other = _port(paths)
    assert other != first and int(paths.port.read_text()) == other


def test_nothing_running_means_no_server(tmp_path):
    assert mlflow_addon.attach(tmp_path) is None
    assert mlflow_addon.stop(tmp_path, log=lambda _: None) is False


FAKE_SERVER = """#!{python}
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
port = int(sys.argv[sys.argv.index("--port") + 1])

class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


def test_start_attach_stop_keep_the_process_in_the_state_file(tmp_path, monkeypatch):
    """The lifecycle through quranft.cluster.addon, with a stand-in `mlflow` that only answers /health (the
    real server is tests/reliability/test_mlflow_real.py's)."""
    fake = tmp_path / "mlflow"
    fake.write_text(FAKE_SERVER.format(python=sys.executable))
    fake.chmod(0o755)
    monkeypatch.setenv("QURANFT_MLFLOW_BIN", str(fake))
    root = tmp_path / "cluster"
    root.mkdir()
    server = mlflow_addon.start(root, timeout=30, log=lambda _: None)
    try:
        assert mlflow_addon.healthy(server.uri)
        assert mlflow_addon.attach(root) == server
        assert mlflow_addon.start(root, log=lambda _: None) == server  # already running: the same one
    finally:
        assert mlflow_addon.stop(root, log=lambda _: None, wipe=True) is True
    assert mlflow_addon.attach(root) is None and not mlflow_addon.healthy(server.uri)
    assert not (root / "mlflow").exists()
