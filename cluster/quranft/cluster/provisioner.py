"""A dynamic provisioner for the `local` StorageClass: each claim gets a host directory under the agent's
state dir, exposed as a hostPath PersistentVolume pre-bound to the claim (the PV controller then binds
the claim). Released volumes are deleted with their directory (reclaimPolicy Delete)."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from .kube import Kube, path_for

PROVISIONER = "quranft.io/local-path"
STORAGE_CLASS = "local"
log = logging.getLogger("quranft.nodeagent")


def storage_class() -> dict:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS,
                         "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"}


def wants_volume(pvc: dict) -> bool:
    spec, status = pvc.get("spec") or {}, pvc.get("status") or {}
    return (spec.get("storageClassName") == STORAGE_CLASS and not spec.get("volumeName")
            and status.get("phase", "Pending") == "Pending" and not pvc["metadata"].get("deletionTimestamp"))


def volume_for(pvc: dict, root: Path) -> dict:
    """The PV for a claim (pure): named after the claim's uid, so a retry cannot create a second one."""
    meta, spec = pvc["metadata"], pvc["spec"]
    name = f"pvc-{meta['uid']}"
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
        "spec": {
            "capacity": {"storage": (spec.get("resources") or {}).get("requests", {}).get("storage", "1Gi")},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete", "storageClassName": STORAGE_CLASS,
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "hostPath": {"path": str(root / name), "type": "DirectoryOrCreate"},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": meta["namespace"],
                         "name": meta["name"], "uid": meta["uid"]},
        },
    }


class Provisioner:
    def __init__(self, kube: Kube, root: Path):
        self.kube, self.root = kube, root

    def ensure_storage_class(self) -> None:
        self.kube.create(path_for("StorageClass"), storage_class())

    def on_claim(self, pvc: dict) -> None:
        if not wants_volume(pvc):
            return
        pv = volume_for(pvc, self.root)
        Path(pv["spec"]["hostPath"]["path"]).mkdir(parents=True, exist_ok=True)
        if self.kube.create(path_for("PersistentVolume"), pv) is not None:
            log.info("provisioned %s for %s/%s", pv["metadata"]["name"], pvc["metadata"]["namespace"],
                     pvc["metadata"]["name"])

    def on_volume(self, pv: dict) -> None:
        annotations = pv["metadata"].get("annotations") or {}
        if (annotations.get("pv.kubernetes.io/provisioned-by") != PROVISIONER
                or (pv.get("status") or {}).get("phase") != "Released"
                or pv["spec"].get("persistentVolumeReclaimPolicy") != "Delete"):
            return
        path = Path(pv["spec"]["hostPath"]["path"])
        if path.parent == self.root:  # never delete outside our own volume root
            shutil.rmtree(path, ignore_errors=True)
        self.kube.delete(path_for("PersistentVolume", name=pv["metadata"]["name"]))
        log.info("deleted released volume %s", pv["metadata"]["name"])
