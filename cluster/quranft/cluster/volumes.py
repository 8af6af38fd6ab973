"""Materialise a pod's volumes as host directories and turn volumeMounts into bind mounts.

Each volume becomes `<pod dir>/volumes/<name>` (or, for PVCs and hostPath, the host directory itself);
containers see it at the mount path the spec names through a bind mount in their private mount
namespace (see sandbox.py). ConfigMaps, Secrets and tokens are snapshots taken when the pod starts.
"""
from __future__ import annotations

import base64
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .envvars import field_ref, resource_ref


class VolumeNotReady(Exception):
    """A referenced object is missing or a claim is not bound yet (the kubelet's FailedMount): retry."""


class Lookup(Protocol):
    def get(self, kind: str, namespace: str, name: str) -> dict | None: ...

    def service_account_token(self, pod: dict, audience: str | None, expiration: int) -> str: ...


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = False

    def to_json(self) -> dict:
        return {"source": self.source, "target": self.target, "readOnly": self.read_only}


def _write_files(root: Path, files: dict[str, bytes], mode: int) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)


def _object_files(obj: dict, kind: str) -> dict[str, bytes]:
    if kind == "Secret":
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    files = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
    files.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return files


def _keyed_source(lookup: Lookup, kind: str, namespace: str, name: str, items: list | None,
                  optional: bool, default_mode: int) -> list[tuple[str, bytes, int]]:
    obj = lookup.get(kind, namespace, name)
    if obj is None:
        if optional:
            return []
        raise VolumeNotReady(f'{kind.lower()} "{name}" not found')
    data = _object_files(obj, kind)
    if not items:
        return [(k, v, default_mode) for k, v in data.items()]
    out = []
    for item in items:
        if item["key"] not in data:
            if optional:
                continue
            raise VolumeNotReady(f'{kind} {namespace}/{name} has no key "{item["key"]}"')
        out.append((item["path"], data[item["key"]], item.get("mode") or default_mode))
    return out


def _downward_files(pod: dict, items: list, default_mode: int) -> list[tuple[str, bytes, int]]:
    out = []
    for item in items or []:
        if item.get("fieldRef"):
            value = field_ref(pod, item["fieldRef"]["fieldPath"])
        else:
            container = next((c for c in pod["spec"]["containers"]
                              if c["name"] == item["resourceFieldRef"].get("containerName")),
                             pod["spec"]["containers"][0])
            value = resource_ref(container, item["resourceFieldRef"], {})
        out.append((item["path"], value.encode(), item.get("mode") or default_mode))
    return out


