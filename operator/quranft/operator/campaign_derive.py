"""Pure campaign derivation: (spec, status, observed children and Jobs) -> the new status and what to do next.

No I/O. The handlers gather a `CampaignObserved` (children from a kopf index, the report and delivery Jobs,
dry-run results) and apply the `CampaignDerived`: create children, ask children to stop, create the report or
delivery Job, patch the status, emit the events. Children are ordinary QuranFineTunes; their phases and
verdicts are sticky, so the promotion decision computed from them is the same on every pass (and after an
operator restart).

Phases: Pending (validating; nothing created) -> Running (children exist) -> Reporting (every variant ended;
the report Job runs) -> Succeeded (at least one variant benchmarked) | Failed (reason in status.reason).
"""
from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping

from . import campaign_notify
from . import status as st
from .campaign_plan import ChildPlan
from .campaign_spec import ENDED_PHASES, PROMOTE_ANNOTATION, STOP_ANNOTATION, TERMINAL_PHASES, CampaignSpec
from .observe import JobView, parse_time

MAX_HISTORY = 200
VERDICT_ORDER = {"improvement": 0, "neutral": 1, "regression": 2}
WARNING_CONDITIONS = {"InvalidVariants", "InvalidBaseline", "CorpusMismatch", "Failed", "NotifyFailed"}
NOTIFY_EVENTS = ("finished", "promoted")


def _promoted(cond: Mapping[str, Any]) -> bool:
    """No transition event for Promoted=True: the Promoted Event itself carries the model's path (_promotion_result)."""
    return cond["type"] == "Promoted" and cond.get("status") == "True"


# --- what we observe -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChildView:
    """The parts of a child QuranFineTune the campaign reads (kept in a kopf index)."""
    name: str
    uid: str = ""
    owner_uid: str = ""
    phase: str | None = None
    verdict: str | None = None
    trained: bool = False
    data_started: bool = False  # it prepares its data (a prepare Job), waits for a sibling's, or has it
    failed_reason: str | None = None
    failed_message: str | None = None
    stop_requested: str | None = None  # our annotation's value (the reason)
    stopped_message: str | None = None  # the child's Stopped condition
    progress: Mapping[str, Any] = field(default_factory=dict)
    model: Mapping[str, Any] = field(default_factory=dict)
    benchmark: Mapping[str, Any] = field(default_factory=dict)
    gpus: int = 0
    gpu_hours: float | None = None  # status.training.gpuHours (wall x nodes x GPUs of the training)
    start_time: str | None = None
    completion_time: str | None = None

    @property
    def ended(self) -> bool:
        return self.phase in ENDED_PHASES


def child_view(body: Mapping[str, Any]) -> ChildView:
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    owner = next((r.get("uid", "") for r in meta.get("ownerReferences") or [] if r.get("controller")), "")
    failed = st.get_condition(status, "Failed") if status.get("phase") == "Failed" else None
    stopped = st.get_condition(status, "Stopped")
    resources = spec.get("resources") or {}
    bench = status.get("benchmark") or {}
    keep = ("metrics", "intervals", "deltas", "display", "primaryMetric", "resultsPath", "reportPath", "artifact",
            "reason", "verdictHead")
    benchmark = {k: copy.deepcopy(bench[k]) for k in keep if bench.get(k) is not None}
    if (bench.get("corpus") or {}).get("hash"):
        benchmark["corpusHash"] = bench["corpus"]["hash"]
    return ChildView(
        name=meta.get("name", ""), uid=meta.get("uid", ""), owner_uid=owner,
        phase=status.get("phase"), verdict=status.get("verdict"), trained=st.condition_true(status, "Trained"),
        data_started=bool((status.get("jobs") or {}).get("prepare")) or st.condition_true(status, "DataReady")
        or (st.get_condition(status, "DataReady") or {}).get("reason") == "WaitingForSibling",
        failed_reason=(failed or {}).get("reason"), failed_message=(failed or {}).get("message"),
        stop_requested=(meta.get("annotations") or {}).get(STOP_ANNOTATION),
        stopped_message=(stopped or {}).get("message") if (stopped or {}).get("status") == "True" else None,
        progress=copy.deepcopy(dict(status.get("progress") or {})), model=copy.deepcopy(dict(status.get("model") or {})),
        benchmark=benchmark,
        gpus=int(resources.get("gpus", 1) or 0) * int(resources.get("nodes", 1) or 1),
        gpu_hours=(status.get("training") or {}).get("gpuHours"),
        start_time=status.get("startTime"), completion_time=status.get("completionTime"))


