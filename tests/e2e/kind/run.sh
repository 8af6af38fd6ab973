#!/usr/bin/env bash
# End-to-end on kind, for users' CI (GitHub Actions: .github/workflows/kind-e2e.yaml). The same steps as
# the embedded-cluster e2e (`quranft demo`, tests/ship/test_chart_install.py): build the images, install the
# chart, seed the workspace with the tiny model + synthetic recitations (the demo's own seed Job), apply
# the CPU-stub example and wait for its verdict.
#   tests/e2e/kind/run.sh          # needs docker (or podman), kind, kubectl, helm, python3 with pyyaml+pydantic
set -euo pipefail
cd "$(dirname "$0")/../../.."
CLUSTER=${CLUSTER:-quranft}
TAG=${TAG:-e2e}
NS=${NS:-quranft-demo}
EXAMPLE=${EXAMPLE:-manifests/examples/cpu-stub-ctc.yaml}
TIMEOUT=${TIMEOUT:-1800}
ENGINE=${ENGINE:-docker}
say() { printf '%s kind-e2e: %s\n' "$(date -u +%T)" "$*"; }

if ! kind get clusters | grep -qx "$CLUSTER"; then
  say "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --config tests/e2e/kind/kind-config.yaml --wait 120s
fi

for image in operator trainer-cpu; do
  say "building $image:$TAG"
  "$ENGINE" build -f "images/$image.Containerfile" -t "ghcr.io/quran-finetune/$image:$TAG" \
    --build-arg VERSION="$TAG" --build-arg REVISION="$(git rev-parse --short HEAD)" .
  if [[ $ENGINE == docker ]]; then
    kind load docker-image --name "$CLUSTER" "ghcr.io/quran-finetune/$image:$TAG"
  else
    "$ENGINE" save "ghcr.io/quran-finetune/$image:$TAG" -o "/tmp/$image.tar"
    kind load image-archive --name "$CLUSTER" "/tmp/$image.tar"
  fi
done

say "helm install (operator watches $NS)"
helm upgrade --install quranft charts/quran-finetune --namespace quranft-system --create-namespace \
  --set image.tag="$TAG" --set image.pullPolicy=IfNotPresent --set "operator.watchNamespaces[0]=$NS" \
  --wait --timeout 5m
kubectl -n quranft-system rollout status deployment/quranft-quran-finetune --timeout=180s

say "namespace $NS (Pod Security restricted), workspace claim and seed Job"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace "$NS" --overwrite pod-security.kubernetes.io/enforce=restricted
python3 - "$EXAMPLE" "$NS" "$TAG" > /tmp/quranft-e2e-objects.yaml <<'PY'
import sys, yaml
sys.path[:0] = ["contract", "operator", "trainer", "benchmark", "cluster"]
from quranft.cluster.demo import seed_job
from quranft.operator.settings import IMAGE_REPO
example, ns, tag = sys.argv[1:]
docs = [d for d in yaml.safe_load_all(open(example)) if d]
claim = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")
qft = next(d for d in docs if d["kind"] == "QuranFineTune")
print(yaml.safe_dump_all([claim, seed_job(ns, claim["metadata"]["name"], f"{IMAGE_REPO}/trainer-cpu:{tag}")]))
PY
kubectl apply -n "$NS" -f /tmp/quranft-e2e-objects.yaml
kubectl -n "$NS" wait --for=condition=Complete job/quranft-seed-workspace --timeout=900s

say "applying $EXAMPLE"
python3 -c 'import sys, yaml; print(yaml.safe_dump(next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "QuranFineTune")))' \
  "$EXAMPLE" | sed "s|ghcr.io/quran-finetune/trainer-cpu:[^\" ]*|ghcr.io/quran-finetune/trainer-cpu:$TAG|" |
  kubectl apply -n "$NS" -f -
name=$(python3 -c 'import sys, yaml; print(next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "QuranFineTune")["metadata"]["name"])' "$EXAMPLE")

deadline=$((SECONDS + TIMEOUT))
while ((SECONDS < deadline)); do
  phase=$(kubectl -n "$NS" get qft "$name" -o jsonpath='{.status.phase}')
  kubectl -n "$NS" get qft "$name" --no-headers || true
  case $phase in
    Succeeded) say "verdict: $(kubectl -n "$NS" get qft "$name" -o jsonpath='{.status.verdict}')"; exit 0 ;;
    Failed) kubectl -n "$NS" describe qft "$name"; kubectl -n quranft-system logs deploy/quranft-quran-finetune --tail=100; exit 1 ;;
  esac
  sleep 15
done
say "no verdict within ${TIMEOUT}s"; kubectl -n "$NS" describe qft "$name"; exit 1
