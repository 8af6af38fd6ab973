"""kopf wiring of the QuranFineTuneCampaign controller: indexes, one pass loop per campaign, one reconcile pass.

What the pass knows comes from kopf indexes (the campaign's children by owner, its report and delivery Jobs and
their pods), so a pass costs one GET of the campaign and the writes it decides. Passes are event-driven, the same
way as the runs' (handlers.py): each campaign has one kopf daemon that runs a pass and then sleeps on its own
wake-up (memo.campaign_wakeups, keyed by (namespace, campaign)) until the campaign changes (creation, spec
and annotation edits such as a Manual promotion), a child QuranFineTune or one of the campaign's Jobs or pods
changes (event handlers on those watches wake it), or the slow safety resync (`reconcileIntervalSeconds`) comes.
A burst of child events is one pass (a wake during a pass gives one more pass, not one per event), a child's own
kopf worker never waits for it, and kopf respawns the loops when the operator restarts. The pass is sync code and
runs in kopf's executor; it reads the campaign fresh and writes its status itself. All the decisions are
campaign_derive's.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections import defaultdict
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Mapping

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
from .wakeups import Wake, Wakeups

CAMPAIGN = (GROUP, VERSION, CAMPAIGN_PLURAL)
RUN = (GROUP, VERSION, PLURAL)
ERROR_BACKOFF_S = 5.0  # a failed pass is retried after this, or at the next change
log = logging.getLogger(__name__)
Key = tuple[str, str]  # (namespace, campaign)


@kopf.on.startup()
def campaign_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    memo.campaign_locks = defaultdict(threading.Lock)
    memo.campaign_created = defaultdict(set)  # campaign uid -> object names this process created
    memo.campaign_foreign = defaultdict(set)  # campaign uid -> child names held by someone else
    memo.campaign_wakeups = Wakeups()
    memo.campaign_written_rv = {}  # (namespace, campaign) -> resourceVersion of our last status write
    memo.campaign_executor = settings.execution.executor


# --- indexes ---------------------------------------------------------------------------------------------------
# Async (pure, cheap), as the runs' (handlers.py): not queued in the thread pool behind the passes.

@kopf.index(*RUN, labels={LABEL_CAMPAIGN: kopf.PRESENT})
async def campaign_children(body: kopf.Body, namespace: str, labels: Mapping[str, str], **_: Any) -> dict:
    return {(namespace, labels[LABEL_CAMPAIGN]): child_view(body)}


@kopf.index("batch", "v1", "jobs", labels={LABEL_CAMPAIGN: kopf.PRESENT, builders.LABEL_STAGE: kopf.PRESENT})
async def campaign_jobs_index(body: kopf.Body, namespace: str, labels: Mapping[str, str], **_: Any) -> dict:
    return {(namespace, labels[LABEL_CAMPAIGN]): job_view(body)}


@kopf.index("", "v1", "pods", labels={LABEL_CAMPAIGN: kopf.PRESENT, builders.LABEL_STAGE: kopf.PRESENT})
async def campaign_pods_index(body: kopf.Body, namespace: str, labels: Mapping[str, str], **_: Any) -> dict:
    return {(namespace, labels[LABEL_CAMPAIGN]): pod_view(body)}


def _indexes(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: kwargs[k] for k in ("campaign_children", "campaign_jobs_index", "campaign_pods_index")}


# --- wake-ups and the pass loop ------------------------------------------------------------------------------

@kopf.on.event(*CAMPAIGN)
async def on_campaign_event(event: Mapping[str, Any], namespace: str, name: str, meta: Mapping[str, Any],
                            memo: kopf.Memo, **_: Any) -> None:
    key = (namespace, name)
    if event.get("type") == "DELETED":
        memo.campaign_written_rv.pop(key, None)
    elif meta.get("resourceVersion") != memo.campaign_written_rv.get(key):  # not the echo of our own status write
        memo.campaign_wakeups.wake(key)


@kopf.on.event(*RUN, labels={LABEL_CAMPAIGN: kopf.PRESENT})
@kopf.on.event("batch", "v1", "jobs", labels={LABEL_CAMPAIGN: kopf.PRESENT, builders.LABEL_STAGE: kopf.PRESENT})
@kopf.on.event("", "v1", "pods", labels={LABEL_CAMPAIGN: kopf.PRESENT, builders.LABEL_STAGE: kopf.PRESENT})
async def on_campaign_child_event(namespace: str, labels: Mapping[str, str], memo: kopf.Memo, **_: Any) -> None:
    # kopf updates the indexes before it calls the event handlers, so the woken pass sees this change.
    memo.campaign_wakeups.wake((namespace, labels[LABEL_CAMPAIGN]))


# On deletion the loop exits at once; a pass in flight gets 5 s to finish before kopf cancels the loop.
@kopf.daemon(*CAMPAIGN, backoff=ERROR_BACKOFF_S, cancellation_backoff=5.0, cancellation_timeout=10.0)
async def campaign_passes(stopped: kopf.DaemonStopped, namespace: str, name: str, memo: kopf.Memo,
                          **kwargs: Any) -> None:
    key = (namespace, name)
    cfg: OperatorSettings = getattr(memo, "settings", None) or settings_from_env()
    wake = memo.campaign_wakeups.register(key)
    relay = asyncio.create_task(_wake_when_stopped(stopped, wake), name=f"stop relay of {namespace}/{name}")
    indexes = _indexes(kwargs)
    loop = asyncio.get_running_loop()
    try:
        while not stopped:
            submitted = wake.count
            context = contextvars.copy_context()  # kopf.event needs kopf's context variables (its event queue)

            def job() -> int:
                seen = wake.count  # wakes before the pass really began are seen by it (wakeups.Wake)
                context.run(reconcile, key, memo, indexes)
                return seen
            try:
                seen = await loop.run_in_executor(memo.campaign_executor, job)
            except Exception as exc:  # noqa: BLE001  the pass is idempotent: retried after a backoff or a change
                delay = exc.delay if isinstance(exc, kopf.TemporaryError) and exc.delay else ERROR_BACKOFF_S
                log.warning("campaign %s/%s: pass failed (%s: %s); retrying in %.0f s or at the next change",
                            namespace, name, type(exc).__name__, exc, delay,
                            exc_info=not isinstance(exc, (kopf.TemporaryError, ApiException)))
                await wake.sleep(delay, submitted)
                continue
            await wake.sleep(cfg.reconcile_interval, seen)
    finally:
        relay.cancel()
        memo.campaign_wakeups.unregister(key, wake)


async def _wake_when_stopped(stopped: kopf.DaemonStopped, wake: Wake) -> None:
    await stopped.wait()
    wake.set()


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
                   [("Warning", "InvalidSpec", str(exc)[:1000])], memo.campaign_written_rv)
            return
        obs = observe(spec, meta, status, memo, indexes, ckube)
        derived = derive(spec, meta, status, obs)
        if derived.validate:
            obs = replace(obs, validation=validate(obs, ckube), baseline_error=baseline_problem(spec, meta, ckube))
            derived = derive(spec, meta, status, obs)
        apply(derived, spec, meta, memo, ckube)
        _write(ckube, body, status, derived.status, derived.events, memo.campaign_written_rv)


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
           events: list[tuple[str, str, str]], written_rv: dict[Key, str]) -> None:
    changes = st.status_patch(old, new)
    if changes:
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        try:
            written = ckube.patch_status(ns, name, changes)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise kopf.TemporaryError(f"status patch failed: {api_message(exc)}", delay=5) from exc
        written_rv[(ns, name)] = written["metadata"]["resourceVersion"]  # its echo wakes nobody
    for kind, reason, message in events:
        kopf.event(dict(body), type=kind, reason=reason, message=message[:1024])
