"""campaign_derive: children -> campaign status and actions (pure): validation gate, parallelism, early stopping
(Katib's median rule), the promotion decision, the report Job's input and result, the webhook delivery."""
from __future__ import annotations

import pytest
from campaignkit import NOW, campaign, child, job

from quranft.operator.campaign_derive import (CampaignObserved, child_view, decide_promotion, derive, median_stop,
                                              rank_key)
from quranft.operator.campaign_plan import plan
from quranft.operator.campaign_spec import CampaignStatus


def observed(spec, meta, children=(), **kw) -> CampaignObserved:
    views = {c["metadata"]["name"]: child_view(c) for c in children}
    kw.setdefault("validation", {})
    return CampaignObserved(now=NOW, plan=plan(spec, meta), children=views, **kw)


def conditions(status) -> dict:
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions") or []}


def valid(spec, meta) -> dict:
    """The status after the first pass (dry run accepted, first children created)."""
    return derive(spec, meta, {}, observed(spec, meta)).status


# --- median stopping rule -------------------------------------------------------------------------------------

MEDIAN_CASES = [
    # (histories, candidates, min_step, margin, stopped)
    ("worse than the median of two others", {"a": [[10, 0.9], [20, 0.8]], "b": [[10, 0.5], [20, 0.4]],
                                             "c": [[10, 0.6], [20, 0.5]]}, ["a"], 0, 0.0, {"a"}),
    ("better than the median", {"a": [[10, 0.3]], "b": [[10, 0.5]], "c": [[10, 0.6]]}, ["a"], 0, 0.0, set()),
    ("before minStep", {"a": [[10, 0.9]], "b": [[10, 0.1]]}, ["a"], 20, 0.0, set()),
    ("within the margin", {"a": [[10, 0.55]], "b": [[10, 0.5]]}, ["a"], 0, 0.1, set()),
    ("beyond the margin", {"a": [[10, 0.65]], "b": [[10, 0.5]]}, ["a"], 0, 0.1, {"a"}),
    ("nobody else reached the step", {"a": [[30, 0.9]], "b": [[10, 0.1], [20, 0.1]]}, ["a"], 0, 0.0, set()),
    ("alone", {"a": [[10, 0.9]]}, ["a"], 0, 0.0, set()),
    ("running average, not the last value", {"a": [[10, 0.5], [20, 0.5]], "b": [[10, 0.9], [20, 0.1]]},
     ["a"], 0, 0.0, set()),  # b's average up to 20 is 0.5: a's best 0.5 is not worse
    ("best so far, not the latest", {"a": [[10, 0.2], [20, 0.7]], "b": [[10, 0.4], [20, 0.4]]}, ["a"], 0, 0.0, set()),
    ("a finished variant that went further counts", {"a": [[10, 0.8]], "b": [[10, 0.4], [40, 0.2]]}, ["a"], 0, 0.0,
     {"a"}),
    ("only candidates are judged", {"a": [[10, 0.9]], "b": [[10, 0.1]]}, [], 0, 0.0, set()),
    ("the step is the candidate's latest: b's later points are ignored", {"a": [[10, 0.45]],
                                                                        "b": [[10, 0.5], [20, 0.01]]},
     ["a"], 0, 0.0, set()),
]


@pytest.mark.parametrize("label, histories, candidates, min_step, margin, stopped", MEDIAN_CASES,
                         ids=[c[0] for c in MEDIAN_CASES])
def test_median_stopping_rule(label, histories, candidates, min_step, margin, stopped):
    decisions = median_stop(histories, candidates, min_step, margin)
    assert set(decisions) == stopped
    for reason in decisions.values():
        assert reason.startswith("MedianStop at step") and "median" in reason


# --- promotion ---------------------------------------------------------------------------------------------------

def v(name, verdict="improvement", recall=0.9, size=1000, latency=0.1, phase="Succeeded"):
    return {"name": name, "phase": phase, "verdict": verdict, "sizeBytes": size,
            "metrics": {"avgLatency": latency}, "primaryMetric": {"name": "recall", "value": recall}}


