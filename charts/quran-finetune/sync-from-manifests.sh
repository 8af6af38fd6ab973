#!/usr/bin/env bash
# Copy the CRDs and the operator's RBAC from manifests/ (their single source) into the chart.
# The campaign CRD embeds the QuranFineTune spec schema, so it is regenerated first.
# tests/ship/test_chart.py fails while the copies differ.
set -euo pipefail
cd "$(dirname "$0")"
python3 ../../scripts/gen_campaign_crd.py
cp ../../manifests/crd/*.quranft.io.yaml files/crds/
cp ../../manifests/rbac/operator.yaml files/rbac/operator.yaml
