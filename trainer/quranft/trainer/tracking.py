"""MLflow tracking of a QuranFineTune: one MLflow run per resource, shared by its training and benchmark stages,
and a tracking failure never fails a stage.

- **Which run.** The operator gives each stage pod MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME (the resource's
  namespace unless the operator sets one) and QURANFT_RUN_UID (the resource's uid). A stage finds the run tagged
  `quranft.uid = <uid>` in that experiment, or creates it (`find_or_create_run`): the training Job's retries, a
  resumed training and the benchmark all log into the same run. MLFLOW_RUN_ID names a run directly (local use).
  Without MLFLOW_TRACKING_URI nothing is tracked and nothing imports mlflow.
- **Never fatal.** Every call goes through a `Guard`: an exception is caught, logged once, recorded (the stage's
  summary says `tracking: {"runId", "uri", "ok": false, "error", "lostSeconds"}`, which the operator turns into
  the warning condition TrackingDegraded), and calls are skipped for a cool-down that doubles after each failure,
  so an unreachable or hung server costs seconds per attempt and a bounded number of attempts, never the run.
  `CLIENT_ENV` (set in stage pods by the operator, and defaulted here) cuts MLflow's own retries (7 with backoff,
  120 s timeout: minutes per call) to 2 retries and a 10 s timeout.
- **Training** (`training_tracker`: quranft.trainer.tracking_callback's `TrainingTracker`, a Lightning callback
  on global rank 0 around `ResourceRunLogger`, Lightning's `MLFlowLogger` bound to the resource's run): params
  are the resolved run config (flattened as Lightning does: `training/learningRate`); the metrics NeMo logs with
  `self.log` reach `trainer.callback_metrics` (the trainer runs with `logger=False`; the Prometheus telemetry
  reads them there too): every optimiser step's `train_loss` (and `train_ctc_loss`, `train_rnnt_loss` as the
  mode has them) and `learning_rate`, plus our `samples_per_second`; after each validation the `val_*` metrics
  (`val_wer`, `val_wer_ctc`, ...). Points are buffered and sent in batches (one request per `flush_seconds` or
  900 points), so logging every step costs a request every few seconds, not one per step.

This module imports neither Lightning nor mlflow (the operator reads CLIENT_ENV from it; the benchmark shares
the run lookup and the guard).
"""
from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from quranft.contract.config import RunConfig

_log = logging.getLogger(__name__)

TAG_UID = "quranft.uid"
TAG_NAMESPACE = "quranft.namespace"
TAG_NAME = "quranft.name"

# MLflow client settings every stage pod gets (names: mlflow/environment_variables.py). MLflow's defaults retry
# a refused connection 7 times with exponential backoff and wait 120 s for a hung server, per call.
CLIENT_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    # MLflow 3 sends anonymous usage data by default: not from training pods.
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
MAX_BATCH_METRICS = 900  # MLflow's log_batch takes at most 1000 metrics per request
MAX_ERROR_CHARS = 300  # the summary goes into a 4 KB termination message


class TrackingTarget(BaseModel):
    """Where a stage logs: the server, the experiment and the resource the run belongs to."""

    model_config = ConfigDict(frozen=True)

    uri: str
    experiment: str
    uid: str | None = None
    run_id: str | None = None  # MLFLOW_RUN_ID: a run named directly
    namespace: str | None = None
    name: str | None = None


def target_from_env(namespace: str | None, name: str | None,
                    env: Mapping[str, str] | None = None) -> TrackingTarget | None:
    """The tracking target of this process; None when MLFLOW_TRACKING_URI is unset (tracking off)."""
    env = os.environ if env is None else env
    uri = (env.get("MLFLOW_TRACKING_URI") or "").strip()
    if not uri:
        return None
    namespace = namespace or env.get("QURANFT_NAMESPACE") or None
    return TrackingTarget(uri=uri, experiment=env.get("MLFLOW_EXPERIMENT_NAME") or namespace or "quranft",
                          uid=env.get("QURANFT_RUN_UID") or None, run_id=env.get("MLFLOW_RUN_ID") or None,
                          namespace=namespace, name=name or env.get("QURANFT_RUN") or None)


def resource_tags(target: TrackingTarget, **extra: Any) -> dict[str, str]:
    """The run's tags: the resource (namespace, name, uid) and `extra` (quranft.<key>), None values left out."""
    tags = {TAG_NAMESPACE: target.namespace, TAG_NAME: target.name, TAG_UID: target.uid}
    tags.update({f"quranft.{k}": v for k, v in extra.items()})
    return {k: str(v) for k, v in tags.items() if v is not None}


def uid_filter(uid: str) -> str:
    """The search_runs filter for the run of resource `uid` (uids are RFC 4122 text; quotes refused anyway)."""
    if "'" in uid or "\\" in uid:
        raise ValueError(f"resource uid {uid!r} cannot be used in an MLflow filter")
    return f"tags.`{TAG_UID}` = '{uid}'"


def apply_client_env(env: dict[str, str] | None = None) -> None:
    """CLIENT_ENV as defaults of this process's environment (the pod's own values win)."""
    env = os.environ if env is None else env
    for key, value in CLIENT_ENV.items():
        env.setdefault(key, value)


