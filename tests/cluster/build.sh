#!/usr/bin/env bash
# Builds (or reuses) the embedded cluster's binaries: kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl and etcd from the Go module next to this script, and helm from its module.
# Output: a directory keyed by version and go.sum hash under ${QURANFT_CACHE:-~/.cache/quranft}.
# Prints the bin directory on the last line of stdout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${QURANFT_CACHE:-$HOME/.cache/quranft}"
k8s_version="v1.37.2"
helm_version="v3.22.0"
key="$(cat "$here/k8s/go.mod" "$here/k8s/go.sum" "$here/k8s/cmd/etcd/main.go" | sha256sum | cut -c1-12)"
bin="$cache/k8s-$k8s_version-$key/bin"
tools=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd helm)

have_all() { for t in "${tools[@]}"; do [ -x "$bin/$t" ] || return 1; done; }

# One build at a time per cache: a second caller (another test session, `quranft cluster up`) waits for
# the first and then reuses its output.
if ! have_all; then
  mkdir -p "$cache"
  exec 9>"$cache/.k8s-build.lock"
  flock 9
fi

if have_all; then
  echo "cluster binaries: reusing $bin" >&2
else
  start=$(date +%s)
  mkdir -p "$bin.tmp"
  pkg="k8s.io/component-base/version"
  cpkg="k8s.io/client-go/pkg/version"
  minor="${k8s_version#v1.}"; minor="${minor%%.*}"
  ldflags="-s -w"
  for p in "$pkg" "$cpkg"; do
    ldflags+=" -X $p.gitVersion=$k8s_version -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "cluster binaries: building Kubernetes $k8s_version (cold build, several minutes)" >&2
  (cd "$here/k8s" && go build -trimpath -ldflags "$ldflags" -o "$bin.tmp/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl ./cmd/etcd)
  echo "cluster binaries: building helm $helm_version" >&2
  GOBIN="$bin.tmp" GOFLAGS=-trimpath go install -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$helm_version"
  rm -rf "$bin" && mkdir -p "$(dirname "$bin")" && mv "$bin.tmp" "$bin"
  echo "cluster binaries: cold build took $(( $(date +%s) - start )) s" >&2
fi
echo "$bin"
