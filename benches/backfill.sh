#!/usr/bin/env bash
# Backfill throughput on one host: a synthetic range cut by `flowctl backfill plan --engine
# commands` into shards, run WORKERS at a time (xargs -P, as a host's Slurm slots would) into
# one PostgreSQL table, against the same range as a single `flowctl run` (one worker) into a
# fresh table in the same round. Prints ledgers/s in all and per worker, beside the per-worker
# rates of Stellar's own backfills (docs: Horizon's parallel reingestion about 1 ledger/s per
# worker, Galexie about 6 ledgers/s per instance).
#
#   benches/backfill.sh [LEDGERS] [SHARDS] [WORKERS] [TXS_PER_LEDGER] [ROUNDS]
#                       (defaults 4096, 8, 2, 50 and 2)
#
# Builds the release binaries first unless PROFILE_DIR names a directory that already holds
# flowctl and the bundled programs. Needs PostgreSQL's server binaries (initdb, pg_ctl): the
# bench starts its own cluster in a temporary directory and removes it at the end. After each
# run it checks that the table holds each event once and that both ways wrote as many events.
set -euo pipefail
cd "$(dirname "$0")/.."
LEDGERS=${1:-4096}
SHARDS=${2:-8}
WORKERS=${3:-2}
TXS=${4:-50}
ROUNDS=${5:-2}
if [[ -z "${PROFILE_DIR:-}" ]]; then
  cargo build --release --workspace --bins >&2
  PROFILE_DIR=${CARGO_TARGET_DIR:-target}/release
fi
PROFILE_DIR=$(realpath "$PROFILE_DIR")
FLOWCTL=$PROFILE_DIR/flowctl
PATH=$PROFILE_DIR:$PATH
pgbin=$(dirname "$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -1)")
[[ -x $pgbin/initdb ]] || { echo "backfill.sh: PostgreSQL's initdb not found" >&2; exit 1; }

work=$(mktemp -d)
chmod 755 "$work"
port=$((20000 + RANDOM % 20000))
as_pg=()
[[ $(id -u) == 0 ]] && { chown postgres "$work"; as_pg=(runuser -u postgres --); }
cleanup() {
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
"${as_pg[@]}" "$pgbin/initdb" -D "$work/pg" -U postgres -A trust >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w \
  -o "-p $port -k $work -c listen_addresses=127.0.0.1 -c max_connections=100" start >/dev/null
psql() { "$pgbin/psql" -X -q -t -A -h 127.0.0.1 -p "$port" -U postgres "$@"; }

first=2
last=$((first + LEDGERS - 1))
shard_size=$(((LEDGERS + SHARDS - 1) / SHARDS))
source benches/bench-pipeline.sh

# Runs one database's worth of work; sets secs and rows.
timed() {
  local db=$1
  shift
  local start end
  start=$EPOCHREALTIME
  "$@" >"$work/$db.log" 2>&1 || { echo "$db failed:" >&2; tail -30 "$work/$db.log" >&2; exit 1; }
  end=$EPOCHREALTIME
  secs=$(echo "$end - $start" | bc -l)
  rows=$(psql -d "$db" -c "SELECT count(*) FROM ttp_events")
  local distinct
  distinct=$(psql -d "$db" -c "SELECT count(*) FROM (SELECT DISTINCT ledger_sequence,
      transaction_index, operation_index, event_index FROM ttp_events) k")
  [[ $rows == "$distinct" ]] || { echo "$db: $rows rows, $distinct distinct keys" >&2; exit 1; }
}

one_lps=() many_lps=() per_worker=()
for ((round = 1; round <= ROUNDS; round++)); do
  one=one_$round many=many_$round
  psql -c "CREATE DATABASE $one" -c "CREATE DATABASE $many"
  url=postgres://postgres@127.0.0.1:$port
  bench_pipeline backfill-bench "$first" "$last" "$TXS" "$url/$one" >"$work/one.yaml"
  bench_pipeline backfill-bench "$first" "$last" "$TXS" "$url/$many" >"$work/many.yaml"

  timed "$one" "$FLOWCTL" run "$work/one.yaml" --state-dir "$work/state-one" \
    --runtime-dir "$work/run-one"
  one_secs=$secs one_rows=$rows

  "$FLOWCTL" backfill plan -f "$work/many.yaml" --from-ledger "$first" --to-ledger "$last" \
    --shard-size "$shard_size" --engine commands --state-dir "$work/state-many" \
    -o "$work/shards.sh" 2>"$work/plan.log"
  shards=$(wc -l <"$work/shards.sh")
  timed "$many" env TMPDIR="$work" xargs -P "$WORKERS" -I{} bash -c {} <"$work/shards.sh"
  if ((rows != one_rows)); then
    echo "the shards wrote $rows events, one run $one_rows" >&2
    exit 1
  fi
  o=$(echo "$LEDGERS / $one_secs" | bc -l)
  m=$(echo "$LEDGERS / $secs" | bc -l)
  one_lps+=("$(printf '%.0f' "$o")") many_lps+=("$(printf '%.0f' "$m")")
  per_worker+=("$(printf '%.0f' "$(echo "$m / $WORKERS" | bc -l)")")
  printf 'round %d: one run %.0f ledgers/s (%.2f s); %d shards, %d at a time: %.0f ledgers/s (%.2f s), %.0f per worker\n' \
    "$round" "$o" "$one_secs" "$shards" "$WORKERS" "$m" "$secs" "${per_worker[-1]}"
done
median() { local s=($(printf '%s\n' "$@" | sort -n)); echo "${s[$((${#s[@]} / 2))]}"; }
printf 'ledgers %d (%d tx each), %d events into PostgreSQL each time\n' "$LEDGERS" "$TXS" "$rows"
printf 'median: one run %s ledgers/s; %d workers %s ledgers/s, %s per worker\n' \
  "$(median "${one_lps[@]}")" "$WORKERS" "$(median "${many_lps[@]}")" "$(median "${per_worker[@]}")"
printf 'per-worker rates of Stellar backfills (docs): Horizon reingest ~1 ledger/s, Galexie ~6 ledgers/s\n'
printf 'load average: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
