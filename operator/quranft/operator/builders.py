"""Pure builders: a QuranFineTune (spec + metadata) -> the ConfigMap, PVC, Service and stage Jobs it needs.

No I/O and no clients: every function returns a fresh dict (inputs are deep-copied) so the same input
always gives the same object, which is what makes "create with a deterministic name; 409 = adopt" safe.

Distributed training (`resources.nodes` x `resources.gpus`): one pod per node, each running `gpus` ranks
(Lightning DDP spawns them); `nodes: 1` keeps the one-pod Job. `nodes > 1` is an Indexed Job plus a headless
Service whose name is the pods' `subdomain`, so rank 0 is reachable as `<job>-0.<service>` (the Kubernetes
pattern Kubeflow's JobSet-based trainer and PyTorchJob use; see `build_rank_job_fields`).
"""
from __future__ import annotations

import copy
import hashlib
import json
from typing import Any, Mapping

from pydantic import ValidationError

from quranft.contract import workspace as layout
from quranft.contract.exits import FATAL_EXIT_CODES, ExitCode
from quranft.contract.keys import (  # noqa: F401  (label and annotation names are re-exported from here too)
    API_VERSION,
    COMMAND_ANNOTATION,
    COMMON_LABELS,
    GROUP_FAILURES_ANNOTATION,
    KIND,
    LABEL_ATTEMPT,
    LABEL_DATA_HASH,
    LABEL_GENERATION,
    LABEL_RUN,
    LABEL_STAGE,
    STOP_ANNOTATION,
)
from quranft.contract.workspace import CONFIG_DIR, CONFIG_FILE, CONFIG_KEY, WORKSPACE  # noqa: F401
from quranft.contract.config import ConfigError, RunConfig, data_spec_hash, format_validation_error
from quranft.contract import push
from quranft.trainer import progress_push
from quranft.trainer.tracking import CLIENT_ENV as MLFLOW_CLIENT_ENV

from .settings import OperatorSettings
from .stages import STAGE_SUFFIX  # noqa: F401  (the Job name suffixes, from the one stage table)

# The Job controller's per-pod completion index of an Indexed Job (annotation and label on every pod).
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
GPU_RESOURCE = "nvidia.com/gpu"
MAX_NAME = 63
# Ranks of one run at most (nodes x devices per node); the CRD has the same ceiling as a CEL rule.
MAX_RANKS = 128
MAX_NODES = 64
BACKENDS = ("auto", "nccl", "gloo")
# MASTER_PORT range: below Linux's ephemeral range (32768-60999), so an outgoing connection never holds it.
RENDEZVOUS_PORT_BASE, RENDEZVOUS_PORT_SPAN = 20000, 12000
# The hub token arrives as a file, not an env var (env leaks into crash dumps and `kubectl describe`);
# huggingface_hub, and through it datasets, read the file named by HF_TOKEN_PATH.
HUB_TOKEN_DIR = "/var/run/secrets/quranft/hub"
HUB_TOKEN_FILE = f"{HUB_TOKEN_DIR}/token"
# The training pod's rank 0 pushes progress to the operator (progress_server.py) with a projected ServiceAccount
# token for this audience (the kubelet rotates it; TokenReview names the pod it is bound to).
PROGRESS_TOKEN_DIR = "/var/run/secrets/quranft/progress"
PROGRESS_TOKEN_SECONDS = 3600
# Non-root, above the host's usual user range (checkov CKV_K8S_40); the images create this user too.
WORKLOAD_UID = 65532
# checkov findings on the stage Jobs that are choices, not oversights; checkov reads these annotations.
CHECKOV_JUSTIFIED_SKIPS = {
    "checkov.io/skip1": "CKV_K8S_15=Pull policy is the operator's image.pullPolicy or spec.images.pullPolicy; "
                        "IfNotPresent by default because trainer images are ~8 GB and kind or air-gapped "
                        "clusters preload them",
    "checkov.io/skip2": "CKV_K8S_43=Images come from spec.images or the operator's settings and are used as "
                        "given; a digest reference (name@sha256:...) pins them, release tags are the default",
}


