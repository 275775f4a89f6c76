#!/usr/bin/env bash
# Replay throughput against a plain bounded run: the same synthetic range (synthetic source as
# fast as it goes → ttp-processor → ttp-sink, JSON lines) once as `flowctl run FILE` of the
# file's `spec.range` and once as `flowctl replay -f FILE --from-ledger A --to-ledger B`, the
# two alternating in each round so they see the same machine. A replay is the same pipeline
# under another name and range, so the ratio should be about 100 %.
#
#   benches/replay.sh [LEDGERS] [TXS_PER_LEDGER] [ROUNDS]     (defaults 5000, 50 and 3)
#
# Builds the release binaries first unless PROFILE_DIR names a directory that already holds
# flowctl and the bundled programs (e.g. PROFILE_DIR=target/debug for a quick check).
# Each figure is ledgers over the wall time from the command's start to its exit (the
# components' start included); the median of the rounds is the figure.
set -euo pipefail
cd "$(dirname "$0")/.."
LEDGERS=${1:-5000}
TXS=${2:-50}
ROUNDS=${3:-3}
if [[ -z "${PROFILE_DIR:-}" ]]; then
  cargo build --release --workspace --bins >&2
  PROFILE_DIR=${CARGO_TARGET_DIR:-target}/release
fi
FLOWCTL=$PROFILE_DIR/flowctl
PATH=$PROFILE_DIR:$PATH
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
first=2
last=$((first + LEDGERS - 1))
source benches/bench-pipeline.sh
bench_pipeline replay-bench "$first" "$last" "$TXS" "$work/events.jsonl" >"$work/bench.yaml"

# One run of "$@" into a fresh output file; sets secs and events.
one_run() {
  rm -f "$work/events.jsonl" "$work/events.jsonl.checkpoint"
  local start end
  start=$EPOCHREALTIME
  "$@" --state-dir "$work/state" --runtime-dir "$work/run" >"$work/out.log" 2>&1 ||
    { echo "$* failed:" >&2; cat "$work/out.log" >&2; exit 1; }
  end=$EPOCHREALTIME
  secs=$(echo "$end - $start" | bc -l)
  events=$(wc -l <"$work/events.jsonl")
}

run_lps=() replay_lps=() ratios=()
for ((round = 1; round <= ROUNDS; round++)); do
  one_run "$FLOWCTL" run "$work/bench.yaml"
  run_secs=$secs run_events=$events
  one_run "$FLOWCTL" replay -f "$work/bench.yaml" --from-ledger "$first" --to-ledger "$last"
  if ((events != run_events)); then
    echo "replay wrote $events events, flowctl run $run_events" >&2
    exit 1
  fi
  r=$(echo "$LEDGERS / $run_secs" | bc -l)
  p=$(echo "$LEDGERS / $secs" | bc -l)
  run_lps+=("$(printf '%.0f' "$r")") replay_lps+=("$(printf '%.0f' "$p")")
  ratios+=("$(printf '%.1f' "$(echo "100 * $p / $r" | bc -l)")")
  printf 'round %d: flowctl run %.0f ledgers/s (%.2f s), flowctl replay %.0f ledgers/s (%.2f s); ratio %.0f%%\n' \
    "$round" "$r" "$run_secs" "$p" "$secs" "${ratios[-1]}"
done
median() { local s=($(printf '%s\n' "$@" | sort -n)); echo "${s[$((${#s[@]} / 2))]}"; }
printf 'ledgers %d (%d tx each), events %d each\n' "$LEDGERS" "$TXS" "$events"
printf 'median: flowctl run %s ledgers/s, flowctl replay %s ledgers/s, replay / run %.0f%% (rounds: %s)\n' \
  "$(median "${run_lps[@]}")" "$(median "${replay_lps[@]}")" "$(median "${ratios[@]}")" \
  "$(printf '%s%% ' "${ratios[@]}")"
printf 'load average: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
