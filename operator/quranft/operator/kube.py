"""Thin, idempotent API calls the handlers need (the kubernetes client; one function per verb we use)."""
from __future__ import annotations

import json
import logging
from typing import Any, Mapping

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from quranft.contract.progress import PROGRESS_PREFIX, parse_progress  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


class Kube:
    """One shared API client; every write is create-or-adopt by deterministic name."""

    def __init__(self, api_client: client.ApiClient | None = None):
        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api_client = client.ApiClient()
        self.api = api_client
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    def close(self) -> None:
        self.api.close()

    # create-or-adopt: a 409 means the object already exists (a retry, or a restart); adopt it.
    def ensure(self, obj: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """(object, created). An existing object of the same name is returned unchanged."""
        kind, ns, name = obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"]
        create, read = {
            "Job": (self.batch.create_namespaced_job, self.batch.read_namespaced_job),
            "ConfigMap": (self.core.create_namespaced_config_map, self.core.read_namespaced_config_map),
            "PersistentVolumeClaim": (self.core.create_namespaced_persistent_volume_claim,
                                      self.core.read_namespaced_persistent_volume_claim),
            # The headless Service of a multi-node run (builders.build_rank_service): create and get only.
            "Service": (self.core.create_namespaced_service, self.core.read_namespaced_service),
        }[kind]
        try:
            created = create(ns, obj, _preload_content=False)
            return json.loads(created.data), True
        except ApiException as exc:
            if exc.status != 409:
                raise
        existing = read(name, ns, _preload_content=False)
        return json.loads(existing.data), False

    def kueue_workload(self, namespace: str, job_uid: str) -> dict[str, Any] | None:
        """Kueue's Workload of a Job (label kueue.x-k8s.io/job-uid); None without Kueue (404) or RBAC (403)."""
        try:
            items = self.custom.list_namespaced_custom_object(
                "kueue.x-k8s.io", "v1beta2", namespace, "workloads",
                label_selector=f"kueue.x-k8s.io/job-uid={job_uid}")["items"]
        except ApiException as exc:
            if exc.status in (403, 404):
                return None
            raise
        return items[0] if items else None

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.batch.read_namespaced_job(name, namespace, _preload_content=False).data)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def set_job_suspend(self, namespace: str, name: str, suspend: bool) -> None:
        self.batch.patch_namespaced_job(name, namespace, {"spec": {"suspend": suspend}})

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise

    def failed_create_message(self, namespace: str, job_name: str) -> str | None:
        """The Job controller's latest FailedCreate event (e.g. `exceeded quota: ...`), if any."""
        events = self.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.kind=Job,involvedObject.name={job_name},reason=FailedCreate",
            _preload_content=False)
        items = json.loads(events.data).get("items") or []
        if not items:
            return None
        items.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return items[-1].get("message")

    def last_progress(self, namespace: str, pod: str, tail_lines: int = 200) -> dict[str, Any] | None:
        """The last progress line of a pod's log (quranft.contract.progress); None when there is none yet."""
        try:
            text = self.core.read_namespaced_pod_log(pod, namespace, tail_lines=tail_lines,
                                                     _preload_content=False).data.decode(errors="replace")
        except ApiException as exc:
            if exc.status in (400, 404):  # container not started yet, or the pod is gone
                return None
            raise
        return parse_progress(text)

