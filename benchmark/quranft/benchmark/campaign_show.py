"""`quranft campaign show NAME [-n NS]`: a campaign's ranked variants in the terminal, from its status.

The table is campaign_report.format_table over campaign_report.rows_from_status, the same table report.md holds.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from typing import Any

from quranft.contract.keys import CAMPAIGN_PLURAL, GROUP, VERSION

from .campaign_report import CampaignInputError, format_table, rows_from_status


Fetch = Callable[[str, str], Mapping[str, Any]]  # (namespace, name) -> the campaign object


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quranft campaign", description="QuranFineTuneCampaign tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="the campaign's variants, ranked, with verdicts and intervals")
    show.add_argument("name")
    show.add_argument("-n", "--namespace", help="default: the kubeconfig context's namespace, else default")
    show.add_argument("--json", action="store_true", help="print the campaign's status as JSON instead")
    return parser


def main(argv: list[str] | None = None, fetch: Fetch | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    namespace = args.namespace or _context_namespace()
    try:
        obj = (fetch or _fetch)(namespace, args.name)
    except LookupError as exc:
        print(f"campaign show: {exc}", file=sys.stderr)
        return 1
    status = obj.get("status") or {}
    if args.json:
        print(json.dumps(status, ensure_ascii=False, indent=1))
        return 0
    print(show_text(obj))
    return 0


def show_text(obj: Mapping[str, Any]) -> str:
    """Header (phase, production, report) and the ranked table of a campaign object."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    head = [f"campaign {meta.get('namespace', '-')}/{meta.get('name', '-')}: phase {status.get('phase') or '-'}"
            + (f", {status['done']} variants ended" if status.get("done") else "")]
    production, decision = status.get("production") or {}, status.get("promotion") or {}
    if production.get("variant"):
        head.append(f"production: {production['variant']} ({production.get('modelPath', '-')})")
    else:
        why = ": ".join(filter(None, [decision.get("reason"), decision.get("message")]))
        head.append("production: none promoted" + (f" ({why})" if why else ""))
    report = (status.get("report") or {}).get("path")
    if report:
        head.append(f"report: {report}")
    try:
        rows = rows_from_status(status)
    except CampaignInputError as exc:
        return "\n".join(head + [f"status.variants unreadable: {exc}"])
    if not rows:
        return "\n".join(head + ["no variants in status yet"])
    return "\n".join(head) + "\n\n" + format_table(rows)


def _context_namespace() -> str:
    try:
        from kubernetes import config

        _, active = config.list_kube_config_contexts()
        return (active or {}).get("context", {}).get("namespace") or "default"
    except Exception:  # no kubeconfig (in a pod): the API call below says what is wrong
        return "default"


def _fetch(namespace: str, name: str) -> Mapping[str, Any]:
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    with client.ApiClient() as api:
        try:
            return client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, CAMPAIGN_PLURAL,
                                                                              name)
        except ApiException as exc:
            if exc.status == 404:
                raise LookupError(f"no QuranFineTuneCampaign {name!r} in namespace {namespace!r}") from exc
            raise
