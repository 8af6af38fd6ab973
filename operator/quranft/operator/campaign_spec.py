"""QuranFineTuneCampaign: the typed spec and status (camelCase on the wire, like the CRD).

One source for three things: the controller parses `spec` with `CampaignSpec`, the derived status is checked
against `CampaignStatus` in the tests, and scripts/gen_campaign_crd.py turns both into the CRD's OpenAPI
schema (every description below is what `kubectl explain quranfinetunecampaign` prints). `spec.template` is
the QuranFineTune spec schema itself, copied by the generator from the QuranFineTune CRD.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

# The campaign's names (quranft.contract.keys), re-exported. Early stopping asks a child to stop through
# STOP_ANNOTATION; the QuranFineTune controller ends it `Stopped`. VARIANT_COMMANDS_ANNOTATION (tests only, honoured
# with --allow-command-overrides) is merged over the campaign's own stage commands for that variant's child.
from quranft.contract.keys import (  # noqa: F401
    API_VERSION as CAMPAIGN_API_VERSION,
    CAMPAIGN_KIND,
    CAMPAIGN_PLURAL,
    LABEL_CAMPAIGN,
    LABEL_VARIANT,
    PROMOTE_ANNOTATION,
    STOP_ANNOTATION,
    VARIANT_COMMANDS_ANNOTATION,
)

# QuranFineTune names are at most 52 characters (its CRD), and children are named <campaign>-<variant>.
MAX_CHILD_NAME = 52
MAX_CAMPAIGN_NAME = 48
MAX_VARIANTS = 64
TRIAL_PREFIX = "trial-"
# Same evaluation protocol for every variant: these parts of the template cannot be overridden.
PROTECTED_PATHS = ("storage", "benchmark.corpus", "benchmark.corpusPath", "benchmark.baseline",
                   "benchmark.primaryMetric", "benchmark.verdictRule", "benchmark.tolerances")
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
PATH_PATTERN = r"^[A-Za-z][A-Za-z0-9]*([.][A-Za-z][A-Za-z0-9]*)*$"
PHASES = ("Pending", "Running", "Reporting", "Succeeded", "Failed")
TERMINAL_PHASES = ("Succeeded", "Failed")
# A child's phases that end its variant (Stopped: early stopping, by the QuranFineTune controller).
ENDED_PHASES = ("Succeeded", "Failed", "Stopped")


def _immutable(field: str) -> dict[str, str]:
    return {"rule": f"has(self.{field}) == has(oldSelf.{field}) && (!has(self.{field}) || self.{field} == oldSelf.{field})",
            "message": f"spec.{field} is immutable"}


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


# --- spec -------------------------------------------------------------------------------------------------------

class Variant(_Model):
    name: str = Field(min_length=1, max_length=40, pattern=NAME_PATTERN,
                      description="Variant name (DNS label); its child QuranFineTune is <campaign>-<name>.")
    overrides: dict[str, Any] = Field(
        default_factory=dict, max_length=64,
        description="Fields of the template to set, by dotted path (e.g. `training.freeze.encoderLayers: 4`; an "
                    "object value replaces the whole field). Unknown fields are rejected by a server-side "
                    "dry run of every child before any is created; storage, benchmark.corpus, corpusPath, baseline, "
                    "primaryMetric, verdictRule and tolerances are the campaign's (the same for every variant) and "
                    "cannot be overridden. Either mistake: condition InvalidVariants, no child created.")
    remove: list[Annotated[str, Field(min_length=1, max_length=256, pattern=PATH_PATTERN)]] = Field(
        default_factory=list, max_length=32,
        description="Fields of the template to remove, by dotted path (e.g. `data.blend` for a variant without the "
                    "blended dataset); applied before the overrides.")


class Search(_Model):
    algorithm: Literal["grid", "random"] = Field(
        "grid", description="grid: every combination of the values (in order, up to maxTrials); random: maxTrials "
                            "distinct combinations drawn with `seed`.")
    seed: int = Field(0, ge=0, description="Seed of the random draw (the same seed gives the same trials).")
    fields: dict[str, Annotated[list[Any], Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=16,
        description="Dotted template path -> the values to try, e.g. `training.learningRate: [1e-5, 5e-5]`. Trials "
                    "are named trial-00, trial-01, ... in the order they are drawn.")
    max_trials: int | None = Field(None, ge=1, le=MAX_VARIANTS,
                                   description="At most this many trials (random: required).")


class QftRef(_Model):
    name: str = Field(min_length=1, max_length=253, description="Name of a QuranFineTune in this namespace.")


class Baseline(_Model):
    qft_ref: QftRef | None = Field(None, description="A finished QuranFineTune on the same claim: its results.")
    promoted: str | None = Field(None, min_length=1, max_length=253, pattern=NAME_PATTERN,
                                 description="The production model of that campaign: "
                                             "models/production/<campaign>/results.json on the claim.")
    base_model: bool | None = Field(None, description="true: the template's training.baseModel, evaluated side by "
                                                      "side on the same corpus.")
    results_path: str | None = Field(None, min_length=1, max_length=1024,
                                     description="A stored benchmark results file on the claim.")

    @model_validator(mode="after")
    def _exactly_one(self) -> "Baseline":
        given = [self.qft_ref is not None, self.promoted is not None, bool(self.base_model), self.results_path is not None]
        if sum(given) != 1:
            raise ValueError("baseline needs exactly one of qftRef, promoted, baseModel: true or resultsPath")
        return self

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [{
        "rule": "[has(self.qftRef), has(self.promoted), has(self.baseModel) && self.baseModel, has(self.resultsPath)]"
                ".filter(x, x).size() == 1",
        "message": "baseline needs exactly one of qftRef, promoted, baseModel: true or resultsPath"}]})


class EarlyStopping(_Model):
    rule: Literal["MedianStop"] = Field(
        "MedianStop", description="MedianStop (Katib's median stopping rule): at a step s >= minStep, a training "
                                  "variant whose best validation WER so far is worse than margin + the median of "
                                  "the other variants' running averages of validation WER up to s (those that "
                                  "reached s; at least one) is stopped.")
    min_step: int = Field(0, ge=0, description="No variant is stopped before it reports validation at this step.")
    margin: float = Field(0.0, ge=0, le=1, description="Validation WER a variant may be worse than the median by.")


class Promotion(_Model):
    policy: Literal["Automatic", "Manual"] = Field(
        "Automatic", description="Automatic: the best variant whose paired verdict is `improvement` (ties: primary "
                                 "metric, then model size, then latency); nothing when none is. Manual: the variant "
                                 "named by the annotation quranft.io/promote.")


class SecretKeyRef(_Model):
    name: str = Field(min_length=1, max_length=253, pattern=NAME_PATTERN, description="Secret in this namespace.")
    key: str = Field("key", min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$",
                     description="Key of the HMAC secret within it.")


class Notify(_Model):
    url: str = Field(min_length=1, max_length=2048, pattern=r"^https?://",
                     description="Webhook that receives a JSON summary (POST) when the campaign finishes and when a "
                                 "model is promoted later (Manual).")
    secret_ref: SecretKeyRef | None = Field(
        None, description="HMAC-SHA256 key: the body is signed in X-Quranft-Signature: sha256=<hex>. The key is "
                          "mounted into the delivery Job only; the operator never reads Secrets.")


class CampaignSpec(_Model):
    template: dict[str, Any] = Field(
        description="The QuranFineTune spec every variant starts from (same schema as QuranFineTune.spec). "
                    "Immutable.",
        json_schema_extra={"x-quranft-embed": "QuranFineTune.spec"})
    variants: list[Variant] = Field(
        default_factory=list, max_length=MAX_VARIANTS,
        description="Named variants, each a set of overrides of the template (children are created in this order).",
        json_schema_extra={"x-kubernetes-validations": [
            {"rule": "self.all(v, self.exists_one(w, w.name == v.name))", "message": "variant names must be unique"}]})
    search: Search | None = Field(None, description="Trials generated over named fields, after the variants.")
    baseline: Baseline | None = Field(
        None, description="What every variant is judged against (one baseline, one corpus). Unset: the template's "
                          "benchmark.baseline.")
    parallelism: int = Field(1, ge=1, le=MAX_VARIANTS,
                             description="Variants preparing data or training at once (benchmarks do not count). "
                                         "The operator budget, quotas and Kueue still apply to each child.")
    early_stopping: EarlyStopping | None = Field(None, description="Stop variants that are clearly behind.")
    promotion: Promotion = Field(default_factory=Promotion, description="How the winner is chosen.")
    notify: Notify | None = Field(None, description="Optional webhook.")

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "(has(self.variants) && size(self.variants) > 0) || has(self.search)",
         "message": "a campaign needs variants or a search"},
        {"rule": "self.template == oldSelf.template", "message": "spec.template is immutable"},
        _immutable("variants"), _immutable("search"), _immutable("baseline"),
        {"rule": "!has(self.search) || self.search.algorithm != 'random' || has(self.search.maxTrials)",
         "message": "a random search needs maxTrials"}]})

    def effective_baseline(self) -> dict[str, Any]:
        """The campaign's baseline, else the template's benchmark.baseline, else the base model (camelCase)."""
        if self.baseline is not None:
            return self.baseline.model_dump(by_alias=True, exclude_none=True)
        return dict(((self.template.get("benchmark") or {}).get("baseline")) or {"baseModel": True})


# --- status -----------------------------------------------------------------------------------------------------

class PrimaryMetric(_Model):
    name: str = Field(description="recall, precision or sequenceAccuracy (the benchmark's primaryMetric).")
    value: float | None = Field(None, description="The variant's score.")
    delta: float | None = Field(None, description="Score minus the baseline's, on the paired clips.")
    interval: list[float] | None = Field(None, description="Paired 95% bootstrap interval [low, high] of the delta.")


class VariantStatus(_Model):
    name: str = Field(description="Variant name.")
    child: str = Field(description="Its QuranFineTune.")
    phase: str = Field(description="Waiting (not created: parallelism), then the child's phase; Stopped when early "
                                   "stopping ended it.")
    verdict: str | None = Field(None, description="The child's paired verdict: improvement, regression, neutral.")
    reason: str | None = Field(None, description="Why the child failed (its Failed condition's reason).")
    primary_metric: PrimaryMetric | None = Field(None, description="Primary metric with its interval.")
    metrics: dict[str, Any] | None = Field(None, description="The child's status.benchmark.metrics.")
    intervals: dict[str, Any] | None = Field(None, description="The child's status.benchmark.intervals.")
    deltas: dict[str, Any] | None = Field(None, description="The child's status.benchmark.deltas.")
    results_path: str | None = Field(None, description="Benchmark results file on the claim.")
    model_path: str | None = Field(None, description="model.nemo on the claim.")
    size_bytes: int | None = Field(None, description="Model file size.")
    steps: int | None = Field(None, description="Steps trained.")
    gpu_hours: float | None = Field(None, description="GPU-hours of its training (the child's status.training), else "
                                                      "GPUs x its wall time from the first Job to the end.")
    image_id: str | None = Field(None, alias="imageID", description="Trainer image digest, when the child reports it.")
    corpus_hash: str | None = Field(None, description="Content hash of the corpus it was benchmarked on.")
    stopped_reason: str | None = Field(None, description="Why early stopping stopped it.")
    val_wer_history: list[list[float]] | None = Field(
        None, max_length=200, description="[[step, validation WER], ...] recorded from the child's progress.")


class Condition(_Model):
    type: str = Field(description="Condition type.")
    status: Literal["True", "False", "Unknown"] = Field(description="Condition status.")
    reason: str | None = Field(None, description="CamelCase reason.")
    message: str | None = Field(None, description="Human-readable detail.")
    observed_generation: int | None = Field(None, description="Generation the condition was set for.")
    last_transition_time: str | None = Field(None, description="When status last changed.")


class PromotionDecision(_Model):
    variant: str | None = Field(None, description="The variant handed to the report Job to promote (none: null).")
    reason: str = Field(description="Promoted, NoImprovement, CorpusMismatch, AwaitingManualPromotion, "
                                    "InvalidPromotion, ...")
    message: str | None = Field(None, description="Why, in words.")
    job: str | None = Field(None, description="Which Job promotes it: report (with the report), or promote (a Manual "
                                              "promotion after the report).")


class Report(_Model):
    job: str | None = Field(None, description="The report Job.")
    path: str | None = Field(None, description="report.md on the claim.")
    plots: list[str] | None = Field(None, description="PNG files on the claim.")


class Production(_Model):
    variant: str = Field(description="The promoted variant.")
    child: str | None = Field(None, description="Its QuranFineTune.")
    model_path: str | None = Field(None, description="models/production/<campaign>/model.nemo on the claim.")
    lineage_path: str | None = Field(None, description="lineage.json beside it.")
    results_path: str | None = Field(None, description="The results file a later campaign can use as its baseline.")
    promoted_at: str | None = Field(None, description="When the operator recorded it.")


class Delivery(_Model):
    delivery_id: str = Field(description="X-Quranft-Delivery of the POST (the same on a retry: receivers dedupe).")
    job: str | None = Field(None, description="The delivery Job.")
    at: str | None = Field(None, description="When the delivery ended.")
    ok: bool | None = Field(None, description="Whether the receiver answered 2xx.")
    response_status: int | None = Field(None, description="HTTP status of the last attempt.")


class Notified(_Model):
    finished: Delivery | None = Field(None, description="The summary sent when the campaign ended.")
    promoted: Delivery | None = Field(None, description="The summary sent when a model was promoted afterwards.")


class CampaignStatus(_Model):
    observed_generation: int | None = Field(None, description="Generation of the spec the status reflects.")
    phase: Literal[PHASES] | None = Field(None, description="Pending, Running, Reporting, Succeeded or Failed.")  # type: ignore[valid-type]
    reason: str | None = Field(None, description="Why it failed (with phase Failed).")
    done: str | None = Field(None, description="Variants ended / variants, e.g. 2/4.")
    best: str | None = Field(None, description="Best variant so far (improvement first, then the primary metric).")
    verdict: str | None = Field(None, description="The best variant's verdict.")
    claim: str | None = Field(None, description="The claim every variant uses.")
    corpus_hash: str | None = Field(None, description="The corpus every variant was benchmarked on.")
    variants: list[VariantStatus] | None = Field(None, max_length=MAX_VARIANTS, description="One entry per variant.")
    promotion: PromotionDecision | None = Field(None, description="What the report Job was asked to promote.")
    report: Report | None = Field(None, description="The comparison report.")
    production: Production | None = Field(None, description="The model promoted by this campaign.")
    notified: Notified | None = Field(None, description="Webhook deliveries.")
    start_time: str | None = Field(None, description="When the first child was created.")
    completion_time: str | None = Field(None, description="When the campaign reached Succeeded or Failed.")
    conditions: list[Condition] | None = Field(
        None, description="VariantsValid, CorpusMismatch, Promoted, Reported, Notified, Failed.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})


def parse_spec(spec: dict[str, Any]) -> CampaignSpec:
    return CampaignSpec.model_validate(spec)
