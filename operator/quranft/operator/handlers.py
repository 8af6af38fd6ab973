"""kopf wiring: indexes of our children, and one pass loop per QuranFineTune: observe.gather -> steps.derive -> apply.

Passes are event-driven. Each QuranFineTune has one kopf daemon (`passes`), an asyncio task that runs a pass, then
sleeps on its own wake-up (wakeups.Wake, registered in memo.wakeups under (namespace, name)) until one of these:
- the resource changes (`on_run_event`: spec, annotations such as a stop request, deletion; our own status write's
  echo is skipped: the loop already passed on that body);
- one of its Jobs or pods changes (`on_job_event`, `on_pod_event`, on the same watches that fill the indexes: a
  Job completes -> the next stage's Job is created in the same moment, not at a timer tick);
- another run changes in a way this run waits on (operator budget slot, sibling's data, baseline's results;
  `on_run_event` compares the run's index entry and wakes the waiters);
- the clock reaches a time-based decision (wakeups.next_pass_in: progress reads, start-up deadlines, grace periods,
  TTL), or the slow safety resync, `reconcileIntervalSeconds` (settings.reconcile_interval, default 60 s).
A wake during a pass gives exactly one more pass, and wakes before it began (while it waited for a thread)
none (wakeups.Wake counts them), so bursts coalesce.

Why a daemon, not handlers: kopf's change handlers run only for the resource's own changes, and a timer only on
its clock; a daemon is kopf's one per-resource task with a live body (kopf keeps it fresh from the watch), stopped
by kopf on deletion (behind our finalizer) and respawned for every resource when the operator starts, after the
indexes are filled. It serialises the passes of one resource by construction (the per-uid lock stays, as a guard).
A daemon's `patch` is applied only when it exits, so a pass writes its status itself: a merge patch of only the
changed top-level keys (status.status_patch), then the transition events. The written object is the next pass's
body until the watch delivers something newer (compared by resourceVersion), so a pass never decides on its own
stale status. The pass is sync code (kubernetes client) and runs in kopf's executor.

Passes gather observations from kopf's in-memory indexes (observe.gather; filled from watches, so a pass costs no
API reads in the common case) and apply the plan the derivation (steps.py, over the stage table stages.PIPELINE)
returns.
"""
from __future__ import annotations

import asyncio
import contextvars
import copy
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import kopf
from kubernetes.client.exceptions import ApiException

from . import builders, status as st, steps
from .admission import Admission, charged_gpus
from .kube import Kube
from .metrics import Metrics
from . import heap, progress_server
from .progress_store import ProgressStore, progress_for_pass
from .observe import JobView, gather, job_view, pod_view
from .settings import GROUP, PLURAL, VERSION, OperatorSettings, settings_from_env
from .stages import current_stage
from .wakeups import Topic, Waiters, Wake, Wakeups, next_pass_in, wait_topic, waits_on_others

RESOURCE = (GROUP, VERSION, PLURAL)
ERROR_BACKOFF_S = 5.0  # a failed pass (e.g. the API answered 503) is retried after this, or at the next change
SETTLE_STEPS = 3  # a pass derives again on the status it derived until nothing changes (at most this many times)
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
    # kopf 1.45.2 (watching.watch_objs) re-arms an asyncio.timeout of inactivity_timeout (70 s) after each event;
    # when it expires while the event is still being handled (a starved loop: 1,000 runs on 2 cores),
    # reschedule() raises "Cannot change state of expiring Timeout" and the whole operator stops (this stop's
    # 1,000-run bench). client_timeout already ends every stream within 15 s, so that timer is put out of reach.
    settings.watching.inactivity_timeout = 24 * 3600.0
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
    # Pushed progress (progress_server.py); with the push off every running training pod's log is read.
    memo.progress = ProgressStore(cfg.progress_interval, cfg.progress_stale_seconds if cfg.progress_push else 0.0,
                                  rate=cfg.progress_writes_per_second)
    memo.executor = settings.execution.executor  # where sync handlers run; passes run there too
    memo.wakeups = Wakeups()
    memo.written_rv = {}  # (namespace, name) -> resourceVersion of our last status write (its echo wakes nobody)
    memo.run_entries = {}  # (namespace, name) -> last index entry seen, to wake waiters when it changes
    memo.child_views = {}  # (kind, namespace, name) of a Job or pod -> hash of its last view, to skip no-op events
    memo.waiters = Waiters()  # runs waiting on another run, woken when an entry they wait on changes
    logger.info("quranft operator started: %s", cfg.model_dump())


