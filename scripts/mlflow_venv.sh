#!/usr/bin/env bash
# Builds (or reuses) the MLflow tracking server's own venv: the full `mlflow` package (Flask, SQLAlchemy,
# alembic, gunicorn/uvicorn ...) pins far more than the trainer needs and is kept out of the project venv,
# which carries only the client (mlflow-skinny, requirements/dev.txt).
# Input: requirements/mlflow-server.txt (the server venv's full lock, pip freeze of a build of
# mlflow==$mlflow_version). Output: ${QURANFT_CACHE:-~/.cache/quranft}/mlflow-<version>-<lock hash>/,
# reused while the lock is unchanged. Prints the venv's `mlflow` executable on the last line of stdout.
# QURANFT_MLFLOW_LOCK=refresh re-resolves from `mlflow==<version>` and rewrites the lock file.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${QURANFT_CACHE:-$HOME/.cache/quranft}"
mlflow_version="3.17.2"  # the same version as the client pinned in requirements/dev.txt
lock="$root/requirements/mlflow-server.txt"
python="${QURANFT_MLFLOW_PYTHON:-python3}"
key="$( { cat "$lock" 2>/dev/null || true; } | sha256sum | cut -c1-12)"
venv="$cache/mlflow-$mlflow_version-$key"
have() { [ -x "$venv/bin/mlflow" ] && [ -f "$venv/.quranft-ok" ]; }

if ! have || [ "${QURANFT_MLFLOW_LOCK:-}" = refresh ]; then
  mkdir -p "$cache"
  exec 9>"$cache/.mlflow-build.lock"
  flock 9  # one build at a time per cache: a second caller waits, then reuses the first one's venv
fi

if have && [ "${QURANFT_MLFLOW_LOCK:-}" != refresh ]; then
  echo "mlflow: reusing $venv" >&2
else
  start=$(date +%s)
  echo "mlflow: building the MLflow $mlflow_version server venv (cold build, about a minute)" >&2
  tmp="$cache/mlflow-$mlflow_version.tmp"
  rm -rf "$tmp"
  "$python" -m venv "$tmp"
  "$tmp/bin/pip" install -q --disable-pip-version-check --upgrade pip
  if [ "${QURANFT_MLFLOW_LOCK:-}" = refresh ] || [ ! -s "$lock" ]; then
    "$tmp/bin/pip" install -q --disable-pip-version-check "mlflow==$mlflow_version"
    { echo "# Lock of the MLflow tracking server's own venv (scripts/mlflow_venv.sh): pip freeze of mlflow==$mlflow_version."
      "$tmp/bin/pip" freeze --disable-pip-version-check; } > "$lock"
    venv="$cache/mlflow-$mlflow_version-$(sha256sum < "$lock" | cut -c1-12)"
  else
    "$tmp/bin/pip" install -q --disable-pip-version-check -r "$lock"
  fi
  "$tmp/bin/mlflow" --version >&2
  touch "$tmp/.quranft-ok"
  # venv scripts carry their absolute path (shebangs, activate): rewrite it for the final location.
  grep -rlI --null "$tmp" "$tmp/bin" | xargs -0 -r sed -i "s#$tmp#$venv#g"
  rm -rf "$venv" && mv "$tmp" "$venv"
  echo "mlflow: cold build took $(( $(date +%s) - start )) s" >&2
fi
echo "$venv/bin/mlflow"
