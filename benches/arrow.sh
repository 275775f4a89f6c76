#!/usr/bin/env bash
# The Arrow path against the gRPC path, end to end under `flowctl run`, in one run: the same
# synthetic ledgers as fast as they go through
#   gRPC:  stellar-live-source → ttp-processor → ttp-sink (JSON lines), and
#   Arrow: stellar-arrow-source → ttp-arrow-processor → arrow-analytics-sink (Parquet),
# each round running both, one after the other. Per path: events/s over the whole run
# (start to exit, the components' start included for both), bytes per event on disk, and
# each component's CPU time and peak RSS (the kernel's accounting, from `flowctl run`).
#
#   benches/arrow.sh [LEDGERS] [TXS_PER_LEDGER] [ROUNDS]     (defaults 5000, 50 and 3)
#
# Builds the release binaries first unless PROFILE_DIR names a directory that already holds
# flowctl and the bundled programs (PROFILE_DIR=target/debug for a quick check).
set -euo pipefail
cd "$(dirname "$0")/.."
LEDGERS=${1:-5000}
TXS=${2:-50}
ROUNDS=${3:-3}
if [[ -z "${PROFILE_DIR:-}" ]]; then
  cargo build --release --workspace --bins >&2
  PROFILE_DIR=target/release
fi
FLOWCTL=$PROFILE_DIR/flowctl
export PATH="$PWD/$PROFILE_DIR:$PATH"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
first=2
last=$((first + LEDGERS - 1))
source benches/bench-pipeline.sh
bench_pipeline grpc-bench "$first" "$last" "$TXS" "$work/events.jsonl" >"$work/grpc.yaml"
cat >"$work/arrow.yaml" <<YAML
apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: arrow-bench
spec:
  range: {from_ledger: $first, to_ledger: $last}
  sources:
    - id: ledgers
      command: stellar-arrow-source
      env:
        BACKEND: synthetic
        SYNTHETIC_RATE: "0"
        SYNTHETIC_TXS_PER_LEDGER: "$TXS"
        RUST_LOG: warn
  processors:
    - id: ttp
      command: ttp-arrow-processor
      inputs: [ledgers]
      env:
        NETWORK_PASSPHRASE: "Test SDF Network ; September 2015"
        RUST_LOG: warn
  sinks:
    - id: sink
      command: arrow-analytics-sink
      inputs: [ttp]
      env:
        OUTPUT_FORMATS: parquet
        OUTPUT_DIR: "$work/parquet"
        RUST_LOG: warn
YAML

now() { echo "$EPOCHREALTIME"; }

# One run of a path: sets secs, events, bytes and usage (the components' report lines).
run_path() { # NAME
  rm -rf "$work/events.jsonl" "$work/events.jsonl.checkpoint" "$work/parquet"
  local start end
  start=$(now)
  "$FLOWCTL" run "$work/$1.yaml" --runtime-dir "$work/run-$1" 2>"$work/$1.log" ||
    { echo "flowctl run $1 failed:" >&2; cat "$work/$1.log" >&2; exit 1; }
  end=$(now)
  secs=$(echo "$end - $start" | bc -l)
  if [[ $1 == grpc ]]; then
    events=$(wc -l <"$work/events.jsonl")
    bytes=$(stat -c %s "$work/events.jsonl")
  else
    events=$(python3 -c "import pyarrow.dataset as ds; print(ds.dataset('$work/parquet', format='parquet', partitioning='hive').count_rows())")
    bytes=$(find "$work/parquet" -name '*.parquet' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
  fi
  usage=$(grep -E '^flowctl: `[^`]+` used ' "$work/$1.log" | sed 's/^flowctl: /    /')
}

for ((round = 1; round <= ROUNDS; round++)); do
  for path in grpc arrow; do
    run_path "$path"
    printf 'round %d %-5s: %.0f events/s (%d events in %.2f s), %.1f bytes/event on disk\n' \
      "$round" "$path" "$(echo "$events / $secs" | bc -l)" "$events" "$secs" \
      "$(echo "$bytes / $events" | bc -l)"
    echo "$usage"
  done
done
printf 'ledgers %d (%d tx each)\n' "$LEDGERS" "$TXS"
