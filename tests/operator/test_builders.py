"""Pure builders: golden fields, names, security profile, failure policy. No cluster."""
from __future__ import annotations

import json

import pytest
from specs import body

from quranft.operator import builders
from quranft.operator.settings import OperatorSettings
from quranft.contract.config import ConfigError, data_spec_hash

SETTINGS = OperatorSettings(image_tag="1.2.3")


def _job(stage="train", **spec_overrides):
    b = body(spec_overrides=spec_overrides)
    return builders.build_job(stage, b["spec"], b["metadata"], SETTINGS)


@pytest.mark.parametrize("name,suffix,expected", [
    ("v3", "train", "v3-train"),
    ("a" * 55, "prepare", "a" * 55 + "-prepare"),
])
def test_child_names_short(name, suffix, expected):
    assert builders.child_name(name, suffix) == expected


def test_child_names_truncated_keep_a_hash_and_stay_unique():
    a = builders.child_name("x" * 70 + "a", "prepare")
    b = builders.child_name("x" * 70 + "b", "prepare")
    assert len(a) <= 63 and len(b) <= 63 and a != b and a.endswith("-prepare")


def test_job_names_and_labels():
    job = _job("benchmark")
    assert job["metadata"]["name"] == "v3-bench"
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels[builders.LABEL_RUN] == "v3" and labels[builders.LABEL_STAGE] == "benchmark"
    assert labels[builders.LABEL_GENERATION] == "1"
    ref = job["metadata"]["ownerReferences"][0]
    assert ref == {"apiVersion": "quranft.io/v1alpha1", "kind": "QuranFineTune", "name": "v3", "uid": "uid-v3",
                   "controller": True, "blockOwnerDeletion": True}


def test_builders_are_deterministic_and_do_not_alias_input():
    b = body(spec_overrides={"resources": {"gpus": 1, "tolerations": [{"key": "k", "operator": "Exists"}]}})
    first = builders.build_job("train", b["spec"], b["metadata"], SETTINGS)
    second = builders.build_job("train", b["spec"], b["metadata"], SETTINGS)
    assert first == second
    first["spec"]["template"]["spec"]["tolerations"].append({"key": "mutated"})
    assert b["spec"]["resources"]["tolerations"] == [{"key": "k", "operator": "Exists"}]


def test_gpu_training_job():
    job = _job("train", resources={"gpus": 2, "cpu": 8, "memory": "64Gi", "backoffLimit": 4,
                                   "nodeSelector": {"gpu": "a100"}, "priorityClassName": "research"})
    spec = job["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "ghcr.io/quran-finetune/trainer:1.2.3"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["resources"]["requests"]["cpu"] == "8"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"] == {"gpu": "a100"} and pod["priorityClassName"] == "research"
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert spec["backoffLimit"] == 4
    assert spec["podFailurePolicy"]["rules"] == [
        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2, 5]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
    ]
    assert pod["terminationGracePeriodSeconds"] == SETTINGS.termination_grace_seconds
    assert container["command"] == ["quranft", "trainer", "train", "--config", "/etc/quranft/config.json"]


def test_cpu_job_uses_cpu_image_and_no_gpu():
    job = _job("train")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/quran-finetune/trainer-cpu:1.2.3"
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert "tolerations" not in job["spec"]["template"]["spec"]


@pytest.mark.parametrize("stage", ["prepare", "train", "benchmark"])
def test_pod_security_restricted_profile(stage):
    pod = _job(stage, hubTokenSecretRef={"name": "hf", "key": "token"})["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] >= 10000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
        assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
        names = {e["name"] for e in c["env"]}
        assert "QURANFT_TERMINATION_LOG" not in names
        assert sc["readOnlyRootFilesystem"] is True
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]  # HOME and caches on a read-only root
        # The hub token is a read-only file named by HF_TOKEN_PATH, never an env value or env secretKeyRef.
        assert "HF_TOKEN" not in names
        token_path = next(e["value"] for e in c["env"] if e["name"] == "HF_TOKEN_PATH")
        mount = next(m for m in c["volumeMounts"] if m["name"] == "hub-token")
        assert mount["readOnly"] is True and token_path == mount["mountPath"] + "/token"
    hub = next(v for v in pod["volumes"] if v["name"] == "hub-token")
    assert hub["secret"] == {"secretName": "hf", "items": [{"key": "token", "path": "token"}]}
    # restricted profile: only these volume types
    assert all(set(v) - {"name"} <= {"persistentVolumeClaim", "configMap", "emptyDir", "secret"} for v in pod["volumes"])