def _fill(root: Path, files: list[tuple[str, bytes, int]]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for rel, data, mode in files:
        _write_files(root, {rel: data}, mode)


def prepare(pod: dict, pod_dir: Path, lookup: Lookup) -> dict[str, str]:
    """Create every volume of `pod`; returns volume name -> host path. Raises VolumeNotReady to retry."""
    namespace = pod["metadata"]["namespace"]
    paths: dict[str, str] = {}
    for vol in pod["spec"].get("volumes") or []:
        name, target = vol["name"], pod_dir / "volumes" / vol["name"]
        if "persistentVolumeClaim" in vol:
            paths[name] = claim_path(lookup, namespace, vol["persistentVolumeClaim"]["claimName"])
        elif "hostPath" in vol:
            path = Path(vol["hostPath"]["path"])
            if vol["hostPath"].get("type") == "DirectoryOrCreate":
                path.mkdir(parents=True, exist_ok=True)
            paths[name] = str(path)
        elif "emptyDir" in vol:
            target.mkdir(parents=True, exist_ok=True)
            if (vol["emptyDir"] or {}).get("medium") == "Memory" and not os.path.ismount(target):
                size = (vol["emptyDir"] or {}).get("sizeLimit")
                opts = f"size={size}" if size else "size=50%"
                subprocess.run(["mount", "-t", "tmpfs", "-o", opts.replace("Gi", "g").replace("Mi", "m"),
                                "tmpfs", str(target)], check=True, capture_output=True)
            paths[name] = str(target)
        elif "configMap" in vol or "secret" in vol:
            kind = "ConfigMap" if "configMap" in vol else "Secret"
            src = vol["configMap"] if kind == "ConfigMap" else vol["secret"]
            obj_name = src.get("name") if kind == "ConfigMap" else src.get("secretName")
            files = _keyed_source(lookup, kind, namespace, obj_name, src.get("items"),
                                  bool(src.get("optional")), src.get("defaultMode") or 0o644)
            _reset(target)
            _fill(target, files)
            paths[name] = str(target)
        elif "downwardAPI" in vol:
            src = vol["downwardAPI"]
            _reset(target)
            _fill(target, _downward_files(pod, src.get("items"), src.get("defaultMode") or 0o644))
            paths[name] = str(target)
        elif "projected" in vol:
            _reset(target)
            _fill(target, _projected_files(pod, vol["projected"], lookup))
            paths[name] = str(target)
        else:
            kinds = sorted(k for k in vol if k != "name")
            raise VolumeNotReady(f"volume {name}: type {kinds} is not supported by the embedded node agent")
    return paths


def _projected_files(pod: dict, spec: dict, lookup: Lookup) -> list[tuple[str, bytes, int]]:
    namespace, mode = pod["metadata"]["namespace"], spec.get("defaultMode") or 0o644
    files: list[tuple[str, bytes, int]] = []
    for source in spec.get("sources") or []:
        if "serviceAccountToken" in source:
            sat = source["serviceAccountToken"]
            token = lookup.service_account_token(pod, sat.get("audience"), sat.get("expirationSeconds") or 3600)
            files.append((sat["path"], token.encode(), mode))
        elif "configMap" in source or "secret" in source:
            kind = "ConfigMap" if "configMap" in source else "Secret"
            src = source["configMap"] if kind == "ConfigMap" else source["secret"]
            files += _keyed_source(lookup, kind, namespace, src["name"], src.get("items"),
                                   bool(src.get("optional")), mode)
        elif "downwardAPI" in source:
            files += _downward_files(pod, source["downwardAPI"].get("items"), mode)
        else:
            raise VolumeNotReady(f"projected source {sorted(source)} is not supported")
    return files


def claim_path(lookup: Lookup, namespace: str, claim: str) -> str:
    pvc = lookup.get("PersistentVolumeClaim", namespace, claim)
    if pvc is None:
        raise VolumeNotReady(f'persistentvolumeclaim "{claim}" not found')
    pv_name = (pvc.get("spec") or {}).get("volumeName")
    if (pvc.get("status") or {}).get("phase") != "Bound" or not pv_name:
        raise VolumeNotReady(f'persistentvolumeclaim "{claim}" is not bound yet')
    pv = lookup.get("PersistentVolume", "", pv_name)
    if pv is None:
        raise VolumeNotReady(f'persistentvolume "{pv_name}" not found')
    source = pv["spec"].get("hostPath") or pv["spec"].get("local")
    if not source:
        raise VolumeNotReady(f"persistentvolume {pv_name} is neither hostPath nor local")
    Path(source["path"]).mkdir(parents=True, exist_ok=True)
    return source["path"]


def _reset(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def container_mounts(container: dict, volume_paths: dict[str, str]) -> list[Mount]:
    """volumeMounts -> bind mounts (subPath resolved on the host side)."""
    mounts = []
    for vm in container.get("volumeMounts") or []:
        source = Path(volume_paths[vm["name"]])
        if vm.get("subPath"):
            source = source / vm["subPath"]
            if not source.exists():  # the kubelet creates a missing subPath as a directory
                source.mkdir(parents=True)
        mounts.append(Mount(str(source), vm["mountPath"], bool(vm.get("readOnly"))))
    return mounts


def _under(path: str, root: str) -> bool:
    path, root = os.path.normpath(path), os.path.normpath(root)
    return root == "/" or path.startswith(root + "/")


def hidden_runtime(runtime_paths: list[tuple[str, bool]], mounts: list[Mount]) -> list[Mount]:
    """Binds that give the container back the runtime paths its mounts would hide.

    The agent runs the project's images from host paths (venv, source roots, caches; images.Runtime.paths),
    where a real image carries them in its root file system. A volume mounted above one of them, the
    stage pods' emptyDir at /tmp over a checkout in /tmp, would hide the code the pod runs, so each hidden
    path is bound back at its own path, on top (the sandbox binds sources from the host's view, deeper
    targets later). A path the pod mounts a volume at exactly stays the pod's; `(path, read_only)`.
    """
    targets = [os.path.normpath(m.target) for m in mounts]
    restored: list[Mount] = []
    for path, read_only in runtime_paths:
        path = os.path.normpath(path)
        if path in targets or not any(_under(path, t) for t in targets):
            continue
        if any(_under(path, r.target) or path == r.target for r in restored):
            continue  # already inside a path bound back (binds are recursive)
        restored = [r for r in restored if not _under(r.target, path)]
        restored.append(Mount(path, path, read_only))
    return restored


def release(pod_dir: Path) -> None:
    """Unmount memory-backed emptyDirs of a finished pod."""
    vol_root = pod_dir / "volumes"
    if vol_root.is_dir():
        for entry in vol_root.iterdir():
            if os.path.ismount(entry):
                subprocess.run(["umount", "-l", str(entry)], capture_output=True)
