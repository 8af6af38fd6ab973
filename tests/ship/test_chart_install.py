"""`helm install` into the embedded cluster: the operator from the chart (its ServiceAccount, its RBAC, its
Deployment run by the node agent) takes a stub run to a verdict; `helm uninstall` keeps the CRD."""
from __future__ import annotations

import urllib.request

import pytest

from promkit import free_port
from shippaths import CHART

pytestmark = pytest.mark.cluster


def test_chart_operator_runs_a_stub_resource_to_a_verdict(cluster, namespace, helm, tmp_path):
    from clusterkit import Env, resource, stub_commands

    kube = ["--kubeconfig", str(cluster.kubeconfig)]
    release = "qft-" + namespace[-10:]
    metrics_port, health_port, progress_port = free_port(), free_port(), free_port()
    # Pods of the embedded node agent share the host's network, hence free ports. The operator watches only
    # this namespace, so it never competes with other tests' operators; command overrides make stages fast.
    helm("install", release, str(CHART), "--namespace", namespace, *kube, "--take-ownership",
         "--set", f"operator.watchNamespaces[0]={namespace}",
         "--set", f"operator.metricsPort={metrics_port}", "--set", f"operator.healthPort={health_port}",
         "--set", f"operator.progress.port={progress_port}",
         "--set", "operator.extraArgs[0]=--allow-command-overrides",
         "--wait", "--timeout", "3m", timeout=240)
    env = Env(cluster, namespace, tmp_path)
    try:
        env.claim()
        env.create(resource("from-chart", commands=stub_commands(train_seconds=3)))
        done = env.wait_phase("from-chart", ("Succeeded", "Failed"), timeout=240)
        assert done["status"]["phase"] == "Succeeded", done["status"]
        assert done["status"]["verdict"] == "improvement"
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            assert 'quranft_verdicts_total{verdict="improvement"} 1.0' in r.read().decode()
    finally:
        env.close()
        out = helm("uninstall", release, "--namespace", namespace, *kube, "--wait", check=False)
    assert out.returncode == 0, out.stderr
    # helm.sh/resource-policy: keep: uninstalling the chart never deletes the CRD (and every experiment).
    assert cluster.kubectl("get", "crd", "quranfinetunes.quranft.io", check=False).returncode == 0
    assert cluster.kubectl("get", "deployment", "-n", namespace, "-o", "name").stdout.strip() == ""
