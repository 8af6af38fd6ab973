"""An operator Env whose operator talks to the API server through a FaultProxy."""
from __future__ import annotations

from pathlib import Path
from unittest import mock

import yaml
from clusterkit import Env
from faultproxy import FaultProxy

from quranft.operator import access


def api_server_url(kubeconfig: Path) -> str:
    doc = yaml.safe_load(Path(kubeconfig).read_text())
    return doc["clusters"][0]["cluster"]["server"]


class ProxiedEnv(Env):
    """clusterkit.Env, except the operator's ServiceAccount kubeconfig points at the proxy."""

    def __init__(self, cluster, namespace: str, workdir: Path, seed: int):
        super().__init__(cluster, namespace, workdir)
        self.proxy = FaultProxy(api_server_url(cluster.kubeconfig), cluster.state_dir / "pki", seed).start()

    def start_operator(self, *extra: str) -> None:
        real = access.service_account_kubeconfig

        def via_proxy(admin, out, **kwargs):
            path = real(admin, out, **kwargs)  # the token request itself goes straight to the API server
            doc = yaml.safe_load(path.read_text())
            doc["clusters"][0]["cluster"]["server"] = self.proxy.url
            path.write_text(yaml.safe_dump(doc))
            return path
        with mock.patch.object(access, "service_account_kubeconfig", via_proxy):
            super().start_operator(*extra)

    def close(self) -> None:
        super().close()
        self.proxy.stop()
