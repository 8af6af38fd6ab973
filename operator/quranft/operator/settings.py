"""Operator-wide settings: image defaults, budgets, intervals. Filled from flags/env by `cli.py`."""
from __future__ import annotations

import json
import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from quranft.contract.keys import GROUP, KIND, PLURAL, VERSION  # noqa: F401  (re-exported)

from .stages import STAGES  # noqa: F401  (re-exported; the order lives in the one stage table)

IMAGE_REPO = "ghcr.io/quran-finetune"
DEFAULT_TAG = "0.1.0"


class OperatorSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    image_tag: str = Field(DEFAULT_TAG, description="Tag of the default stage images.")
    gpu_image: str = Field("", description="Default trainer image when gpus > 0 (empty: <repo>/trainer:<tag>).")
    cpu_image: str = Field("", description="Default trainer image when gpus == 0 (empty: <repo>/trainer-cpu:<tag>).")
    image_pull_policy: str = "IfNotPresent"
    max_concurrent_trainings: int = Field(0, ge=0, description="Training Jobs running at once, all namespaces (0: no limit).")
    max_gpus_per_namespace: int = Field(0, ge=0, description="GPUs held by training Jobs per namespace (0: no limit).")
    # Passes run when a resource or one of its children changes (handlers.py); this is only the safety net for a
    # change missed (Helm `operator.reconcileIntervalSeconds`).
    reconcile_interval: float = Field(60.0, gt=0, description="Seconds between safety resyncs of each resource.")
    # Progress: the training pod's rank 0 pushes its record to the operator's HTTPS endpoint (progress_server.py);
    # status.progress is written at most once per progress_interval. A pod that pushed nothing for
    # progress_stale_seconds has its log read instead (old images, blocked egress).
    progress_interval: float = Field(10.0, gt=0, description="Seconds between writes of status.progress.")
    # All runs together (progress_store.py): beyond rate x interval training runs each run's status.progress is
    # written every runs / rate seconds instead, so idle training costs the API server a flat rate.
    progress_writes_per_second: float = Field(10.0, ge=0, description="status.progress writes per second, all runs "
                                                                       "together (0: no limit).")
    progress_push: bool = Field(True, description="Serve the progress endpoint (false: read the training logs).")
    progress_port: int = Field(0, ge=0, le=65535, description="HTTPS port of the progress endpoint (0: a free port).")
    progress_address: str = Field("127.0.0.1", description="Address the progress endpoint binds.")
    progress_url: str = Field("", description="Base URL the training pods push to (empty: https://127.0.0.1:<port>, "
                                              "the embedded cluster, whose pods share the host's loopback).")
    progress_cert_file: str = Field("", description="TLS certificate of the endpoint (empty: self-signed at start-up).")
    progress_key_file: str = Field("", description="Its private key.")
    progress_ca_file: str = Field("", description="The CA that signed it, handed to the pods (empty: the certificate).")
    progress_stale_seconds: float = Field(60.0, ge=0, description="Seconds without a push before the log is read.")
    # Filled at start-up by the endpoint: the URL and CA PEM each training pod gets (builders.progress_env).
    progress_endpoint: str = Field("", exclude=True, repr=False)
    progress_ca_pem: str = Field("", exclude=True, repr=False)
    metrics_port: int = Field(8080, ge=0, le=65535, description="Prometheus port of the operator (0: off).")
    termination_grace_seconds: int = Field(300, ge=1, description="Grace for a training pod to finish a step and checkpoint.")
    # Start-up deadlines of a stage pod when the run sets no spec.startupDeadlineSeconds (status.startup_problem);
    # a pod the scheduler cannot place (all GPUs busy) then waits indefinitely.
    image_pull_deadline_seconds: int = Field(600, ge=1, description="Seconds an image pull may fail before the run fails (ImagePullFailure).")
    startup_deadline_seconds: int = Field(300, ge=1, description="Seconds any other start-up wait (secrets, volumes) may last.")
    # Cluster-wide placement of GPU training pods (Helm `workloads.gpu`), merged under each run's own.
    gpu_node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels GPU pods must match.")
    gpu_tolerations: list[dict[str, Any]] = Field(default_factory=list, description="Extra tolerations of GPU pods.")
    # MLflow (Helm `mlflow.*`; quranft.trainer.tracking): every stage pod logs into its resource's MLflow run.
    mlflow_tracking_uri: str = Field("", description="MLflow tracking server given to every stage pod (empty: no tracking).")
    mlflow_credentials_secret: str = Field("", description="Secret in each run's namespace with keys username and password for the MLflow server.")
    mlflow_experiment: str = Field("", description="MLflow experiment of every run (empty: the run's namespace).")
    # Tests only: per-resource command overrides through annotations (see builders.COMMAND_ANNOTATION).
    allow_command_overrides: bool = False
    # Per-stage command overrides for every resource, e.g. {"train": ["python", "-c", "..."]}.
    stage_commands: dict[str, list[str]] = Field(default_factory=dict)

    def default_image(self, gpus: int) -> str:
        if gpus > 0:
            return self.gpu_image or f"{IMAGE_REPO}/trainer:{self.image_tag}"
        return self.cpu_image or f"{IMAGE_REPO}/trainer-cpu:{self.image_tag}"


ENV_PREFIX = "QURANFT_OPERATOR_"


def settings_from_env(env: dict[str, str] | None = None, **overrides: Any) -> OperatorSettings:
    """Settings from QURANFT_OPERATOR_<FIELD> variables (JSON for dicts), then explicit overrides."""
    env = dict(os.environ if env is None else env)
    values: dict[str, Any] = {}
    for name, field in OperatorSettings.model_fields.items():
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        values[name] = json.loads(raw) if field.annotation not in (str,) and raw[:1] in "{[" else raw
    values.update({k: v for k, v in overrides.items() if v is not None})
    return OperatorSettings.model_validate(values)