# After `startup` (kopf runs them in order), before any pass builds a training pod: the pods get its URL and CA.
@kopf.on.startup()
async def start_progress_endpoint(memo: kopf.Memo, run_pods: kopf.Index, **_: Any) -> None:
    memo.progress_endpoint = await progress_server.start(memo, run_pods)


@kopf.on.startup()
async def start_heap_trim(memo: kopf.Memo, **_: Any) -> None:
    memo.heap_trim = asyncio.get_running_loop().create_task(heap.trim_forever(), name="heap trim")


@kopf.on.cleanup()
async def stop_heap_trim(memo: kopf.Memo, **_: Any) -> None:
    if getattr(memo, "heap_trim", None) is not None:
        memo.heap_trim.cancel()


@kopf.on.cleanup()
async def stop_progress_endpoint(memo: kopf.Memo, **_: Any) -> None:
    if getattr(memo, "progress_endpoint", None) is not None:
        await memo.progress_endpoint.stop()


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if getattr(memo, "kube", None) is not None:
        memo.kube.close()


# --- indexes: what exists, from watches --------------------------------------------------------------------
# Async (pure, cheap): kopf runs sync handlers in its thread pool, where an index update would queue behind the
# passes waiting on the API server, and every event of that object waits for its index update.

@kopf.index("batch", "v1", "jobs", labels={builders.LABEL_RUN: kopf.PRESENT})
async def run_jobs(body: kopf.Body, namespace: str, labels: Mapping[str, str], **_: Any) -> dict:
    return {(namespace, labels[builders.LABEL_RUN]): job_view(body)}


@kopf.index("", "v1", "pods", labels={builders.LABEL_RUN: kopf.PRESENT, builders.LABEL_STAGE: kopf.PRESENT})
async def run_pods(body: kopf.Body, namespace: str, labels: Mapping[str, str], **_: Any) -> dict:
    return {(namespace, labels[builders.LABEL_RUN], labels[builders.LABEL_STAGE]): pod_view(body)}


