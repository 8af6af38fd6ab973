"""Raw-JSON access to the API server over the `kubernetes` client's transport (auth, TLS, kubeconfig).

The node agent works on plain dicts (camelCase, as the API serves them) and needs JSON merge patches for
pod status (lists replaced whole), so it bypasses the generated models but keeps the client's config
loading and connection handling.
"""
from __future__ import annotations

import json
from typing import Iterator
from urllib.parse import quote

from kubernetes import config as kconfig
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException


class Kube:
    def __init__(self, api_client: ApiClient):
        self.api = api_client

    @classmethod
    def from_kubeconfig(cls, path: str) -> "Kube":
        return cls(kconfig.new_client_from_config(config_file=path))

    @property
    def host(self) -> str:
        return self.api.configuration.host

    def _call(self, method: str, path: str, query: dict | None = None, body=None,
              content_type: str = "application/json", timeout: float | tuple | None = 30):
        headers = {"Accept": "application/json", "Content-Type": content_type}
        request = self.api.param_serialize(
            method, path, query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
            header_params=headers, body=body, auth_settings=["BearerToken"])
        return self.api.call_api(*request, _request_timeout=timeout)

    def request(self, method: str, path: str, query: dict | None = None, body=None,
                content_type: str = "application/json", timeout: float | tuple | None = 30) -> dict:
        resp = self._call(method, path, query, body, content_type, timeout)
        data = resp.read()
        if not 200 <= resp.status <= 299:
            raise ApiException(status=resp.status, reason=resp.reason, body=data.decode(errors="replace"))
        return json.loads(data) if data else {}

    def get(self, path: str, query: dict | None = None) -> dict | None:
        try:
            return self.request("GET", path, query)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def create(self, path: str, body: dict) -> dict | None:
        """POST; None when the object already exists."""
        try:
            return self.request("POST", path, body=body)
        except ApiException as err:
            if err.status == 409:
                return None
            raise

    def merge_patch(self, path: str, body: dict) -> dict:
        return self.request("PATCH", path, body=body, content_type="application/merge-patch+json")

    def delete(self, path: str, body: dict | None = None) -> None:
        try:
            self.request("DELETE", path, body=body)
        except ApiException as err:
            if err.status not in (404, 409):  # gone already / precondition (another uid): nothing to do
                raise

    def watch(self, path: str, query: dict | None = None, timeout_seconds: int = 60) -> Iterator[dict]:
        """List-then-watch events ({"type", "object"}) until the server closes the stream.

        Starts with a synthetic ADDED for every listed object; a 410 (expired resourceVersion) simply
        ends the stream, and the caller lists again.
        """
        listing = self.request("GET", path, query)
        for item in listing.get("items") or []:
            yield {"type": "ADDED", "object": item}
        params = dict(query or {}, watch="1", allowWatchBookmarks="true",
                      resourceVersion=listing["metadata"]["resourceVersion"], timeoutSeconds=str(timeout_seconds))
        resp = self._call("GET", path, params, timeout=(10, timeout_seconds + 30))
        if resp.status != 200:
            resp.read()
            return
        stream = resp.response
        try:
            buffer = b""
            for chunk in stream.stream(65536, decode_content=False):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event["type"] == "ERROR":
                        return
                    if event["type"] != "BOOKMARK":
                        yield event
        finally:
            stream.release_conn()


def path_for(kind: str, namespace: str = "", name: str = "") -> str:
    """REST path of the core/v1, batch and storage kinds the agent touches."""
    plural = {"Pod": "pods", "ConfigMap": "configmaps", "Secret": "secrets", "Node": "nodes",
              "PersistentVolumeClaim": "persistentvolumeclaims", "PersistentVolume": "persistentvolumes",
              "Event": "events", "ServiceAccount": "serviceaccounts", "Service": "services"}
    if kind in plural:
        base = "/api/v1"
        resource = plural[kind]
    elif kind == "Lease":
        base, resource = "/apis/coordination.k8s.io/v1", "leases"
    elif kind == "Job":
        base, resource = "/apis/batch/v1", "jobs"
    elif kind == "StorageClass":
        base, resource = "/apis/storage.k8s.io/v1", "storageclasses"
    else:
        raise ValueError(kind)
    path = base + (f"/namespaces/{quote(namespace)}" if namespace else "") + f"/{resource}"
    return path + (f"/{quote(name)}" if name else "")