PROMOTION_CASES = [
    ("best improvement by the primary metric", [v("a", recall=0.8), v("b", recall=0.9), v("c", "neutral", 0.99)],
     "Automatic", None, None, "b", "Promoted"),
    ("tie: smaller model", [v("a", size=2000), v("b", size=1000)], "Automatic", None, None, "b", "Promoted"),
    ("tie: then lower latency", [v("a", latency=0.3), v("b", latency=0.2)], "Automatic", None, None, "b", "Promoted"),
    ("tie everywhere: name", [v("b"), v("a")], "Automatic", None, None, "a", "Promoted"),
    ("no real improvement", [v("a", "neutral", 0.99), v("b", "regression")], "Automatic", None, None, None,
     "NoImprovement"),
    ("an improvement that failed later is not one", [v("a", phase="Failed")], "Automatic", None, None, None,
     "NoImprovement"),
    ("corpus mismatch blocks promotion", [v("a")], "Automatic", None, "different corpora", None, "CorpusMismatch"),
    ("manual waits for the annotation", [v("a")], "Manual", None, None, None, "AwaitingManualPromotion"),
    ("manual promotes the named one", [v("a"), v("b", "neutral")], "Manual", "b", None, "b", "Promoted"),
    ("manual: unknown name", [v("a")], "Manual", "zz", None, None, "InvalidPromotion"),
    ("manual: a stopped variant", [v("a", phase="Stopped")], "Manual", "a", None, None, "InvalidPromotion"),
]


@pytest.mark.parametrize("label, variants, policy, manual, mismatch, winner, reason", PROMOTION_CASES,
                         ids=[c[0] for c in PROMOTION_CASES])
def test_promotion_decision(label, variants, policy, manual, mismatch, winner, reason):
    decision = decide_promotion(variants, policy, manual, mismatch)
    assert (decision["variant"], decision["reason"]) == (winner, reason)
    assert decision["message"]


def test_rank_key_puts_improvements_first_then_unfinished_last():
    ranked = sorted([v("n", "neutral", 0.99), v("i", recall=0.5), v("r", "regression"), v("f", phase="Failed")],
                    key=rank_key)
    assert [x["name"] for x in ranked] == ["i", "n", "r", "f"]


# --- the pass ---------------------------------------------------------------------------------------------------

def test_first_pass_asks_for_a_dry_run_and_a_rejection_creates_nothing():
    spec, meta = campaign()
    first = derive(spec, meta, {}, observed(spec, meta, validation=None))
    assert first.validate and not first.create and first.status["phase"] == "Pending"
    rejected = derive(spec, meta, {}, observed(
        spec, meta, validation={"b": 'QuranFineTune.quranft.io "c-b" is invalid: unknown field "spec.training.x"'}))
    assert rejected.create == [] and rejected.status["phase"] == "Failed"
    assert rejected.status["reason"] == "InvalidVariants"
    assert conditions(rejected.status)["VariantsValid"] == ("False", "InvalidVariants")
    assert 'variant b: QuranFineTune.quranft.io "c-b" is invalid' in rejected.status["conditions"][0]["message"]
    assert ("Warning", "InvalidVariants") in [(k, r) for k, r, _ in rejected.events]
    bad_plan = derive(spec, meta, {}, CampaignObserved(now=NOW, plan_error="variant x: nope"))
    assert bad_plan.status["phase"] == "Failed" and bad_plan.create == []
    baseline = derive(spec, meta, {}, observed(spec, meta, baseline_error="uses claim other"))
    assert baseline.status["reason"] == "InvalidBaseline" and baseline.create == []


def _own_data(*names):
    return [{"name": n, "overrides": {"data.maxTrainSamples": 10 + i}} for i, n in enumerate(names)]


def test_parallelism_bounds_children_preparing_or_training():
    spec, meta = campaign(variants=_own_data("a", "b", "c", "d"), parallelism=2)
    first = derive(spec, meta, {}, observed(spec, meta))
    assert first.create == ["c-a", "c-b"] and first.status["phase"] == "Running"
    assert [x["phase"] for x in first.status["variants"]] == ["Pending", "Pending", "Waiting", "Waiting"]
    CampaignStatus.model_validate(first.status)
    # Created but not in the index yet: still counted (no third child).
    again = derive(spec, meta, first.status, observed(spec, meta, created=frozenset({"c-a", "c-b"})))
    assert again.create == []
    # One trained (benchmarking holds no slot): the next one starts; a failed one frees its slot too.
    later = derive(spec, meta, again.status, observed(spec, meta, [child("c-a", phase="Benchmarking"),
                                                                   child("c-b", phase="Training")]))
    assert later.create == ["c-c"]
    last = derive(spec, meta, later.status, observed(spec, meta, [
        child("c-a", phase="Succeeded", verdict="neutral", recall=0.5), child("c-b", phase="Failed", failed="OOMKilled"),
        child("c-c", phase="PreparingData")]))
    assert last.create == ["c-d"] and last.status["done"] == "2/4"
    failed = next(x for x in last.status["variants"] if x["name"] == "b")
    assert failed["phase"] == "Failed" and failed["reason"] == "OOMKilled"
    assert ("Warning", "VariantFailed") in [(k, r) for k, r, _ in last.events]