@dataclass(frozen=True)
class CampaignObserved:
    now: datetime
    plan: list[ChildPlan] = field(default_factory=list)
    plan_error: str | None = None  # the variants cannot be built (campaign_plan.PlanError)
    children: Mapping[str, ChildView] = field(default_factory=dict)  # child name -> ours (owner uid matches)
    foreign: frozenset[str] = frozenset()  # child names held by a QuranFineTune that is not ours
    created: frozenset[str] = frozenset()  # children created by this process (the index may lag behind)
    lost: frozenset[str] = frozenset()  # children the status records that the API server no longer has
    validation: Mapping[str, str] | None = None  # variant -> API server rejection; None: not validated this pass
    baseline_error: str | None = None
    jobs: Mapping[str, JobView] = field(default_factory=dict)  # report, promote, notify-finished, notify-promoted
    promote_annotation: str | None = None
    image_pull_deadline_s: int = 600
    startup_deadline_s: int = 300


@dataclass
class CampaignDerived:
    status: dict[str, Any]
    validate: bool = False  # dry-run the children (and check the baseline), then derive again
    create: list[str] = field(default_factory=list)  # child names, in order
    stop: list[tuple[str, str]] = field(default_factory=list)  # (child, reason)
    report: tuple[str, dict[str, Any]] | None = None  # ("report" | "promote", the Job's input document)
    notify: tuple[str, dict[str, Any]] | None = None  # (event, payload)
    events: list[tuple[str, str, str]] = field(default_factory=list)


# --- pure rules ------------------------------------------------------------------------------------------------

def median_stop(histories: Mapping[str, list[list[float]]], candidates: Iterable[str], min_step: int,
                margin: float) -> dict[str, str]:
    """Katib's median stopping rule on validation WER (lower is better): variant -> reason to stop it.

    A candidate whose latest reported step s is at least `min_step` is stopped when its best WER up to s is above
    margin + the median of the other variants' running averages (the mean of their WERs at steps <= s), counting
    only the variants that reached s (reported at s or later) and at least one of them.
    """
    out: dict[str, str] = {}
    for name in candidates:
        points = histories.get(name) or []
        if not points:
            continue
        s = points[-1][0]
        if s < min_step:
            continue
        best = min(w for step, w in points if step <= s)
        averages = []
        for other, theirs in histories.items():
            if other == name or not theirs or max(step for step, _ in theirs) < s:
                continue
            upto = [w for step, w in theirs if step <= s]
            if upto:
                averages.append(statistics.fmean(upto))
        if not averages:
            continue
        median = statistics.median(averages)
        if best > median + margin:
            out[name] = (f"MedianStop at step {int(s)}: best validation WER {best:.4f} is worse than {median:.4f}, "
                         f"the median of {len(averages)} other variant(s)' running averages up to that step"
                         + (f", by more than the margin {margin}" if margin else ""))
    return out


def rank_key(variant: Mapping[str, Any]) -> tuple:
    """Best first: verdict improvement, then neutral, regression, none; then the primary metric (higher), model
    size (smaller), average latency (smaller), name."""
    primary = (variant.get("primaryMetric") or {}).get("value")
    latency = (variant.get("metrics") or {}).get("avgLatency")
    size = variant.get("sizeBytes")
    return (VERDICT_ORDER.get(variant.get("verdict"), 3) if variant.get("phase") == "Succeeded" else 4,
            -primary if primary is not None else float("inf"),
            size if size is not None else float("inf"),
            latency if latency is not None else float("inf"),
            variant.get("name", ""))


def corpus_problem(variants: list[Mapping[str, Any]]) -> tuple[str | None, str | None]:
    """(the shared corpus hash, None) or (None, the mismatch in words) over the variants benchmarked so far."""
    hashes = {v["name"]: v["corpusHash"] for v in variants if v.get("corpusHash")}
    distinct = sorted(set(hashes.values()))
    if len(distinct) > 1:
        by_hash = {h: sorted(n for n, x in hashes.items() if x == h) for h in distinct}
        return None, "variants were benchmarked on different corpora (content hashes " + \
            "; ".join(f"{h[:12]}: {', '.join(names)}" for h, names in by_hash.items()) + \
            "): their verdicts are not comparable, so nothing is promoted"
    return (distinct[0] if distinct else None), None


