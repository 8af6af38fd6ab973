#!/usr/bin/env bash
# Sets up everything `make test` and `make demo` need on a fresh Debian machine, and reuses it after:
#   1. Debian packages (espeak-ng for synthetic recitations, ffmpeg for MP3/M4A, prometheus for the
#      metrics tests, util-linux for the node agent's mount namespaces);
#   2. the Python venv at $QURANFT_VENV (default ~/.cache/quranft/venv), re-synced when the lock changes;
#   3. the embedded cluster's binaries (tests/cluster/build.sh, cached by version).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${QURANFT_CACHE:-$HOME/.cache/quranft}"
venv="${QURANFT_VENV:-$cache/venv}"
log() { echo "bootstrap: $*" >&2; }

apt_packages=(espeak-ng ffmpeg sox libsndfile1 prometheus util-linux git make)
missing=()
for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The Debian prometheus package starts a daemon on :9090; tests run their own instances.
  $sudo_cmd systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

lock="$root/requirements/dev.txt"
stamp="$(cat "$lock" "$root/pyproject.toml" | sha256sum | cut -c1-16)"
if [ "$(cat "$venv/.quranft-stamp" 2>/dev/null)" != "$stamp" ]; then
  start=$(date +%s)
  log "syncing Python environment $venv (first time: torch + NeMo, a few minutes)"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -r "$lock"
  "$venv/bin/pip" install -q --no-deps -e "$root"
  echo "$stamp" > "$venv/.quranft-stamp"
  log "Python environment ready in $(( $(date +%s) - start )) s"
else
  # The editable install maps each package to its folder in one checkout; re-install when run from another
  # clone (CI) or when a package is not where the install maps it (a package added or moved to another root).
  "$venv/bin/python" - "$root" <<'PY' || "$venv/bin/pip" install -q --no-deps -e "$root"
import importlib.util, pathlib, sys, tomllib
root = pathlib.Path(sys.argv[1]).resolve()
roots = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["where"]
folders = [p for r in roots for p in sorted((root / r / "quranft").glob("*/")) if p.name != "__pycache__"]
specs = {p: importlib.util.find_spec(f"quranft.{p.name}") for p in folders}
sys.exit(0 if folders and all(s and p in map(pathlib.Path, s.submodule_search_locations or []) for p, s in specs.items()) else 1)
PY
fi

bin="$("$root/tests/cluster/build.sh" | tail -n 1)"
log "cluster binaries in $bin"
# Real Kueue (issue 17) from its Go module, cached the same way; tests/reliability/test_kueue_real.py runs it.
kueue_bin="$("$root/tests/cluster/kueue/build.sh" | tail -n 1)"
log "kueue manager in $kueue_bin"
# The MLflow tracking server (issue 17) in its own venv (its pins are not the trainer's); the client is in the lock.
mlflow_bin="$("$root/scripts/mlflow_venv.sh" | tail -n 1)"
log "mlflow server in $mlflow_bin"
echo "export QURANFT_VENV=$venv"
echo "export QURANFT_K8S_BIN=$bin"
echo "export PATH=$venv/bin:$bin:\$PATH"
