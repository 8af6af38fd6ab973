"""Install the CRD and RBAC, and give the operator its own identity: a token-based kubeconfig for its
ServiceAccount (so the demo and the tests run it with exactly the RBAC it ships, never as admin)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from quranft.contract.keys import CAMPAIGN_PLURAL, GROUP, PLURAL

MANIFESTS = Path(__file__).resolve().parents[3] / "manifests"
CRD_NAME = f"{PLURAL}.{GROUP}"
CAMPAIGN_CRD_NAME = f"{CAMPAIGN_PLURAL}.{GROUP}"
CRD_NAMES = (CRD_NAME, CAMPAIGN_CRD_NAME)
SA_NAMESPACE, SA_NAME = "quranft-system", "quranft-operator"


def kubectl(kubectl_bin: str | Path, kubeconfig: str | Path, *args: str, timeout: float = 120) -> str:
    proc = subprocess.run([str(kubectl_bin), "--kubeconfig", str(kubeconfig), *args], capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def install(kubectl_bin: str | Path, kubeconfig: str | Path) -> None:
    """Apply the CRDs and RBAC (server-side apply: idempotent) and wait until the CRDs are served."""
    kubectl(kubectl_bin, kubeconfig, "apply", "--server-side", "--force-conflicts", "--field-manager=quranft",
            *(arg for crd in CRD_NAMES for arg in ("-f", str(MANIFESTS / "crd" / f"{crd}.yaml"))),
            "-f", str(MANIFESTS / "rbac" / "operator.yaml"))
    kubectl(kubectl_bin, kubeconfig, "wait", "--for=condition=Established", "--timeout=60s",
            *(f"crd/{crd}" for crd in CRD_NAMES))


def service_account_kubeconfig(admin_kubeconfig: str | Path, out: str | Path, *, namespace: str = SA_NAMESPACE,
                               name: str = SA_NAME, seconds: int = 86400) -> Path:
    """Write a kubeconfig that authenticates as the ServiceAccount with a TokenRequest token."""
    from kubernetes import client, config

    admin = yaml.safe_load(Path(admin_kubeconfig).read_text())
    api = config.new_client_from_config(config_file=str(admin_kubeconfig))
    try:
        token = client.CoreV1Api(api).create_namespaced_service_account_token(
            name, namespace, {"spec": {"expirationSeconds": seconds}}).status.token
    finally:
        api.close()
    current = next(c for c in admin["contexts"] if c["name"] == admin.get("current-context")) \
        if admin.get("current-context") else admin["contexts"][0]
    cluster = next(c for c in admin["clusters"] if c["name"] == current["context"]["cluster"])
    doc = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "quranft", "cluster": cluster["cluster"]}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": "quranft", "user": name}}],
        "current-context": name,
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(doc))
    out.chmod(0o600)
    return out
