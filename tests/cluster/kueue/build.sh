#!/usr/bin/env bash
# Builds (or reuses) the Kueue controller manager from the Go module next to this script (pinned in
# go.mod as a `tool`), and copies the manifests it needs from that module's own config/components/:
# the CRDs, the webhook configurations and the manager's RBAC roles.
# Output: ${QURANFT_CACHE:-~/.cache/quranft}/kueue-<version>-<go.mod+go.sum hash>/{bin/kueue,manifests/}.
# Prints the bin directory on the last line of stdout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${QURANFT_CACHE:-$HOME/.cache/quranft}"
kueue_version="v0.17.0"
key="$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-12)"
root="$cache/kueue-$kueue_version-$key"
bin="$root/bin"
# From the module's config/components/ (read-only in the module cache, verified by go.sum) to manifests/.
manifests=(webhook/manifests.yaml:webhooks.yaml rbac/role.yaml:manager-role.yaml
           rbac/metrics_auth_role.yaml:metrics-auth-role.yaml rbac/manager_secrets_role.yaml:manager-secrets-role.yaml)

have_manifests() {
  [ -d "$root/manifests/crds" ] || return 1
  for m in "${manifests[@]}"; do [ -s "$root/manifests/${m#*:}" ] || return 1; done
}
have_all() { [ -x "$bin/kueue" ] && have_manifests; }

copy_manifests() {  # $1: the output root
  local src
  src="$(cd "$here" && go list -m -f '{{.Dir}}' sigs.k8s.io/kueue)/config/components"
  rm -rf "$1/manifests" && mkdir -p "$1/manifests/crds"
  cp "$src"/crd/bases/*.yaml "$1/manifests/crds/"
  for m in "${manifests[@]}"; do cp "$src/${m%%:*}" "$1/manifests/${m#*:}"; done
  chmod -R u+w "$1/manifests"
}

# One build at a time per cache: a second caller waits for the first and then reuses its output.
if ! have_all; then
  mkdir -p "$cache"
  exec 9>"$cache/.kueue-build.lock"
  flock 9
fi

if have_all; then
  echo "kueue: reusing $bin" >&2
elif [ -x "$bin/kueue" ]; then
  copy_manifests "$root"  # a manifest added to the list above: no rebuild
  echo "kueue: reusing $bin (manifests refreshed)" >&2
else
  start=$(date +%s)
  rm -rf "$root.tmp" && mkdir -p "$root.tmp/bin"
  vpkg="sigs.k8s.io/kueue/pkg/version"
  ldflags="-s -w -X $vpkg.GitVersion=$kueue_version -X $vpkg.GitCommit=release -X $vpkg.BuildDate=1970-01-01T00:00:00Z"
  echo "kueue: building the Kueue $kueue_version manager (cold build, a few minutes)" >&2
  (cd "$here" && go build -trimpath -ldflags "$ldflags" -o "$root.tmp/bin/kueue" sigs.k8s.io/kueue/cmd/kueue)
  copy_manifests "$root.tmp"
  rm -rf "$root" && mv "$root.tmp" "$root"
  echo "kueue: cold build took $(( $(date +%s) - start )) s" >&2
fi
echo "$bin"