def find_or_create_run(client, target: TrackingTarget, tags: Mapping[str, str]) -> str:
    """The id of the resource's run (see the module docstring); `tags` are set on it either way."""
    if target.run_id:
        run_id = target.run_id
    else:
        experiment = client.get_experiment_by_name(target.experiment)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            try:
                experiment_id = client.create_experiment(target.experiment)
            except Exception:  # created meanwhile by another stage or resource: take that one
                again = client.get_experiment_by_name(target.experiment)
                if again is None:
                    raise
                experiment_id = again.experiment_id
        found = (client.search_runs([experiment_id], filter_string=uid_filter(target.uid), max_results=1,
                                    order_by=["attributes.start_time ASC"]) if target.uid else [])
        if found:
            run_id = found[0].info.run_id
        else:
            return client.create_run(experiment_id, tags=dict(tags), run_name=target.name).info.run_id
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    return run_id


class Guard:
    """Runs tracking calls so that none can fail the caller (see the module docstring).

    `ok` turns False at the first failure and stays so (the run lost data); `error` is the first failure."""

    def __init__(self, log: Callable[[str], None] | None = None, cooldown: float = 30.0,
                 max_cooldown: float = 1800.0, clock: Callable[[], float] = time.monotonic):
        self.log = log or _log.warning
        self.cooldown, self.max_cooldown, self.clock = cooldown, max_cooldown, clock
        self.ok = True
        self.error: str | None = None
        self.failures = 0  # consecutive
        self.skipped = 0
        self.lost_seconds = 0.0  # spent in calls that failed (retries, timeouts)
        self._resume_at = 0.0

    @property
    def paused(self) -> bool:
        return self.clock() < self._resume_at

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """fn(*args, **kwargs), or None when it raised or tracking is paused after a failure."""
        if self.paused:
            self.skipped += 1
            return None
        started = self.clock()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - whatever the client raises, training goes on
            self.lost_seconds += self.clock() - started
            self._failed(what, exc)
            return None
        self.failures = 0
        return result

    def _failed(self, what: str, exc: BaseException) -> None:
        pause = min(self.cooldown * 2 ** self.failures, self.max_cooldown)
        self.failures += 1
        self._resume_at = self.clock() + pause
        message = f"{what}: {type(exc).__name__}: {exc}"
        if self.ok:
            self.ok = False
            self.error = clip(message, MAX_ERROR_CHARS)
            self.log(f"tracking: MLflow call failed, tracking degraded (the stage goes on; next try in {pause:.0f} s): "
                     f"{message[:1000]}")

    def summary(self, run_id: str | None, uri: str | None = None) -> dict[str, Any]:
        """The stage summary's `tracking` object: {"runId", "uri", "ok"} and, once degraded, "error" (the first
        failure) and "lostSeconds" (the time failed calls took). The operator copies runId and uri to
        status.tracking."""
        out: dict[str, Any] = {"runId": run_id}
        if uri:
            out["uri"] = public_uri(uri)
        out["ok"] = self.ok
        if self.error:
            out["error"] = self.error
            out["lostSeconds"] = round(self.lost_seconds, 2)
        return out


def public_uri(uri: str) -> str:
    """`uri` without credentials in its authority (user:password@), as shown in status and logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def clip(text: str, limit: int) -> str:
    """At most `limit` characters, keeping both ends (a client error's cause is at its end)."""
    if len(text) <= limit:
        return text
    head = limit // 2
    return text[:head] + " … " + text[-(limit - head - 3):]


def flatten(doc: Mapping[str, Any], prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """Nested mappings as one level, keys joined with `sep` (Lightning's convention for MLflow params)."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name, sep))
        else:
            out[name] = value
    return out


def metric_key(key: str) -> str:
    """A metric name MLflow accepts (letters, digits, _ - . / and space)."""
    return re.sub(r"[^a-zA-Z0-9_\-./ ]+", "_", key)


def step_metrics(logged: Mapping[str, Any]) -> dict[str, float]:
    """The training-step metrics of `trainer.callback_metrics`: NeMo's train_* losses and learning_rate."""
    return _scalars({k: v for k, v in logged.items() if k.startswith("train_") or k == "learning_rate"})


def validation_metrics(logged: Mapping[str, Any]) -> dict[str, float]:
    return _scalars({k: v for k, v in logged.items() if k.startswith("val_")})


def _scalars(values: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in values.items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError, RuntimeError):  # a non-scalar tensor or a string
            continue
    return out


def training_tracker(cfg: RunConfig, *, world_size: int = 1, log: Callable[[str], None] | None = None,
                     env: Mapping[str, str] | None = None, **kwargs: Any):
    """The tracker of a training run per the environment, or None when MLFLOW_TRACKING_URI is unset."""
    import json

    from quranft.contract.config import data_spec_hash, dump_config

    target = target_from_env(cfg.run.namespace, cfg.run.name, env)
    if target is None:
        return None
    tags = resource_tags(target, dataSpecHash=data_spec_hash(cfg.data), baseModel=cfg.training.base_model,
                         mode=cfg.training.mode)
    params = flatten(json.loads(dump_config(cfg)))
    from quranft.trainer.tracking_callback import TrainingTracker  # Lightning and mlflow: only when tracking

    return TrainingTracker(target, params, tags, world_size=world_size, log=log, **kwargs)
