"""Small helpers for rendering the chart and reading multi-document YAML."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from shippaths import CHART


class _Loader(yaml.SafeLoader):
    """YAML 1.2 floats: Helm's toYaml writes 5e-05, which PyYAML (YAML 1.1) would read as a string."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


def docs(text: str) -> list[dict]:
    return [d for d in yaml.load_all(text, Loader=_Loader) if d]


def render(helm, *sets: str, release: str = "qft", namespace: str = "quranft-system") -> list[dict]:
    # --kube-version: a helm built from source without version ldflags assumes Kubernetes v1.20.
    args = ["template", release, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION]
    for s in sets:
        args += ["--set", s]
    return docs(helm(*args).stdout)


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str) -> dict:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def file_docs(path: Path) -> list[dict]:
    return docs(path.read_text())


KUBE_VERSION = "v1.37.2"
ALL_TOGGLES = ("metrics.serviceMonitor.enabled=true", "metrics.podMonitor.enabled=true",
               "metrics.prometheusRule.enabled=true", "grafana.dashboard.enabled=true", "kueue.enabled=true",
               "kueue.localQueues[0].name=team-a", "kueue.localQueues[0].namespace=team-a")
