"""kopf wiring of the QuranFineTuneCampaign controller: indexes, handlers, one reconcile pass.

What the pass knows comes from kopf indexes (the campaign's children by owner, its report and delivery Jobs and
their pods), so a pass costs one GET of the campaign and the writes it decides. A child's change wakes its
campaign's pass at once (an event handler on child QuranFineTunes and on the campaign's Jobs and pods), through a
small coalescing worker pool: a burst of child events is one pass, and a child's own kopf worker never waits for
it. Creation, spec and annotation edits (Manual promotion) run a pass directly; a slow timer resyncs
everything else (and resumes campaigns after an operator restart). All the decisions are campaign_derive's.
"""
from __future__ import annotations

import contextvars
import logging
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from quranft.contract.keys import GROUP, PLURAL, VERSION

from . import builders, campaign_jobs
from . import status as st
from .campaign_derive import CampaignObserved, child_view, derive
from .campaign_kube import CampaignKube, api_message
from .campaign_plan import PlanError, campaign_pvc, claim_name, plan, trainer_problem
from .campaign_spec import (CAMPAIGN_PLURAL, LABEL_CAMPAIGN, PROMOTE_ANNOTATION, CampaignSpec, parse_spec)
from .kube import Kube
from .observe import job_view, pod_view
from .settings import OperatorSettings, settings_from_env

CAMPAIGN = (GROUP, VERSION, CAMPAIGN_PLURAL)
RUN = (GROUP, VERSION, PLURAL)
RESYNC_SECONDS = 60.0
log = logging.getLogger(__name__)
Key = tuple[str, str]  # (namespace, campaign)


class Waker:
    """Runs `fn(key, *args)` in a small pool; a key woken while its pass runs gets one more pass afterwards."""

    def __init__(self, fn: Callable[..., None], workers: int = 2):
        self.fn = fn
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="campaign")
        self.lock = threading.Lock()
        self.running: set[Key] = set()
        self.again: set[Key] = set()

    def wake(self, key: Key, *args: Any) -> None:
        with self.lock:
            if key in self.running:
                self.again.add(key)
                return
            self.running.add(key)
        # kopf.event needs the handler's context (its event queue); each wake carries its own copy.
        self.pool.submit(contextvars.copy_context().run, self._drain, key, args)

    def _drain(self, key: Key, args: tuple) -> None:
        while True:
            try:
                self.fn(key, *args)
            except Exception:  # noqa: BLE001  the timer's resync retries; the pass is idempotent
                log.exception("campaign %s/%s: pass failed (retried by the next event or the resync)", *key)
            with self.lock:
                if key in self.again:
                    self.again.discard(key)
                    continue
                self.running.discard(key)
                return

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


@kopf.on.startup()
def campaign_startup(memo: kopf.Memo, **_: Any) -> None:
    memo.campaign_locks = defaultdict(threading.Lock)
    memo.campaign_created = defaultdict(set)  # campaign uid -> object names this process created
    memo.campaign_foreign = defaultdict(set)  # campaign uid -> child names held by someone else
    memo.campaign_waker = Waker(lambda key, m, indexes: reconcile(key, m, indexes))


@kopf.on.cleanup()
def campaign_cleanup(memo: kopf.Memo, **_: Any) -> None:
    if getattr(memo, "campaign_waker", None) is not None:
        memo.campaign_waker.close()


# --- indexes ---------------------------------------------------------------------------------------------------

@kopf.index(*RUN, labels={LABEL_CAMPAIGN: kopf.PRESENT})
def campaign_children(body: kopf.Body, namespace: str, labels: Mapping[str, str], **_: Any) -> dict:
    return {(namespace, labels[LABEL_CAMPAIGN]): child_view(body)}


@kopf.index("batch", "v1", "jobs", labels={LABEL_CAMPAIGN: kopf.PRESENT, builders.LABEL_STAGE: kopf.PRESENT})
def campaign_jobs_index(body: kopf.Body, namespace: str, labels: Mapping[str, str], **_: Any) -> dict:
    return {(namespace, labels[LABEL_CAMPAIGN]): job_view(body)}


@kopf.index("", "v1", "pods", labels={LABEL_CAMPAIGN: kopf.PRESENT, builders.LABEL_STAGE: kopf.PRESENT})
def campaign_pods_index(body: kopf.Body, namespace: str, labels: Mapping[str, str], **_: Any) -> dict:
    return {(namespace, labels[LABEL_CAMPAIGN]): pod_view(body)}


def _indexes(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: kwargs[k] for k in ("campaign_children", "campaign_jobs_index", "campaign_pods_index")}


