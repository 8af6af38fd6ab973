"""Pure planning: a campaign (template + variants and/or search) -> the child QuranFineTune bodies.

Every child is an ordinary QuranFineTune named `<campaign>-<variant>` (builders.child_name), owned by the
campaign, on the campaign's one claim, judged on the template's corpus against the campaign's baseline. What a
variant may not change (storage, the benchmark protocol) is refused here; what the QuranFineTune schema refuses
(unknown fields, CEL rules) is found by the server-side dry run the handlers run on these bodies before any child
is created; what the trainer refuses is found by builders.validate_run_config.
"""
from __future__ import annotations

import copy
import json
import random
import re
from dataclasses import dataclass
from math import prod
from typing import Any, Mapping

from quranft.contract import workspace as layout
from quranft.contract.keys import API_VERSION, COMMON_LABELS, KIND
from quranft.contract.config import ConfigError

from . import builders
from .campaign_spec import (CAMPAIGN_API_VERSION, CAMPAIGN_KIND, LABEL_CAMPAIGN, LABEL_VARIANT, MAX_CHILD_NAME,
                            MAX_VARIANTS, PATH_PATTERN, PROTECTED_PATHS, TRIAL_PREFIX,
                            VARIANT_COMMANDS_ANNOTATION, CampaignSpec, Search, Variant)

_PATH = re.compile(PATH_PATTERN)


class PlanError(ValueError):
    """The campaign's variants cannot be turned into valid children (the message names each problem)."""


@dataclass(frozen=True)
class ChildPlan:
    variant: str
    child: str
    body: dict[str, Any]
    data_hash: str | None = None  # children with the same one share the prepared data (sibling reuse)


def owner_reference(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": CAMPAIGN_API_VERSION, "kind": CAMPAIGN_KIND, "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}


def campaign_labels(name: str, component: str | None = None) -> dict[str, str]:
    labels = {**COMMON_LABELS, LABEL_CAMPAIGN: name}
    if component:
        labels[builders.LABEL_STAGE] = component
    return labels


def claim_name(spec: CampaignSpec, name: str) -> str:
    """The claim every child uses: the template's existingClaim, else the campaign's own `<campaign>-workspace`."""
    return builders.claim_name(spec.template, name)


