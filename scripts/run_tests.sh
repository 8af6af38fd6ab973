#!/usr/bin/env bash
# The whole suite as two concurrent pytest processes, each with its own embedded cluster:
#   heavy: the cluster tests that train the real tiny model in stage pods (markers `cluster` and `slow`),
#          CPU-bound for most of their ~26 minutes;
#   rest:  everything else, where the CPU-bound tests (training in-process, the matcher) and the cluster
#          tests that mostly wait on the API server and stub pods (chaos, Kueue, quotas) take turns.
# Before, all cluster tests ran in one process: the stub scenarios' waits came after the heavy tests'
# training instead of beside it, and that process ran alone for its last 26 minutes of 40.
# Arguments go to both pytest runs. Prints both logs when they end, the time per test area, and one
# closing "N passed, N failed" line.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${QURANFT_TEST_OUT:-$(mktemp -d -t quranft-tests-XXXXXX)}"
mkdir -p "$out"
start=$(date +%s)

# A cluster already started (`quranft cluster up`, $QURANFT_CLUSTER_DIR) serves the heavy run; the rest
# starts its own beside it, so a test that counts the cluster's one GPU never sees the other run's pods.
cluster_dir="$(python -c "from quranft.cluster.controlplane import default_state_dir; print(default_state_dir())")"
python -m pytest -m "cluster and slow" --junitxml="$out/heavy.xml" "$@" > "$out/heavy.log" 2>&1 &
heavy_pid=$!
QURANFT_CLUSTER_DIR="$cluster_dir-rest" \
  python -m pytest -m "not (cluster and slow)" --junitxml="$out/rest.xml" "$@" > "$out/rest.log" 2>&1 &
rest_pid=$!
trap 'kill $heavy_pid $rest_pid 2>/dev/null' INT TERM

# A heartbeat, so a long run shows it is alive (the logs come whole at the end, not interleaved).
while kill -0 $heavy_pid 2>/dev/null || kill -0 $rest_pid 2>/dev/null; do
  sleep 20
  elapsed=$(( $(date +%s) - start ))
  if (( elapsed % 300 < 20 )); then
    echo "tests: ${elapsed}s; heavy: $(grep -cE ' (PASSED|FAILED|ERROR)' "$out/heavy.log") done;" \
         "rest: $(grep -cE ' (PASSED|FAILED|ERROR)' "$out/rest.log") done"
  fi
done
wait $heavy_pid; heavy_rc=$?
wait $rest_pid; rest_rc=$?

for part in rest heavy; do
  echo "================================ $part tests (log $out/$part.log) ================================"
  cat "$out/$part.log"
done
python "$root/scripts/test_areas.py" "$out/rest.xml" "$out/heavy.xml" --wall "$(( $(date +%s) - start ))"
# pytest exits 5 when a selection holds no test (e.g. -k matching only one side): not a failure here.
for rc in $heavy_rc $rest_rc; do
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then exit "$rc"; fi
done
exit 0