def test_siblings_with_one_data_spec_start_once_the_first_prepares_so_the_data_is_prepared_once():
    spec, meta = campaign(variants=["a", "b", {"name": "own", "overrides": {"data.maxTrainSamples": 5}}],
                          parallelism=3)
    first = derive(spec, meta, {}, observed(spec, meta))
    assert first.create == ["c-a"]  # b shares a's data; own comes after b (in order)
    waiting = derive(spec, meta, first.status, observed(spec, meta, [child("c-a", phase="Pending")]))
    assert waiting.create == []
    preparing = child("c-a", phase="PreparingData")
    preparing["status"]["jobs"] = {"prepare": "c-a-prepare"}
    then = derive(spec, meta, waiting.status, observed(spec, meta, [preparing]))
    assert then.create == ["c-b", "c-own"]


def test_a_child_of_someone_else_is_not_adopted_and_a_deleted_child_fails_its_variant():
    spec, meta = campaign(variants=_own_data("a", "b"), parallelism=2)
    d = derive(spec, meta, {}, observed(spec, meta, foreign=frozenset({"c-a"})))
    assert d.create == ["c-b"] and conditions(d.status)["ChildNameTaken"][0] == "True"
    status = derive(spec, meta, {}, observed(spec, meta)).status
    lost = derive(spec, meta, status, observed(spec, meta, [child("c-b")], lost=frozenset({"c-a"})))
    a = lost.status["variants"][0]
    assert (a["phase"], a["reason"]) == ("Failed", "ChildDeleted") and lost.create == []


def test_history_and_early_stopping_from_child_progress():
    spec, meta = campaign(variants=["a", "b", "c"], parallelism=3, earlyStopping={"minStep": 10, "margin": 0.05})
    status = valid(spec, meta)
    for step, wers in ((10, (0.9, 0.5, 0.6)), (20, (0.85, 0.4, 0.45))):
        kids = [child(f"c-{n}", progress={"step": step, "maxSteps": 40, "valWer": w}) for n, w in zip("abc", wers)]
        d = derive(spec, meta, status, observed(spec, meta, kids))
        status = d.status
        if step == 10:
            assert d.stop == [("c-a", d.stop[0][1])] and "MedianStop at step 10" in d.stop[0][1]
    assert status["variants"][0]["valWerHistory"] == [[10, 0.9], [20, 0.85]]
    # Once asked to stop, it is not asked again; when it ends Stopped, its reason is kept.
    kids = [child("c-a", phase="Stopped", stop="MedianStop at step 10: ..."), child("c-b"), child("c-c")]
    d = derive(spec, meta, status, observed(spec, meta, kids))
    assert d.stop == [] and d.status["variants"][0]["stoppedReason"].startswith("MedianStop")
    CampaignStatus.model_validate(d.status)


def _ended(spec, meta, kids, status=None, **kw):
    status = status or valid(spec, meta)
    return derive(spec, meta, status, observed(spec, meta, kids, **kw))