@kopf.index(*RESOURCE)
async def runs(body: kopf.Body, namespace: str, name: str, spec: Mapping[str, Any], status: Mapping[str, Any],
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


# --- wake-ups --------------------------------------------------------------------------------------------------

# kopf updates the indexes before it calls the event handlers, so the woken pass sees the change. A pass reads only
# a child's view (observe.job_view / pod_view): an event that leaves the view as it was (a heartbeat of the pod's
# status, managed fields) wakes nobody.
@kopf.on.event("batch", "v1", "jobs", labels={builders.LABEL_RUN: kopf.PRESENT})
async def on_job_event(event: Mapping[str, Any], body: kopf.Body, namespace: str, name: str,
                       labels: Mapping[str, str], memo: kopf.Memo, **_: Any) -> None:
    _child_changed(memo, ("Job", namespace, name), None if event.get("type") == "DELETED" else job_view(body),
                   (namespace, labels[builders.LABEL_RUN]))


@kopf.on.event("", "v1", "pods", labels={builders.LABEL_RUN: kopf.PRESENT, builders.LABEL_STAGE: kopf.PRESENT})
async def on_pod_event(event: Mapping[str, Any], body: kopf.Body, namespace: str, name: str,
                       labels: Mapping[str, str], memo: kopf.Memo, **_: Any) -> None:
    _child_changed(memo, ("Pod", namespace, name), None if event.get("type") == "DELETED" else pod_view(body),
                   (namespace, labels[builders.LABEL_RUN]))


def _child_changed(memo: kopf.Memo, child: tuple[str, str, str], view: Any, run: tuple[str, str]) -> None:
    digest = None if view is None else hash(view)
    if view is None:
        memo.child_views.pop(child, None)
    elif memo.child_views.get(child) == digest:
        return
    else:
        memo.child_views[child] = digest
    memo.wakeups.wake(run)


@kopf.on.event(*RESOURCE)
async def on_run_event(event: Mapping[str, Any], body: kopf.Body, namespace: str, name: str, memo: kopf.Memo,
                       **_: Any) -> None:
    key = (namespace, name)
    meta = body.get("metadata") or {}
    if meta.get("resourceVersion") != memo.written_rv.get(key):
        memo.wakeups.wake(key)
    entry = None if event.get("type") == "DELETED" else \
        run_entry(namespace, name, meta, body.get("spec") or {}, body.get("status") or {})
    if entry is None:
        memo.written_rv.pop(key, None)
    previous = memo.run_entries.get(key)
    if previous != entry:
        if entry is None:
            memo.run_entries.pop(key, None)
        else:
            memo.run_entries[key] = entry
        for waiter in memo.waiters.changed(key, previous, entry, time.monotonic()):
            memo.wakeups.wake(waiter)


@kopf.on.delete(*RESOURCE, optional=True)
async def on_delete(namespace: str, name: str, uid: str, memo: kopf.Memo, **_: Any) -> None:
    # Jobs and pods go with the resource through ownerReferences (garbage collector); the claim stays
    # unless it was created with deleteClaimOnDelete. Only in-memory state is ours to drop.
    memo.admission.forget((namespace, name))
    memo.metrics.forget(uid)
    memo.progress.forget((namespace, name))
    memo.locks.pop(uid, None)


# --- the pass loop --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    """What a pass leaves for its loop."""
    written: dict[str, Any] | None = None  # the object our status write returned
    next_in: float | None = None  # seconds until a time-based decision (wakeups.next_pass_in)
    topic: Topic | None = None  # what it waits on of another run's (wakeups.wait_topic)


# On deletion the loop exits at once; a pass in flight gets 5 s to finish before kopf cancels the loop.
@kopf.daemon(*RESOURCE, backoff=ERROR_BACKOFF_S, cancellation_backoff=5.0, cancellation_timeout=10.0)
async def passes(body: kopf.Body, stopped: kopf.DaemonStopped, namespace: str, name: str, memo: kopf.Memo,
                 logger: logging.Logger, run_jobs: kopf.Index, run_pods: kopf.Index, runs: kopf.Index,
                 **_: Any) -> None:
    key = (namespace, name)
    cfg: OperatorSettings = memo.settings
    wake = memo.wakeups.register(key)
    relay = asyncio.create_task(_wake_when_stopped(stopped, wake), name=f"stop relay of {namespace}/{name}")
    written: dict[str, Any] | None = None
    try:
        while not stopped:
            started, submitted = time.monotonic(), wake.count
            try:
                seen, outcome = await _in_executor(memo, wake, reconcile, _fresher(body, written), memo, logger,
                                                   run_jobs, run_pods, runs)
            except Exception as exc:  # noqa: BLE001  retried after a backoff, or at the next change
                delay = exc.delay if isinstance(exc, kopf.TemporaryError) and exc.delay else ERROR_BACKOFF_S
                log.warning("%s/%s: pass failed (%s: %s); retrying in %.0f s or at the next change",
                            namespace, name, type(exc).__name__, exc, delay, exc_info=not isinstance(exc, (
                                kopf.TemporaryError, ApiException)))
                await wake.sleep(delay, submitted)
                continue
            if outcome.written is not None:
                written = _kept(outcome.written)
            resync = cfg.reconcile_interval
            next_in = resync if outcome.next_in is None else min(resync, outcome.next_in)
            memo.waiters.wait(key, outcome.topic)
            if memo.waiters.changed_since(outcome.topic, started):
                next_in = 0.0  # what it waits on changed during the pass (nobody woke it): the wait may be over
            await wake.sleep(next_in, seen)
    finally:
        relay.cancel()
        memo.wakeups.unregister(key, wake)
        memo.waiters.wait(key, None)


async def _wake_when_stopped(stopped: kopf.DaemonStopped, wake: Wake) -> None:
    await stopped.wait()
    wake.set()


async def _in_executor(memo: kopf.Memo, wake: Wake, fn: Callable[..., Outcome], *args: Any) -> tuple[int, Outcome]:
    """(wakes seen, outcome) of `fn(*args)` in kopf's executor: the wakes counted when the pass really began."""
    context = contextvars.copy_context()  # kopf.event needs kopf's context variables (its event queue and loop)

    def job() -> tuple[int, Outcome]:
        seen = wake.count
        return seen, context.run(fn, *args)
    return await asyncio.get_running_loop().run_in_executor(memo.executor, job)


def _kept(written: Mapping[str, Any]) -> dict[str, Any]:
    """What the loop keeps of the object our status write returned until the watch catches up: its
    resourceVersion, spec and status. Not its metadata's annotations and managed fields, which kopf's live body
    holds too (with 1,000 runs a second full copy per run was ~40 MiB of the operator's heap, tracemalloc)."""
    return {"metadata": {"resourceVersion": (written.get("metadata") or {}).get("resourceVersion")},
            "spec": written.get("spec"), "status": written.get("status")}


def _fresher(live: Mapping[str, Any], written: Mapping[str, Any] | None) -> dict[str, Any]:
    """A snapshot of kopf's live body, with the spec, status and resourceVersion of our last status write when
    that is newer (the watch has not delivered it yet).

    resourceVersions are opaque to clients in general, but the API server hands out etcd revisions, which only
    grow; if either is not a number the live body wins (a pass on a stale status at worst repeats idempotent work).
    """
    snapshot = copy.deepcopy(dict(live))
    if written is None:
        return snapshot
    try:
        newer = int(written["metadata"]["resourceVersion"]) > int(snapshot["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return snapshot
    if newer:
        snapshot.update(copy.deepcopy({k: written[k] for k in ("spec", "status") if written.get(k) is not None}))
        snapshot["metadata"] = {**snapshot["metadata"], "resourceVersion": written["metadata"]["resourceVersion"]}
    return snapshot


# --- one reconcile pass -----------------------------------------------------------------------------------------

def reconcile(body: Mapping[str, Any], memo: kopf.Memo, logger: logging.Logger, run_jobs: kopf.Index,
              run_pods: kopf.Index, runs: kopf.Index) -> Outcome:
    meta, spec = body["metadata"], dict(body.get("spec") or {})
    status = {k: v for k, v in (body.get("status") or {}).items() if k != "kopf"}
    uid = meta["uid"]
    cfg: OperatorSettings = memo.settings
    with memo.locks[uid]:
        started = time.monotonic()
        now = datetime.now(timezone.utc)
        if status.get("phase") in st.TERMINAL:
            # Only the table's terminal rows: a stop request after the end said once, the cleanup after the TTL.
            ended = steps.derive_ended(spec, meta, status, now)
            apply(ended, spec, meta, memo, body, logger)
            new = ended.status
            written = _write_status(memo, body, st.status_patch(status, new), st.transition_events(status, new))
            memo.metrics.phases.set(uid, status["phase"])
            return Outcome(written, next_pass_in(spec, new, {}, now, progress_in=None,
                                                 image_pull_deadline_s=cfg.image_pull_deadline_seconds,
                                                 default_startup_deadline_s=cfg.startup_deadline_seconds))
        # Derive again on the derived status until it settles (e.g. "creating the Job" -> "the Job is running" once
        # the Job exists): one status write per pass with the final result, not one per step.
        new, events, created = status, [], {}
        for _ in range(SETTLE_STEPS):
            obs = gather(spec, meta, new, now, memo.kube, cfg, memo.admission, run_jobs, run_pods, runs, created,
                         lambda jobs: _read_progress(memo, meta, jobs))
            derived = steps.derive(spec, meta, new, obs)
            job = apply(derived, spec, meta, memo, body, logger)
            if job is not None:
                created[derived.action] = job
            events += st.transition_events(new, derived.status)
            _record_metrics(memo.metrics, uid, obs, new, derived.status)
            # A suspend or a delete is not in the status: the next step would see the Job unchanged and repeat it.
            settled = derived.status == new or bool(derived.suspend or derived.delete_jobs)
            new = derived.status
            if settled:
                break
        written = _write_status(memo, body, st.status_patch(status, new), events)
        memo.metrics.reconcile_seconds.observe(time.monotonic() - started)
        current = current_stage(new)
        jobs = {current: obs.jobs[current]} if current in obs.jobs else {}
        return Outcome(written, next_pass_in(spec, new, jobs, now, progress_in=_progress_in(
                                                 (meta["namespace"], meta["name"]), obs, memo),
                                             image_pull_deadline_s=cfg.image_pull_deadline_seconds,
                                             default_startup_deadline_s=cfg.startup_deadline_seconds),
                       _wait_topic(meta, spec, new))


def _wait_topic(meta: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any]) -> Topic | None:
    if not waits_on_others(status):
        return None
    ref = (((spec.get("benchmark") or {}).get("baseline") or {}).get("qftRef") or {}).get("name")
    return wait_topic(status, run_entry(meta["namespace"], meta["name"], meta, spec, status), ref)


def _write_status(memo: kopf.Memo, body: Mapping[str, Any], changes: Mapping[str, Any],
                  events: list[tuple[str, str, str]]) -> dict[str, Any] | None:
    """Merge-patch the changed top-level status keys, then post the transition events (after the write: a failed
    write is retried by the next pass, which would post them again). Returns the written object, None if nothing
    was written (no change, or the resource is gone)."""
    meta = body["metadata"]
    written = None
    if changes:
        try:
            written = memo.kube.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], {"status": dict(changes)})
        except ApiException as exc:
            if exc.status == 404:  # deleted meanwhile: nothing left to report on
                return None
            raise
        memo.written_rv[(meta["namespace"], meta["name"])] = written["metadata"]["resourceVersion"]
        log.debug("%s/%s: wrote status %s", meta["namespace"], meta["name"], dict(changes))
    for kind, reason, message in events:
        kopf.event(dict(body), type=kind, reason=reason, message=message)
    return written