def decide_promotion(variants: list[Mapping[str, Any]], policy: str, manual: str | None,
                     mismatch: str | None) -> dict[str, Any]:
    """{variant | None, reason, message}: which variant the report Job promotes."""
    if mismatch:
        return {"variant": None, "reason": "CorpusMismatch", "message": mismatch}
    by_name = {v["name"]: v for v in variants}
    if policy == "Manual":
        if not manual:
            return {"variant": None, "reason": "AwaitingManualPromotion",
                    "message": f"promotion is Manual: annotate the campaign {PROMOTE_ANNOTATION}=<variant>"}
        chosen = by_name.get(manual)
        if chosen is None:
            return {"variant": None, "reason": "InvalidPromotion",
                    "message": f"{PROMOTE_ANNOTATION} names {manual!r}, which is not a variant ({sorted(by_name)})"}
        if chosen.get("phase") != "Succeeded":
            return {"variant": None, "reason": "InvalidPromotion",
                    "message": f"{manual} ended {chosen.get('phase')}: only a benchmarked variant can be promoted"}
        return {"variant": manual, "reason": "Promoted",
                "message": f"{manual} promoted by the {PROMOTE_ANNOTATION} annotation "
                           f"(verdict {chosen.get('verdict')})"}
    improving = [v for v in variants if v.get("phase") == "Succeeded" and v.get("verdict") == "improvement"]
    if not improving:
        return {"variant": None, "reason": "NoImprovement",
                "message": "no variant is a real improvement over the baseline (paired verdict): nothing promoted"}
    best = min(improving, key=rank_key)
    pm = best.get("primaryMetric") or {}
    detail = f"{pm.get('name')} {pm.get('value')}" + (f", delta interval {pm['interval']}" if pm.get("interval") else "")
    others = len(improving) - 1
    return {"variant": best["name"], "reason": "Promoted",
            "message": f"{best['name']} is the best real improvement ({detail})"
                       + (f"; ahead of {others} other improving variant(s)" if others else "")}


def merge_history(history: list[list[float]] | None, child: ChildView | None) -> list[list[float]]:
    """[[step, valWer], ...] sorted by step: the recorded points plus what the child reports now (its progress
    while training, its model's final values at the end).

    A progress line with `valWerStep` dates its validation exactly. Without it the validation is dated by the
    step at which it was first seen, and the same value seen again at a later step is the same validation, not a
    new point (so it is not counted twice in the running averages of the median rule).
    """
    points = {int(s): w for s, w in (history or [])}
    if child is not None:
        for source in (child.progress, child.model):
            wer = source.get("valWer")
            exact = source.get("valWerStep")
            step = exact if exact is not None else source.get("step")
            if wer is None or step is None or int(step) in points:
                continue
            latest = points[max(points)] if points else None
            if exact is None and latest is not None and float(wer) == latest:
                continue
            points[int(step)] = float(wer)
    merged = [[s, points[s]] for s in sorted(points)]
    return merged[-MAX_HISTORY:]


def _gpu_hours(child: ChildView) -> float | None:
    """The child's own training GPU-hours, else GPUs x its whole wall time (first Job to end): an upper bound."""
    if child.gpu_hours is not None:
        return float(child.gpu_hours)
    start, end = parse_time(child.start_time), parse_time(child.completion_time)
    if start is None or end is None:
        return None
    return round(child.gpus * (end - start).total_seconds() / 3600.0, 4)