def test_all_ended_creates_the_report_with_the_promotion_decision_then_records_production():
    spec, meta = campaign(variants=["a", "b", "c"], parallelism=3)
    kids = [child("c-a", "uid-c", "Succeeded", "improvement", recall=0.8),
            child("c-b", "uid-c", "Succeeded", "improvement", recall=0.9),
            child("c-c", "uid-c", "Stopped", stop="MedianStop ...")]
    d = _ended(spec, meta, kids)
    assert d.status["phase"] == "Reporting" and d.report[0] == "report"
    doc = d.report[1]
    assert doc["promote"] == "b" and doc["campaign"] == {"name": "c", "namespace": "team-a", "uid": "uid-c"}
    assert doc["corpusHash"] == "h1" and doc["baseline"] == {"baseModel": True}
    assert [x["name"] for x in doc["variants"]] == ["a", "b", "c"]
    b = doc["variants"][1]
    assert b["primaryMetric"] == "recall" and b["resultsPath"].endswith("c-b/benchmark/latest.json")
    assert b["modelPath"] == "/workspace/runs/c-b/model.nemo" and b["sizeBytes"] == 1000 and b["gpuHours"] == 1.0
    assert doc["variants"][2]["stoppedReason"] == "MedianStop ..."
    assert d.status["best"] == "b" and d.status["verdict"] == "improvement" and d.status["done"] == "3/3"
    # The report Job ran: report paths and production in the status, an Event, Succeeded.
    summary = {"ok": True, "reportPath": "/workspace/campaigns/c/report.md", "plots": ["/workspace/campaigns/c/a.png"],
               "production": {"variant": "b", "modelPath": "/workspace/models/production/c/model.nemo",
                              "lineagePath": "/workspace/models/production/c/lineage.json",
                              "resultsPath": "/workspace/models/production/c/results.json", "history": []}}
    done = _ended(spec, meta, kids, d.status, jobs={"report": job("c-report", "report", summary)})
    s = done.status
    assert s["phase"] == "Succeeded" and s["report"] == {"job": "c-report", "path": summary["reportPath"],
                                                          "plots": summary["plots"]}
    assert s["production"]["variant"] == "b" and s["production"]["child"] == "c-b"
    assert s["production"]["lineagePath"].endswith("lineage.json") and s["production"]["promotedAt"]
    assert conditions(s)["Promoted"] == ("True", "Promoted")
    assert [r for _, r, _ in done.events].count("Promoted") == 1
    CampaignStatus.model_validate(s)
    # Terminal: another pass changes nothing and emits nothing.
    after = derive(spec, meta, s, observed(spec, meta, kids, jobs={"report": job("c-report", "report", summary)}))
    assert after.status == s and after.events == [] and after.report is None


def test_no_improvement_promotes_nothing_and_says_so():
    spec, meta = campaign(variants=["a", "b"], parallelism=2)
    kids = [child("c-a", "uid-c", "Succeeded", "neutral", recall=0.9), child("c-b", "uid-c", "Succeeded", "regression")]
    d = _ended(spec, meta, kids)
    assert d.report[1]["promote"] is None and "no variant is a real improvement" in d.report[1]["promotionReason"]
    done = _ended(spec, meta, kids, d.status,
                  jobs={"report": job("c-report", "report", {"ok": True, "reportPath": "/r.md", "production": None})})
    assert done.status["phase"] == "Succeeded" and "production" not in done.status
    assert conditions(done.status)["Promoted"] == ("False", "NoImprovement")


def test_different_corpus_hashes_block_promotion():
    spec, meta = campaign(variants=["a", "b"], parallelism=2)
    kids = [child("c-a", "uid-c", "Succeeded", "improvement", recall=0.9, corpus="h1"),
            child("c-b", "uid-c", "Succeeded", "improvement", recall=0.8, corpus="h2")]
    d = _ended(spec, meta, kids)
    assert conditions(d.status)["CorpusMismatch"] == ("True", "CorpusMismatch")
    assert d.report[1]["promote"] is None and d.status["promotion"]["reason"] == "CorpusMismatch"
    assert ("Warning", "CorpusMismatch") in [(k, r) for k, r, _ in d.events]


def test_report_failure_and_all_variants_failed():
    spec, meta = campaign(variants=["a"])
    kids = [child("c-a", "uid-c", "Succeeded", "improvement", recall=0.9)]
    d = _ended(spec, meta, kids)
    failed = _ended(spec, meta, kids, d.status, jobs={"report": job("c-report", "report", failed=True)})
    assert failed.status["phase"] == "Failed" and failed.status["reason"] == "ReportFailed"
    failed_cond = next(c for c in failed.status["conditions"] if c["type"] == "Failed")
    assert "ReportError: no plots" in failed_cond["message"]
    kids = [child("c-a", "uid-c", "Failed", failed="TrainingError")]
    d = _ended(spec, meta, kids)
    assert d.report[1]["promote"] is None
    done = _ended(spec, meta, kids, d.status, jobs={"report": job("c-report", "report", {"ok": True})})
    assert done.status["phase"] == "Failed" and done.status["reason"] == "AllVariantsFailed"