# --- handlers ----------------------------------------------------------------------------------------------------

@kopf.on.create(*CAMPAIGN, backoff=5)
@kopf.on.update(*CAMPAIGN, backoff=5)
def on_campaign(namespace: str, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    reconcile((namespace, name), memo, _indexes(kwargs))


@kopf.timer(*CAMPAIGN, interval=RESYNC_SECONDS, initial_delay=2.0, backoff=10.0)
def on_campaign_resync(namespace: str, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    reconcile((namespace, name), memo, _indexes(kwargs))


@kopf.on.event(*RUN, labels={LABEL_CAMPAIGN: kopf.PRESENT})
def on_child_event(namespace: str, labels: Mapping[str, str], memo: kopf.Memo, **kwargs: Any) -> None:
    memo.campaign_waker.wake((namespace, labels[LABEL_CAMPAIGN]), memo, _indexes(kwargs))


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_CAMPAIGN: kopf.PRESENT, builders.LABEL_STAGE: kopf.PRESENT})
def on_job_event(namespace: str, labels: Mapping[str, str], memo: kopf.Memo, **kwargs: Any) -> None:
    memo.campaign_waker.wake((namespace, labels[LABEL_CAMPAIGN]), memo, _indexes(kwargs))


@kopf.on.event("", "v1", "pods", labels={LABEL_CAMPAIGN: kopf.PRESENT, builders.LABEL_STAGE: kopf.PRESENT})
def on_pod_event(namespace: str, labels: Mapping[str, str], memo: kopf.Memo, **kwargs: Any) -> None:
    memo.campaign_waker.wake((namespace, labels[LABEL_CAMPAIGN]), memo, _indexes(kwargs))


# --- one pass ----------------------------------------------------------------------------------------------------

def reconcile(key: Key, memo: kopf.Memo, indexes: Mapping[str, Any]) -> None:
    ns, name = key
    with memo.campaign_locks[key]:
        ckube = CampaignKube(memo.kube)
        body = ckube.get_campaign(ns, name)  # fresh: a pass never decides on a stale body
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        meta = body["metadata"]
        status = {k: v for k, v in (body.get("status") or {}).items() if k != "kopf"}
        try:
            spec = parse_spec(body.get("spec") or {})
        except ValidationError as exc:  # the CRD's schema makes this rare (e.g. an older CRD installed)
            _write(ckube, body, status, {**status, "phase": "Failed", "reason": "InvalidSpec"},
                   [("Warning", "InvalidSpec", str(exc)[:1000])])
            return
        obs = observe(spec, meta, status, memo, indexes, ckube)
        derived = derive(spec, meta, status, obs)
        if derived.validate:
            obs = replace(obs, validation=validate(obs, ckube), baseline_error=baseline_problem(spec, meta, ckube))
            derived = derive(spec, meta, status, obs)
        apply(derived, spec, meta, memo, ckube)
        _write(ckube, body, status, derived.status, derived.events)


def observe(spec: CampaignSpec, meta: Mapping[str, Any], status: Mapping[str, Any], memo: kopf.Memo,
            indexes: Mapping[str, Any], ckube: CampaignKube) -> CampaignObserved:
    cfg: OperatorSettings = getattr(memo, "settings", None) or settings_from_env()
    ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
    try:
        children_plan, plan_error = plan(spec, meta), None
    except PlanError as exc:
        children_plan, plan_error = [], str(exc)
    children, foreign = {}, set(memo.campaign_foreign[uid])
    for view in indexes["campaign_children"].get((ns, name), []):
        if view.owner_uid == uid:
            children[view.name] = view
        else:
            foreign.add(view.name)
    created = set(memo.campaign_created[uid])
    lost = set()
    for v in status.get("variants") or []:
        child = v.get("child")
        if v.get("phase") in (None, "Waiting") or child in children or child in created or v.get("reason") == "ChildDeleted":
            continue
        raw = ckube.get_run(ns, child)  # the index may lag behind; ask before calling a child lost
        if raw is None:
            lost.add(child)
        elif (raw["metadata"].get("ownerReferences") or [{}])[0].get("uid") == uid:
            children[child] = child_view(raw)
        else:
            foreign.add(child)
    pods = list(indexes["campaign_pods_index"].get((ns, name), []))
    jobs = {}
    for view in indexes["campaign_jobs_index"].get((ns, name), []):
        if view.owner_uid != uid:  # a same-named Job of a deleted predecessor is not ours
            continue
        mine = sorted((p for p in pods if p.job_uid == view.uid),
                      key=lambda p: (p.created.timestamp() if p.created else 0.0, p.name))
        jobs[view.stage] = replace(view, pods=tuple(mine))
    return CampaignObserved(
        now=datetime.now(timezone.utc), plan=children_plan, plan_error=plan_error, children=children,
        foreign=frozenset(foreign), created=frozenset(created), lost=frozenset(lost), jobs=jobs,
        promote_annotation=(meta.get("annotations") or {}).get(PROMOTE_ANNOTATION),
        image_pull_deadline_s=cfg.image_pull_deadline_seconds, startup_deadline_s=cfg.startup_deadline_seconds)


