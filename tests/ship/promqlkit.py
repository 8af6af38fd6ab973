"""The PromQL of the dashboard and the alert rules, with Grafana's variables filled in for Prometheus."""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

# What Grafana substitutes before a query reaches Prometheus (all runs/namespaces selected).
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "10m", "$namespace": ".*", "$run": ".*"}


def fill(expr: str, values: dict[str, str] = GRAFANA_VARS) -> str:
    for name, value in sorted(values.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace("${" + name[1:] + "}", value).replace(name, value)
    assert "$" not in expr, f"unfilled Grafana variable in {expr!r}"
    return expr


def dashboard_queries(path: Path) -> list[tuple[str, str]]:
    """(panel title, expression) for every target of every panel."""
    dash = json.loads(path.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], fill(target["expr"])))
    return out


def rule_queries(path: Path) -> list[tuple[str, str]]:
    doc = yaml.safe_load(path.read_text())
    return [(r.get("alert") or r["record"], r["expr"]) for g in doc["groups"] for r in g["rules"]]


SELECTOR = re.compile(r"\b(quranft_[a-z_]+)(\{[^}]*\})?")


def selectors(expr: str) -> list[str]:
    """The quranft_* vector selectors of an expression (our own rules only use plain selectors)."""
    return sorted({m.group(1) + (m.group(2) or "") for m in SELECTOR.finditer(expr)})


def as_recording_rules(queries: list[tuple[str, str]]) -> str:
    """A rule file with one recording rule per query, so `promtool check rules` parses each one."""
    rules = [{"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)]
    return yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False)
