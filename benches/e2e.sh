#!/usr/bin/env bash
# End-to-end throughput of the bundled pipeline under `flowctl run`: the synthetic source as
# fast as it goes → ttp-processor → ttp-sink (JSON lines), and the peak RSS of each process.
#
#   benches/e2e.sh [LEDGERS] [TXS_PER_LEDGER]        (defaults 2000 and 50)
#
# Builds the release binaries first unless PROFILE_DIR names a directory that already holds
# flowctl and the bundled programs (e.g. PROFILE_DIR=target/debug for a quick check).
# Compare with the processor in-process on the same generated ledgers:
#   cargo bench -p stellar-ttp
set -euo pipefail
cd "$(dirname "$0")/.."
LEDGERS=${1:-2000}
TXS=${2:-50}
if [[ -z "${PROFILE_DIR:-}" ]]; then
  cargo build --release --workspace --bins >&2
  PROFILE_DIR=target/release
fi
FLOWCTL=$PROFILE_DIR/flowctl
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
first=2
last=$((first + LEDGERS - 1))
cat >"$work/bench.yaml" <<YAML
apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: e2e-bench
spec:
  sources:
    - id: ledgers
      command: stellar-live-source
      env:
        BACKEND: synthetic
        START_LEDGER: "$first"
        END_LEDGER: "$last"
        SYNTHETIC_RATE: "0"
        SYNTHETIC_TXS_PER_LEDGER: "$TXS"
        RUST_LOG: warn
  processors:
    - id: ttp
      command: ttp-processor
      inputs: [ledgers]
      env:
        NETWORK_PASSPHRASE: "Test SDF Network ; September 2015"
        LOG_LEVEL: warn
  sinks:
    - id: sink
      command: ttp-sink
      inputs: [ttp]
      env:
        SINK: jsonl
        OUTPUT_FILE: "$work/events.jsonl"
        START_LEDGER: "$first"
        END_LEDGER: "$last"
        RUST_LOG: warn
YAML

declare -A peak=()
start=$(date +%s.%N)
"$FLOWCTL" run "$work/bench.yaml" --runtime-dir "$work/run" 2>"$work/flowctl.log" &
pid=$!
# Peak RSS (kB) of each component, sampled every 50 ms from /proc.
while kill -0 "$pid" 2>/dev/null; do
  for child in $(pgrep -P "$pid" || true); do
    name=$(cat "/proc/$child/comm" 2>/dev/null || true)
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$child/status" 2>/dev/null || true)
    if [[ -n "$name" && -n "$rss" ]] && ((rss > ${peak[$name]:-0})); then
      peak[$name]=$rss
    fi
  done
  sleep 0.05
done
wait "$pid" || { echo "flowctl run failed:" >&2; cat "$work/flowctl.log" >&2; exit 1; }
end=$(date +%s.%N)
events=$(wc -l <"$work/events.jsonl")
secs=$(echo "$end - $start" | bc -l)
printf 'ledgers %d, events %d, %.2f s (including start and drain)\n' "$LEDGERS" "$events" "$secs"
printf 'end-to-end: %.0f ledgers/s, %.0f events/s\n' \
  "$(echo "$LEDGERS / $secs" | bc -l)" "$(echo "$events / $secs" | bc -l)"
for name in "${!peak[@]}"; do
  printf 'peak RSS %-20s %6d kB\n' "$name" "${peak[$name]}"
done