def variant_status(plan: ChildPlan, child: ChildView | None, old: Mapping[str, Any] | None, created: bool,
                   lost: bool, primary_default: str) -> dict[str, Any]:
    old = old or {}
    out: dict[str, Any] = {"name": plan.variant, "child": plan.child}
    history = merge_history(old.get("valWerHistory"), child)
    if history:
        out["valWerHistory"] = history
    if old.get("phase") == "Failed" and old.get("reason") == "ChildDeleted":
        lost = True
    if lost:
        out.update({k: v for k, v in old.items() if k not in ("phase", "reason")})
        out.update(phase="Failed", reason="ChildDeleted")
        return out
    if child is None:
        recorded = old.get("phase")
        out["phase"] = recorded if created and recorded not in (None, "Waiting") else ("Pending" if created else "Waiting")
        return out
    out["phase"] = child.phase or "Pending"
    bench = child.benchmark
    if child.verdict:
        out["verdict"] = child.verdict
    if child.failed_reason:
        out["reason"] = child.failed_reason
    name = str(bench.get("primaryMetric") or primary_default)
    metrics = bench.get("metrics") or {}
    if metrics:
        out["primaryMetric"] = {k: v for k, v in {
            "name": name, "value": metrics.get(name), "delta": (bench.get("deltas") or {}).get(name),
            "interval": (bench.get("intervals") or {}).get(name)}.items() if v is not None}
    for key in ("metrics", "intervals", "deltas", "resultsPath"):
        if bench.get(key) is not None:
            out[key] = copy.deepcopy(bench[key])
    if bench.get("corpusHash"):
        out["corpusHash"] = bench["corpusHash"]
    model = child.model
    if model.get("path"):
        out["modelPath"] = model["path"]
    size = model.get("sizeBytes") or (bench.get("artifact") or {}).get("bytes")
    if size is not None:
        out["sizeBytes"] = int(size)
    steps = model.get("step") if model.get("step") is not None else child.progress.get("step")
    if steps is not None:
        out["steps"] = int(steps)
    image = model.get("imageID") or model.get("image")
    if image:
        out["imageID"] = str(image)
    if child.ended:
        hours = _gpu_hours(child)
        if hours is not None:
            out["gpuHours"] = hours
    if child.phase == "Stopped":  # a stop request the child ignored (training had finished) stopped nothing
        reason = child.stop_requested or child.stopped_message
        if reason:
            out["stoppedReason"] = reason
    return out


def _slot_held(variant: Mapping[str, Any], child: ChildView | None, created: bool) -> bool:
    """Preparing data or training: what `parallelism` bounds (a child benchmarking holds no slot)."""
    if not created or variant["phase"] in ENDED_PHASES:
        return False
    return not (child is not None and child.trained)


def _data_settled(child: ChildView | None) -> bool:
    return child is not None and (child.data_started or child.ended or child.trained)


def report_input(meta: Mapping[str, Any], spec: CampaignSpec, status: Mapping[str, Any],
                 promote: str | None, reason: str) -> dict[str, Any]:
    """The report Job's input (docs/contracts.md, campaign report)."""
    keys = ("name", "child", "phase", "verdict", "resultsPath", "modelPath", "metrics", "intervals", "deltas",
            "sizeBytes", "steps", "gpuHours", "imageID", "stoppedReason", "valWerHistory")
    variants = []
    for v in status.get("variants") or []:
        entry: dict[str, Any] = {k: copy.deepcopy(v.get(k)) for k in keys}
        entry["primaryMetric"] = (v.get("primaryMetric") or {}).get("name")
        variants.append(entry)
    return {"campaign": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            "promote": promote, "promotionReason": reason, "baseline": spec.effective_baseline(),
            "corpusHash": status.get("corpusHash"), "variants": variants}


# --- one pass ----------------------------------------------------------------------------------------------------

