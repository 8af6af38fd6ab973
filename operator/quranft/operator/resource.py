"""QuranFineTune: the typed spec and status (camelCase on the wire, like the CRD).

One source for the CRD: scripts/gen_crd.py turns `QuranFineTuneSpec` and `QuranFineTuneStatus` into its OpenAPI
schema (quranft.operator.structural), with the CEL rules attached here (`x-kubernetes-validations`); every
description below is what `kubectl explain quranfinetune` prints. tests/operator/test_crd_generated.py fails
when the checked-in CRD differs from the generator's output.

Which model is the source of truth for `spec.data` and `spec.training`: the trainer's run config
(quranft.contract.config). The operator copies both sections verbatim into the stage's config.json and
validates them with the trainer's models before any Job exists, so what the trainer accepts *is* the contract.
`Data`, `Blend`, `Training` and `Freeze` below subclass those models: they inherit the field set, the wire
names, extra="forbid" and the cross-field checks, and narrow each field for the API server only: a description
written for `kubectl explain`, length caps (they keep the CEL cost estimate of `self == oldSelf` bounded and
etcd objects small), baseModel required. A field added to the trainer appears in the CRD at the next
generation. `spec.benchmark.corpus` mirrors the benchmark's CorpusSpec instead (same names and defaults,
tests/operator/test_crd_schema.py): that model refuses the API server's defaulted form of a `path` corpus.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from quranft.contract import config as run_config
from quranft.contract.config import ConfigError, format_validation_error

from .builders import MAX_NODES, MAX_RANKS

# Child names are <name>-prepare, <name>-workspace, ...: 52 + the longest suffix stays within 63.
MAX_RUN_NAME = 52
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
MAX_GPUS_PER_NODE = 16
PHASES = ("Pending", "Queued", "PreparingData", "Training", "Benchmarking", "Succeeded", "Failed", "Suspended",
          "Stopped")


def rule(cel: str, message: str) -> dict[str, str]:
    return {"rule": cel, "message": message}


def rules(*items: dict[str, str]) -> dict[str, Any]:
    """json_schema_extra for CEL rules (the API server evaluates them; see structural.py)."""
    return {"x-kubernetes-validations": list(items)}


def immutable(message: str) -> dict[str, str]:
    return rule("self == oldSelf", message)


def int64() -> dict[str, str]:
    return {"format": "int64"}


# Models below have no docstrings on purpose: pydantic would put a docstring into the schema as the type's
# description, and the field's own description is the one `kubectl explain` should print.

class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


# --- spec.data, spec.training: the trainer's config sections ---------------------------------------------------

class Blend(run_config.BlendSpec):
    dataset: str = Field(run_config.RETASY_CORPUS, max_length=256,
                         description="Hub dataset blended into the training split.")
    revision: str | None = Field(None, min_length=1, max_length=256, description=(
        "Hub commit, tag or branch of the blend dataset (unset: newest, recorded)."))
    local_path: str | None = Field(None, max_length=1024,  # type: ignore[assignment]  # str on the wire
                                   description="Local copy of the blend dataset (air-gapped clusters).")
    split: str = Field("train", max_length=128, description="Split of the blend dataset.")
    max_samples: int = Field(6000, ge=1, description="At most this many blended samples.")
    exclude_labels: list[Annotated[str, Field(max_length=128)]] = Field(
        list(run_config.RETASY_BAD_LABELS), max_length=32,
        description="Rows whose label column holds one of these values are dropped.")
    text_column: str = Field("Aya", max_length=128, description="Column holding the transcript.")
    duration_ms_column: str = Field("duration_ms", max_length=128,
                                    description="Column holding the duration in milliseconds.")
    label_column: str = Field("final_label", max_length=128, description="Column holding the quality label.")


class Data(run_config.DataSpec):
    model_config = ConfigDict(json_schema_extra=rules(
        immutable("spec.data is immutable: create a new QuranFineTune for a different data spec"),
        rule("self.minDurationSeconds < self.maxDurationSeconds",
             "data.minDurationSeconds must be below data.maxDurationSeconds")))

    source: Literal["hub", "local"] = Field("hub", description=(
        "hub: download `dataset` from the Hugging Face hub; local: load `localPath` on the workspace volume."))
    dataset: str = Field(run_config.QURAN_CORPUS, min_length=1, max_length=256,
                         description="Hub dataset name (source=hub).")
    revision: str | None = Field(None, min_length=1, max_length=256, description=(
        "Hub commit, tag or branch of `dataset` (source=hub). Set, it is part of the data hash; unset, the newest "
        "commit is read and recorded in stats.json and status.data.stats."))
    local_path: str | None = Field(None, min_length=1, max_length=1024,  # type: ignore[assignment]
                                   description=("Directory that `datasets` can load, usually on the workspace PVC "
                                                "(source=local)."))
    train_split: str = Field("train", max_length=128, description="Split used for training.")
    val_split: str = Field("validation", max_length=128, description="Split used for validation.")
    max_train_samples: int | None = Field(None, ge=1, description="At most this many training samples (unset: all).")
    max_val_samples: int | None = Field(None, ge=1, description="At most this many validation samples (unset: all).")
    blend: Blend | None = Field(None, description=(  # type: ignore[assignment]
        "Optional second dataset blended into the training split (e.g. RetaSy crowd recitations)."))
    min_duration_seconds: float = Field(0.6, gt=0, description="Drop clips shorter than this.")
    max_duration_seconds: float = Field(30.0, gt=0, le=3600, description="Drop clips longer than this.")
    text_column: str = Field("text", max_length=128, description="Column holding the transcript.")
    audio_column: str = Field("audio", max_length=128, description="Column holding the audio.")
    reciter_column: str | None = Field(None, max_length=128, description=(
        "Column naming each clip's reciter; carried into the manifests so the benchmark can flag the same reciter "
        "on the same verse (leakage)."))
    surah_column: str | None = Field(None, max_length=128, description=(
        "Column with each clip's surah number (with ayahColumn; for the leakage check)."))
    ayah_column: str | None = Field(None, max_length=128,
                                    description="Column with each clip's ayah number (with surahColumn).")
    max_unk_rate: float = Field(0.001, ge=0, le=1, description=(
        "Vocabulary gate: prepare fails when more than this share of a dataset's tokens are <unk> for the base "
        "model's tokenizer, after the Quranic fold table. Not part of the data hash."))


class Freeze(run_config.FreezeSpec):
    preprocessor: bool = Field(True, description="Freeze the mel-spectrogram preprocessor.")
    encoder_layers: int = Field(0, ge=0, le=run_config.MAX_ENCODER_LAYERS, description=(
        "Freeze the first N encoder layers (checked against the model when it loads)."))
    rnnt_decoder: bool = Field(True, description="Freeze the RNNT prediction network and joint.")


class Training(run_config.TrainingSpec):
    model_config = ConfigDict(json_schema_extra=rules(
        immutable("spec.training is immutable: create a new QuranFineTune for different hyper-parameters"),
        rule("self.warmupSteps < self.maxSteps", "training.warmupSteps must be below training.maxSteps")))

    # Required here (the trainer defaults it to the production model): a run names the model it fine-tunes.
    base_model: str = Field(min_length=1, max_length=1024, description=(
        "Hub model name (e.g. nvidia/stt_ar_fastconformer_hybrid_large_pcd_v1.0), a .nemo path on the workspace "
        "volume, or `tiny` (a small model built from config, for CPU tests)."))
    mode: Literal["ctcOnly", "hybrid"] = Field("ctcOnly", description=(
        "ctcOnly trains the CTC head only and never touches the RNNT loss (no libnvvm needed); hybrid trains "
        "RNNT+CTC."))
    max_steps: int = Field(2000, ge=1, le=10_000_000, description="Optimizer steps to train.")
    batch_size: int = Field(12, ge=1, le=4096, description="Samples per device per step.")
    grad_accum: int = Field(1, ge=1, le=1024, description="Gradient accumulation steps.")
    learning_rate: float = Field(5e-5, gt=0, le=1, description="Peak learning rate.")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps; must be below maxSteps.")
    ctc_weight: float = Field(0.3, ge=0, le=1, description="CTC share of the hybrid loss (mode hybrid).")
    freeze: Freeze = Field(default_factory=Freeze,  # type: ignore[assignment]
                           description="Parts of the model kept frozen during fine-tuning.",
                           json_schema_extra={"default": {}})
    precision: Literal["auto", "bf16-mixed", "16-mixed", "32"] = Field("auto", description=(
        "auto: bf16-mixed on a GPU that supports it, else 16-mixed; 32 on CPU."))
    val_check_interval: int = Field(200, ge=1, description="Validate (CTC WER) every N steps.")
    checkpoint_every_n_steps: int = Field(100, ge=1, description=(
        "Save a resumable checkpoint every N steps (a preempted pod resumes from it)."))
    gradient_clip_val: float = Field(1.0, ge=0, description="Gradient clipping value (0 disables).")
    half_precision_weights: bool = Field(False, description="Store model.nemo weights in fp16.")
    seed: int = Field(1234, description="Random seed.")
    num_workers: int | None = Field(None, ge=0, le=64, description=(
        "DataLoader worker processes (unset: the CPU request minus one, at most 8)."))


# --- spec.resources, spec.storage ---------------------------------------------------------------------------

class Toleration(_Model):
    key: str | None = Field(None, description="Taint key (empty with operator Exists matches all).")
    operator: Literal["Exists", "Equal"] | None = Field(None, description="Exists or Equal (default Equal).")
    value: str | None = Field(None, description="Taint value for operator Equal.")
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to match (empty: all).")
    toleration_seconds: int | None = Field(None, description=(
        "For NoExecute: how long the pod stays bound after the taint appears."))


class Resources(_Model):
    gpus: int = Field(1, ge=0, le=MAX_GPUS_PER_NODE, description=(
        "nvidia.com/gpu per training pod (per node); each GPU is one DDP rank. 0 runs on CPU with the trainer-cpu "
        "image (one rank per pod). Immutable: the world size is fixed in the run's config."),
        json_schema_extra=rules(immutable("resources.gpus is immutable: the world size is fixed in the run's config")))
    nodes: int = Field(1, ge=1, le=MAX_NODES, description=(
        "Training pods, one per node, each with `gpus` GPUs: world size = nodes x max(gpus, 1), at most "
        f"{MAX_RANKS}. Above 1 the training Job is an Indexed Job with a headless Service (<name>-ranks); a failed "
        "rank restarts the whole group from the last checkpoint (counted against backoffLimit, disruptions not). "
        "Quotas and the operator's budget charge nodes x gpus. Immutable."),
        json_schema_extra=rules(immutable("resources.nodes is immutable: the world size is fixed in the run's config")))
    distributed_backend: Literal["auto", "nccl", "gloo"] = Field("auto", description=(
        "torch.distributed backend between ranks. auto: nccl with GPUs, gloo on CPU. nodes > 1 with gpus 0 needs "
        "gloo set explicitly; nccl needs GPUs. Immutable."),
        json_schema_extra=rules(immutable("resources.distributedBackend is immutable")))
    rendezvous_timeout_seconds: int | None = Field(None, ge=10, le=86_400, description=(
        "How long the ranks wait for each other at start-up (all pods scheduled and connected); past it the run "
        "fails with RendezvousTimeout (unset: the trainer's default)."))
    cpu: int | str = Field("2", description="CPU request (and limit) of each stage pod, e.g. 4 or 500m.",
                           json_schema_extra=rules(rule(
                               "type(self) == int ? self >= 1 : self.matches('^[0-9]+(\\\\.[0-9]+)?m?$')",
                               'resources.cpu must be a positive number of cores, e.g. 4, "1.5" or "500m"')))
    memory: int | str = Field("8Gi", description="Memory request (and limit) of each stage pod, e.g. 32Gi.",
                              json_schema_extra=rules(rule(
                                  "type(self) == int ? self >= 1 : "
                                  "self.matches('^[0-9]+(\\\\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$')",
                                  "resources.memory must be a quantity, e.g. 32Gi or 512Mi")))
    shm_size: str = Field("2Gi", pattern=r"^[0-9]+(Ki|Mi|Gi)$", description=(
        "Size of the memory-backed /dev/shm (DataLoader workers share tensors through it)."))
    node_selector: dict[str, str] | None = Field(None, max_length=32, description="Node labels the pods must match.")
    tolerations: list[Toleration] | None = Field(None, max_length=32, description=(
        "Extra tolerations (the nvidia.com/gpu NoSchedule taint is tolerated automatically when gpus > 0)."))
    priority_class_name: str | None = Field(None, max_length=253, description=(
        "PriorityClass of the pods (lower priority runs may be preempted; they resume from a checkpoint)."))
    backoff_limit: int = Field(3, ge=0, le=20, description=(
        "Retries of a failed training pod, or with nodes > 1 restarts of the whole group (disruptions and "
        "preemptions are not counted; config errors are never retried)."))


class Storage(_Model):
    model_config = ConfigDict(json_schema_extra=rules(
        rule("has(self.existingClaim) != has(self.size)", "storage needs exactly one of existingClaim or size"),
        immutable("spec.storage is immutable"),
        rule("!has(self.accessModes) || has(self.size)",
             "storage.accessModes applies to the claim the operator creates (storage.size); an existingClaim "
             "keeps its own")))

    existing_claim: str | None = Field(None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description=(
        "Use this PersistentVolumeClaim (shared by sibling experiments: data prepared once)."))
    size: str | None = Field(None, pattern=r"^[0-9]+(Mi|Gi|Ti)$",
                             description="Create a claim <name>-workspace of this size.")
    storage_class_name: str | None = Field(None, max_length=253, description=(
        "StorageClass of the created claim (default class when unset)."))
    access_modes: list[Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"]] | None = Field(
        None, min_length=1, max_length=3, description=(
            "Access modes of the created claim (default [ReadWriteOnce]). A multi-node run (resources.nodes > 1) "
            "needs ReadWriteMany: every node's pod mounts the workspace; the StorageClass must support it (NFS, "
            "CephFS, Filestore, EFS)."))
    delete_claim_on_delete: bool = Field(False, description=(
        "Delete the created claim with this resource. Default false: a trained model is never lost by "
        "`kubectl delete`."))


# --- spec.benchmark ---------------------------------------------------------------------------------------------

class Corpus(_Model):
    model_config = ConfigDict(json_schema_extra=rules(
        rule("has(self.path) != (has(self.dataset) || has(self.localPath))",
             "benchmark.corpus needs exactly one of path or a dataset (dataset / localPath)"),
        rule("!(has(self.dataset) || has(self.localPath)) || has(self.versesColumn) || has(self.surahColumn) || "
             "has(self.textColumn)",
             "a dataset corpus needs verse ids: versesColumn, surahColumn + ayahColumn, or textColumn (verses found "
             "by their text)"),
        rule("!has(self.surahColumn) || has(self.ayahColumn)", "benchmark.corpus.surahColumn needs ayahColumn")))

    path: str | None = Field(None, min_length=1, max_length=1024, description=(
        "Directory with manifest.json and the recitation clips (on the claim or in the image)."))
    source: Literal["hub", "local"] = Field("hub", description=(
        "hub: stream `dataset` from the Hugging Face hub; local: load `localPath` on the claim (same code path)."))
    dataset: str | None = Field(None, min_length=1, max_length=256,
                                description="Hub dataset holding the benchmark clips (source=hub).")
    local_path: str | None = Field(None, min_length=1, max_length=1024,
                                   description="Directory that `datasets` can load, on the claim (source=local).")
    split: str = Field("test", max_length=128,
                       description="Split to benchmark on (never one the model trains on).")
    revision: str | None = Field(None, max_length=256, description=(
        "Dataset revision (commit, tag or branch); part of the corpus cache key. Unset: the current head."))
    max_samples: int | None = Field(None, ge=1, description="At most this many clips (the first ones of the split).")
    audio_column: str = Field("audio", max_length=128, description="Column holding the audio.")
    id_column: str | None = Field(None, max_length=128,
                                  description="Column holding a stable clip id (unset: the row index).")
    verses_column: str | None = Field(None, max_length=128, description=(
        'Column holding the expected verses (list of "s:a" or {surah, ayah}).'))
    surah_column: str | None = Field(None, max_length=128,
                                     description="Column holding the surah number (with ayahColumn).")
    ayah_column: str | None = Field(None, max_length=128, description="Column holding the first ayah number.")
    ayah_end_column: str | None = Field(None, max_length=128, description=(
        "Column holding the last ayah number of a multi-verse clip."))
    text_column: str | None = Field(None, max_length=128, description=(
        "Column holding the verse text; without verse columns the verses are found by exact (normalised) text."))
    category_column: str | None = Field(None, max_length=128, description=(
        "Column holding a category (short/medium/long/multi) for the report's breakdown."))
    source_column: str | None = Field(None, max_length=128, description=(
        "Column holding the clip's source (e.g. user vs reference reciter) for the report."))
    reciter_column: str | None = Field(None, max_length=128, description=(
        "Column holding a reciter id (leakage: the same reciter on the same verse in the training data)."))


# One model with the run config's `benchmark` section (quranft.contract.config): these add the CEL rules and
# type the corpus for the API server.
QftRef = run_config.QftRef
Tolerances = run_config.TolerancesSpec
Targets = run_config.TargetsSpec


class Baseline(run_config.BaselineSpec):
    model_config = ConfigDict(json_schema_extra=rules(rule(
        "[has(self.qftRef), has(self.resultsPath), has(self.baseModel) && self.baseModel].filter(x, x).size() == 1",
        "baseline needs exactly one of qftRef, resultsPath or baseModel: true")))


class Benchmark(run_config.BenchmarkSpec):
    model_config = ConfigDict(json_schema_extra=rules(immutable("spec.benchmark is immutable")))

    corpus: Corpus | None = Field(None, description=(  # type: ignore[assignment]  # a dict in the run config
        "The benchmark corpus: a directory on the claim (`path`), or a dataset split (hub or local) prepared once "
        "into corpora/<hash>/ on the claim and reused by every sibling, so siblings are judged on byte-identical "
        "clips."))
    baseline: Baseline = Field(  # type: ignore[assignment]  # required here: a run is judged against something
        default_factory=lambda: Baseline(base_model=True), description=(
            "What the trained model is compared with: exactly one of qftRef, resultsPath, baseModel."),
        json_schema_extra={"default": {"baseModel": True}})


# --- the rest of the spec ---------------------------------------------------------------------------------------

class Images(_Model):
    model_config = ConfigDict(json_schema_extra=rules(immutable("spec.images is immutable")))

    trainer: str | None = Field(None, min_length=1, max_length=512, description="Image of the prepare and train "
                                                                               "stages.")
    benchmark: str | None = Field(None, min_length=1, max_length=512, description=(
        "Image of the benchmark stage (default: the trainer image)."))
    pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None, description="imagePullPolicy of all stage containers.")


class SecretRef(_Model):
    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="Secret name in this "
                                                                                      "namespace.")
    key: str = Field("token", min_length=1, max_length=253, pattern=SECRET_KEY, description="Key within the secret.")


class Cleanup(_Model):
    on_success: Literal["Keep", "DeleteJobs"] = Field("DeleteJobs", description="After success.")
    on_failure: Literal["Keep", "DeleteJobs"] = Field("Keep", description=(
        "After failure (Keep leaves the pods for inspection)."))


def _immutable_once_set(field: str) -> dict[str, str]:
    return rule(f"!has(oldSelf.{field}) || (has(self.{field}) && self.{field} == oldSelf.{field})",
                f"{field} is immutable once set")


class QuranFineTuneSpec(_Model):
    """What to train, on which data, with which resources, and how to judge the result."""

    model_config = ConfigDict(json_schema_extra=rules(
        _immutable_once_set("queueName"),
        rule("has(self.queuePriorityClass) == has(oldSelf.queuePriorityClass) && (!has(self.queuePriorityClass) || "
             "self.queuePriorityClass == oldSelf.queuePriorityClass)", "queuePriorityClass is immutable"),
        rule("!has(self.queuePriorityClass) || has(self.queueName)",
             "queuePriorityClass needs queueName (it is Kueue's WorkloadPriorityClass)"),
        _immutable_once_set("hubTokenSecretRef"),
        rule("has(self.benchmark) == has(oldSelf.benchmark)", "benchmark cannot be added or removed after creation"),
        rule("!has(self.benchmark) || !(has(self.benchmark.corpusPath) && has(self.benchmark.corpus))",
             "benchmark: set corpus or corpusPath, not both"),
        rule("!has(self.benchmark) || !has(self.benchmark.verdictHead) || !has(self.benchmark.decoder) || "
             "self.benchmark.decoder in ['auto', 'both'] || self.benchmark.decoder == self.benchmark.verdictHead",
             "benchmark.verdictHead must be one of the heads benchmark.decoder scores"),
        rule("has(self.images) == has(oldSelf.images)", "images cannot be added or removed after creation"),
        rule("has(self.data.surahColumn) == has(self.data.ayahColumn)",
             "data.surahColumn and data.ayahColumn go together"),
        rule("self.data.source != 'local' || has(self.data.localPath)",
             "data.localPath is required when data.source is local"),
        rule("self.resources.nodes == 1 || self.resources.gpus > 0 || self.resources.distributedBackend == 'gloo'",
             "resources.nodes > 1 with gpus 0 trains on CPUs across pods: set resources.distributedBackend: gloo "
             "(or request GPUs)"),
        rule("self.resources.distributedBackend != 'nccl' || self.resources.gpus > 0",
             "resources.distributedBackend: nccl needs GPUs (resources.gpus > 0); gloo runs on CPU"),
        rule(f"self.resources.nodes * (self.resources.gpus > 0 ? self.resources.gpus : 1) <= {MAX_RANKS}",
             f"resources.nodes x resources.gpus exceeds {MAX_RANKS} training ranks"),
        rule("self.resources.nodes == 1 || has(self.storage.existingClaim) || (has(self.storage.accessModes) && "
             "'ReadWriteMany' in self.storage.accessModes)",
             "a multi-node run mounts the workspace on every node: the claim it creates needs storage.accessModes: "
             "[ReadWriteMany] (or name an existingClaim that is ReadWriteMany)")))

    data: Data = Field(description=(
        "Training data (the trainer's `data` config). Immutable after creation: a new data spec is a new "
        "experiment."))
    training: Training = Field(description=(
        "Training hyper-parameters (the trainer's `training` config). Immutable after creation."))
    resources: Resources = Field(default_factory=Resources, description=(
        "Compute for the training Job (prepare and benchmark use CPU and at most one GPU)."),
        json_schema_extra={"default": {}})
    storage: Storage = Field(description=(
        "The workspace volume (data cache, checkpoints, model.nemo, benchmark results). Give existingClaim or "
        "size."))
    benchmark: Benchmark = Field(default_factory=Benchmark, description=(
        "How the trained model is judged. Omitted: the default corpus, the base model as baseline."),
        json_schema_extra={"default": {}})
    images: Images | None = Field(None, description=(
        "Image overrides (defaults come from the operator's settings: trainer for GPUs, trainer-cpu for gpus 0)."))
    hub_token_secret_ref: SecretRef | None = Field(None, description=(
        "Secret holding a Hugging Face token, mounted read-only into the pods as a file named by HF_TOKEN_PATH "
        "(never copied into env, the config or status)."))
    queue_name: str | None = Field(None, min_length=1, max_length=63, pattern=DNS_SUBDOMAIN, description=(
        "Kueue LocalQueue: the Jobs carry kueue.x-k8s.io/queue-name and are created suspended for Kueue to admit."))
    queue_priority_class: str | None = Field(None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description=(
        "Kueue WorkloadPriorityClass of the Jobs (label kueue.x-k8s.io/priority-class): admission order in the "
        "queue and which Workloads Kueue may preempt. Needs queueName."))
    suspend: bool = Field(False, description=(
        "Suspend the run: active pods stop (the trainer checkpoints on SIGTERM); setting it back to false resumes "
        "from the checkpoint."))
    active_deadline_seconds: int | None = Field(None, ge=1, description=(
        "Time limit of each stage Job once it runs; on expiry the run fails with DeadlineExceeded."))
    startup_deadline_seconds: int | None = Field(None, ge=1, description=(
        "Time a stage pod may take to start running (scheduling, image pull, secrets); exceeded: the run fails "
        "(StartupDeadlineExceeded, or the waiting reason, e.g. ImagePullFailure). Unset: a pod waiting for the "
        "scheduler (e.g. a free GPU: WaitingForGPU) waits indefinitely; image pulls and other waits use the "
        "operator's deadlines (600 s, 300 s)."))
    ttl_seconds_after_finished: int | None = Field(None, ge=0, description=(
        "After the run finishes, apply `cleanup` once this many seconds have passed."))
    cleanup: Cleanup = Field(default_factory=Cleanup, description=(
        "What ttlSecondsAfterFinished removes. Only Jobs and pods: models, data and the claim are never deleted."),
        json_schema_extra={"default": {}})


# --- status -----------------------------------------------------------------------------------------------------

def _free_form(description: str, **extra: Any) -> Any:
    """A status object whose keys belong to its writer (the benchmark's results, prepare's stats)."""
    return Field(None, description=description, json_schema_extra=extra or None)


class Checkpoint(_Model):
    step: int | None = Field(None, description="Step of the checkpoint.")
    updated_at: str | None = Field(None, description="When it was reported.")


class Progress(_Model):
    step: int | None = Field(None, description="Current optimizer step.")
    max_steps: int | None = Field(None, description="Steps to train.")
    loss: float | None = Field(None, description="Latest training loss.")
    val_wer: float | None = Field(None, description="Latest validation WER (CTC head), as the trainer reported it.")
    val_wer_step: int | None = Field(None, description="Step of that validation, when the trainer reports it.")
    samples_per_second: float | None = Field(None, description="Training throughput over all ranks.")
    world_size: int | None = Field(None, description="Ranks the trainer runs with.")
    updated_at: str | None = Field(None, description="When the trainer reported it.")
    display: str | None = Field(None, description="step/maxSteps, for the printer column.")
    eta: str | None = Field(None, description=(
        "Time left to maxSteps at the current attempt's mean step rate (e.g. 4m30s), the ETA printer column."))
    eta_seconds: int | None = Field(None, description="The same in seconds.")


class Restart(_Model):
    attempt: int | None = Field(None, description="Attempt started by it.")
    reason: str | None = Field(None, description="RankFailed or RankDisrupted.")
    message: str | None = Field(None, description="Which rank, how it ended.")
    counted: bool | None = Field(None, description="Counted against backoffLimit.")


class TrainingStatus(_Model):
    nodes: int | None = Field(None, description="Training pods (resources.nodes).")
    devices_per_node: int | None = Field(None, description="Ranks per pod (GPUs, or 1 on CPU).")
    world_size: int | None = Field(None, description="Ranks the trainer reported (nodes x devicesPerNode).")
    global_batch_size: int | None = Field(None, description=(
        "Samples per optimizer step over all ranks: batchSize x gradAccum x worldSize, as the trainer reported it."))
    start_time: str | None = Field(None, description="When the first training Job started.")
    wall_seconds: float | None = Field(None, description=(
        "Training wall time so far (first training Job start to the end of training)."))
    gpu_hours: float | None = Field(None, description="wallSeconds x nodes x GPUs per node / 3600 (0 on CPU).")
    group_restarts: int | None = Field(None, description=(
        "Times a multi-node group was restarted as a new training Job (<name>-train-r<k>)."))
    group_failures: int | None = Field(None, description=(
        "Restarts counted against resources.backoffLimit (disruptions are not)."))
    last_restart: Restart | None = Field(None, description="Why the group last restarted.")


class Jobs(_Model):
    prepare: str | None = Field(None, description="Data preparation Job.")
    train: str | None = Field(None, description=(
        "Training Job (the current attempt: <name>-train, then <name>-train-r<k> after group restarts)."))
    benchmark: str | None = Field(None, description="Benchmark Job.")


class DataStatus(_Model):
    data_spec_hash: str | None = Field(None, description="Cache key of the data spec (data/<hash>/ on the claim).")
    claim_name: str | None = Field(None, description="Claim holding the data.")
    reused_from: str | None = Field(None, description="Sibling whose prepared data was reused (no prepare Job ran).")
    stats: dict[str, Any] | None = _free_form("Sample counts and hours from the prepare stage.")


class ModelStatus(_Model):
    path: str | None = Field(None, description="model.nemo path on the claim.")
    size_bytes: int | None = Field(None, description="File size.", json_schema_extra=int64())
    sha256: str | None = Field(None, description="Checksum.")
    data_spec_hash: str | None = Field(None, description="Data it was trained on.")
    image: str | None = Field(None, description="Trainer image.")
    step: int | None = Field(None, description="Final step.")
    final_loss: float | None = Field(None, description="Final training loss.")
    val_wer: float | None = Field(None, description="Validation WER.")


class BenchmarkStatus(_Model):
    metrics: dict[str, Any] | None = _free_form(
        "recall, precision, sequenceAccuracy, latencies, modelSize, total, scored.")
    baseline: dict[str, Any] | None = _free_form("Same keys for the baseline.", nullable=True)
    deltas: dict[str, Any] | None = _free_form("metrics - baseline.")
    targets: dict[str, Any] | None = _free_form("Target checks: {target, value, pass}.")
    results_path: str | None = Field(None, description="Full results file on the claim.")
    report_path: str | None = Field(None, description="report.md on the claim (its PNG lies beside it).")
    reason: str | None = Field(None, description=(
        "Why the verdict: Improvement, Regression, Inconclusive, NoBaseline, WithinTolerance."))
    rule: str | None = Field(None, description="Verdict rule used: paired or threshold.")
    verdict_head: str | None = Field(None, description="Decoder head whose scores decided the verdict.")
    primary_metric: str | None = Field(None, description="Metric whose gain makes an improvement.")
    intervals: dict[str, Any] | None = _free_form(
        "Paired 95% bootstrap interval [low, high] of each delta (verdict head).")
    display: dict[str, Any] | None = _free_form("Each delta with its interval in points, e.g. +2.1 ±1.4.")
    delta_display: str | None = Field(None, description=(
        "The primary metric's delta with its interval (the Delta printer column)."))
    sequence_test: dict[str, Any] | None = _free_form(
        "Exact paired sign test on per-clip sequence correctness: candidateOnly, baselineOnly, pValue.")
    required_clips: int | None = Field(None, description=(
        "Paired corpus size that would resolve a difference of the observed size (power estimate)."),
        json_schema_extra={"nullable": True})
    paired_clips: int | None = Field(None, description="Clips scored for both model and baseline.")
    heads: dict[str, Any] | None = _free_form("Per decoder head (ctc, rnnt): metrics, baseline, intervals.")
    corpus: dict[str, Any] | None = _free_form(
        "The corpus judged on: content hash, clips, where it was prepared.")
    leakage: dict[str, Any] | None = _free_form(
        "Corpus clips also in the training/validation data: exactAudio, sameReciterVerse, excluded.")
    artifact: dict[str, Any] | None = _free_form("The model.nemo that was measured: bytes, precision, sha256.")
    throughput: dict[str, Any] | None = _free_form(
        "Batched transcription speed: clipsPerSecond, rtfx (audio seconds per second), batchSize.")


class TrackingStatus(_Model):
    run_id: str | None = Field(None, description="MLflow run id: the training and the benchmark log into it.")
    uri: str | None = Field(None, description="Tracking server (credentials removed).")


class Condition(_Model):
    type: str = Field(description="Condition type.")
    status: Literal["True", "False", "Unknown"] = Field(description="Condition status.")
    reason: str | None = Field(None, description="CamelCase reason.")
    message: str | None = Field(None, description="Human-readable detail.")
    observed_generation: int | None = Field(None, description="Generation the condition was set for.",
                                            json_schema_extra=int64())
    last_transition_time: str | None = Field(None, description="When status last changed.",
                                             json_schema_extra={"format": "date-time"})


class QuranFineTuneStatus(_Model):
    """Observed state, written by the operator."""

    observed_generation: int | None = Field(None, description="Generation of the spec the status reflects.",
                                            json_schema_extra=int64())
    phase: Literal[PHASES] | None = Field(None, description=(  # type: ignore[valid-type]
        "Where the run is. Stopped: ended by a stop request (annotation quranft.io/stop-requested) before "
        "training finished; terminal like Succeeded and Failed."))
    verdict: Literal["improvement", "regression", "neutral"] | None = Field(
        None, description="Benchmark verdict against the baseline.")
    tracking: TrackingStatus | None = Field(None, description=(
        "The resource's MLflow run (operator setting mlflow_tracking_uri, Helm mlflow.trackingUri)."))
    resume_count: int | None = Field(None, description=(
        "Times the training pod (of a multi-node run: the group) was restarted (resumed from its checkpoint)."))
    training_pods: list[str] | None = Field(None, max_length=100, description=(
        "Names of the training pods seen so far, oldest first (of a multi-node run: rank 0's, one per attempt; "
        "evicted pods vanish; this is how resumeCount counts them)."))
    last_checkpoint: Checkpoint | None = Field(None, description="Last checkpoint the trainer reported.")
    progress: Progress | None = Field(None, description=(
        "Training progress: the record the trainer's rank 0 pushes to the operator (its QURANFT_PROGRESS log line "
        "when it pushes nothing), with the operator's ETA."))
    training: TrainingStatus | None = Field(None, description=(
        "How the training ran: its ranks, batch, GPU time and group restarts."))
    jobs: Jobs | None = Field(None, description="Names of the stage Jobs.")
    data: DataStatus | None = Field(None, description="Prepared data.")
    model: ModelStatus | None = Field(None, description="The trained model.")
    benchmark: BenchmarkStatus | None = Field(None, description=(
        "Benchmark summary (full results stay on the claim at resultsPath)."))
    start_time: str | None = Field(None, description="When the first stage Job was created.",
                                   json_schema_extra={"format": "date-time"})
    completion_time: str | None = Field(None, description="When the run reached Succeeded, Failed or Stopped.",
                                        json_schema_extra={"format": "date-time"})
    cleaned_up: bool | None = Field(None, description="The cleanup policy has been applied.")
    conditions: list[Condition] | None = Field(None, description=(
        "Kubernetes-style conditions: DataReady, QuotaAdmitted, Trained, Benchmarked, Improved, QuotaExceeded, "
        "RanksReady, Stopped, Failed, ..."),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})


# --- admission --------------------------------------------------------------------------------------------------

def parse_spec(spec: Any) -> QuranFineTuneSpec:
    """The stored spec as a typed model; ConfigError names each bad field (`data.maxDurationSeconds: ...`).

    The API server has already checked the schema and the CEL rules for objects created under this CRD; this is
    the operator's own check for objects stored under an older one, and the typed view its builders read."""
    try:
        return QuranFineTuneSpec.model_validate(spec)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
