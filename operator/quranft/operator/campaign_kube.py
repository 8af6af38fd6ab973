"""Thin API calls of the campaign controller (custom objects); Jobs, ConfigMaps and claims go through kube.Kube."""
from __future__ import annotations

import json
from typing import Any, Mapping

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from quranft.contract.keys import GROUP, PLURAL, VERSION

from .campaign_spec import CAMPAIGN_PLURAL, STOP_ANNOTATION
from .kube import Kube


def api_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError):
        return str(exc.body or exc.reason)


class CampaignKube:
    def __init__(self, kube: Kube):
        self.kube = kube
        self.custom = client.CustomObjectsApi(kube.api)

    def _get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def get_campaign(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(CAMPAIGN_PLURAL, namespace, name)

    def get_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(PLURAL, namespace, name)

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, CAMPAIGN_PLURAL, name,
                                                                 {"status": dict(status)})

    def dry_run(self, body: Mapping[str, Any]) -> str | None:
        """The API server's rejection of creating this child (schema with strict field validation, CEL, admission),
        or None. An existing object of that name (409) is no rejection: it is adopted or reported later."""
        try:
            self.custom.create_namespaced_custom_object(GROUP, VERSION, body["metadata"]["namespace"], PLURAL,
                                                        dict(body), dry_run="All", field_validation="Strict")
        except ApiException as exc:
            if exc.status == 409:
                return None
            if exc.status in (400, 422):
                return api_message(exc)
            raise
        return None

    def create_run(self, body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """(object, created); an existing one of the same name is returned unchanged (409 = adopt or conflict)."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        try:
            return self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, dict(body),
                                                               field_validation="Strict"), True
        except ApiException as exc:
            if exc.status != 409:
                raise
        existing = self.get_run(ns, name)
        if existing is None:  # deleted in between: the next pass creates it
            raise ApiException(status=409, reason=f"QuranFineTune {name} was being deleted")
        return existing, False

    def request_stop(self, namespace: str, name: str, reason: str) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                   {"metadata": {"annotations": {STOP_ANNOTATION: reason[:1000]}}})
