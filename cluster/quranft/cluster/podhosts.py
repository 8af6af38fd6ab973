"""A pod's /etc/hosts, as the kubelet manages it (`managedHostsFileContent` in pkg/kubelet/kubelet_pods.go),
plus the names cluster DNS would answer for the pod's headless Service.

The embedded cluster has no DNS server and no pod network: every pod shares the node's loopback network,
so each pod's own names and those of its Indexed Job peers are written here, all at 127.0.0.1 (the pod IP
the agent reports). That is what makes `MASTER_ADDR=<job>-0.<subdomain>` work across pods, as
`<hostname>.<subdomain>.<namespace>.svc.cluster.local` does on a real cluster.

Pure functions of the pod and the objects read for it (Job, Service), so they are unit tested.
"""
from __future__ import annotations

CLUSTER_DOMAIN = "cluster.local"
LOOPBACK = "127.0.0.1"  # the pod IP of every pod here (podstatus.py): all pods share the host's network
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"

_KUBELET_HEADER = (
    "# Kubernetes-managed hosts file.\n"
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "fe00::0\tip6-mcastprefix\n"
    "fe00::1\tip6-allnodes\n"
    "fe00::2\tip6-allrouters\n"
)


def pod_hostname(pod: dict) -> str:
    """spec.hostname, else the pod name cut to 63 characters without a trailing '-' or '.' (the kubelet's
    GeneratePodHostNameAndDomain)."""
    name = (pod.get("spec") or {}).get("hostname") or pod["metadata"]["name"]
    return name[:63].rstrip("-.")


def owning_job(pod: dict) -> str | None:
    """The name of the Job that controls the pod, if any."""
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("kind") == "Job" and ref.get("controller") and ref.get("apiVersion", "").startswith("batch/"):
            return ref["name"]
    return None


def completion_index(pod: dict) -> int | None:
    meta = pod["metadata"]
    value = (meta.get("annotations") or {}).get(COMPLETION_INDEX) or (meta.get("labels") or {}).get(COMPLETION_INDEX)
    return int(value) if value is not None and str(value).isdigit() else None


def publishes(service: dict | None, pod: dict) -> bool:
    """Whether cluster DNS would publish `<hostname>.<subdomain>` for the pod: the subdomain names a headless
    Service (clusterIP None) whose selector matches the pod's labels."""
    if not service:
        return False
    spec = service.get("spec") or {}
    selector = spec.get("selector") or {}
    labels = pod["metadata"].get("labels") or {}
    return spec.get("clusterIP") == "None" and bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def peer_hostnames(pod: dict, job: dict | None) -> list[str]:
    """`<job>-<i>` for every index of the Indexed Job the pod belongs to (the hostnames the Job controller
    gives its pods); empty for any other pod."""
    name = owning_job(pod)
    if not job or name is None or completion_index(pod) is None:
        return []
    spec = job.get("spec") or {}
    if spec.get("completionMode") != "Indexed":
        return []
    return [f"{name}-{i}" for i in range(int(spec.get("completions") or 0))]


def _names(hostname: str, subdomain: str, namespace: str) -> list[str]:
    """The fully qualified name first (as the kubelet writes it), then the shorter forms a pod's DNS search
    path (`<ns>.svc.<domain> svc.<domain> <domain>`) would complete to it."""
    fqdn = f"{hostname}.{subdomain}.{namespace}.svc.{CLUSTER_DOMAIN}"
    return [fqdn, f"{hostname}.{subdomain}.{namespace}.svc", f"{hostname}.{subdomain}.{namespace}",
            f"{hostname}.{subdomain}"]


def hosts_file(pod: dict, *, published: bool, peers: list[str], node_hostname: str) -> str:
    """The hosts file content for `pod`.

    `published`: whether its subdomain's headless Service exists and selects it (see `publishes`): only then
    do the subdomain names resolve, as with cluster DNS. `peers`: hostnames of its Indexed Job's pods.
    `node_hostname`: the node's own name, which the pod sees from gethostname() because it shares the node's
    UTS namespace here (unlike a real pod); it stays resolvable as on the host (gloo binds to it).
    """
    namespace = pod["metadata"]["namespace"]
    hostname = pod_hostname(pod)
    subdomain = (pod.get("spec") or {}).get("subdomain") if published else None
    lines = []
    if subdomain:
        lines.append("\t".join([LOOPBACK, *_names(hostname, subdomain, namespace), hostname]))
        others = [p for p in peers if p != hostname]
        if others:
            lines.append("# Indexed Job peers, through the headless Service (every pod here is on 127.0.0.1).")
            lines += ["\t".join([LOOPBACK, *_names(peer, subdomain, namespace)]) for peer in others]
    else:
        lines.append(f"{LOOPBACK}\t{hostname}")
    if node_hostname and node_hostname not in (hostname, "localhost"):
        lines.append(f"# The node's hostname (pods share its UTS namespace here).\n{LOOPBACK}\t{node_hostname}")
    aliases = (pod.get("spec") or {}).get("hostAliases") or []
    if aliases:
        lines.append("\n# Entries added by HostAliases.")
        lines += ["\t".join([a["ip"], *a.get("hostnames", [])]) for a in aliases]
    return _KUBELET_HEADER + "\n".join(lines) + "\n"


def wants_managed_hosts(pod: dict, container: dict) -> bool:
    """The kubelet leaves /etc/hosts alone for host-network pods and where the container mounts its own."""
    if (pod.get("spec") or {}).get("hostNetwork"):
        return False
    return not any(m.get("mountPath", "").rstrip("/") == "/etc/hosts" for m in container.get("volumeMounts") or [])