class _Pass:
    def __init__(self, spec: CampaignSpec, meta: Mapping[str, Any], status: Mapping[str, Any],
                 obs: CampaignObserved):
        self.spec, self.meta, self.obs = spec, meta, obs
        self.generation = int(meta.get("generation") or 1)
        self.old = {k: v for k, v in status.items() if k != "kopf"}
        self.new: dict[str, Any] = copy.deepcopy(self.old)
        self.new.setdefault("conditions", [])
        self.new["observedGeneration"] = self.generation
        self.out = CampaignDerived(self.new)

    def cond(self, ctype: str, value: bool, reason: str, message: str = "") -> None:
        st.set_condition(self.new["conditions"], ctype, "True" if value else "False", reason, message,
                         self.generation, self.obs.now)

    def event(self, kind: str, reason: str, message: str) -> None:
        self.out.events.append((kind, reason, message))

    def fail(self, reason: str, message: str) -> CampaignDerived:
        self.new.update(phase="Failed", reason=reason)
        self.cond("Failed", True, reason, message)
        self.new.setdefault("completionTime", st.now_iso(self.obs.now))
        return self.finish()

    def finish(self) -> CampaignDerived:
        if self.new.get("phase") in TERMINAL_PHASES:
            self._notify()
        self.out.events = st.transition_events(self.old, self.new, WARNING_CONDITIONS, _promoted) + self.out.events
        return self.out

    # --- the report Job and, afterwards, promotion Jobs --------------------------------------------------------
    def _summary(self, job: JobView) -> tuple[dict[str, Any] | None, bool]:
        """(the Job's termination summary, still waiting for the pod's final status)."""
        pod = next((p for p in reversed(job.pods) if p.phase == "Succeeded" or p.exit_code == 0), None)
        if pod is None or pod.message is None:
            done = job.completion_time or job.created
            if done is None or self.obs.now - done < st.OBSERVATION_GRACE:
                return None, True
            return None, False
        summary, _ = st.parse_summary(pod.message)
        return summary, False

    def _promotion_result(self, summary: Mapping[str, Any], job: str) -> None:
        production = summary.get("production")
        decision = self.new.get("promotion") or {}
        if production and production.get("variant"):
            variant = production["variant"]
            child = next((v["child"] for v in self.new.get("variants") or [] if v["name"] == variant), None)
            if (self.old.get("production") or {}).get("variant") != variant:
                self.new["production"] = {k: v for k, v in {
                    "variant": variant, "child": child, "modelPath": production.get("modelPath"),
                    "lineagePath": production.get("lineagePath"), "resultsPath": production.get("resultsPath"),
                    "promotedAt": st.now_iso(self.obs.now)}.items() if v is not None}
                self.event("Normal", "Promoted", f"{variant} is the production model of campaign "
                                                 f"{self.meta['name']}: {production.get('modelPath')} "
                                                 f"({decision.get('message', '')})")
            self.cond("Promoted", True, "Promoted", decision.get("message") or f"{variant} promoted by Job {job}")
        elif decision.get("variant"):
            self.cond("Promoted", False, "NotPromoted",
                      f"Job {job} was asked to promote {decision['variant']} but reported no production model")
        else:
            self.cond("Promoted", False, decision.get("reason") or "NoImprovement", decision.get("message") or "")

    def report(self) -> CampaignDerived:
        """Every variant ended: the report Job (with the promotion decision), then the terminal phase."""
        job = self.obs.jobs.get("report")
        if job is None or not job.finished:
            decision = self.new.get("promotion")
            if not decision:  # decided once: the children's phases and verdicts are sticky
                variants = self.new.get("variants") or []
                decision = decide_promotion(variants, self.spec.promotion.policy, self.obs.promote_annotation,
                                            _mismatch(self.new))
                if decision["variant"]:
                    decision["job"] = "report"
                self.new["promotion"] = decision
            if job is None:
                self.out.report = ("report", report_input(self.meta, self.spec, self.new, decision["variant"],
                                                          decision["message"]))
                self.cond("Reported", False, "Reporting", "creating the report Job")
            else:
                problem = _job_startup_problem(job, self.obs)
                if problem:
                    return self.fail(problem[0], f"report Job {job.name}: {problem[1]}")
                self.cond("Reported", False, "Reporting", f"Job {job.name} is writing the report")
            self.new["phase"] = "Reporting"
            return self.finish()
        if job.failed_reason:
            reason, message = st.classify_failure(job)
            self.cond("Reported", False, "ReportFailed", message)
            return self.fail("ReportFailed", f"report Job {job.name}: {reason}: {message}")
        summary, waiting = self._summary(job)
        if waiting:
            return self.finish()
        if not summary or summary.get("ok") is False:
            message = (summary or {}).get("message") or "the report Job's termination message is not the expected JSON"
            self.cond("Reported", False, "ReportFailed", message)
            return self.fail("ReportFailed", f"report Job {job.name}: {message}")
        self.new["report"] = {k: v for k, v in {"job": job.name, "path": summary.get("reportPath"),
                                                "plots": list(summary.get("plots") or [])}.items() if v is not None}
        self.cond("Reported", True, "Reported", f"report {summary.get('reportPath')}")
        self._promotion_result(summary, job.name)
        if not any(v["phase"] == "Succeeded" for v in self.new.get("variants") or []):
            return self.fail("AllVariantsFailed", "no variant reached a verdict (see status.variants)")
        self.new.update(phase="Succeeded")
        self.new.pop("reason", None)
        self.new.setdefault("completionTime", st.now_iso(self.obs.now))
        return self.finish()

    def manual_promotion(self) -> None:
        """After the report: a Manual campaign promotes the variant the annotation names, once."""
        if self.spec.promotion.policy != "Manual" or self.new.get("production") or not self.new.get("report"):
            return
        decision = self.new.get("promotion") or {}
        job = self.obs.jobs.get("promote")
        if decision.get("job") != "promote":
            if not self.obs.promote_annotation:
                return
            decision = decide_promotion(self.new.get("variants") or [], "Manual", self.obs.promote_annotation,
                                        _mismatch(self.new))
            if decision["variant"]:
                decision["job"] = "promote"
            self.new["promotion"] = decision
            if not decision["variant"]:
                self.cond("Promoted", False, decision["reason"], decision["message"])
                return
        if job is None:
            self.out.report = ("promote", report_input(self.meta, self.spec, self.new, decision["variant"],
                                                       decision["message"]))
            self.cond("Promoted", False, "Promoting", f"promoting {decision['variant']}")
            return
        if not job.finished:
            return
        if job.failed_reason:
            reason, message = st.classify_failure(job)
            self.cond("Promoted", False, "PromotionFailed", f"Job {job.name}: {reason}: {message}")
            return
        summary, waiting = self._summary(job)
        if waiting:
            return
        if not summary or summary.get("ok") is False:
            self.cond("Promoted", False, "PromotionFailed", (summary or {}).get("message") or
                      f"Job {job.name}: the termination message is not the expected JSON")
            return
        self._promotion_result(summary, job.name)

    # --- the webhook ---------------------------------------------------------------------------------------------
    def _notify(self) -> None:
        if self.spec.notify is None:
            return
        notified = self.new.setdefault("notified", {})
        due = ["finished"]
        if (self.new.get("promotion") or {}).get("job") == "promote" and self.new.get("production"):
            due.append("promoted")
        for event in due:
            if notified.get(event):
                continue
            job = self.obs.jobs.get(f"notify-{event}")
            if job is None:
                self.out.notify = (event, campaign_notify.summary(self.meta, self.new, event))
                return
            if not job.finished:
                return
            summary, waiting = self._summary(job) if job.complete else (None, False)
            if waiting:
                return
            delivery = {"job": job.name, "at": st.now_iso(self.obs.now), "ok": bool(job.complete),
                        "deliveryId": (summary or {}).get("deliveryId") or ""}
            if (summary or {}).get("status") is not None:
                delivery["responseStatus"] = int(summary["status"])
            notified[event] = delivery
            if job.complete:
                self.cond("Notified", True, "Delivered", f"{event} summary delivered to {self.spec.notify.url}")
            else:
                _, message = st.classify_failure(job)
                self.cond("Notified", False, "NotifyFailed", f"{event} summary not delivered: {message}")


