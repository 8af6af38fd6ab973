"""kopf wiring: indexes of our children, and handlers that observe -> derive (status.py) -> apply.

Handlers stay thin: all decisions are in `status.derive` (pure); this module only gathers observations
from kopf's in-memory indexes (filled from watches, so a pass costs no API reads in the common case) and
applies the one action the derivation asks for.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any, Mapping

import kopf

from quranft.trainer.config import ConfigError

from . import builders, status as st
from .admission import Admission, Entry, charged_gpus
from .kube import Kube
from .metrics import Metrics
from .observe import JobView, job_view, kueue_state, parse_time, pod_view
from .settings import GROUP, PLURAL, VERSION, OperatorSettings, settings_from_env

RESOURCE = (GROUP, VERSION, PLURAL)
TIMER_INTERVAL = 5.0  # seconds between reconcile passes per resource
PREFIX = GROUP  # annotations and finalizer live under our own group, not kopf.zalando.org
log = logging.getLogger(__name__)


# --- wiring ---------------------------------------------------------------------------------------------

@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    # A watch that goes silent is dropped and re-listed within ~15 s (issue 7: handled within 20 s).
    settings.watching.server_timeout = 10
    settings.watching.client_timeout = 15
    settings.watching.connect_timeout = 5
    settings.watching.reconnect_backoff = 1.0
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration")
    settings.posting.level = logging.WARNING  # our own transition events are explicit; no log spam as events
    settings.peering.standalone = True  # one replica, Recreate strategy
    cfg: OperatorSettings = getattr(memo, "settings", None) or settings_from_env()
    memo.settings = cfg
    memo.kube = getattr(memo, "kube", None) or Kube()
    memo.admission = Admission(cfg.max_concurrent_trainings, cfg.max_gpus_per_namespace)
    memo.metrics = Metrics()
    memo.metrics.serve(cfg.metrics_port)
    memo.locks = defaultdict(threading.Lock)
    memo.progress_read = {}
    logger.info("quranft operator started: %s", cfg.model_dump())


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if getattr(memo, "kube", None) is not None:
        memo.kube.close()


# --- indexes: what exists, from watches --------------------------------------------------------------------

@kopf.index("batch", "v1", "jobs", labels={builders.LABEL_RUN: kopf.PRESENT})
def run_jobs(body: kopf.Body, namespace: str, labels: Mapping[str, str], **_: Any) -> dict:
    return {(namespace, labels[builders.LABEL_RUN]): job_view(body)}


@kopf.index("", "v1", "pods", labels={builders.LABEL_RUN: kopf.PRESENT, builders.LABEL_STAGE: kopf.PRESENT})
def run_pods(body: kopf.Body, namespace: str, labels: Mapping[str, str], **_: Any) -> dict:
    return {(namespace, labels[builders.LABEL_RUN], labels[builders.LABEL_STAGE]): pod_view(body)}


@kopf.index(*RESOURCE)
def runs(body: kopf.Body, namespace: str, name: str, spec: Mapping[str, Any], status: Mapping[str, Any],
         meta: Mapping[str, Any], **_: Any) -> dict:
    return {namespace: run_entry(namespace, name, meta, spec, status)}


def run_entry(namespace: str, name: str, meta: Mapping[str, Any], spec: Mapping[str, Any],
              status: Mapping[str, Any]) -> dict[str, Any]:
    try:
        data_hash = builders.spec_data_hash(spec)
    except Exception:  # an invalid data spec fails its own run; it is nobody's sibling
        data_hash = None
    phase = status.get("phase")
    terminal = phase in st.TERMINAL
    trained = st.condition_true(status, "Trained")
    return {
        "name": name, "namespace": namespace, "uid": meta.get("uid"),
        "created": str(meta.get("creationTimestamp") or ""),
        "gpus": charged_gpus(spec),
        "claim": builders.claim_name(spec, name), "dataHash": data_hash, "phase": phase,
        "dataReady": st.condition_true(status, "DataReady"),
        "preparing": bool((status.get("jobs") or {}).get("prepare")) and not st.condition_true(status, "DataReady")
                     and not terminal,
        "holding": st.condition_true(status, "QuotaAdmitted") and not trained and not terminal,
        "finished": trained or terminal,
        "resultsPath": (status.get("benchmark") or {}).get("resultsPath"),
    }


# --- handlers ------------------------------------------------------------------------------------------------

# Creation and spec edits (e.g. suspend) get an immediate pass; everything else, including the state left
# by an operator restart, is picked up by the timer from the live body (one timer task per resource, so
# passes of one resource never overlap except with these two; a per-resource lock serialises them).
@kopf.on.create(*RESOURCE, backoff=5)
@kopf.on.update(*RESOURCE, backoff=5)
def on_change(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, logger: logging.Logger,
              run_jobs: kopf.Index, run_pods: kopf.Index, runs: kopf.Index, **_: Any) -> None:
    reconcile(body, memo, patch, logger, run_jobs, run_pods, runs)


@kopf.timer(*RESOURCE, interval=TIMER_INTERVAL, initial_delay=2.0, backoff=TIMER_INTERVAL)
def on_timer(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, logger: logging.Logger,
             run_jobs: kopf.Index, run_pods: kopf.Index, runs: kopf.Index, **_: Any) -> None:
    reconcile(body, memo, patch, logger, run_jobs, run_pods, runs)


@kopf.on.delete(*RESOURCE, optional=True)
def on_delete(namespace: str, name: str, uid: str, memo: kopf.Memo, **_: Any) -> None:
    # Jobs and pods go with the resource through ownerReferences (garbage collector); the claim stays
    # unless it was created with deleteClaimOnDelete. Only in-memory state is ours to drop.
    memo.admission.forget((namespace, name))
    memo.metrics.forget(uid)
    memo.progress_read.pop(uid, None)
    memo.locks.pop(uid, None)


# --- one reconcile pass -----------------------------------------------------------------------------------------

def reconcile(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, logger: logging.Logger,
              run_jobs: kopf.Index, run_pods: kopf.Index, runs: kopf.Index) -> None:
    meta, spec = body["metadata"], dict(body.get("spec") or {})
    status = {k: v for k, v in (body.get("status") or {}).items() if k != "kopf"}
    uid = meta["uid"]
    with memo.locks[uid]:
        started = time.monotonic()
        now = datetime.now(timezone.utc)
        if status.get("phase") in st.TERMINAL:
            notice = st.terminal_stop_notice(meta, status, now)
            if notice is not None:  # a stop request after the end: say once that it changes nothing
                for key, value in st.status_patch(status, notice).items():
                    patch.status[key] = value
                for kind, reason, message in st.transition_events(status, notice):
                    kopf.event(body, type=kind, reason=reason, message=message)
            _cleanup_after_ttl(spec, meta, status, now, memo, patch, body)
            memo.metrics.phases.set(uid, status["phase"])
            return
        obs = observe(spec, meta, status, now, memo, run_jobs, run_pods, runs)
        derived = st.derive(spec, meta, status, obs)
        apply(derived, obs, spec, meta, memo, body, logger)
        changes = st.status_patch(status, derived.status)
        for key, value in changes.items():
            patch.status[key] = value
        for kind, reason, message in st.transition_events(status, derived.status):
            kopf.event(body, type=kind, reason=reason, message=message)
        _record_metrics(memo.metrics, uid, obs, status, derived.status)
        memo.metrics.reconcile_seconds.observe(time.monotonic() - started)


def observe(spec: Mapping[str, Any], meta: Mapping[str, Any], status: Mapping[str, Any], now: datetime,
            memo: kopf.Memo, run_jobs: kopf.Index, run_pods: kopf.Index, runs: kopf.Index) -> st.Observed:
    ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
    cfg: OperatorSettings = memo.settings
    kube: Kube = memo.kube
    config_error = _config_error(spec, meta, cfg)

    jobs: dict[str, JobView] = {}
    for view in run_jobs.get((ns, name), []):
        # A same-named Job of a deleted predecessor is not ours. Of a multi-node run's training attempts the
        # newest counts (attempts only go up; an older one is a failed group kept for its logs).
        if view.owner_uid == uid and (view.stage not in jobs or view.attempt > jobs[view.stage].attempt):
            jobs[view.stage] = view
    lost: set[str] = set()
    current = _current_stage(status)
    named = (status.get("jobs") or {}).get(current) if current else None
    newest = jobs.get(current) if current else None
    if current and named and (newest is None or (newest.name != named
                                                 and newest.attempt <= _attempt_named(status, current))):
        # The index may simply lag behind our own create; ask the API before calling it lost. (An index newer
        # than the status is a restart whose status write was lost: the newer attempt counts.)
        raw = kube.get_job(ns, named)
        if raw is None or (raw["metadata"].get("ownerReferences") or [{}])[0].get("uid") != uid:
            lost.add(current)
            jobs.pop(current, None)
        else:
            jobs[current] = job_view(raw)
    jobs = {stage: _with_pods(view, run_pods.get((ns, name, stage), [])) for stage, view in jobs.items()}

    if current in jobs:
        job = jobs[current]
        if not job.finished and not job.suspended and not job.pods and job.created and \
                (now - job.created).total_seconds() > 1:
            jobs[current] = _replace(job, quota_message=kube.failed_create_message(ns, job.name))
        # Kueue says why a queued Job waits (quota, preemption). A GET, not an index: without Kueue the
        # Workload CRD does not exist and a kopf index on it would fail to start.
        if spec.get("queueName") and job.suspended and not job.finished:
            state = kueue_state(kube.kueue_workload(ns, job.uid))
            if state:
                jobs[current] = _replace(jobs[current], kueue_reason=state[0], kueue_message=state[1])

    entries = list(runs.get(ns, []))
    admitted, admission_message = True, ""
    if not config_error and not st.condition_true(status, "QuotaAdmitted") and not memo.admission.unlimited:
        everyone = [e for key in runs for e in runs[key]]
        admitted, admission_message = memo.admission.admit((ns, name), [_entry(e) for e in everyone])

    sibling_data = sibling_preparing = None
    if not st.condition_true(status, "DataReady") and "prepare" not in jobs and not config_error:
        claim, data_hash = builders.claim_name(spec, name), builders.spec_data_hash(spec)
        for e in entries:
            if e["name"] == name or e["claim"] != claim or e["dataHash"] != data_hash:
                continue
            if e["dataReady"]:
                sibling_data = e["name"]
                break
            if e["preparing"]:
                sibling_preparing = e["name"]

    baseline_results = baseline_wait = baseline_error = None
    ref = (((spec.get("benchmark") or {}).get("baseline") or {}).get("qftRef") or {}).get("name")
    if ref and st.condition_true(status, "Trained") and "benchmark" not in jobs:
        baseline_results, baseline_wait, baseline_error = _baseline(ref, spec, name, entries)

    progress = None
    train = jobs.get("train")
    # Rank 0 (completion index 0 of a multi-node Job) alone prints progress.
    reporter = next((p for p in reversed(train.pods) if p.completion_index in (None, 0)), None) if train else None
    if train and not train.finished and reporter is not None and reporter.running:
        last = memo.progress_read.get(uid, 0.0)
        if time.monotonic() - last >= cfg.progress_interval:
            memo.progress_read[uid] = time.monotonic()
            progress = kube.last_progress(ns, reporter.name)

    return st.Observed(now=now, jobs=jobs, config_error=config_error, admitted=admitted,
                       admission_message=admission_message, sibling_data=sibling_data,
                       sibling_preparing=sibling_preparing, baseline_results=baseline_results,
                       baseline_wait=baseline_wait, baseline_error=baseline_error, progress=progress,
                       lost=frozenset(lost), image_pull_deadline_s=cfg.image_pull_deadline_seconds,
                       default_startup_deadline_s=cfg.startup_deadline_seconds)


def apply(derived: st.Derived, obs: st.Observed, spec: Mapping[str, Any], meta: Mapping[str, Any],
          memo: kopf.Memo, body: kopf.Body, logger: logging.Logger) -> None:
    kube: Kube = memo.kube
    cfg: OperatorSettings = memo.settings
    if derived.suspend:
        job, flag = derived.suspend
        kube.set_job_suspend(meta["namespace"], job, flag)
        kopf.event(body, type="Normal", reason="Suspended" if flag else "Resumed", message=f"Job {job}")
    for job in derived.delete_jobs:
        kube.delete_job(meta["namespace"], job)  # its pods get SIGTERM (checkpoint) from the garbage collector
        kopf.event(body, type="Normal", reason="JobDeleted", message=f"Job {job}")
    stage = derived.action
    if not stage:
        return
    kube.ensure(builders.build_config_map(spec, meta))
    pvc = builders.build_pvc(spec, meta)
    if pvc is not None:
        kube.ensure(pvc)
    kwargs: dict[str, Any] = {}
    if stage == "benchmark":
        kwargs["model_path"] = (derived.status.get("model") or {}).get("path")
        kwargs["baseline_results"] = obs.baseline_results
    if stage == "train":
        service = builders.build_rank_service(spec, meta)
        if service is not None:
            kube.ensure(service)
        kwargs.update(attempt=derived.attempt, group_failures=derived.group_failures)
    job = builders.build_job(stage, spec, meta, cfg, **kwargs)
    obj, created = kube.ensure(job)
    owner = (obj["metadata"].get("ownerReferences") or [{}])[0].get("uid")
    if owner != meta["uid"]:
        raise kopf.TemporaryError(f"Job {job['metadata']['name']} of an earlier resource with this name still "
                                  "exists; waiting for the garbage collector", delay=5)
    derived.status.setdefault("jobs", {})[stage] = obj["metadata"]["name"]
    if created:
        logger.info("created %s Job %s", stage, obj["metadata"]["name"])
        kopf.event(body, type="Normal", reason="JobCreated", message=f"{stage} Job {obj['metadata']['name']}")


# --- helpers ---------------------------------------------------------------------------------------------------

def _config_error(spec: Mapping[str, Any], meta: Mapping[str, Any], cfg: OperatorSettings) -> str | None:
    try:
        builders.validate_distributed(spec)
    except ConfigError as exc:
        return str(exc)
    try:
        builders.validate_run_config(builders.run_config_doc(spec, meta))
    except ConfigError as exc:
        return f"the trainer would reject this spec: {exc}"
    gpus = charged_gpus(spec)
    if cfg.max_gpus_per_namespace and gpus > cfg.max_gpus_per_namespace:
        shape = f"resources.nodes x gpus = {gpus}" if builders.nodes_of(spec) > 1 else f"resources.gpus: {gpus}"
        return f"{shape} exceeds the operator's limit of {cfg.max_gpus_per_namespace} GPUs per namespace"
    return None


def _attempt_named(status: Mapping[str, Any], stage: str) -> int:
    """The attempt of the Job the status names for `stage` (only training has more than one)."""
    return int((status.get("training") or {}).get("groupRestarts") or 0) if stage == "train" else 0


def _current_stage(status: Mapping[str, Any]) -> str | None:
    if not st.condition_true(status, "DataReady"):
        return "prepare"
    if not st.condition_true(status, "Trained"):
        return "train"
    return "benchmark"


def _with_pods(job: JobView, pods: Any) -> JobView:
    mine = tuple(p for p in pods if not p.job_uid or p.job_uid == job.uid)
    return _replace(job, pods=tuple(sorted(mine, key=lambda p: (p.created.timestamp() if p.created else 0.0,
                                                                p.name))))


def _replace(job: JobView, **changes: Any) -> JobView:
    from dataclasses import replace
    return replace(job, **changes)


def _entry(e: Mapping[str, Any]) -> Entry:
    return Entry(namespace=e["namespace"], name=e["name"], created=e["created"], gpus=e["gpus"],
                 holding=e["holding"], finished=e["finished"])


def _baseline(ref: str, spec: Mapping[str, Any], name: str, entries: list) -> tuple[str | None, str | None,
                                                                                      str | None]:
    match = next((e for e in entries if e["name"] == ref), None)
    if match is None:
        return None, None, f"baseline QuranFineTune {ref!r} not found in this namespace"
    if match["claim"] != builders.claim_name(spec, name):
        return None, None, f"baseline {ref!r} uses claim {match['claim']}; this run uses " \
                           f"{builders.claim_name(spec, name)}: results must be on the same claim"
    if match["phase"] == "Failed":
        return None, None, f"baseline {ref!r} failed, so it has no benchmark results"
    if match["phase"] == "Succeeded" and match["resultsPath"]:
        return match["resultsPath"], None, None
    return None, f"waiting for baseline {ref!r} (phase {match['phase'] or 'Pending'}) to finish its benchmark", None


def _cleanup_after_ttl(spec: Mapping[str, Any], meta: Mapping[str, Any], status: Mapping[str, Any],
                       now: datetime, memo: kopf.Memo, patch: kopf.Patch, body: kopf.Body) -> None:
    ttl = spec.get("ttlSecondsAfterFinished")
    if ttl is None or status.get("cleanedUp"):
        return
    done = parse_time(status.get("completionTime"))
    if done is None or (now - done).total_seconds() < int(ttl):
        return
    policy = (spec.get("cleanup") or {}).get("onSuccess" if status["phase"] == "Succeeded" else "onFailure", "Keep")
    if policy == "DeleteJobs":
        jobs = set((status.get("jobs") or {}).values())
        restarts = int((status.get("training") or {}).get("groupRestarts") or 0)
        jobs |= {builders.train_job_name(meta["name"], attempt, builders.nodes_of(spec)) for attempt in range(restarts)}
        for job in sorted(jobs):
            memo.kube.delete_job(meta["namespace"], job)  # pods go with it; models and the claim stay
        kopf.event(body, type="Normal", reason="CleanedUp", message=f"deleted Jobs {sorted(jobs)}")
    patch.status["cleanedUp"] = True


def _record_metrics(metrics: Metrics, uid: str, obs: st.Observed, old: Mapping[str, Any],
                    new: Mapping[str, Any]) -> None:
    metrics.phases.set(uid, new.get("phase") or "Pending")
    metrics.transition(old.get("phase"), dict(new))
    for stage, job in obs.jobs.items():
        if job.finished and job.start_time:
            end = job.completion_time or obs.now
            metrics.stage_finished(uid, stage, "succeeded" if job.complete else "failed",
                                   (end - job.start_time).total_seconds())
