#!/usr/bin/env bash
# Copy the CRD and the operator's RBAC from manifests/ (their single source) into the chart.
# tests/ship/test_chart.py fails while the copies differ.
set -euo pipefail
cd "$(dirname "$0")"
cp ../../manifests/crd/quranfinetunes.quranft.io.yaml files/crds/
cp ../../manifests/rbac/operator.yaml files/rbac/operator.yaml
