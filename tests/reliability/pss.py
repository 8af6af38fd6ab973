"""A checker of the Pod Security Standards "restricted" profile (baseline rules included) for a pod spec.

Follows https://kubernetes.io/docs/concepts/security/pod-security-standards/ (v1.30+ wording). The real
API server checks the same specs in tests/reliability/test_security.py; this pure copy gives a readable
list of violations per field for every spec the builders can produce.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def _containers(pod: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for c in pod.get(kind) or []:
            yield f"{kind}[{c.get('name')}]", c


def violations(pod: Mapping[str, Any]) -> list[str]:
    """Every rule of the restricted profile that `pod` (a PodSpec dict) breaks; [] when it passes."""
    out: list[str] = []
    psc = pod.get("securityContext") or {}
    # --- baseline
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            out.append(f"{flag} is true")
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("securityContext.windowsOptions.hostProcess")
    for sysctl in psc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"unsafe sysctl {sysctl.get('name')}")
    for vol in pod.get("volumes") or []:
        kinds = set(vol) - {"name"}
        if "hostPath" in kinds:
            out.append(f"volume {vol['name']}: hostPath")
        if not kinds <= RESTRICTED_VOLUMES:
            out.append(f"volume {vol['name']}: type {sorted(kinds - RESTRICTED_VOLUMES)} not allowed")
    out += _selinux_apparmor_seccomp("pod", psc)
    # --- restricted, pod level
    pod_non_root = psc.get("runAsNonRoot") is True
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type") in ("RuntimeDefault", "Localhost")
    if psc.get("runAsUser") == 0:
        out.append("pod runAsUser is 0")
    for where, c in _containers(pod):
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f"{where}: privileged")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"{where}: hostProcess")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            out.append(f"{where}: hostPort")
        if sc.get("procMount") not in (None, "Default"):
            out.append(f"{where}: procMount {sc.get('procMount')}")
        out += _selinux_apparmor_seccomp(where, sc)
        caps = sc.get("capabilities") or {}
        added = set(caps.get("add") or [])
        if added - BASELINE_CAPABILITIES:
            out.append(f"{where}: capabilities.add {sorted(added - BASELINE_CAPABILITIES)} beyond baseline")
        if added - {"NET_BIND_SERVICE"}:
            out.append(f"{where}: capabilities.add {sorted(added - {'NET_BIND_SERVICE'})} (restricted: only NET_BIND_SERVICE)")
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{where}: capabilities.drop must include ALL")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{where}: allowPrivilegeEscalation must be false")
        if sc.get("runAsNonRoot") is False or (sc.get("runAsNonRoot") is not True and not pod_non_root):
            out.append(f"{where}: runAsNonRoot must be true (pod or container)")
        if sc.get("runAsUser") == 0:
            out.append(f"{where}: runAsUser is 0")
        kind = (sc.get("seccompProfile") or {}).get("type")
        if kind is None and not pod_seccomp or kind not in (None, "RuntimeDefault", "Localhost"):
            out.append(f"{where}: seccompProfile must be RuntimeDefault or Localhost (pod or container)")
    return out


def _selinux_apparmor_seccomp(where: str, sc: Mapping[str, Any]) -> list[str]:
    out = []
    selinux = sc.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
        out.append(f"{where}: seLinuxOptions {selinux}")
    if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
        out.append(f"{where}: appArmorProfile Unconfined")
    if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        out.append(f"{where}: seccompProfile Unconfined")
    return out
