"""Pure builders of the campaign's own Jobs: the report (and, for a later Manual promotion, the promote) Job, and
the webhook delivery Job, each with the ConfigMap holding its input. Deterministic names (create; 409 = adopt)
and the stage pods' conventions (builders: restricted security, the workspace claim at /workspace, read-only
root, /tmp for HOME)."""
from __future__ import annotations

import copy
import json
from typing import Any, Mapping

from quranft.contract.exits import FATAL_EXIT_CODES
from quranft.contract.workspace import WORKSPACE

from . import builders
from .campaign_notify import SENDER, body_bytes
from .campaign_plan import campaign_labels, claim_name, owner_reference
from .campaign_spec import CampaignSpec
from .settings import OperatorSettings

INPUT_DIR = "/etc/quranft-campaign"
INPUT_FILE = f"{INPUT_DIR}/campaign.json"
NOTIFY_DIR = "/etc/quranft-notify"
NOTIFY_KEY_DIR = "/var/run/secrets/quranft/notify"
# The report and promote Jobs run the same CLI; a stub replaces both with the "report" stage command (tests).
REPORT_COMMAND_KEY = "report"


def job_name(campaign: str, kind: str) -> str:
    """kind: report | promote | notify-finished | notify-promoted."""
    return builders.child_name(campaign, kind)


def input_name(campaign: str, kind: str) -> str:
    return builders.child_name(campaign, f"{kind}-input")


def report_image(spec: CampaignSpec, settings: OperatorSettings) -> str:
    """The template's benchmark or trainer image (it has the benchmark package), else the CPU trainer image."""
    images = spec.template.get("images") or {}
    return images.get("benchmark") or images.get("trainer") or settings.default_image(0)


def report_command(meta: Mapping[str, Any], settings: OperatorSettings) -> list[str]:
    overrides = dict(settings.stage_commands)
    if settings.allow_command_overrides:
        raw = (meta.get("annotations") or {}).get(builders.COMMAND_ANNOTATION)
        if raw:
            overrides.update(json.loads(raw))
    if REPORT_COMMAND_KEY in overrides:
        return list(overrides[REPORT_COMMAND_KEY])
    return ["quranft", "benchmark", "campaign-report", "--input", INPUT_FILE, "--workspace", WORKSPACE]


def _meta(name: str, meta: Mapping[str, Any], component: str) -> dict[str, Any]:
    return {"name": name, "namespace": meta["namespace"], "labels": campaign_labels(meta["name"], component),
            "ownerReferences": [owner_reference(meta)]}


def input_config_map(meta: Mapping[str, Any], kind: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(input_name(meta["name"], kind), meta, kind),
            "data": {"campaign.json": json.dumps(doc, indent=2, sort_keys=True)}}


def _container(name: str, image: str, pull_policy: str, command: list[str], cpu: str, memory: str,
               mounts: list[dict[str, Any]], env: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "name": name, "image": image, "imagePullPolicy": pull_policy, "command": command,
        "env": [{"name": "HOME", "value": "/tmp"}, *(env or [])],
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *mounts],
        "securityContext": copy.deepcopy(builders.RESTRICTED_CONTAINER_SECURITY),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _job(name: str, meta: Mapping[str, Any], component: str, container: dict[str, Any],
         volumes: list[dict[str, Any]], backoff: int, placement: Mapping[str, Any] | None = None) -> dict[str, Any]:
    labels = campaign_labels(meta["name"], component)
    pod: dict[str, Any] = {
        "restartPolicy": "Never", "automountServiceAccountToken": False,
        "securityContext": copy.deepcopy(builders.RESTRICTED_POD_SECURITY),
        "terminationGracePeriodSeconds": 30,
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}, *volumes],
        **copy.deepcopy(dict(placement or {})),
    }
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {**_meta(name, meta, component), "annotations": dict(builders.CHECKOV_JUSTIFIED_SKIPS)},
        "spec": {
            "backoffLimit": backoff, "completions": 1, "parallelism": 1,
            "podFailurePolicy": {"rules": [
                {"action": "FailJob", "onExitCodes": {"operator": "In", "values": list(FATAL_EXIT_CODES)}},
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            ]},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def _placement(spec: CampaignSpec) -> dict[str, Any]:
    """The template's node placement: with a ReadWriteOnce claim the report pod must reach the claim's node."""
    res = spec.template.get("resources") or {}
    out: dict[str, Any] = {}
    if res.get("nodeSelector"):
        out["nodeSelector"] = dict(res["nodeSelector"])
    tolerations = list(res.get("tolerations") or [])
    if int(res.get("gpus", 1) or 0):
        tolerations.append({"key": builders.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    if tolerations:
        out["tolerations"] = tolerations
    return out


def report_job(spec: CampaignSpec, meta: Mapping[str, Any], kind: str, settings: OperatorSettings) -> dict[str, Any]:
    """`quranft benchmark campaign-report` on the claim (kind report, or promote for a later Manual promotion)."""
    images = spec.template.get("images") or {}
    container = _container(
        kind, report_image(spec, settings), images.get("pullPolicy") or settings.image_pull_policy,
        report_command(meta, settings), "1", "2Gi",
        [{"name": "workspace", "mountPath": WORKSPACE},
         {"name": "input", "mountPath": INPUT_DIR, "readOnly": True}],
        # MLflow: the report registers a promoted model (benchmark/registry.py) when tracking is configured.
        env=builders.tracking_env(meta, settings))
    volumes = [{"name": "workspace", "persistentVolumeClaim": {"claimName": claim_name(spec, meta["name"])}},
               {"name": "input", "configMap": {"name": input_name(meta["name"], kind)}}]
    return _job(job_name(meta["name"], kind), meta, kind, container, volumes, backoff=2, placement=_placement(spec))


def notify_config_map(meta: Mapping[str, Any], event: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    kind = f"notify-{event}"
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(input_name(meta["name"], kind), meta, kind),
            "data": {"payload.json": body_bytes(payload).decode()}}


def notify_job(spec: CampaignSpec, meta: Mapping[str, Any], event: str, settings: OperatorSettings) -> dict[str, Any]:
    """POST the payload (campaign_notify.SENDER); the HMAC key arrives as a mounted file, never through the
    operator."""
    assert spec.notify is not None
    kind = f"notify-{event}"
    images = spec.template.get("images") or {}
    command = ["python", "-c", SENDER, f"{NOTIFY_DIR}/payload.json", spec.notify.url]
    mounts = [{"name": "payload", "mountPath": NOTIFY_DIR, "readOnly": True}]
    volumes: list[dict[str, Any]] = [{"name": "payload", "configMap": {"name": input_name(meta["name"], kind)}}]
    ref = spec.notify.secret_ref
    if ref is not None:
        command.append(f"{NOTIFY_KEY_DIR}/key")
        mounts.append({"name": "hmac-key", "mountPath": NOTIFY_KEY_DIR, "readOnly": True})
        volumes.append({"name": "hmac-key", "secret": {"secretName": ref.name, "items": [{"key": ref.key, "path": "key"}]}})
    container = _container(kind, report_image(spec, settings), images.get("pullPolicy") or settings.image_pull_policy,
                           command, "100m", "256Mi", mounts)
    return _job(job_name(meta["name"], kind), meta, kind, container, volumes, backoff=1)