def _progress_in(key: tuple[str, str], obs: st.Observed, memo: kopf.Memo) -> float | None:
    """Seconds until progress is due (a push held back by the write interval, or the fallback's log read);
    None when no rank-0 training pod runs, or while it waits for a push (which wakes it)."""
    train = obs.jobs.get("train")
    if train is None or train.finished or _reporter(train) is None or not _reporter(train).running:
        return None
    return memo.progress.next_in(key, _reporter(train).name)


def _reporter(train: JobView) -> Any:
    """The pod that prints progress: rank 0 (completion index 0 of a multi-node Job), the newest one."""
    return next((p for p in reversed(train.pods) if p.completion_index in (None, 0)), None)


def _read_progress(memo: kopf.Memo, meta: Mapping[str, Any], jobs: Mapping[str, JobView]) -> Any:
    """The training pod's progress for this pass, when it is due (observe.gather asks for it): the record it
    pushed (progress_server.py), or for a pod that pushes nothing its log's last line (progress_store.py)."""
    ns, name = meta["namespace"], meta["name"]
    kube: Kube = memo.kube
    train = jobs.get("train")
    reporter = _reporter(train) if train else None
    if not train or train.finished or reporter is None or not reporter.running:
        return None
    return progress_for_pass(memo.progress, (ns, name), reporter.name,
                             lambda: kube.last_progress(ns, reporter.name), memo.metrics.progress_log_reads.inc)


