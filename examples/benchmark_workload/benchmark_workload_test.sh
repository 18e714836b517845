#!/bin/bash
# Runs the example briefly and checks that every row it registers ran and
# produced results equal to the serial loop's (no row reports an error).
set -euo pipefail
bin="$1"
out="${TEST_TMPDIR:-/tmp}/benchmark_workload.json"
"$bin" --benchmark_min_time=0.001 --benchmark_out="$out" \
  --benchmark_out_format=json >/dev/null
expected=(
  BM_SerialMap/collatz/items:10000
  BM_SerialMapPointer/collatz/items:10000
  BM_SerialMapInto/collatz/items:10000
  BM_PoolMap/collatz/items:10000/chunksize:64/workers:2
  BM_PoolImapUnordered/collatz/items:10000/chunksize:64/workers:2
  BM_ForkMap/collatz/items:10000/chunksize:64/workers:2
  BM_ThreadPoolMap/collatz/items:10000/chunksize:64/workers:2
)
for name in "${expected[@]}"; do
  if ! grep -q "\"name\": \"$name/real_time\"" "$out"; then
    echo "missing row: $name" >&2
    exit 1
  fi
done
if grep -q '"error_occurred": true' "$out"; then
  grep -A1 '"error_occurred": true' "$out" >&2
  exit 1
fi
rows=$(grep -c '"run_type": "iteration"' "$out")
if [[ "$rows" != "${#expected[@]}" ]]; then
  echo "expected ${#expected[@]} rows, got $rows" >&2
  exit 1
fi
echo "ok: ${#expected[@]} rows"
