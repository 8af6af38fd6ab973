#!/usr/bin/env bash
# Bring the chart's copies in step with their single sources:
# - both CRDs: generated from the pydantic models by scripts/gen_crd.py, which also writes files/crds/;
# - the operator's RBAC: copied from manifests/rbac/operator.yaml.
# tests/ship/test_chart.py and tests/operator/test_crd_generated.py fail while the copies differ.
set -euo pipefail
cd "$(dirname "$0")"
python3 ../../scripts/gen_crd.py
cp ../../manifests/rbac/operator.yaml files/rbac/operator.yaml