def apply(derived: st.Derived, spec: Mapping[str, Any], meta: Mapping[str, Any], memo: kopf.Memo,
          body: Mapping[str, Any], logger: logging.Logger) -> dict[str, Any] | None:
    """Carries out the derived plan (it reads nothing else); returns the stage Job it created or adopted, if any."""
    kube: Kube = memo.kube
    cfg: OperatorSettings = memo.settings
    if derived.suspend:
        job, flag = derived.suspend
        kube.set_job_suspend(meta["namespace"], job, flag)
        kopf.event(body, type="Normal", reason="Suspended" if flag else "Resumed", message=f"Job {job}")
    for job in derived.delete_jobs:
        kube.delete_job(meta["namespace"], job)  # its pods get SIGTERM (checkpoint) from the garbage collector
        kopf.event(body, type="Normal", reason="JobDeleted", message=f"Job {job}")
    if derived.clean_up is not None:
        for job in derived.clean_up:
            kube.delete_job(meta["namespace"], job)  # pods go with it; models and the claim stay
        kopf.event(dict(body), type="Normal", reason="CleanedUp", message=f"deleted Jobs {list(derived.clean_up)}")
    stage = derived.action
    if not stage:
        return None
    kube.ensure(builders.build_config_map(spec, meta))
    pvc = builders.build_pvc(spec, meta)
    if pvc is not None:
        kube.ensure(pvc)
    kwargs: dict[str, Any] = {}
    if stage == "benchmark":
        kwargs["model_path"] = (derived.status.get("model") or {}).get("path")
        kwargs["baseline_results"] = derived.baseline_results
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
    return obj


# --- helpers ---------------------------------------------------------------------------------------------------






def _record_metrics(metrics: Metrics, uid: str, obs: st.Observed, old: Mapping[str, Any],
                    new: Mapping[str, Any]) -> None:
    metrics.phases.set(uid, new.get("phase") or "Pending")
    metrics.transition(old.get("phase"), dict(new))
    for stage, job in obs.jobs.items():
        if job.finished and job.start_time:
            end = job.completion_time or obs.now
            metrics.stage_finished(uid, stage, "succeeded" if job.complete else "failed",
                                   (end - job.start_time).total_seconds())
