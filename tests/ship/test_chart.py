"""The Helm chart: lint, render with every toggle, and agree with manifests/ and the operator's settings."""
from __future__ import annotations

import json

import pytest
import yaml

from chartkit import ALL_TOGGLES, KUBE_VERSION, by_kind, docs, file_docs, one, render
from shippaths import CHART, DASHBOARD, MANIFESTS, RULES


def test_helm_lint_strict(helm):
    helm("lint", "--strict", str(CHART))
    helm("lint", "--strict", str(CHART), *sum((["--set", s] for s in ALL_TOGGLES), []))


def test_default_render_is_operator_crd_rbac_and_service(helm):
    kinds = sorted(o["kind"] for o in render(helm))
    # Services: metrics, and the progress endpoint with its Helm-generated TLS Secret.
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "CustomResourceDefinition",
                     "Deployment", "NetworkPolicy", "Secret", "Service", "Service", "ServiceAccount"]


def test_every_toggle_renders_its_object(helm):
    kinds = {o["kind"] for o in render(helm, *ALL_TOGGLES)}
    assert {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap", "ResourceFlavor", "ClusterQueue",
            "LocalQueue"} <= kinds


def test_network_policies_admit_only_the_metrics_and_health_ports(helm):
    objects = render(helm, "networkPolicy.workloadNamespaces[0]=team-a")
    policies = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in by_kind(objects, "NetworkPolicy")}
    operator = one(objects, "Deployment")
    operator_policy = next(p for (ns, _), p in policies.items() if ns != "team-a")
    selector = operator_policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= operator["spec"]["template"]["metadata"]["labels"].items()
    ports = {c["containerPort"] for c in operator["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {p["port"] for p in operator_policy["spec"]["ingress"][0]["ports"]} == ports
    # The workload policy selects the pods the operator builds, and admits the trainer's metrics port only.
    from quranft.operator import builders
    workload = policies[("team-a", "quranft-workloads")]
    assert workload["spec"]["podSelector"]["matchLabels"].items() <= builders.run_labels("x", "train", 1).items()
    assert [p["port"] for p in workload["spec"]["ingress"][0]["ports"]] == [9400]
    assert not by_kind(render(helm, "networkPolicy.enabled=false"), "NetworkPolicy")


def test_crd_and_rbac_files_are_identical_to_manifests_and_crds_are_kept(helm):
    sync = "run charts/quran-finetune/sync-from-manifests.sh"
    sources = sorted((MANIFESTS / "crd").glob("*.quranft.io.yaml"))
    assert [p.name for p in sources] == ["quranfinetunecampaigns.quranft.io.yaml", "quranfinetunes.quranft.io.yaml"]
    assert sorted(p.name for p in (CHART / "files" / "crds").glob("*.yaml")) == [p.name for p in sources], sync
    assert (CHART / "files" / "rbac" / "operator.yaml").read_bytes() == \
        (MANIFESTS / "rbac" / "operator.yaml").read_bytes(), sync
    rendered = {c["metadata"]["name"]: c for c in by_kind(render(helm), "CustomResourceDefinition")}
    for source in sources:
        assert (CHART / "files" / "crds" / source.name).read_bytes() == source.read_bytes(), sync
        want = docs(source.read_text())[0]
        crd = rendered[want["metadata"]["name"]]
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["spec"] == want["spec"]
    assert not by_kind(render(helm, "crds.enabled=false"), "CustomResourceDefinition")


def test_cluster_role_rules_match_manifests(helm):
    manifest_role = next(d for d in file_docs(MANIFESTS / "rbac" / "operator.yaml") if d["kind"] == "ClusterRole")
    assert one(render(helm), "ClusterRole")["rules"] == manifest_role["rules"]


def test_deployment_is_one_recreated_non_root_replica(helm):
    dep = one(render(helm), "Deployment")
    spec = dep["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = pod["containers"][0]["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert sc["readOnlyRootFilesystem"] is True
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


def _operator_env(helm, *sets: str) -> dict[str, str]:
    container = one(render(helm, *sets), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


def _unknown_settings(env: dict[str, str]) -> list[str]:
    from quranft.operator.settings import ENV_PREFIX, OperatorSettings

    return sorted(k for k in env if k.startswith(ENV_PREFIX)
                  and k[len(ENV_PREFIX):].lower() not in OperatorSettings.model_fields)


def test_values_reach_the_operator_settings(helm):
    """Every QURANFT_OPERATOR_* variable the chart sets is a real settings field and parses."""
    from quranft.operator.settings import ENV_PREFIX, settings_from_env

    env = _operator_env(helm, "operator.budget.maxConcurrentTrainings=2", "operator.budget.maxGpusPerNamespace=4",
                        "image.tag=9.9.9", "operator.metricsPort=9090", "operator.progressIntervalSeconds=7")
    assert not _unknown_settings(env)
    settings = settings_from_env({k: v for k, v in env.items() if k.startswith(ENV_PREFIX)})
    assert settings.max_concurrent_trainings == 2 and settings.max_gpus_per_namespace == 4
    assert settings.metrics_port == 9090 and settings.progress_interval == 7
    assert settings.gpu_image == "ghcr.io/quran-finetune/trainer:9.9.9"
    assert settings.cpu_image == "ghcr.io/quran-finetune/trainer-cpu:9.9.9"


def test_gpu_placement_defaults_reach_the_operator_settings(helm):
    """workloads.gpu.nodeSelector / tolerations need matching operator settings (gpu_node_selector,
    gpu_tolerations) that the training Job builder applies when a run asks for GPUs."""
    env = _operator_env(helm, "workloads.gpu.nodeSelector.gpu-type=h100", "workloads.gpu.tolerations[0].key=dedicated",
                        "workloads.gpu.tolerations[0].operator=Exists")
    assert not _unknown_settings(env), "chart sets variables the operator ignores"


def test_names_are_truncated_to_63_characters(helm):
    objects = render(helm, release="r" * 53)  # helm's own release-name limit
    objects += render(helm, *ALL_TOGGLES, "fullnameOverride=" + "f" * 70)
    names = [o["metadata"]["name"] for o in objects if o["kind"] != "CustomResourceDefinition"]
    assert len(names) >= 5 and all(len(n) <= 63 and not n.endswith("-") for n in names), names


def test_dashboard_config_map_carries_the_sidecar_label_and_the_json(helm):
    cm = one(render(helm, "grafana.dashboard.enabled=true", "grafana.dashboard.sidecarLabel=my_dash",
                    "grafana.dashboard.sidecarLabelValue=yes"), "ConfigMap")
    assert cm["metadata"]["labels"]["my_dash"] == "yes"
    assert json.loads(cm["data"]["quranft-training.json"]) == json.loads(DASHBOARD.read_text())


def test_prometheus_rule_carries_the_rule_file_and_extra_alert_labels(helm):
    rule = one(render(helm, "metrics.prometheusRule.enabled=true", "metrics.prometheusRule.alertLabels.team=ml"),
               "PrometheusRule")
    source = yaml.safe_load(RULES.read_text())
    assert [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]] == \
        [r["alert"] for g in source["groups"] for r in g["rules"]]
    assert all(r["labels"]["team"] == "ml" for g in rule["spec"]["groups"] for r in g["rules"])
    assert [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]] == \
        [r["expr"] for g in source["groups"] for r in g["rules"]]


def test_service_monitor_needs_the_service(helm):
    out = helm("template", "qft", str(CHART), "--kube-version", KUBE_VERSION, "--set", "metrics.serviceMonitor.enabled=true",
               "--set", "metrics.service.enabled=false", check=False)
    assert out.returncode != 0 and "needs metrics.service.enabled" in out.stderr


@pytest.mark.parametrize("values", [("operator.watchNamespaces[0]=team-a", "operator.watchNamespaces[1]=team-b")])
def test_watch_namespaces_become_flags(helm, values):
    container = one(render(helm, *values), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "--namespace=team-a" in container["args"] and "--namespace=team-b" in container["args"]
    assert "--all-namespaces" not in container["args"]


def test_the_progress_endpoint_gets_a_certificate_its_service_name_verifies(helm, tmp_path):
    """The Helm-generated Secret loads into the operator's TLS context (progress_tls.server_tls) and a client that
    trusts only its ca.crt, as the training pods do, completes a handshake for the URL the operator hands out."""
    import base64
    import socket
    import ssl
    import threading
    from urllib.parse import urlsplit

    from quranft.operator.progress_tls import server_tls
    from quranft.operator.settings import settings_from_env

    objects = render(helm)
    secret = next(o for o in by_kind(objects, "Secret") if o["metadata"]["name"].endswith("-progress-tls"))
    files = {}
    for key in ("tls.crt", "tls.key", "ca.crt"):
        files[key] = tmp_path / key
        files[key].write_bytes(base64.b64decode(secret["data"][key]))
    env = _operator_env(helm)
    settings = settings_from_env({k: v for k, v in env.items() if k.startswith("QURANFT_OPERATOR_")})
    host = urlsplit(settings.progress_url).hostname
    assert host == "qft-quran-finetune-progress.quranft-system.svc" and settings.progress_port == 8443
    assert {s["metadata"]["name"] for s in by_kind(objects, "Service")} >= {"qft-quran-finetune-progress"}
    tls = server_tls(str(files["tls.crt"]), str(files["tls.key"]), str(files["ca.crt"]), [])
    assert tls.ca_pem == files["ca.crt"].read_text()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def serve():
            conn, _ = listener.accept()
            with tls.context.wrap_socket(conn, server_side=True):
                pass
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        client = ssl.create_default_context(cadata=tls.ca_pem)
        with socket.create_connection(listener.getsockname(), timeout=10) as raw:
            with client.wrap_socket(raw, server_hostname=host) as conn:
                assert conn.version() in ("TLSv1.2", "TLSv1.3")
        thread.join(10)