def _mismatch(status: Mapping[str, Any]) -> str | None:
    cond = st.get_condition(status, "CorpusMismatch")
    return cond.get("message") if cond and cond.get("status") == "True" else None


def _job_startup_problem(job: JobView, obs: CampaignObserved) -> tuple[str, str] | None:
    problem = st.startup_problem(job, obs.now, None, obs.image_pull_deadline_s, obs.startup_deadline_s)
    if problem and problem[2]:
        return problem[0], problem[1]
    return None


def derive(spec: CampaignSpec, meta: Mapping[str, Any], status: Mapping[str, Any] | None,
           obs: CampaignObserved) -> CampaignDerived:
    """The campaign's new status and next actions from what is observed right now."""
    p = _Pass(spec, meta, status or {}, obs)
    new = p.new
    if p.old.get("phase") in TERMINAL_PHASES:
        p.manual_promotion()
        return p.finish()
    new.setdefault("phase", "Pending")
    if obs.plan_error:
        p.cond("VariantsValid", False, "InvalidVariants", obs.plan_error)
        return p.fail("InvalidVariants", obs.plan_error)
    old_variants = {v["name"]: v for v in p.old.get("variants") or []}
    recorded = {v["child"] for v in old_variants.values() if v.get("phase") not in (None, "Waiting")}
    exists = set(obs.children) | set(obs.created) | recorded

    # 1. Validation, once, before any child exists: the API server's dry run of every child, and the baseline.
    if not st.condition_true(new, "VariantsValid"):
        if not exists & {c.child for c in obs.plan}:
            if obs.validation is None:
                p.out.validate = True
                return p.finish()
            if obs.baseline_error:
                p.cond("VariantsValid", False, "InvalidBaseline", obs.baseline_error)
                return p.fail("InvalidBaseline", obs.baseline_error)
            if obs.validation:
                message = "; ".join(f"variant {v}: {m}" for v, m in obs.validation.items())
                p.cond("VariantsValid", False, "InvalidVariants", message)
                return p.fail("InvalidVariants", message)
        p.cond("VariantsValid", True, "DryRunAccepted",
               f"the API server accepted all {len(obs.plan)} children in a dry run")
    new["claim"] = obs.plan[0].body["spec"]["storage"]["existingClaim"] if obs.plan else new.get("claim")

    # 2. Each variant from its child.
    primary = str((spec.template.get("benchmark") or {}).get("primaryMetric") or "recall")
    variants = []
    for plan in obs.plan:
        created = plan.child in exists
        variants.append(variant_status(plan, obs.children.get(plan.child), old_variants.get(plan.variant), created,
                                       plan.child in obs.lost, primary))
    new["variants"] = variants
    for v in variants:
        before = old_variants.get(v["name"]) or {}
        if v["phase"] in ENDED_PHASES and before.get("phase") not in ENDED_PHASES:
            detail = v.get("verdict") or v.get("reason") or v.get("stoppedReason") or ""
            p.event("Warning" if v["phase"] == "Failed" else "Normal", f"Variant{v['phase']}",
                    f"variant {v['name']} ({v['child']}) ended {v['phase']}" + (f": {detail}" if detail else ""))

    # 3. Early stopping: ask clearly worse training variants to stop (the child ends Stopped).
    if spec.early_stopping is not None:
        histories = {v["name"]: v.get("valWerHistory") or [] for v in variants}
        candidates = []
        for v, plan in zip(variants, obs.plan):
            child = obs.children.get(plan.child)
            if child is not None and not child.ended and not child.trained and not child.stop_requested:
                candidates.append(v["name"])
        decisions = median_stop(histories, candidates, spec.early_stopping.min_step, spec.early_stopping.margin)
        for v, plan in zip(variants, obs.plan):
            if v["name"] in decisions:
                p.out.stop.append((plan.child, decisions[v["name"]]))
                p.event("Normal", "EarlyStopping", f"stopping {v['name']} ({plan.child}): {decisions[v['name']]}")

    # 4. Parallelism: create waiting variants, in order, while fewer than `parallelism` hold a slot. A variant
    # whose data spec a sibling is about to prepare waits until that sibling's status shows it (a prepare Job, or
    # waiting for another's): then the QuranFineTune controller reuses that data instead of preparing it twice.
    free = spec.parallelism - sum(_slot_held(v, obs.children.get(plan.child), plan.child in exists)
                                  for v, plan in zip(variants, obs.plan))
    blocked = []
    unsettled = {plan.data_hash for v, plan in zip(variants, obs.plan)
                 if plan.child in exists and not _data_settled(obs.children.get(plan.child))}
    for v, plan in zip(variants, obs.plan):
        if v["phase"] != "Waiting":
            continue
        if free <= 0 or (plan.data_hash is not None and plan.data_hash in unsettled):
            break  # in order: a later variant does not overtake
        if plan.child in obs.foreign:
            blocked.append(plan.child)
            continue
        p.out.create.append(plan.child)
        unsettled.add(plan.data_hash)
        v["phase"] = "Pending"
        free -= 1
    if blocked:
        p.cond("ChildNameTaken", True, "ChildNameTaken",
               f"QuranFineTunes {blocked} exist but belong to something else (an earlier campaign being deleted?); "
               "waiting for them to go")
    elif st.get_condition(new, "ChildNameTaken"):
        p.cond("ChildNameTaken", False, "Free", "every child name is free or ours")
    if p.out.create or exists:
        new.setdefault("startTime", st.now_iso(obs.now))

    # 5. Summary columns and the corpus check.
    ended = [v for v in variants if v["phase"] in ENDED_PHASES]
    new["done"] = f"{len(ended)}/{len(variants)}"
    finished = [v for v in variants if v["phase"] == "Succeeded"]
    if finished:
        best = min(finished, key=rank_key)
        new["best"], new["verdict"] = best["name"], best.get("verdict")
    corpus, mismatch = corpus_problem(variants)
    if mismatch:
        p.cond("CorpusMismatch", True, "CorpusMismatch", mismatch)
    elif corpus:
        new["corpusHash"] = corpus
        p.cond("CorpusMismatch", False, "SameCorpus", f"every benchmarked variant was judged on corpus {corpus}")

    if len(ended) < len(variants):
        new["phase"] = "Running" if exists or p.out.create else "Pending"
        return p.finish()
    return p.report()
