# Sourced by the bench scripts: the pipeline they measure, printed as YAML.
#   bench_pipeline NAME FIRST LAST TXS_PER_LEDGER OUTPUT
# The synthetic source as fast as it goes → ttp-processor → ttp-sink, over the ledgers
# FIRST..=LAST (spec.range hands them to the source and the sink). OUTPUT is a JSON-lines
# file, or a postgres:// URL for the PostgreSQL sink.
bench_pipeline() {
  local sink="SINK: jsonl
        OUTPUT_FILE: \"$5\""
  if [[ $5 == postgres://* ]]; then
    sink="SINK: postgres
        DATABASE_URL: \"$5\"
        SINK_ID: $1"
  fi
  cat <<YAML
apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: $1
spec:
  range: {from_ledger: $2, to_ledger: $3}
  sources:
    - id: ledgers
      command: stellar-live-source
      env:
        BACKEND: synthetic
        SYNTHETIC_RATE: "0"
        SYNTHETIC_TXS_PER_LEDGER: "$4"
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
        $sink
        RUST_LOG: warn
YAML
}
