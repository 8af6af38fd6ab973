#!/usr/bin/env bash
# The whole suite as two concurrent pytest processes: the embedded-cluster tests (marker `cluster`: they
# mostly wait on the API server, the scheduler and stage pods) and everything else (mostly CPU-bound), so
# the waits of one overlap the work of the other. Arguments go to both pytest runs.
# Prints both logs when they end, the time per test area, and one closing "N passed, N failed" line.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${QURANFT_TEST_OUT:-$(mktemp -d -t quranft-tests-XXXXXX)}"
mkdir -p "$out"
start=$(date +%s)

python -m pytest -m cluster --junitxml="$out/cluster.xml" "$@" > "$out/cluster.log" 2>&1 &
cluster_pid=$!
python -m pytest -m "not cluster" --junitxml="$out/other.xml" "$@" > "$out/other.log" 2>&1 &
other_pid=$!
trap 'kill $cluster_pid $other_pid 2>/dev/null' INT TERM

# A heartbeat, so a long run shows it is alive (the logs come whole at the end, not interleaved).
while kill -0 $cluster_pid 2>/dev/null || kill -0 $other_pid 2>/dev/null; do
  sleep 20
  elapsed=$(( $(date +%s) - start ))
  if (( elapsed % 300 < 20 )); then
    echo "tests: ${elapsed}s; cluster: $(grep -cE ' (PASSED|FAILED|ERROR)' "$out/cluster.log") done;" \
         "other: $(grep -cE ' (PASSED|FAILED|ERROR)' "$out/other.log") done"
  fi
done
wait $cluster_pid; cluster_rc=$?
wait $other_pid; other_rc=$?

for part in other cluster; do
  echo "================================ $part tests (log $out/$part.log) ================================"
  cat "$out/$part.log"
done
python "$root/scripts/test_areas.py" "$out/other.xml" "$out/cluster.xml" --wall "$(( $(date +%s) - start ))"
# pytest exits 5 when a selection holds no test (e.g. -k matching only one side): not a failure here.
for rc in $cluster_rc $other_rc; do
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then exit "$rc"; fi
done
exit 0
