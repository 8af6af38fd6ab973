"""pydantic model -> Kubernetes structural OpenAPI v3 schema, for the CRD generators (scripts/gen_crd.py,
scripts/gen_campaign_crd.py).

A structural schema (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema)
types every node, has no `$ref`/`anyOf` for optional fields, and states free-form parts with
`x-kubernetes-preserve-unknown-fields`. Pure: JSON-schema dict in, dict out.

Mapping:
- `X | None` is an unset field, not a null (writers use exclude_none); `int | str` is `x-kubernetes-int-or-string`.
- `dict[str, Any]` is free-form (preserve unknown fields); `dict[str, X]` a map (additionalProperties: X).
- `Any` is any JSON value, null included.
- `x-kubernetes-*` keys, `nullable` and `format` given through `json_schema_extra` are kept as written; so are
  CEL rules (`x-kubernetes-validations`) on a model (its config) and on a field (merged, the model's first).
- `{"x-quranft-embed": KEY}` is replaced by `embeds[KEY]` (a schema taken from elsewhere, e.g. another CRD).
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

from pydantic import BaseModel

# JSON-schema keys with the same meaning in a Kubernetes structural schema.
KEPT = ("type", "description", "enum", "pattern", "minLength", "maxLength", "minimum", "maximum", "minItems",
        "maxItems", "minProperties", "maxProperties", "format", "nullable")


class _Converter:
    def __init__(self, defs: Mapping[str, Any], embeds: Mapping[str, dict[str, Any]], integer_format: str | None):
        self.defs, self.embeds, self.integer_format = defs, embeds, integer_format

    def node(self, node: dict[str, Any]) -> dict[str, Any]:
        extra_keys = {k: v for k, v in node.items() if k.startswith("x-kubernetes-")}
        description = node.get("description")
        if "x-quranft-embed" in node:
            out = copy.deepcopy(self.embeds[node["x-quranft-embed"]])
            if description:
                out["description"] = description
            return {**out, **extra_keys}
        if "$ref" in node or "anyOf" in node:
            return self._wrapped(node, extra_keys)
        out: dict[str, Any] = {k: node[k] for k in KEPT if k in node}
        if "const" in node:
            out["enum"] = [node["const"]]
        if "exclusiveMinimum" in node:  # JSON schema 2020-12 number -> OpenAPI v3.0 boolean form
            out["minimum"], out["exclusiveMinimum"] = node["exclusiveMinimum"], True
        if "exclusiveMaximum" in node:
            out["maximum"], out["exclusiveMaximum"] = node["exclusiveMaximum"], True
        if "default" in node and node["default"] is not None:
            out["default"] = node["default"]
        kind = node.get("type")
        if kind == "object" or "properties" in node:
            out["type"] = "object"
            if "properties" in node:
                out["properties"] = {k: self.node(v) for k, v in node["properties"].items()}
                if node.get("required"):
                    out["required"] = list(node["required"])
            elif node.get("additionalProperties") is True and not extra_keys.get("x-kubernetes-validations"):
                out["x-kubernetes-preserve-unknown-fields"] = True  # dict[str, Any]: free-form
            elif "additionalProperties" in node:  # a map (CEL can range over its keys)
                values = node["additionalProperties"]
                out["additionalProperties"] = self.node(values if isinstance(values, dict) else {})
            else:
                out["x-kubernetes-preserve-unknown-fields"] = True
        elif kind == "array":
            out["items"] = self.node(node.get("items") or {})
        elif kind is None and "enum" not in out:  # Any: any JSON value, null included (null removes a field)
            out["x-kubernetes-preserve-unknown-fields"] = True
            out["nullable"] = True
        if kind == "integer" and self.integer_format:
            out.setdefault("format", self.integer_format)
        return {**out, **extra_keys}

    def _wrapped(self, node: dict[str, Any], extra_keys: dict[str, Any]) -> dict[str, Any]:
        """A `$ref` (a model-typed field) or an `anyOf` (Optional[X], int | str): the inner schema with the
        field's own description, bounds, default and rules on top."""
        if "$ref" in node:
            inner = self.node(self.defs[node["$ref"].split("/")[-1]])
        else:  # Optional[X]: unset rather than null (the controllers write with exclude_none)
            options = [o for o in node["anyOf"] if o.get("type") != "null"]
            if sorted(o.get("type", "") for o in options) == ["integer", "string"] and \
                    all(set(o) == {"type"} for o in options):
                inner = {"x-kubernetes-int-or-string": True}  # a quantity such as cpu: 4 or "500m"
            elif len(options) == 1:
                inner = self.node(options[0])
            else:
                raise ValueError(f"cannot express anyOf {node['anyOf']} in a structural schema")
        out = dict(inner)
        for key in ("description", *(k for k in KEPT if k not in ("type", "description") and k in node)):
            if key in node:
                out[key] = node[key]
        if node.get("default") is not None:
            out["default"] = node["default"]
        rules = inner.get("x-kubernetes-validations", []) + extra_keys.pop("x-kubernetes-validations", [])
        if rules:
            out["x-kubernetes-validations"] = rules
        return {**out, **extra_keys}


def model_schema(model: type[BaseModel], *, embeds: Mapping[str, dict[str, Any]] | None = None,
                 integer_format: str | None = "int64") -> dict[str, Any]:
    """The structural schema of `model` (wire names: its aliases). `integer_format`: the `format` given to every
    integer that sets none (None: only where a field's json_schema_extra names one)."""
    doc = model.model_json_schema(by_alias=True, mode="validation")
    defs = doc.pop("$defs", {})
    return _Converter(defs, embeds or {}, integer_format).node(doc)