def campaign_pvc(spec: CampaignSpec, meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """The claim for a template with storage.size (None with existingClaim); owned by the campaign only with
    deleteClaimOnDelete, so deleting a campaign keeps its models by default."""
    pvc = builders.build_pvc(spec.template, meta)
    if pvc is None:
        return None
    pvc["metadata"]["labels"] = campaign_labels(meta["name"], "workspace")
    if pvc["metadata"].get("ownerReferences"):
        pvc["metadata"]["ownerReferences"] = [owner_reference(meta)]
    return pvc


def child_baseline(baseline: Mapping[str, Any]) -> dict[str, Any]:
    """The campaign's baseline as a QuranFineTune spec.benchmark.baseline (a promoted model is its results file)."""
    if baseline.get("promoted"):
        return {"resultsPath": str(layout.production_results_path(baseline["promoted"]))}
    if baseline.get("qftRef"):
        return {"qftRef": {"name": baseline["qftRef"]["name"]}}
    if baseline.get("resultsPath"):
        return {"resultsPath": baseline["resultsPath"]}
    return {"baseModel": True}


# --- variants --------------------------------------------------------------------------------------------------

def trial_variants(search: Search) -> list[Variant]:
    """The search's trials in draw order: grid walks the combinations in order (paths sorted, values as given);
    random draws maxTrials distinct combinations with `seed`. Combinations are decoded from their index, so a
    huge grid is never materialised."""
    paths = sorted(search.fields)
    sizes = [len(search.fields[p]) for p in paths]
    total = prod(sizes)
    count = min(search.max_trials or total, total)
    if search.algorithm == "random":
        indices = random.Random(search.seed).sample(range(total), count)
    else:
        indices = list(range(count))
    out = []
    for n, index in enumerate(indices):
        overrides: dict[str, Any] = {}
        for path, size in zip(reversed(paths), reversed(sizes)):
            index, pick = divmod(index, size)
            overrides[path] = copy.deepcopy(search.fields[path][pick])
        out.append(Variant(name=f"{TRIAL_PREFIX}{n:02d}", overrides=dict(sorted(overrides.items()))))
    return out


def all_variants(spec: CampaignSpec) -> list[Variant]:
    variants = list(spec.variants)
    if spec.search is not None:
        total = prod(len(v) for v in spec.search.fields.values())
        if min(spec.search.max_trials or total, total) + len(variants) > MAX_VARIANTS:
            raise PlanError(f"the search has {total} combinations; with the {len(variants)} variant(s) that is more "
                            f"than {MAX_VARIANTS} children: set search.maxTrials")
        variants += trial_variants(spec.search)
    names = [v.name for v in variants]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise PlanError(f"variant names {clashes} are used twice (search trials are named {TRIAL_PREFIX}NN)")
    return variants


def path_problem(path: str) -> str | None:
    if not _PATH.match(path):
        return f"{path!r} is not a dotted field path (e.g. training.learningRate)"
    for protected in PROTECTED_PATHS:
        if path == protected or path.startswith(protected + "."):
            return f"{path} is shared by every variant (same claim, corpus, baseline and verdict rule) and cannot " \
                   "be overridden"
    if path.split(".")[0] in ("metadata", "status"):
        return f"{path}: variants change the spec only"
    return None


def apply_overrides(template: Mapping[str, Any], remove: list[str], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The template with `remove` paths deleted, then each override set (intermediate objects created)."""
    spec = copy.deepcopy(dict(template))
    problems = [p for p in (path_problem(path) for path in [*remove, *overrides]) if p]
    if problems:
        raise PlanError("; ".join(problems))
    for path in remove:
        *parents, leaf = path.split(".")
        node: Any = spec
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = spec
        for i, part in enumerate(parents):
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise PlanError(f"override {path}: {'.'.join(parents[:i + 1])} is not an object")
            node = nxt
        node[leaf] = copy.deepcopy(value)
    return spec


def child_spec(spec: CampaignSpec, variant: Variant, claim: str) -> dict[str, Any]:
    out = apply_overrides(spec.template, list(variant.remove), variant.overrides)
    out["storage"] = {"existingClaim": claim}  # one claim: shared data, one corpus copy, results side by side
    bench = out.setdefault("benchmark", {})
    bench["baseline"] = child_baseline(spec.effective_baseline())
    return out


def child_annotations(meta: Mapping[str, Any], variant: str) -> dict[str, str]:
    """Test-only stage-command overrides (honoured by the QuranFineTune controller with --allow-command-overrides):
    the campaign's own, merged with this variant's entry of quranft.io/variant-stage-commands."""
    annotations = meta.get("annotations") or {}
    commands: dict[str, Any] = {}
    for key, pick in ((builders.COMMAND_ANNOTATION, None), (VARIANT_COMMANDS_ANNOTATION, variant)):
        raw = annotations.get(key)
        if not raw:
            continue
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise PlanError(f"annotation {key} is not JSON: {exc}") from None
        doc = doc.get(pick) or {} if pick else doc
        if not isinstance(doc, dict):
            raise PlanError(f"annotation {key}: expected an object of stage -> command")
        commands.update(doc)
    return {builders.COMMAND_ANNOTATION: json.dumps(commands, sort_keys=True)} if commands else {}


def child_body(spec: CampaignSpec, meta: Mapping[str, Any], variant: Variant) -> dict[str, Any]:
    name = builders.child_name(meta["name"], variant.name)
    metadata: dict[str, Any] = {
        "name": name, "namespace": meta["namespace"],
        "labels": {**campaign_labels(meta["name"]), LABEL_VARIANT: variant.name},
        "ownerReferences": [owner_reference(meta)],
    }
    annotations = child_annotations(meta, variant.name)
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata,
            "spec": child_spec(spec, variant, claim_name(spec, meta["name"]))}


def _data_hash(spec: Mapping[str, Any]) -> str | None:
    try:
        return builders.spec_data_hash(spec)
    except Exception:  # noqa: BLE001  an invalid data spec is reported by the dry run / trainer_problem
        return None


def trainer_problem(child: ChildPlan) -> str | None:
    """What the trainer's own schema says about this child's data and training (builders.validate_run_config),
    checked together with the API server's dry run so one pass reports both."""
    try:
        builders.validate_run_config(builders.run_config_doc(child.body["spec"], child.body["metadata"]))
    except ConfigError as exc:
        return f"the trainer would reject it: {exc}"
    return None


def plan(spec: CampaignSpec, meta: Mapping[str, Any]) -> list[ChildPlan]:
    """Every child, in creation order. Raises PlanError naming every variant that cannot be built (names, paths,
    the shared protocol, the search's size, base models against a base-model baseline); the schemas are checked
    on the result (dry run, trainer_problem)."""
    variants = all_variants(spec)
    out: list[ChildPlan] = []
    problems: list[str] = []
    for variant in variants:
        try:
            body = child_body(spec, meta, variant)
        except PlanError as exc:
            problems.append(f"variant {variant.name}: {exc}")
            continue
        name = body["metadata"]["name"]
        if len(name) > MAX_CHILD_NAME:
            problems.append(f"variant {variant.name}: child name {name} is longer than {MAX_CHILD_NAME} characters")
            continue
        out.append(ChildPlan(variant.name, name, body, _data_hash(body["spec"])))
    if not problems and spec.effective_baseline().get("baseModel"):
        models = {p.variant: (p.body["spec"].get("training") or {}).get("baseModel") for p in out}
        if len(set(models.values())) > 1:
            problems.append(f"the baseline is the base model, but the variants start from different base models "
                            f"{models}: they would not share one baseline")
    if problems:
        raise PlanError("; ".join(problems))
    return out
