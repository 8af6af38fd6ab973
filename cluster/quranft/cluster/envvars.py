"""A container's environment from its spec, as the kubelet builds it (pods are plain dicts, camelCase).

Lookups of ConfigMaps and Secrets go through a `fetch(kind, namespace, name) -> dict | None` callable so
the resolution itself stays pure and testable.
"""
from __future__ import annotations

import base64
import re
from decimal import ROUND_CEILING, Decimal
from typing import Callable

from .podhosts import pod_hostname

Fetch = Callable[[str, str, str], "dict | None"]


class ContainerConfigError(Exception):
    """The kubelet's CreateContainerConfigError: a referenced key or object is missing."""


_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined vars are replaced, `$$` escapes, unknown refs stay as is."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _REF.sub(sub, text)


def _data(obj: dict, kind: str) -> dict[str, str]:
    if kind == "Secret":
        return {k: base64.b64decode(v).decode(errors="replace") for k, v in (obj.get("data") or {}).items()}
    data = dict(obj.get("data") or {})
    data.update({k: base64.b64decode(v).decode(errors="replace")
                 for k, v in (obj.get("binaryData") or {}).items()})
    return data


def field_ref(pod: dict, path: str) -> str:
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    simple = {
        "metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"), "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP") or "127.0.0.1", "status.hostIP": "127.0.0.1",
        "status.podIPs": status.get("podIP") or "127.0.0.1", "status.hostIPs": "127.0.0.1",
    }
    if path in simple:
        return simple[path] or ""
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    raise ContainerConfigError(f"unsupported fieldRef {path!r}")


def _quantity(q: str) -> Decimal:
    suffixes = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
                "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": 10**3, "M": 10**6,
                "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
    for suffix in sorted(suffixes, key=len, reverse=True):
        if q.endswith(suffix):
            return Decimal(q[: -len(suffix)]) * Decimal(suffixes[suffix])
    return Decimal(q)


def resource_ref(container: dict, ref: dict, node_capacity: dict[str, str]) -> str:
    """limits.* / requests.*; an unset limit reports the node's allocatable, as the kubelet does."""
    kind, _, name = ref["resource"].partition(".")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(name)
    if value is None and kind == "limits":
        value = node_capacity.get(name)
    if value is None:
        value = "0"
    divisor = _quantity(str(ref.get("divisor") or "1"))
    return str(int((_quantity(str(value)) / divisor).to_integral_value(rounding=ROUND_CEILING)))


def referenced_container(pod: dict, container: dict, ref: dict) -> dict:
    """The container a resourceFieldRef names (`containerName`; for env it defaults to the container itself)."""
    name = ref.get("containerName")
    if not name or name == container.get("name"):
        return container
    spec = pod.get("spec") or {}
    for other in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if other.get("name") == name:
            return other
    raise ContainerConfigError(f"resourceFieldRef: no container {name!r} in the pod")


def _key_ref(ref: dict, kind: str, namespace: str, fetch: Fetch) -> str | None:
    obj = fetch(kind, namespace, ref["name"])
    optional = bool(ref.get("optional"))
    if obj is None:
        if optional:
            return None
        raise ContainerConfigError(f'{kind.lower()} "{ref["name"]}" not found')
    data = _data(obj, kind)
    if ref["key"] not in data:
        if optional:
            return None
        raise ContainerConfigError(f'couldn\'t find key {ref["key"]} in {kind} {namespace}/{ref["name"]}')
    return data[ref["key"]]


def container_env(pod: dict, container: dict, base: dict[str, str], fetch: Fetch,
                  node_capacity: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (the image's env) overlaid with envFrom, then env, in order, with $(VAR) expansion."""
    namespace = pod["metadata"]["namespace"]
    env = dict(base)
    env.setdefault("HOSTNAME", pod_hostname(pod))  # as the container runtime sets it
    for source in container.get("envFrom") or []:
        kind, ref = (("ConfigMap", source["configMapRef"]) if source.get("configMapRef")
                     else ("Secret", source["secretRef"]))
        obj = fetch(kind, namespace, ref["name"])
        if obj is None:
            if ref.get("optional"):
                continue
            raise ContainerConfigError(f'{kind.lower()} "{ref["name"]}" not found')
        prefix = source.get("prefix") or ""
        env.update({prefix + k: v for k, v in _data(obj, kind).items()})
    for var in container.get("env") or []:
        name, source = var["name"], var.get("valueFrom")
        if source is None:
            env[name] = expand(var.get("value") or "", env)
            continue
        if source.get("fieldRef"):
            value: str | None = field_ref(pod, source["fieldRef"]["fieldPath"])
        elif source.get("resourceFieldRef"):
            ref = source["resourceFieldRef"]
            value = resource_ref(referenced_container(pod, container, ref), ref, node_capacity or {})
        elif source.get("configMapKeyRef"):
            value = _key_ref(source["configMapKeyRef"], "ConfigMap", namespace, fetch)
        elif source.get("secretKeyRef"):
            value = _key_ref(source["secretKeyRef"], "Secret", namespace, fetch)
        else:
            raise ContainerConfigError(f"unsupported valueFrom for env {name}")
        if value is not None:
            env[name] = value
    return env


def command_line(container: dict, env: dict[str, str]) -> list[str]:
    """command + args with $(VAR) expansion. No image entrypoint exists, so a command is required."""
    argv = [expand(a, env) for a in (container.get("command") or []) + (container.get("args") or [])]
    if not container.get("command"):
        raise ContainerConfigError(
            f"container {container['name']}: the embedded node agent has no image entrypoint; set command")
    return argv