def test_manual_promotion_after_the_report():
    spec, meta = campaign(variants=["a", "b"], parallelism=2, promotion={"policy": "Manual"})
    kids = [child("c-a", "uid-c", "Succeeded", "improvement", recall=0.9),
            child("c-b", "uid-c", "Succeeded", "neutral", recall=0.95)]
    d = _ended(spec, meta, kids)
    assert d.report[1]["promote"] is None and d.status["promotion"]["reason"] == "AwaitingManualPromotion"
    report = {"report": job("c-report", "report", {"ok": True, "reportPath": "/r.md", "production": None})}
    done = _ended(spec, meta, kids, d.status, jobs=report)
    assert done.status["phase"] == "Succeeded" and conditions(done.status)["Promoted"][1] == "AwaitingManualPromotion"
    asked = derive(spec, meta, done.status, observed(spec, meta, kids, jobs=report, promote_annotation="b"))
    assert asked.report[0] == "promote" and asked.report[1]["promote"] == "b"
    assert asked.status["promotion"] == {"variant": "b", "reason": "Promoted", "job": "promote",
                                         "message": asked.status["promotion"]["message"]}
    jobs = {**report, "promote": job("c-promote", "promote", {"ok": True, "production": {
        "variant": "b", "modelPath": "/workspace/models/production/c/model.nemo", "lineagePath": "/l.json"}})}
    promoted = derive(spec, meta, asked.status, observed(spec, meta, kids, jobs=jobs, promote_annotation="b"))
    assert promoted.status["production"]["variant"] == "b" and promoted.report is None
    assert conditions(promoted.status)["Promoted"] == ("True", "Promoted")


def test_the_webhook_is_delivered_once_when_the_campaign_ends():
    spec, meta = campaign(variants=["a"], notify={"url": "http://hook.example/x", "secretRef": {"name": "hmac"}})
    kids = [child("c-a", "uid-c", "Succeeded", "improvement", recall=0.9)]
    d = _ended(spec, meta, kids)
    assert d.notify is None  # not before the end
    summary = {"ok": True, "reportPath": "/r.md", "production": {"variant": "a", "modelPath": "/m", "lineagePath": "/l"}}
    report = {"report": job("c-report", "report", summary)}
    done = _ended(spec, meta, kids, d.status, jobs=report)
    event, payload = done.notify
    assert event == "finished" and payload["deliveryId"] == "uid-c.finished" and payload["phase"] == "Succeeded"
    assert payload["production"]["variant"] == "a" and payload["variants"][0]["name"] == "a"
    running = {**report, "notify-finished": job("c-notify-finished", "notify-finished", running=True)}
    assert derive(spec, meta, done.status, observed(spec, meta, kids, jobs=running)).notify is None
    delivered = {**report, "notify-finished": job("c-notify-finished", "notify-finished",
                                                  {"ok": True, "status": 204, "deliveryId": "uid-c.finished"})}
    after = derive(spec, meta, done.status, observed(spec, meta, kids, jobs=delivered))
    assert after.notify is None and after.status["notified"]["finished"]["responseStatus"] == 204
    assert after.status["notified"]["finished"]["ok"] is True
    assert conditions(after.status)["Notified"] == ("True", "Delivered")
    CampaignStatus.model_validate(after.status)
    again = derive(spec, meta, after.status, observed(spec, meta, kids, jobs=delivered))
    assert again.notify is None and again.status == after.status


def test_a_stop_the_child_ignored_is_no_stopped_reason_and_training_gpu_hours_win():
    spec, meta = campaign(variants=["a"])
    kid = child("c-a", "uid-c", "Succeeded", "improvement", recall=0.9, stop="MedianStop at step 9: ...")
    kid["status"]["training"] = {"gpuHours": 0.25}
    d = _ended(spec, meta, [kid])
    variant = d.status["variants"][0]
    assert "stoppedReason" not in variant and variant["gpuHours"] == 0.25


def test_history_dates_validations_by_val_wer_step_else_by_when_a_new_value_appears():
    from quranft.operator.campaign_derive import merge_history
    view = lambda progress: child_view(child("c-a", progress=progress))  # noqa: E731
    h = merge_history(None, view({"step": 7, "valWer": 0.9}))
    h = merge_history(h, view({"step": 12, "valWer": 0.9}))  # the same validation, seen again
    h = merge_history(h, view({"step": 23, "valWer": 0.7}))
    assert h == [[7, 0.9], [23, 0.7]]
    h = merge_history(h, view({"step": 31, "valWer": 0.7, "valWerStep": 30}))
    assert h == [[7, 0.9], [23, 0.7], [30, 0.7]]  # dated exactly: a new validation even with the same value
    done = child("c-a", phase="Succeeded", verdict="neutral", recall=0.5)
    done["status"]["model"]["valWer"] = 0.7  # the final model's WER is the last validation's
    assert merge_history(h, child_view(done)) == h