def child_name(name: str, suffix: str, limit: int = MAX_NAME) -> str:
    """`<name>-<suffix>`, at most `limit` characters; a truncated name keeps a hash of the full one."""
    full = f"{name}-{suffix}"
    if len(full) <= limit:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    keep = limit - len(suffix) - len(digest) - 2
    return f"{name[:keep].rstrip('-.')}-{digest}-{suffix}"


def job_name(name: str, stage: str) -> str:
    return child_name(name, STAGE_SUFFIX[stage])


def train_job_name(name: str, attempt: int = 0, nodes: int = 1) -> str:
    """The training Job of one attempt: `<name>-train`, then `<name>-train-r1`, `-r2`, ... after group restarts.

    An Indexed Job's pods are named `<job>-<index>` as hostnames (a DNS label, 63 characters), so a multi-node
    Job's name leaves room for its largest index.
    """
    suffix = STAGE_SUFFIX["train"] + (f"-r{attempt}" if attempt else "")
    limit = MAX_NAME if nodes <= 1 else MAX_NAME - len(f"-{nodes - 1}")
    return child_name(name, suffix, limit)


def rank_service_name(name: str) -> str:
    """The headless Service of a multi-node run: the pods' `subdomain`, one per run (every attempt uses it)."""
    return child_name(name, "ranks")


def config_map_name(name: str) -> str:
    return child_name(name, "config")


def claim_name(spec: Mapping[str, Any], name: str) -> str:
    storage = spec.get("storage") or {}
    return storage.get("existingClaim") or child_name(name, "workspace")


def run_labels(name: str, stage: str | None = None, generation: int | None = None) -> dict[str, str]:
    labels = {**COMMON_LABELS, LABEL_RUN: name}
    if stage:
        labels[LABEL_STAGE] = stage
    if generation is not None:
        labels[LABEL_GENERATION] = str(generation)
    return labels


def owner_reference(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}


def _object_meta(name: str, meta: Mapping[str, Any], labels: dict[str, str], owned: bool = True,
                 annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "namespace": meta["namespace"], "labels": labels}
    if annotations:
        out["annotations"] = dict(annotations)
    if owned:
        out["ownerReferences"] = [owner_reference(meta)]
    return out


# --- distribution ----------------------------------------------------------------------------------------

def nodes_of(spec: Mapping[str, Any]) -> int:
    return int((spec.get("resources") or {}).get("nodes", 1))


def gpus_of(spec: Mapping[str, Any]) -> int:
    """GPUs per training pod (per node)."""
    return int((spec.get("resources") or {}).get("gpus", 1))


def devices_per_node(spec: Mapping[str, Any]) -> int:
    """Ranks per pod: one per GPU, one process on CPU."""
    return max(gpus_of(spec), 1)


def world_size(spec: Mapping[str, Any]) -> int:
    return nodes_of(spec) * devices_per_node(spec)


def total_gpus(spec: Mapping[str, Any]) -> int:
    """GPUs the training Job holds: nodes x GPUs per node (what quotas and the operator's budget charge)."""
    return nodes_of(spec) * gpus_of(spec)