def validate(obs: CampaignObserved, ckube: CampaignKube) -> dict[str, str]:
    """variant -> why its child would be refused: the API server's dry run (schema with strict field validation,
    CEL rules, admission), then the trainer's schema."""
    out = {}
    for child in obs.plan:
        message = ckube.dry_run(child.body) or trainer_problem(child)
        if message:
            out[child.variant] = message
    return out


def baseline_problem(spec: CampaignSpec, meta: Mapping[str, Any], ckube: CampaignKube) -> str | None:
    """A baseline every child can read: a QuranFineTune (or a promoting campaign) on the campaign's claim."""
    baseline, ns = spec.effective_baseline(), meta["namespace"]
    claim = claim_name(spec, meta["name"])
    if baseline.get("qftRef"):
        ref = baseline["qftRef"]["name"]
        run = ckube.get_run(ns, ref)
        if run is None:
            return f"baseline QuranFineTune {ref!r} not found in namespace {ns}"
        theirs = builders.claim_name(run.get("spec") or {}, ref)
        if theirs != claim:
            return f"baseline {ref!r} uses claim {theirs}; this campaign's variants use {claim}: the baseline's " \
                   "results must be on the same claim"
    if baseline.get("promoted"):
        other = ckube.get_campaign(ns, baseline["promoted"])
        if other is not None:
            theirs = (other.get("status") or {}).get("claim") or \
                builders.claim_name((other.get("spec") or {}).get("template") or {}, baseline["promoted"])
            if theirs != claim:
                return f"baseline campaign {baseline['promoted']!r} promotes onto claim {theirs}; this campaign's " \
                       f"variants use {claim}: its production model must be on the same claim"
    return None


def apply(derived: Any, spec: CampaignSpec, meta: Mapping[str, Any], memo: kopf.Memo, ckube: CampaignKube) -> None:
    cfg: OperatorSettings = getattr(memo, "settings", None) or settings_from_env()
    kube: Kube = memo.kube
    uid, ns = meta["uid"], meta["namespace"]
    if derived.create:
        pvc = campaign_pvc(spec, meta)
        if pvc is not None:
            kube.ensure(pvc)
        bodies = {c.child: c.body for c in plan(spec, meta)}
        for child in derived.create:
            obj, created = ckube.create_run(bodies[child])
            owner = (obj["metadata"].get("ownerReferences") or [{}])[0].get("uid")
            if owner != uid:
                memo.campaign_foreign[uid].add(child)
                continue
            memo.campaign_created[uid].add(child)
            if created:
                derived.events.append(("Normal", "ChildCreated", f"QuranFineTune {child}"))
    for child, reason in derived.stop:
        try:
            ckube.request_stop(ns, child, reason)
        except ApiException as exc:
            if exc.status != 404:
                raise
    if derived.report:
        kind, doc = derived.report
        kube.ensure(campaign_jobs.input_config_map(meta, kind, doc))
        job, created = kube.ensure(campaign_jobs.report_job(spec, meta, kind, cfg))
        if created:
            derived.events.append(("Normal", "JobCreated", f"{kind} Job {job['metadata']['name']}"))
    if derived.notify:
        event, payload = derived.notify
        kube.ensure(campaign_jobs.notify_config_map(meta, event, payload))
        job, created = kube.ensure(campaign_jobs.notify_job(spec, meta, event, cfg))
        if created:
            derived.events.append(("Normal", "Notifying", f"{event} summary: delivery Job {job['metadata']['name']}"))


def _write(ckube: CampaignKube, body: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any],
           events: list[tuple[str, str, str]]) -> None:
    changes = st.status_patch(old, new)
    if changes:
        try:
            ckube.patch_status(body["metadata"]["namespace"], body["metadata"]["name"], changes)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise kopf.TemporaryError(f"status patch failed: {api_message(exc)}", delay=5) from exc
    for kind, reason, message in events:
        kopf.event(dict(body), type=kind, reason=reason, message=message[:1024])