def test_no_hub_token_no_token_volume():
    pod = _job("prepare")["spec"]["template"]["spec"]
    assert "hub-token" not in {v["name"] for v in pod["volumes"]}
    assert "HF_TOKEN_PATH" not in {e["name"] for e in pod["containers"][0]["env"]}


def test_queue_name_creates_suspended_job_with_kueue_label():
    job = _job("train", queueName="gpu-queue")
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert _job("train")["spec"]["suspend"] is False
    assert "kueue.x-k8s.io/priority-class" not in job["metadata"]["labels"]
    urgent = _job("train", queueName="gpu-queue", queuePriorityClass="quranft-urgent")
    assert urgent["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "quranft-urgent"


def test_active_deadline_copied_to_jobs():
    assert _job("prepare", activeDeadlineSeconds=600)["spec"]["activeDeadlineSeconds"] == 600
    assert "activeDeadlineSeconds" not in _job("prepare")["spec"]


def test_config_map_copies_data_and_training_unchanged():
    b = body()
    cm = builders.build_config_map(b["spec"], b["metadata"])
    doc = json.loads(cm["data"]["config.json"])
    assert doc["data"] == b["spec"]["data"] and doc["training"] == b["spec"]["training"]
    assert doc["run"] == {"name": "v3", "namespace": "team-a", "workspace": "/workspace"}
    cfg = builders.validate_run_config(doc)
    assert cfg.training.max_steps == 40
    assert cm["metadata"]["name"] == "v3-config"
    assert builders.spec_data_hash(b["spec"]) == data_spec_hash(b["spec"]["data"])
    assert _job("prepare")["metadata"]["labels"][builders.LABEL_DATA_HASH] == data_spec_hash(b["spec"]["data"])


def test_config_rejected_by_trainer_schema():
    b = body(spec_overrides={"training": {"baseModel": "tiny", "maxSteps": 10, "warmupSteps": 50}})
    with pytest.raises(ConfigError, match="warmupSteps"):
        builders.validate_run_config(builders.run_config_doc(b["spec"], b["metadata"]))


def test_pvc_ownership_follows_delete_claim_on_delete():
    keep = body(spec_overrides={"storage": {"size": "10Gi"}})
    pvc = builders.build_pvc(keep["spec"], keep["metadata"])
    assert pvc["metadata"]["name"] == "v3-workspace" and "ownerReferences" not in pvc["metadata"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"
    owned = body(spec_overrides={"storage": {"size": "10Gi", "deleteClaimOnDelete": True,
                                             "storageClassName": "fast"}})
    pvc = builders.build_pvc(owned["spec"], owned["metadata"])
    assert pvc["metadata"]["ownerReferences"][0]["uid"] == "uid-v3" and pvc["spec"]["storageClassName"] == "fast"
    assert builders.build_pvc(body()["spec"], body()["metadata"]) is None


def _bench_settings(tmp_path, model_path=None, baseline_results=None, **spec_overrides):
    """What the benchmark stage runs with: the Job's command parsed by the benchmark's own CLI, reading the
    run's ConfigMap document (mounted at CONFIG_FILE in the pod, a copy here)."""
    from quranft.benchmark import cli as bench_cli
    from quranft.benchmark import run_settings

    b = body(spec_overrides=spec_overrides)
    kwargs = {"model_path": model_path, "baseline_results": baseline_results}
    cmd = builders.build_job("benchmark", b["spec"], b["metadata"], SETTINGS, **kwargs)[
        "spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[:5] == ["quranft", "benchmark", "run", "--config", builders.CONFIG_FILE]
    config = tmp_path / "config.json"
    config.write_text(builders.build_config_map(b["spec"], b["metadata"])["data"][builders.CONFIG_KEY])
    return run_settings.from_args(bench_cli.build_parser().parse_args(["run", "--config", str(config), *cmd[5:]]))


@pytest.mark.parametrize("baseline,model,results", [
    ({"baseModel": True}, "tiny", None),
    ({"resultsPath": "/workspace/base.json"}, None, "/workspace/base.json"),
    ({"qftRef": {"name": "v2"}}, None, "/workspace/runs/v2/benchmark/latest.json"),
])
def test_benchmark_baselines(tmp_path, baseline, model, results):
    s = _bench_settings(tmp_path, benchmark={"baseline": baseline})
    assert (s.baseline_model, s.baseline) == (model, results)
    assert s.baseline_name == "base"


def test_benchmark_stage_reads_the_run_config(tmp_path):
    """Every setting of the benchmark stage comes from the config file the prepare/train stages read."""
    s = _bench_settings(tmp_path, benchmark={"decoder": "both", "verdictHead": "rnnt", "seed": 7,
                                             "excludeLeaked": False, "tolerances": {"minGain": 2.5},
                                             "targets": {"sizeMB": 120}})
    b = body()
    assert s.model == "/workspace/runs/v3/model.nemo" and s.out == "/workspace/runs/v3/benchmark"
    assert s.name == "v3" and s.mode == b["spec"]["training"].get("mode", "ctcOnly") and s.workspace == "/workspace"
    assert s.training_data == f"/workspace/data/{data_spec_hash(b['spec']['data'])}"
    assert (s.decoder, s.verdict_head, s.seed, s.include_leaked) == ("both", "rnnt", 7, True)
    assert (s.min_gain, s.tolerance, s.target_size_mb, s.target_recall) == (2.5, 1.0, 120, 0.95)
    assert s.batch_size == 4 and s.resamples == 2000 and s.corpus == "/workspace/corpus"
    assert _bench_settings(tmp_path, resources={"gpus": 1}).batch_size == 16
    assert _bench_settings(tmp_path, benchmark={"batchSize": 8}).batch_size == 8


def test_benchmark_pass_values_go_in_as_config_overrides(tmp_path):
    s = _bench_settings(tmp_path, model_path="/workspace/runs/v3/other.nemo",
                        baseline_results="/workspace/runs/v2/benchmark/2026.json",
                        benchmark={"baseline": {"qftRef": {"name": "v2"}}})
    assert s.model == "/workspace/runs/v3/other.nemo" and s.baseline == "/workspace/runs/v2/benchmark/2026.json"
    b = body()
    plain = builders.benchmark_args(b["spec"], b["metadata"], model_path="/workspace/runs/v3/model.nemo")
    assert plain == ["--config", builders.CONFIG_FILE]


def test_config_map_benchmark_section_is_the_run_configs():
    b = body(spec_overrides={"benchmark": {"verdictRule": "threshold", "latencySamples": 5}})
    cfg = builders.validate_run_config(json.loads(builders.build_config_map(b["spec"], b["metadata"])["data"][
        builders.CONFIG_KEY]))
    assert cfg.benchmark.verdict_rule == "threshold" and cfg.benchmark.latency_samples == 5
    bad = body(spec_overrides={"benchmark": {"decoder": "ctc", "verdictHead": "rnnt"}})
    with pytest.raises(ConfigError, match="verdictHead"):
        builders.validate_run_config(builders.run_config_doc(bad["spec"], bad["metadata"]))


def test_command_override_annotation_only_when_allowed():
    b = body()
    b["metadata"]["annotations"] = {builders.COMMAND_ANNOTATION: json.dumps({"train": ["python", "-c", "pass"]})}
    plain = builders.build_job("train", b["spec"], b["metadata"], SETTINGS)
    assert plain["spec"]["template"]["spec"]["containers"][0]["command"][0] == "quranft"
    allowed = builders.build_job("train", b["spec"], b["metadata"],
                                 OperatorSettings(allow_command_overrides=True))
    assert allowed["spec"]["template"]["spec"]["containers"][0]["command"] == ["python", "-c", "pass"]


def test_operator_gpu_placement_applies_to_gpu_pods_only_and_the_run_wins():
    settings = OperatorSettings(gpu_node_selector={"gpu-type": "h100", "pool": "ml"},
                                gpu_tolerations=[{"key": "dedicated", "operator": "Exists"}])
    gpu = body(spec_overrides={"resources": {"gpus": 1, "nodeSelector": {"pool": "research"}}})
    pod = builders.build_job("train", gpu["spec"], gpu["metadata"], settings)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu-type": "h100", "pool": "research"}
    assert {"key": "dedicated", "operator": "Exists"} in pod["tolerations"]
    cpu = body(spec_overrides={"resources": {"gpus": 0}})
    pod = builders.build_job("train", cpu["spec"], cpu["metadata"], settings)["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod and "tolerations" not in pod


def test_gpu_placement_settings_parse_from_the_environment():
    from quranft.operator.settings import settings_from_env

    s = settings_from_env({"QURANFT_OPERATOR_GPU_NODE_SELECTOR": '{"gpu-type": "h100"}',
                           "QURANFT_OPERATOR_GPU_TOLERATIONS": '[{"key": "dedicated", "operator": "Exists"}]'})
    assert s.gpu_node_selector == {"gpu-type": "h100"} and s.gpu_tolerations[0]["key"] == "dedicated"


@pytest.mark.parametrize("cpu, cores", [("2", "2"), ("500m", "1"), (8, "8"), ("1.5", "2")])
def test_stage_containers_learn_their_cpu_request_from_the_downward_api(cpu, cores):
    from quranft.cluster.envvars import container_env

    for stage in ("prepare", "train", "benchmark"):
        pod = _job(stage, resources={"cpu": cpu})["spec"]["template"]["spec"]
        container = pod["containers"][0]
        var = next(e for e in container["env"] if e["name"] == "QURANFT_CPU_REQUEST")
        assert var == {"name": "QURANFT_CPU_REQUEST", "valueFrom": {"resourceFieldRef": {
            "containerName": stage, "resource": "requests.cpu", "divisor": "1"}}}
        # The embedded node agent resolves it as the kubelet does: whole cores, rounded up.
        env = container_env({"metadata": {"name": "p", "namespace": "team-a"}, "spec": pod}, container, {},
                            lambda *_: None)
        assert env["QURANFT_CPU_REQUEST"] == cores


def test_a_resource_field_ref_may_name_another_container():
    from quranft.cluster.envvars import ContainerConfigError, container_env

    ref = {"resourceFieldRef": {"containerName": "sidecar", "resource": "requests.cpu", "divisor": "1"}}
    main = {"name": "main", "env": [{"name": "SIDECAR_CPU", "valueFrom": ref}],
            "resources": {"requests": {"cpu": "1"}}}
    pod = {"metadata": {"name": "p", "namespace": "ns"},
           "spec": {"containers": [main, {"name": "sidecar", "resources": {"requests": {"cpu": "3"}}}]}}
    assert container_env(pod, main, {}, lambda *_: None)["SIDECAR_CPU"] == "3"
    pod["spec"]["containers"].pop()
    with pytest.raises(ContainerConfigError, match="no container 'sidecar'"):
        container_env(pod, main, {}, lambda *_: None)


# --- distributed training ------------------------------------------------------------------------------------

MULTI = {"nodes": 2, "gpus": 8}
CPU_PAIR = {"nodes": 2, "gpus": 0, "distributedBackend": "gloo"}


def _env(job) -> dict:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize("resources,expected", [
    ({"gpus": 0}, {"nodes": 1, "devicesPerNode": 1, "backend": "auto"}),
    ({"gpus": 8}, {"nodes": 1, "devicesPerNode": 8, "backend": "auto"}),
    (CPU_PAIR, {"nodes": 2, "devicesPerNode": 1, "backend": "gloo"}),
    ({**MULTI, "rendezvousTimeoutSeconds": 900}, {"nodes": 2, "devicesPerNode": 8, "backend": "auto",
                                                 "rendezvousTimeoutSeconds": 900}),
])
def test_config_doc_carries_the_distributed_section(resources, expected):
    b = body(spec_overrides={"resources": resources})
    doc = builders.run_config_doc(b["spec"], b["metadata"])
    assert doc["distributed"] == expected
    cfg = builders.validate_run_config(doc)  # the trainer's own schema accepts it
    assert cfg.distributed.nodes * cfg.distributed.devices_per_node == builders.world_size(b["spec"])


def test_one_node_with_eight_gpus_is_the_one_pod_job_with_eight_gpus():
    """nodes 1 keeps today's Job: gpus > 1 differ only in the GPU count (the config says how many ranks)."""
    one, eight = _job("train", resources={"gpus": 1}), _job("train", resources={"gpus": 8})
    for job in (one, eight):
        assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (1, 1)
        assert "completionMode" not in job["spec"] and "subdomain" not in job["spec"]["template"]["spec"]
        assert not {"MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "WORLD_SIZE"} & set(_env(job))
    limits = eight["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert limits["limits"]["nvidia.com/gpu"] == limits["requests"]["nvidia.com/gpu"] == "8"
    for res in (one, eight):
        r = res["spec"]["template"]["spec"]["containers"][0]["resources"]
        del r["limits"]["nvidia.com/gpu"], r["requests"]["nvidia.com/gpu"]
    assert one == eight
    assert one["metadata"]["name"] == "v3-train"


def test_multi_node_training_is_an_indexed_job_with_rendezvous_env():
    b = body(spec_overrides={"resources": {**MULTI, "backoffLimit": 4}})
    job = builders.build_job("train", b["spec"], b["metadata"], SETTINGS)
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert job["metadata"]["name"] == "v3-train"
    assert (spec["completionMode"], spec["completions"], spec["parallelism"], spec["backoffLimit"]) == \
        ("Indexed", 2, 2, 0)
    assert spec["podFailurePolicy"]["rules"] == [
        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2, 5]}},
        {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget"}]},
        {"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [0]}},
    ]
    assert pod["subdomain"] == builders.rank_service_name("v3") == "v3-ranks"
    env = _env(job)
    assert env["MASTER_ADDR"] == "v3-train-0.v3-ranks" and env["WORLD_SIZE"] == "16"
    assert env["MASTER_PORT"] == str(builders.rendezvous_port(b["metadata"], 0))
    assert env["NODE_RANK"] == {"fieldRef": {
        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"  # per pod, i.e. per node
    assert job["metadata"]["labels"][builders.LABEL_ATTEMPT] == "0"
    assert spec["template"]["metadata"]["labels"][builders.LABEL_ATTEMPT] == "0"
    assert job["metadata"]["annotations"][builders.GROUP_FAILURES_ANNOTATION] == "0"


def test_a_group_restart_is_a_new_job_with_its_own_port():
    b = body(spec_overrides={"resources": CPU_PAIR})
    first = builders.build_job("train", b["spec"], b["metadata"], SETTINGS)
    again = builders.build_job("train", b["spec"], b["metadata"], SETTINGS, attempt=2, group_failures=1)
    assert again["metadata"]["name"] == "v3-train-r2" == builders.train_job_name("v3", 2, 2)
    assert _env(again)["MASTER_ADDR"] == "v3-train-r2-0.v3-ranks"
    assert _env(again)["MASTER_PORT"] != _env(first)["MASTER_PORT"]
    assert again["metadata"]["annotations"][builders.GROUP_FAILURES_ANNOTATION] == "1"
    assert again == builders.build_job("train", b["spec"], b["metadata"], SETTINGS, attempt=2, group_failures=1)
    # Only training spans nodes: prepare and benchmark stay one pod.
    for stage in ("prepare", "benchmark"):
        other = builders.build_job(stage, b["spec"], b["metadata"], SETTINGS)
        assert other["spec"]["completions"] == 1 and "completionMode" not in other["spec"]


def test_rendezvous_ports_are_deterministic_distinct_and_below_the_ephemeral_range():
    metas = [{"namespace": ns, "name": f"run-{i}"} for ns in ("a", "b") for i in range(50)]
    ports = {builders.rendezvous_port(m, attempt) for m in metas for attempt in range(3)}
    assert len(ports) >= 290  # 300 run/attempt pairs, a few hash collisions at most
    assert all(20000 <= p < 32768 for p in ports)
    assert builders.rendezvous_port(metas[0], 1) == builders.rendezvous_port(dict(metas[0]), 1)


def test_rank_service_is_headless_and_selects_every_attempts_training_pods():
    b = body(spec_overrides={"resources": CPU_PAIR})
    svc = builders.build_rank_service(b["spec"], b["metadata"])
    assert svc["metadata"]["name"] == "v3-ranks"
    assert svc["spec"] == {"clusterIP": "None", "publishNotReadyAddresses": True,
                           "selector": {builders.LABEL_RUN: "v3", builders.LABEL_STAGE: "train"}}
    assert svc["metadata"]["ownerReferences"][0]["uid"] == "uid-v3"
    for attempt in (0, 1):
        labels = builders.build_job("train", b["spec"], b["metadata"], SETTINGS,
                                    attempt=attempt)["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= labels.items()
    assert builders.build_rank_service(body()["spec"], body()["metadata"]) is None


def test_long_names_leave_room_for_the_pod_index_in_the_hostname():
    import re

    name = "a" * 52  # the CRD's longest name
    for nodes in (2, 64):
        for attempt in (0, 1, 12):
            job = builders.train_job_name(name, attempt, nodes)
            hostname = f"{job}-{nodes - 1}"
            assert len(hostname) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", hostname), hostname
    assert len({builders.train_job_name(name, a, 2) for a in range(20)}) == 20
    assert len(builders.rank_service_name(name)) <= 63


@pytest.mark.parametrize("resources,problem", [
    ({"nodes": 2, "gpus": 0}, "distributedBackend: gloo"),
    ({"nodes": 2, "gpus": 0, "distributedBackend": "nccl"}, "distributedBackend: gloo"),
    ({"gpus": 0, "distributedBackend": "nccl"}, "nccl needs GPUs"),
    ({"nodes": 16, "gpus": 16}, "256 ranks exceeds the limit of 128"),
    ({"nodes": 65, "gpus": 1}, "outside 1..64"),
    ({"nodes": 2, "gpus": 1, "distributedBackend": "mpi"}, "not one of auto, nccl, gloo"),
])
def test_bad_distributed_shapes_are_config_errors(resources, problem):
    b = body(spec_overrides={"resources": resources})
    with pytest.raises(ConfigError, match=problem):
        builders.validate_distributed(b["spec"])


@pytest.mark.parametrize("resources", [CPU_PAIR, MULTI, {"nodes": 8, "gpus": 16}, {"gpus": 0}, {"nodes": 128 // 2}])
def test_good_distributed_shapes_pass(resources):
    b = body(spec_overrides={"resources": resources})
    builders.validate_distributed(b["spec"])
    assert builders.total_gpus(b["spec"]) == builders.nodes_of(b["spec"]) * builders.gpus_of(b["spec"])


def test_created_claim_takes_its_access_modes_from_the_spec():
    b = body(spec_overrides={"storage": {"size": "10Gi", "accessModes": ["ReadWriteMany"]}})
    assert builders.build_pvc(b["spec"], b["metadata"])["spec"]["accessModes"] == ["ReadWriteMany"]
    b = body(spec_overrides={"storage": {"size": "10Gi"}})
    assert builders.build_pvc(b["spec"], b["metadata"])["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_a_path_corpus_stored_with_the_dataset_defaults_is_still_a_path(tmp_path):
    # The API server fills source/split/audioColumn defaults into benchmark.corpus even when only path is set.
    s = _bench_settings(tmp_path, benchmark={"corpus": {"path": "/workspace/clips", "source": "hub", "split": "test",
                                                        "audioColumn": "audio"}})
    assert s.corpus == "/workspace/clips" and s.corpus_spec is None
    s = _bench_settings(tmp_path, benchmark={"corpus": {"source": "local", "localPath": "/workspace/ds",
                                                        "split": "test"}})
    assert s.corpus is None and s.corpus_spec["localPath"] == "/workspace/ds"
