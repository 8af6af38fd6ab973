"""The MLflow add-on's pure parts: the server command line and the port a restart keeps. Starting the real
server (its own venv) is tests/reliability/test_mlflow_real.py's fixture."""
from __future__ import annotations

import socket
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
