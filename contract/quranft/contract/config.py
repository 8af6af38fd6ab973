"""Typed run configuration: the single contract between the operator and every stage Job.

The operator writes it as JSON (camelCase keys, the same names as the CRD's spec fields) into the run's
ConfigMap; prepare and train (`quranft trainer ... --config FILE`) and the benchmark (`quranft benchmark run
--config FILE`) read it, each with `--set a.b=c` overrides. Pure pydantic: importing this module must not
import torch.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from quranft.contract import workspace as layout

QURAN_CORPUS = "rabah2026/Quran-Ayah-Corpus"
RETASY_CORPUS = "RetaSy/quranic_audio_dataset"
RETASY_BAD_LABELS = ("in_correct", "not_related_quran", "not_match_aya")
PRODUCTION_BASE_MODEL = "nvidia/stt_ar_fastconformer_hybrid_large_pcd_v1.0"
# The production model has 17 encoder layers; `tiny` a handful. Checked against the real model at load.
MAX_ENCODER_LAYERS = 64


class ConfigError(ValueError):
    """Invalid configuration; the message lists each bad field as `path: reason`."""


class _Model(BaseModel):
    # camelCase on the wire (matches the CRD), snake_case in Python; unknown keys are errors, not ignored.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              validate_assignment=True)


class RunSpec(_Model):
    name: str = Field("run", pattern=r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$",
                      description="Run name; names runs/<name>/ in the workspace.")
    namespace: str = Field("default", description="Kubernetes namespace, used as a metrics label.")
    workspace: Path = Field(Path(layout.WORKSPACE), description="Root of the shared volume (the PVC).")


class BlendSpec(_Model):
    dataset: str = Field(RETASY_CORPUS, description="Hub dataset blended into the training split.")
    revision: str | None = Field(None, min_length=1, max_length=256,
                                 description="Hub commit, tag or branch of the blend dataset (unset: newest).")
    local_path: Path | None = Field(None, description="Local copy of the blend dataset (air-gapped).")
    split: str = "train"
    max_samples: int = Field(6000, ge=1, description="At most this many blended samples.")
    exclude_labels: list[str] = Field(default_factory=lambda: list(RETASY_BAD_LABELS),
                                      description="Rows whose label is one of these are dropped.")
    text_column: str = "Aya"
    duration_ms_column: str = "duration_ms"
    label_column: str = "final_label"


class DataSpec(_Model):
    source: Literal["hub", "local"] = Field("hub", description="Hub dataset name or a local directory.")
    dataset: str = Field(QURAN_CORPUS, description="Hub dataset name (source=hub).")
    revision: str | None = Field(None, min_length=1, max_length=256,
                                 description="Hub commit, tag or branch of `dataset` (unset: newest).")
    local_path: Path | None = Field(None, description="Directory `datasets` can load (source=local).")
    train_split: str = "train"
    val_split: str = "validation"
    max_train_samples: int | None = Field(None, ge=1)
    max_val_samples: int | None = Field(None, ge=1)
    blend: BlendSpec | None = None
    min_duration_seconds: float = Field(0.6, gt=0)
    max_duration_seconds: float = Field(30.0, gt=0)
    text_column: str = "text"
    audio_column: str = "audio"
    # Optional ids carried into the manifests for the benchmark's leakage check (same reciter, same verse).
    # Unset (None) they are left out of data_spec_hash, so existing specs keep their cache key.
    reciter_column: str | None = Field(None, description="Column naming the reciter (speaker) of each clip.")
    surah_column: str | None = Field(None, description="Column with each clip's surah number.")
    ayah_column: str | None = Field(None, description="Column with each clip's ayah number.")
    # The vocabulary gate (quranft.trainer.vocab): a threshold, not content, so it stays out of the data hash.
    max_unk_rate: float = Field(0.001, ge=0, le=1,
                                description="Fail prepare when more of a dataset's tokens than this are <unk>.")

    @model_validator(mode="after")
    def _check(self) -> "DataSpec":
        if self.min_duration_seconds >= self.max_duration_seconds:
            raise ValueError("minDurationSeconds must be below maxDurationSeconds")
        if self.source == "local" and self.local_path is None:
            raise ValueError("source=local needs localPath")
        if (self.surah_column is None) != (self.ayah_column is None):
            raise ValueError("surahColumn and ayahColumn go together")
        return self


# DataSpec fields added after data_spec_hash was first published: left out of the hash while unset, so
# existing specs keep their key. Dotted paths reach into the blend.
HASH_OPTIONAL_FIELDS = ("reciterColumn", "surahColumn", "ayahColumn", "revision", "blend.revision")
# Never in the hash: they do not change what prepare writes (maxUnkRate is re-checked on every reuse).
HASH_EXCLUDED_FIELDS = ("maxUnkRate",)


class FreezeSpec(_Model):
    preprocessor: bool = Field(True, description="Freeze the mel-spectrogram preprocessor.")
    encoder_layers: int = Field(0, ge=0, le=MAX_ENCODER_LAYERS, description="Freeze the first N encoder layers.")
    rnnt_decoder: bool = Field(True, description="Freeze the RNNT prediction network and joint.")


class TrainingSpec(_Model):
    base_model: str = Field(PRODUCTION_BASE_MODEL, min_length=1,
                            description="Hub model name, a local .nemo path, or `tiny` (CPU stub).")
    mode: Literal["ctcOnly", "hybrid"] = Field("ctcOnly", description="ctcOnly never touches the RNNT loss.")
    max_steps: int = Field(2000, ge=1, le=10_000_000)
    batch_size: int = Field(12, ge=1, le=4096)
    grad_accum: int = Field(1, ge=1, le=1024)
    learning_rate: float = Field(5e-5, gt=0, le=1.0)
    warmup_steps: int = Field(0, ge=0)
    ctc_weight: float = Field(0.3, ge=0, le=1, description="CTC share of the hybrid loss.")
    freeze: FreezeSpec = Field(default_factory=FreezeSpec)
    precision: Literal["auto", "bf16-mixed", "16-mixed", "32"] = Field(
        "auto", description="auto: bf16-mixed on a GPU that supports it, else 16-mixed; 32 on CPU.")
    val_check_interval: int = Field(200, ge=1, description="Validate (CTC WER) every N steps.")
    checkpoint_every_n_steps: int = Field(100, ge=1)
    gradient_clip_val: float = Field(1.0, ge=0)
    half_precision_weights: bool = Field(False, description="Store model.nemo weights in fp16.")
    seed: int = 1234
    num_workers: int | None = Field(None, ge=0, le=64, description=(
        "DataLoader worker processes; unset: one less than the CPU request, at most 8."))

    @model_validator(mode="after")
    def _check(self) -> "TrainingSpec":
        if self.warmup_steps >= self.max_steps:
            raise ValueError("warmupSteps must be below maxSteps")
        return self


class DistributedSpec(_Model):
    """How many processes train together (PyTorch DDP through Lightning; quranft.trainer.distributed).

    The operator fills it from spec.resources (nodes, gpus). The world size is nodes x devicesPerNode; each
    rank trains on batchSize samples per micro-batch, so the global batch is batchSize x gradAccum x worldSize.
    """
    nodes: int = Field(1, ge=1, le=64, description="Pods (one per node) in the group; > 1 needs MASTER_ADDR and "
                                                   "NODE_RANK (or JOB_COMPLETION_INDEX) in each pod.")
    devices_per_node: int = Field(1, ge=1, le=16, description="GPUs per node (processes per node on CPU).")
    backend: Literal["auto", "nccl", "gloo"] = Field(
        "auto", description="Process-group backend; auto: nccl on CUDA, gloo on CPU.")
    rendezvous_timeout_seconds: int = Field(
        600, ge=1, le=86_400,
        description="How long ranks wait for each other at start-up (also bounds any one collective).")

    @property
    def world_size(self) -> int:
        return self.nodes * self.devices_per_node


class MetricsSpec(_Model):
    port: int = Field(9400, ge=0, le=65535, description="Prometheus port; 0 disables the endpoint.")
    progress_interval_seconds: float = Field(5.0, gt=0)


# --- benchmark: spec.benchmark (BenchmarkSpec, the CRD's model too) + what the stage resolves -----------------

class QftRef(_Model):
    name: str = Field(min_length=1, max_length=253, description="Name of that QuranFineTune.")


class BaselineSpec(_Model):
    qft_ref: QftRef | None = Field(None, description=(
        "Another QuranFineTune in this namespace (same claim) whose benchmark results are the baseline."))
    results_path: str | None = Field(None, min_length=1, max_length=1024, description=(
        "A stored benchmark results file (JSON) on the workspace volume."))
    base_model: bool | None = Field(None, description="Evaluate training.baseModel on the same corpus side by side.")

    @model_validator(mode="after")
    def _check(self) -> "BaselineSpec":
        if [self.qft_ref is not None, self.results_path is not None, bool(self.base_model)].count(True) != 1:
            raise ValueError("baseline needs exactly one of qftRef, resultsPath or baseModel: true")
        return self


class TolerancesSpec(_Model):
    tolerance: float = Field(1.0, ge=0, le=100, description=(
        "Allowed drop of recall / sequence accuracy, in percentage points."))
    min_gain: float = Field(1.0, ge=0, le=100, description=(
        "Gain of recall or sequence accuracy that counts as an improvement, in percentage points."))
    latency_tolerance: float = Field(0.1, ge=0, description=(
        "Allowed relative growth of the average latency (0.1 = 10 %)."))
    latency_tolerance_abs: float = Field(0.05, ge=0, description=(
        "Allowed absolute growth of the average latency in seconds (noise floor)."))


class TargetsSpec(_Model):
    recall: float = Field(0.95, ge=0, le=1, description="Target recall (fraction).")
    size_mb: float = Field(200, gt=0, alias="sizeMB", description="Maximum model file size in MB (10^6 bytes).")
    latency_seconds: float = Field(1.0, gt=0, description="Maximum average latency per clip, seconds.")


class BenchmarkSpec(_Model):
    """spec.benchmark: how a trained model is judged (the CRD's model subclasses this one for its CEL rules)."""

    corpus_path: str | None = Field(None, min_length=1, max_length=1024, description=(
        "Shorthand for corpus.path (kept for v1 resources). Neither set: /workspace/corpus."))
    # The benchmark validates it (quranft.benchmark.corpus_source.CorpusSpec); the CRD types it (resource.Corpus).
    corpus: dict[str, Any] | None = Field(None, description=(
        "The benchmark corpus: a directory on the claim (`path`), or a dataset split (hub or local) prepared once "
        "into corpora/<hash>/ on the claim and reused by every sibling, so siblings are judged on byte-identical "
        "clips."))
    decoder: Literal["auto", "ctc", "rnnt", "both"] = Field("auto", description=(
        "Decoder heads scored, for the model and the baseline alike. auto: ctc for ctcOnly runs, both for hybrid "
        "runs."))
    verdict_head: Literal["ctc", "rnnt"] | None = Field(None, description=(
        "Head whose scores decide the verdict (default: ctc for ctcOnly, rnnt for hybrid); must be among the "
        "scored heads."))
    verdict_rule: Literal["paired", "threshold"] = Field("paired", description=(
        "paired: per-clip paired bootstrap intervals (improvement only when the primary metric's interval clears "
        "minGain); threshold: v1's rule on the raw deltas, to reproduce old numbers."))
    primary_metric: Literal["recall", "precision", "sequenceAccuracy"] = Field("recall", description=(
        "Metric whose gain makes an improvement (recall and sequence accuracy are always guarded against drops)."))
    batch_size: int | None = Field(None, ge=1, le=256, description=(
        "Transcription batch size for throughput (default 16 on a GPU, 4 on CPU); latency is measured separately "
        "at batch 1."))
    latency_samples: int = Field(32, ge=0, le=10_000, description=(
        "Clips (a seeded sample, the same for model and baseline) timed one by one at batch 1 for the latency "
        "metrics."))
    exclude_leaked: bool = Field(True, description=(
        "Leave clips whose audio also appears in the training or validation data out of the scores (they are "
        "always counted in status.benchmark.leakage)."))
    seed: int = Field(0, ge=0, description="Seed of the latency sample and the bootstrap resampling.")
    # None (no baseline) only in a stage config (`quranft benchmark run` by hand); the CRD requires one.
    baseline: BaselineSpec | None = Field(default_factory=lambda: BaselineSpec(base_model=True), description=(
        "What the trained model is compared with: exactly one of qftRef, resultsPath, baseModel."),
        json_schema_extra={"default": {"baseModel": True}})
    tolerances: TolerancesSpec = Field(default_factory=TolerancesSpec, description=(
        "Verdict rules (the benchmark's flags): regression when recall or sequence accuracy drops by more than "
        "`tolerance` points or latency grows beyond both latency allowances; improvement when either gains at "
        "least `minGain` points."), json_schema_extra={"default": {}})
    targets: TargetsSpec = Field(default_factory=TargetsSpec, description="Absolute goals reported as pass/fail next "
                                 "to the verdict.", json_schema_extra={"default": {}})

    @model_validator(mode="after")
    def _check(self) -> "BenchmarkSpec":
        if self.corpus_path is not None and self.corpus is not None:
            raise ValueError("set corpus or corpusPath, not both")
        if self.verdict_head and self.decoder in ("ctc", "rnnt") and self.verdict_head != self.decoder:
            raise ValueError("verdictHead must be one of the heads decoder scores")
        return self


class BenchmarkConfig(BenchmarkSpec):
    """The benchmark stage's settings (`quranft benchmark run --config`): spec.benchmark plus what the operator
    resolves for this run (the model, where results go, the run's training data). Each field has a flag of the
    same meaning; a flag given explicitly wins over the file."""

    model: str | None = Field(None, min_length=1, description="The model judged: a .nemo path or a hub name.")
    name: str | None = Field(None, min_length=1, description="Run name in the results (unset: from `model`).")
    out: str | None = Field(None, min_length=1, description="Results directory (<timestamp>.json + latest.json).")
    training_data: str | None = Field(None, min_length=1, description=(
        "The run's prepared data (data/<dataSpecHash>/): corpus clips found there are leaks."))
    mode: Literal["ctcOnly", "hybrid"] | None = Field(None, description="How the model was trained (auto heads).")
    baseline_model: str | None = Field(None, min_length=1, description=(
        "The model evaluated for baseline.baseModel (unset: training.baseModel)."))
    baseline_name: str | None = Field(None, min_length=1, description="Name of that baseline's run in the results.")
    baseline_run: str | None = Field(None, min_length=1, description=(
        "Which run of a multi-run baseline results file (baseline.resultsPath / qftRef)."))
    resamples: int = Field(2000, ge=100, le=1_000_000, description="Bootstrap resamples (>= 2000 recommended).")
    also_accept: bool = Field(True, description="Score against also_accept verses too (false: the old numbers).")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto | cpu | cuda | cuda:N.")


class RunConfig(_Model):
    run: RunSpec = Field(default_factory=RunSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    metrics: MetricsSpec = Field(default_factory=MetricsSpec)
    distributed: DistributedSpec = Field(default_factory=DistributedSpec)
    benchmark: BenchmarkConfig = Field(default_factory=BenchmarkConfig)

    # Derived locations in the workspace (quranft.contract.workspace).
    @property
    def data_dir(self) -> Path:
        return layout.data_dir(data_spec_hash(self.data), self.run.workspace)

    @property
    def run_dir(self) -> Path:
        return layout.run_dir(self.run.name, self.run.workspace)


def format_validation_error(err: ValidationError) -> str:
    """One `field.path: reason` line per problem, with camelCase paths as the user wrote them."""
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "<root>"
        lines.append(f"{path}: {e['msg']}")
    return "\n".join(lines)


def _parse_scalar(raw: str) -> Any:
    """`--set` values: JSON when it parses (numbers, true/false/null, lists), else the plain string."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def apply_overrides(doc: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=c` overrides (camelCase or snake_case keys) to a raw config document."""
    doc = json.loads(json.dumps(doc))  # deep copy; never mutate the caller's document
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        *parents, leaf = [to_camel(part) for part in key.split(".")]
        node = doc
        for part in parents:
            child = node.get(part)
            if child is None:  # absent or null (e.g. `"blend": null`): setting a field creates the object
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part} is not an object")
            node = child
        node[leaf] = _parse_scalar(raw)
    return doc


def read_config_doc(path: str | Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """The raw document of a JSON config file ({} without one), `--set` overrides applied. Raises ConfigError."""
    doc: dict[str, Any] = {}
    if path is not None:
        try:
            doc = json.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config {path} is not valid JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise ConfigError(f"config {path}: top level must be an object")
    return apply_overrides(doc, overrides or [])


def validate_config(doc: dict[str, Any]) -> RunConfig:
    try:
        return RunConfig.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a JSON config file (or start from defaults), apply overrides, validate. Raises ConfigError."""
    return validate_config(read_config_doc(path, overrides))


def dump_config(cfg: RunConfig) -> str:
    return cfg.model_dump_json(by_alias=True, indent=2)


def data_spec_hash(data: DataSpec | dict[str, Any]) -> str:
    """The data cache key: 12 hex chars over the normalised data spec (all fields, defaults included,
    except HASH_EXCLUDED_FIELDS, and HASH_OPTIONAL_FIELDS while unset).

    Sibling experiments with the same data (v2..v5 of the plan) share one prepared directory. A pinned
    `revision` changes the key; an unpinned hub dataset is read at its newest revision the first time and
    that copy is reused (stats.json records the revision it was).
    """
    spec = data if isinstance(data, DataSpec) else DataSpec.model_validate(data)
    doc = spec.model_dump(mode="json", by_alias=True)
    for key in HASH_EXCLUDED_FIELDS:
        doc.pop(key, None)
    for path in HASH_OPTIONAL_FIELDS:
        *parents, leaf = path.split(".")
        node: Any = doc
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(leaf) is None:
            node.pop(leaf, None)
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