def distributed_doc(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The trainer config's `distributed` section (camelCase, as the trainer reads it)."""
    res = spec.get("resources") or {}
    doc: dict[str, Any] = {"nodes": nodes_of(spec), "devicesPerNode": devices_per_node(spec),
                           "backend": str(res.get("distributedBackend") or "auto")}
    if res.get("rendezvousTimeoutSeconds") is not None:
        doc["rendezvousTimeoutSeconds"] = int(res["rendezvousTimeoutSeconds"])
    return doc


def validate_distributed(spec: Mapping[str, Any]) -> None:
    """The CRD's CEL rules on resources.nodes/gpus/distributedBackend, again (a resource stored under an older
    CRD skipped them): ConfigError names the field."""
    res = spec.get("resources") or {}
    nodes, gpus, backend = nodes_of(spec), gpus_of(spec), str(res.get("distributedBackend") or "auto")
    if backend not in BACKENDS:
        raise ConfigError(f"resources.distributedBackend: {backend!r} is not one of {', '.join(BACKENDS)}")
    if not 1 <= nodes <= MAX_NODES:
        raise ConfigError(f"resources.nodes: {nodes} is outside 1..{MAX_NODES}")
    if nodes > 1 and gpus == 0 and backend != "gloo":
        raise ConfigError("resources.nodes > 1 with gpus 0 trains on CPUs across pods: set "
                          "resources.distributedBackend: gloo")
    if backend == "nccl" and gpus == 0:
        raise ConfigError("resources.distributedBackend: nccl needs GPUs (resources.gpus > 0); use gloo on CPU")
    if world_size(spec) > MAX_RANKS:
        raise ConfigError(f"resources: nodes x gpus = {world_size(spec)} ranks exceeds the limit of {MAX_RANKS}")


def rendezvous_port(meta: Mapping[str, Any], attempt: int = 0) -> int:
    """MASTER_PORT of one run and attempt: deterministic (a re-built Job is identical), and different across
    runs and attempts, because the embedded cluster's pods share the host's loopback (a real cluster gives
    every pod its own network namespace, where any port would do)."""
    key = f"{meta['namespace']}/{meta['name']}/{attempt}".encode()
    return RENDEZVOUS_PORT_BASE + int(hashlib.sha256(key).hexdigest(), 16) % RENDEZVOUS_PORT_SPAN


# --- the trainer config -------------------------------------------------------------------------------

def run_config_doc(spec: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The config.json document every stage reads: spec.data / spec.training copied through unchanged (same
    field names); `distributed` from spec.resources (nodes, devices per node = GPUs or 1 on CPU, backend);
    `benchmark` from spec.benchmark (benchmark_doc)."""
    return {
        "run": {"name": meta["name"], "namespace": meta["namespace"], "workspace": WORKSPACE},
        "data": copy.deepcopy(dict(spec.get("data") or {})),
        "training": copy.deepcopy(dict(spec.get("training") or {})),
        "distributed": distributed_doc(spec),
        "metrics": {"port": 9400, "progressIntervalSeconds": 5},
        "benchmark": benchmark_doc(spec, meta),
    }


def benchmark_doc(spec: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The config's `benchmark` section: spec.benchmark copied through (the same model, BenchmarkSpec) plus
    what this run fixes: the model it trains, where results go, its prepared data (the leakage check), how it
    trained, and the batch size for the benchmark pod's device (16 on a GPU, 4 on CPU, unless set)."""
    bench = copy.deepcopy(dict(spec.get("benchmark") or {}))
    name = meta["name"]
    doc = {**bench, "model": str(layout.model_path(name)), "name": name, "out": str(layout.benchmark_dir(name)),
           "mode": str((spec.get("training") or {}).get("mode", "ctcOnly")), "baselineName": "base",
           "batchSize": bench.get("batchSize") or (16 if stage_gpus(spec, "benchmark") else 4)}
    try:
        doc["trainingData"] = str(layout.data_dir(spec_data_hash(spec)))
    except ValidationError:
        pass  # validate_run_config reports what is wrong with spec.data
    return doc


def validate_run_config(doc: Mapping[str, Any]) -> RunConfig:
    """Validate with the trainer's own schema, so a spec the trainer would reject never gets a Job."""
    try:
        return RunConfig.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def spec_data_hash(spec: Mapping[str, Any]) -> str:
    return data_spec_hash(dict(spec.get("data") or {}))


def build_config_map(spec: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    doc = run_config_doc(spec, meta)
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": _object_meta(config_map_name(meta["name"]), meta, run_labels(meta["name"], "config")),
        "data": {CONFIG_KEY: json.dumps(doc, indent=2, sort_keys=True)},
    }


def build_pvc(spec: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """The claim the operator creates for `storage.size`; None with existingClaim.

    Owned by the resource only with deleteClaimOnDelete, so by default `kubectl delete` keeps the models.
    """
    storage = spec.get("storage") or {}
    if storage.get("existingClaim"):
        return None
    name = meta["name"]
    pvc: dict[str, Any] = {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": _object_meta(claim_name(spec, name), meta, run_labels(name, "workspace"),
                                 owned=bool(storage.get("deleteClaimOnDelete"))),
        "spec": {"accessModes": list(storage.get("accessModes") or ["ReadWriteOnce"]),
                 "resources": {"requests": {"storage": storage["size"]}}},
    }
    if storage.get("storageClassName"):
        pvc["spec"]["storageClassName"] = storage["storageClassName"]
    return pvc


# --- stage Jobs -----------------------------------------------------------------------------------------

def stage_image(spec: Mapping[str, Any], stage: str, settings: OperatorSettings) -> str:
    images = spec.get("images") or {}
    gpus = int((spec.get("resources") or {}).get("gpus", 1))
    trainer = images.get("trainer") or settings.default_image(gpus)
    if stage == "benchmark":
        return images.get("benchmark") or trainer
    return trainer


def stage_gpus(spec: Mapping[str, Any], stage: str) -> int:
    gpus = int((spec.get("resources") or {}).get("gpus", 1))
    if stage == "train":
        return gpus
    if stage == "benchmark":
        return min(gpus, 1)  # latency is measured on the device the model will serve on
    return 0


def benchmark_args(spec: Mapping[str, Any], meta: Mapping[str, Any], model_path: str | None = None,
                   baseline_results: str | None = None) -> list[str]:
    """`quranft benchmark run` arguments: the run's config file (its `benchmark` section, benchmark_doc) and
    `--set` for what only a pass knows: the model the train stage reported, when it is not the default path, and
    the results file of a qftRef baseline."""
    args = ["--config", CONFIG_FILE]
    if model_path and model_path != str(layout.model_path(meta["name"])):
        args += ["--set", f"benchmark.model={json.dumps(model_path)}"]
    baseline = (spec.get("benchmark") or {}).get("baseline") or {}
    if baseline.get("qftRef") and baseline_results:
        args += ["--set", f"benchmark.baseline={json.dumps({'resultsPath': baseline_results})}"]
    return args


def stage_command(stage: str, spec: Mapping[str, Any], meta: Mapping[str, Any], settings: OperatorSettings,
                  **bench_kwargs: Any) -> list[str]:
    overrides = dict(settings.stage_commands)
    if settings.allow_command_overrides:
        raw = (meta.get("annotations") or {}).get(COMMAND_ANNOTATION)
        if raw:
            overrides.update(json.loads(raw))
    if stage in overrides:
        return list(overrides[stage])
    if stage == "prepare":
        return ["quranft", "trainer", "prepare", "--config", CONFIG_FILE]
    if stage == "train":
        return ["quranft", "trainer", "train", "--config", CONFIG_FILE]
    return ["quranft", "benchmark", "run", *benchmark_args(spec, meta, **bench_kwargs)]


def _resources(spec: Mapping[str, Any], stage: str) -> dict[str, Any]:
    res = spec.get("resources") or {}
    cpu, memory = str(res.get("cpu", "2")), str(res.get("memory", "8Gi"))
    out = {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}}
    gpus = stage_gpus(spec, stage)
    if gpus:
        out["requests"][GPU_RESOURCE] = str(gpus)
        out["limits"][GPU_RESOURCE] = str(gpus)
    return out


def _env(meta: Mapping[str, Any], container: str) -> list[dict[str, Any]]:
    return [
        {"name": "QURANFT_RUN", "value": meta["name"]},
        {"name": "HF_HOME", "value": str(layout.hub_cache_dir())},
        {"name": "HOME", "value": "/tmp"},
        # Whole cores requested (rounded up): the trainer sizes its data loader workers by it.
        {"name": "QURANFT_CPU_REQUEST", "valueFrom": {"resourceFieldRef": {
            "containerName": container, "resource": "requests.cpu", "divisor": "1"}}},
    ]


def tracking_env(meta: Mapping[str, Any], settings: OperatorSettings) -> list[dict[str, Any]]:
    """MLflow for a stage pod (quranft.trainer.tracking): the server, the experiment, the resource's uid (which
    names its one MLflow run), the client's short retries and timeout, and the credentials as secret references
    (never values). Nothing without settings.mlflow_tracking_uri."""
    if not settings.mlflow_tracking_uri:
        return []
    env = [{"name": "MLFLOW_TRACKING_URI", "value": settings.mlflow_tracking_uri},
           {"name": "MLFLOW_EXPERIMENT_NAME", "value": settings.mlflow_experiment or meta["namespace"]},
           {"name": "QURANFT_NAMESPACE", "value": meta["namespace"]},
           {"name": "QURANFT_RUN_UID", "value": str(meta.get("uid") or "")}]
    env += [{"name": k, "value": v} for k, v in sorted(MLFLOW_CLIENT_ENV.items())]
    if settings.mlflow_credentials_secret:
        env += [{"name": f"MLFLOW_TRACKING_{key.upper()}", "valueFrom": {"secretKeyRef": {
            "name": settings.mlflow_credentials_secret, "key": key}}} for key in ("username", "password")]
    return env


RESTRICTED_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    # Writes go to the workspace PVC, /tmp (HOME) and /dev/shm only (images/build-local.sh runs the CPU stub so).
    "readOnlyRootFilesystem": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_POD_SECURITY = {
    "runAsNonRoot": True, "runAsUser": WORKLOAD_UID, "runAsGroup": WORKLOAD_UID, "fsGroup": WORKLOAD_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def build_pod_spec(stage: str, spec: Mapping[str, Any], meta: Mapping[str, Any], settings: OperatorSettings,
                   **bench_kwargs: Any) -> dict[str, Any]:
    res = spec.get("resources") or {}
    images = spec.get("images") or {}
    gpus = stage_gpus(spec, stage)
    container = {
        "name": stage,
        "image": stage_image(spec, stage, settings),
        "imagePullPolicy": images.get("pullPolicy") or settings.image_pull_policy,
        "command": stage_command(stage, spec, meta, settings, **bench_kwargs),
        "env": _env(meta, stage) + tracking_env(meta, settings),
        "resources": _resources(spec, stage),
        "volumeMounts": [
            {"name": "workspace", "mountPath": WORKSPACE},
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": copy.deepcopy(RESTRICTED_CONTAINER_SECURITY),
        # A crash before the summary is written still leaves the log tail as the message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    tolerations = copy.deepcopy(list(res.get("tolerations") or []))
    node_selector = dict(res.get("nodeSelector") or {})
    if gpus:
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
        # Operator-wide GPU placement; the run's own nodeSelector wins on a shared key.
        tolerations += [t for t in copy.deepcopy(settings.gpu_tolerations) if t not in tolerations]
        node_selector = {**settings.gpu_node_selector, **node_selector}
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": copy.deepcopy(RESTRICTED_POD_SECURITY),
        # Training needs time to finish the step and write a checkpoint after SIGTERM.
        "terminationGracePeriodSeconds": settings.termination_grace_seconds if stage == "train" else 30,
        "containers": [container],
        "volumes": [
            {"name": "workspace", "persistentVolumeClaim": {"claimName": claim_name(spec, meta["name"])}},
            {"name": "config", "configMap": {"name": config_map_name(meta["name"])}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": res.get("shmSize", "2Gi")}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    ref = spec.get("hubTokenSecretRef")
    if ref:  # the token only ever travels as a secret reference, mounted read-only for this container
        pod["volumes"].append({"name": "hub-token", "secret": {
            "secretName": ref["name"], "items": [{"key": ref.get("key", "token"), "path": "token"}]}})
        container["volumeMounts"].append({"name": "hub-token", "mountPath": HUB_TOKEN_DIR, "readOnly": True})
        container["env"].append({"name": "HF_TOKEN_PATH", "value": HUB_TOKEN_FILE})
    if stage == "train" and settings.progress_endpoint:
        add_progress_push(pod, container, settings)
    if tolerations:
        pod["tolerations"] = tolerations
    if node_selector:
        pod["nodeSelector"] = node_selector
    if res.get("priorityClassName"):
        pod["priorityClassName"] = res["priorityClassName"]
    return pod


def add_progress_push(pod: dict[str, Any], container: dict[str, Any], settings: OperatorSettings) -> None:
    """The token volume and env of the progress push (quranft.trainer.progress_push): the endpoint, the token
    file, the CA's PEM (in env: no Secret or ConfigMap for the operator to create or read)."""
    pod["volumes"].append({"name": "progress-token", "projected": {"sources": [{"serviceAccountToken": {
        "audience": push.AUDIENCE, "expirationSeconds": PROGRESS_TOKEN_SECONDS, "path": "token"}}]}})
    container["volumeMounts"].append({"name": "progress-token", "mountPath": PROGRESS_TOKEN_DIR, "readOnly": True})
    container["env"] += [
        {"name": progress_push.URL_ENV, "value": settings.progress_endpoint},
        {"name": progress_push.TOKEN_FILE_ENV, "value": f"{PROGRESS_TOKEN_DIR}/token"},
        {"name": progress_push.CA_ENV, "value": settings.progress_ca_pem},
    ]


def build_job(stage: str, spec: Mapping[str, Any], meta: Mapping[str, Any], settings: OperatorSettings,
              attempt: int = 0, group_failures: int = 0, **bench_kwargs: Any) -> dict[str, Any]:
    """The Job of one stage. Names are deterministic, so a retried create is answered 409 and adopted.

    `attempt` and `group_failures` matter only for a multi-node training Job (see build_rank_job_fields).
    """
    name = meta["name"]
    generation = int(meta.get("generation") or 1)
    nodes = nodes_of(spec) if stage == "train" else 1
    labels = run_labels(name, stage, generation)
    if stage in ("prepare", "train"):
        labels[LABEL_DATA_HASH] = spec_data_hash(spec)
    if nodes > 1:
        labels[LABEL_ATTEMPT] = str(attempt)
    job_labels = dict(labels)
    queue = spec.get("queueName")
    if queue:
        job_labels[KUEUE_QUEUE_LABEL] = queue
        if spec.get("queuePriorityClass"):  # Kueue's WorkloadPriorityClass: admission order and preemption
            job_labels[KUEUE_PRIORITY_LABEL] = spec["queuePriorityClass"]
    backoff = int((spec.get("resources") or {}).get("backoffLimit", 3)) if stage == "train" else 1
    job_spec: dict[str, Any] = {
        "backoffLimit": backoff,
        "completions": 1,
        "parallelism": 1,
        # Kueue admits by unsuspending; spec.suspend stops the pods (checkpoint on SIGTERM) and resumes later.
        "suspend": bool(queue) or bool(spec.get("suspend")),
        "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": list(FATAL_EXIT_CODES)}},
            # Preemption, eviction, node drain: retry without counting against backoffLimit.
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        ]},
        "template": {
            "metadata": {"labels": labels},
            "spec": build_pod_spec(stage, spec, meta, settings, **bench_kwargs),
        },
    }
    if spec.get("activeDeadlineSeconds"):
        job_spec["activeDeadlineSeconds"] = int(spec["activeDeadlineSeconds"])
    annotations = dict(CHECKOV_JUSTIFIED_SKIPS)
    if nodes > 1:
        name_of_job = train_job_name(name, attempt, nodes)
        build_rank_job_fields(job_spec, spec, meta, name_of_job, attempt)
        annotations[GROUP_FAILURES_ANNOTATION] = str(group_failures)
    else:
        name_of_job = job_name(name, stage)
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": _object_meta(name_of_job, meta, job_labels, annotations=annotations),
        "spec": job_spec,
    }


def build_rank_job_fields(job_spec: dict[str, Any], spec: Mapping[str, Any], meta: Mapping[str, Any],
                          name_of_job: str, attempt: int) -> None:
    """Turn a training Job spec into the multi-node group: an Indexed Job with one pod per node.

    Rendezvous: pod `i` is hostname `<job>-i` in the subdomain `rank_service_name` (a headless Service that
    publishes not-ready addresses, so peers resolve before any pod is Ready); MASTER_ADDR is rank 0's name,
    NODE_RANK the completion index (downward API), WORLD_SIZE nodes x devices per node. Lightning's DDP
    strategy reads them and spawns `devicesPerNode` ranks in each pod.

    Group restart (JobSet's `failurePolicy.maxRestarts` semantics): DDP cannot replace one rank of a running
    group, so a retried pod would wait for peers that have moved on. Any failed pod therefore fails the whole
    Job at once (backoffLimit 0 and FailJob rules; the Job controller then stops the other ranks with SIGTERM),
    and the operator creates the next attempt `<name>-train-r<k>` from the last
    checkpoint (status.derive). Exit codes 2 and 5 (config, environment, RendezvousTimeout) end the run; a
    disruption (DisruptionTarget: preemption, eviction, drain) restarts without counting; any other failure
    counts against resources.backoffLimit. The counted failures so far ride on the new Job's annotation.
    `backoffLimitPerIndex` was not used: it retries one index alone, which a DDP group cannot absorb.

    All-or-nothing placement is the cluster's to offer: with spec.queueName Kueue admits the Job's pods
    together (its quota is charged for all of them, and `waitForPodsReady` evicts a group that does not
    start in time). The scheduler-plugins coscheduling plugin gangs pods of a PodGroup, which the operator does
    not create; Kubernetes' own gang scheduling (the alpha Workload API) skips Jobs with a controller owner,
    as ours have. Without Kueue,
    the trainer's rendezvous timeout (resources.rendezvousTimeoutSeconds) is the barrier: ranks that do not
    all arrive end the run with RendezvousTimeout, and the RanksReady condition names the pods still waiting.
    """
    nodes = nodes_of(spec)
    service = rank_service_name(meta["name"])
    job_spec.update({
        "completionMode": "Indexed", "completions": nodes, "parallelism": nodes, "backoffLimit": 0,
        "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": list(FATAL_EXIT_CODES)}},
            {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [int(ExitCode.OK)]}},
        ]},
    })
    pod = job_spec["template"]["spec"]
    pod["subdomain"] = service
    pod["containers"][0]["env"] += [
        {"name": "MASTER_ADDR", "value": f"{name_of_job}-0.{service}"},
        {"name": "MASTER_PORT", "value": str(rendezvous_port(meta, attempt))},
        {"name": "WORLD_SIZE", "value": str(world_size(spec))},
        {"name": "NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}},
    ]


def build_rank_service(spec: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """The headless Service giving a multi-node run's pods DNS names (None for a one-pod run). Owned by the
    resource; it selects the training pods of every attempt (their hostnames differ per attempt)."""
    if nodes_of(spec) <= 1:
        return None
    name = meta["name"]
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _object_meta(rank_service_name(name), meta, run_labels(name, "train")),
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                 "selector": {LABEL_RUN: name, LABEL_STAGE: "train"}},
    }
