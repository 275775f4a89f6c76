//! `ttp-sink`: reads token-transfer events from `EventService.GetTTPEvents` and writes them
//! to the console, a JSON-lines file, or PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use clap::{Parser, ValueEnum};
use flowctl_components::shutdown::Shutdown;
use flowctl_components::sink::driver::{Driver, Target};
use flowctl_components::sink::health::Readiness;
use flowctl_components::sink::jsonl_file::JsonlFile;
use flowctl_components::sink::metrics::SinkMetrics;
use flowctl_components::sink::output::Output;
use flowctl_components::sink::postgres::{checkpoint_id, PgSink};
use flowctl_components::sink::SinkError;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum SinkKind {
    Console,
    Jsonl,
    Postgres,
}

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Writes token-transfer events to the console, a JSON-lines file or PostgreSQL",
    after_help = "FLOWCTL_ON_ERROR=dead-letter (set by flowctl from `on_error`): a ledger whose \
                  events PostgreSQL rejects (SQLSTATE class 22 or 23) is recorded as a dead \
                  letter and passed over; with `fail` (the default) the sink stops naming it.\n\n\
                  Exit codes: 0 once the last ledger (END_LEDGER) is committed or after a \
                  stop; 65 when a newer copy of this sink claimed its PostgreSQL checkpoint \
                  row (a requeued shard): this copy is stale, wrote nothing more, and flowctl \
                  does not restart it; 1 on any other error."
)]
struct Args {
    #[arg(
        long,
        env = "SINK",
        value_enum,
        ignore_case = true,
        default_value = "console"
    )]
    sink: SinkKind,
    /// The processor's EventService, `host:port` or an http:// URL.
    #[arg(long, env = "TTP_SERVICE_ADDRESS", default_value = "127.0.0.1:50052")]
    ttp_service_address: String,
    #[arg(long, env = "START_LEDGER", default_value_t = 0)]
    start_ledger: u32,
    /// Last ledger (inclusive); 0 = follow the live stream.
    #[arg(long, env = "END_LEDGER", default_value_t = 0)]
    end_ledger: u32,
    /// JSON-lines file (appended; exactly once across restarts, through its sidecar
    /// OUTPUT_FILE.checkpoint); stdout when absent.
    #[arg(long, env = "OUTPUT_FILE")]
    output_file: Option<String>,
    /// PostgreSQL connection string (URL or key=value form).
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Name of this sink's checkpoint row, so several sinks can share a database; a bounded
    /// run (END_LEDGER set) keeps its own row, SINK_ID@START_LEDGER-END_LEDGER.
    #[arg(long, env = "SINK_ID")]
    sink_id: Option<String>,
    /// Partition the PostgreSQL table ttp_events by ranges of this many ledgers
    /// (ttp_events_<from>_<to>, created as batches need them); a table already made the
    /// other way is an error.
    #[arg(long, env = "PG_PARTITION_LEDGERS", value_parser = clap::value_parser!(u32).range(1..))]
    pg_partition_ledgers: Option<u32>,
    #[arg(long, env = "FLUSH_EVENTS", default_value_t = 5000)]
    flush_events: usize,
    #[arg(long, env = "FLUSH_INTERVAL", default_value = "200ms", value_parser = humantime::parse_duration)]
    flush_interval: Duration,
    /// Longest wait between two reconnection attempts.
    #[arg(long, env = "MAX_BACKOFF", default_value = "10s", value_parser = humantime::parse_duration)]
    max_backoff: Duration,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: under a supervisor the lines go to a journal or a log.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Args::parse()).await {
        Ok(()) => {}
        Err(e) => {
            eprintln!("ttp-sink: {e:#}");
            let code = e
                .downcast_ref::<SinkError>()
                .map_or(1, SinkError::exit_code);
            std::process::exit(code);
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals()?;
    let readiness = Readiness::not_ready("starting");
    let end = (args.end_ledger != 0).then_some(args.end_ledger);
    // With `on_error: dead-letter`, a ledger the store rejects is recorded and passed over.
    let on_error = flowctl_sdk::OnError::from_env("TTP_SINK")?;
    let letters = flowctl_sdk::DeadLetters::new(&flowctl_sdk::Config::from_env("TTP_SINK")?);
    let set_aside = (on_error == flowctl_sdk::OnError::DeadLetter).then(|| letters.clone());
    let target = match args.sink {
        SinkKind::Console => Target::Output(Output::Console),
        SinkKind::Jsonl => match &args.output_file {
            Some(path) => {
                let file = JsonlFile::open(path.as_ref())?;
                // A replay must write its range or fail: "nothing to do" here would let a
                // dead letter of that range be resolved with its ledger written nowhere.
                if let (Ok(replay), Some(end)) = (std::env::var("FLOWCTL_REPLAY"), end) {
                    if file.checkpoint() >= end {
                        bail!(
                            "replay {replay}: OUTPUT_FILE {path} already holds ledgers through {} \
                             (its checkpoint), past END_LEDGER {end}; a JSON-lines file only \
                             grows in ledger order, so {}-{end} cannot be written into it again: \
                             replay into another OUTPUT_FILE or a PostgreSQL sink",
                            file.checkpoint(),
                            args.start_ledger
                        );
                    }
                }
                Target::File(file)
            }
            None => Target::Output(Output::jsonl_stdout()),
        },
        SinkKind::Postgres => {
            let Some(url) = &args.database_url else {
                bail!("SINK=postgres needs DATABASE_URL (e.g. postgres://user@localhost/db)");
            };
            let id = args
                .sink_id
                .clone()
                .or_else(|| std::env::var("COMPONENT_ID").ok())
                // Under flowctl each sink's checkpoint is its component id.
                .or_else(|| std::env::var("FLOWCTL_COMPONENT_ID").ok())
                .unwrap_or_else(|| "ttp-sink".into());
            let id = checkpoint_id(&id, args.start_ledger, end);
            Target::Postgres(
                PgSink::new(url, &id, readiness.clone())
                    .with_max_backoff(args.max_backoff)
                    .with_partitions(args.pg_partition_ledgers),
            )
        }
    };
    // Registration, heartbeats and /health on HEALTH_PORT, through the component SDK.
    let metrics = Arc::new(SinkMetrics::default());
    let sdk_metrics = metrics.clone();
    let sdk = flowctl_sdk::Component::from_env("TTP_SINK", flowctl_sdk::ServiceType::Sink)?
        .with_name("ttp-sink")
        .with_event_types(&["token_transfer.TokenTransferEvent"], &[])
        .with_metadata("sink", format!("{:?}", args.sink).to_lowercase())
        .with_metrics(move || {
            let mut m = sdk_metrics.snapshot();
            m.insert("dead_letters_total".into(), letters.total() as f64);
            m
        })
        .start()
        .await?;
    readiness.attach(sdk);
    let driver = Driver {
        addr: args.ttp_service_address.clone(),
        start: args.start_ledger,
        end,
        target,
        readiness: readiness.clone(),
        metrics,
        flush_events: args.flush_events.max(1),
        flush_interval: args.flush_interval,
        max_backoff: args.max_backoff,
        dead_letters: set_aside,
    };
    // On SIGTERM the driver writes the complete ledgers it holds and returns; a write that
    // cannot finish in the grace period (a database that does not answer) is given up, and
    // its ledgers are asked for again by the next run.
    let result = tokio::select! {
        s = driver.run_until(shutdown.requested()) => s.map(Some),
        _ = shutdown.grace_over() => {
            tracing::warn!("stopping without the last write: it did not finish in time");
            Ok(None)
        }
    };
    readiness.shutdown().await;
    if let Some(summary) = result? {
        tracing::info!(
            events = summary.events,
            through = summary.through,
            dead_letters = summary.dead_letters,
            "done"
        );
    }
    Ok(())
}
