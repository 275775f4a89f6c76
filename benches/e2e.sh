#!/usr/bin/env bash
# End-to-end throughput of the bundled pipeline under `flowctl run`: the synthetic source as
# fast as it goes → ttp-processor → ttp-sink (JSON lines), against the processor's own work
# done in-process on the same generated ledgers (decode + events, one thread, no I/O), and the
# CPU time and peak RSS of flowctl and of each component.
#
#   benches/e2e.sh [LEDGERS] [TXS_PER_LEDGER] [ROUNDS]     (defaults 5000, 50 and 3)
#
# Builds the release binaries first unless PROFILE_DIR names a directory that already holds
# flowctl and the bundled programs (e.g. PROFILE_DIR=target/debug for a quick check; the
# in-process figure is skipped for a debug directory, it is only meaningful optimised).
# "streaming" is from the first event in the sink's file to flowctl's exit, i.e. without the
# components' start; the ratio is taken on it. Each round measures the processor in-process
# and then the pipeline, so a ratio compares runs made moments apart: on a shared virtual
# machine the speed of the second core drifts, and the median of the rounds is the figure.
set -euo pipefail
cd "$(dirname "$0")/.."
LEDGERS=${1:-5000}
TXS=${2:-50}
ROUNDS=${3:-3}
if [[ -z "${PROFILE_DIR:-}" ]]; then
  cargo build --release --workspace --bins >&2
  PROFILE_DIR=target/release
fi
optimised=true
[[ "$PROFILE_DIR" == *debug* ]] && optimised=false
if $optimised; then
  cargo bench -q -p flowctl-components --bench throughput --no-run 2>/dev/null
fi
FLOWCTL=$PROFILE_DIR/flowctl
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
first=2
last=$((first + LEDGERS - 1))
source benches/bench-pipeline.sh
bench_pipeline e2e-bench "$first" "$last" "$TXS" "$work/events.jsonl" >"$work/bench.yaml"

tick=$(getconf CLK_TCK)
# The monitor shares the two cores with the pipeline, so it does as little as it can: the
# components' CPU time and peak RSS come from `flowctl run`'s own report (the kernel's
# accounting, handed over when it reaps them); the monitor only watches for the first event
# (a builtin file test every 20 ms) and reads flowctl's own /proc entries every 200 ms, with
# bash builtins, $EPOCHREALTIME, and a `read -t` on a pipe nobody writes as the pause.
now() { echo "$EPOCHREALTIME"; }
exec {pause}<> <(:)
flowctl_peak=0 flowctl_cpu=0
# flowctl's peak RSS (VmHWM, kB, a high-water mark) and CPU time so far (clock ticks).
sample_flowctl() {
  local key val line
  while read -r key val _; do
    if [[ $key == VmHWM: ]]; then
      ((val > flowctl_peak)) && flowctl_peak=$val
      break
    fi
  done <"/proc/$1/status" 2>/dev/null
  read -r line <"/proc/$1/stat" 2>/dev/null || return 0
  local -a fields=(${line##*) })
  flowctl_cpu=$((fields[11] + fields[12]))
}

# The machine's busy and total jiffies so far (from /proc/stat's `cpu` line).
cpu_jiffies() {
  local _cpu user nice system idle iowait irq softirq steal
  read -r _cpu user nice system idle iowait irq softirq steal _ </proc/stat
  echo "$((user + nice + system + irq + softirq)) $((user + nice + system + idle + iowait + irq + softirq + steal))"
}

# One pipeline run; sets streaming, secs, events, busy (the share of both cores in use while
# streaming) and usage (the components' report lines).
pipeline_round() {
  rm -f "$work/events.jsonl" "$work/events.jsonl.checkpoint"
  flowctl_peak=0 flowctl_cpu=0
  local start pid polls=0 end
  start=$(now)
  first_event=
  "$FLOWCTL" run "$work/bench.yaml" --runtime-dir "$work/run" 2>"$work/flowctl.log" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if [[ -z "$first_event" && -s "$work/events.jsonl" ]]; then
      first_event=$(now)
      read -r busy0 total0 < <(cpu_jiffies)
    fi
    if ((polls++ % 10 == 0)); then sample_flowctl "$pid"; fi
    read -r -t 0.02 -u "$pause" || true
  done
  wait "$pid" || { echo "flowctl run failed:" >&2; cat "$work/flowctl.log" >&2; exit 1; }
  end=$(now)
  read -r busy1 total1 < <(cpu_jiffies)
  busy=$(((busy1 - ${busy0:-0}) * 100 / (total1 - ${total0:-0} + 1)))
  events=$(wc -l <"$work/events.jsonl")
  secs=$(echo "$end - $start" | bc -l)
  streaming=$(echo "$end - ${first_event:-$start}" | bc -l)
  usage=$(grep -E '^flowctl: `[^`]+` used ' "$work/flowctl.log")
}

ratios=()
for ((round = 1; round <= ROUNDS; round++)); do
  in_lps=
  if $optimised; then
    inprocess=$(cargo bench -q -p flowctl-components --bench throughput -- inprocess "$LEDGERS" "$TXS" |
      grep '^in-process:')
    in_lps=$(sed -E 's/.* ([0-9.]+) ledgers\/s.*/\1/' <<<"$inprocess")
  fi
  pipeline_round
  e2e_lps=$(echo "$LEDGERS / $streaming" | bc -l)
  printf 'round %d: end-to-end %.0f ledgers/s, %.0f events/s (%.2f s streaming, cores %d%% busy; %.2f s with start)' \
    "$round" "$e2e_lps" "$(echo "$events / $streaming" | bc -l)" "$streaming" "$busy" "$secs"
  if [[ -n "$in_lps" ]]; then
    ratio=$(echo "100 * $e2e_lps / $in_lps" | bc -l)
    ratios+=("$(printf '%.1f' "$ratio")")
    printf '; in-process %.0f ledgers/s; ratio %.0f%%' "$in_lps" "$ratio"
  fi
  echo
done
printf 'ledgers %d (%d tx each), events %d\n' "$LEDGERS" "$TXS" "$events"
if ((${#ratios[@]})); then
  sorted=($(printf '%s\n' "${ratios[@]}" | sort -n))
  printf 'ratio end-to-end / in-process: median %.0f%% (rounds: %s)\n' \
    "${sorted[$((${#sorted[@]} / 2))]}" "$(printf '%s%% ' "${ratios[@]}")"
fi
echo "last round, per process:"
# flowctl: `ledgers` used 1.39 s CPU, peak RSS 62.1 MiB
while read -r _ id _ cpu_s _ _ _ _ mib _; do
  printf '%-16s peak RSS %7.0f kB, CPU %6.2f s (%.3f ms a ledger)\n' "${id//\`/}" \
    "$(echo "$mib * 1024" | bc -l)" "$cpu_s" "$(echo "1000 * $cpu_s / $LEDGERS" | bc -l)"
done <<<"$usage"
printf '%-16s peak RSS %7d kB, CPU %6.2f s (%.3f ms a ledger)\n' flowctl "$flowctl_peak" \
  "$(echo "$flowctl_cpu / $tick" | bc -l)" "$(echo "1000 * $flowctl_cpu / $tick / $LEDGERS" | bc -l)"
if [[ -n "${in_lps:-}" ]]; then
  printf 'in-process CPU (last round): %.3f ms a ledger\n' "$(echo "1000 / $in_lps" | bc -l)"
fi
printf 'load average: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
