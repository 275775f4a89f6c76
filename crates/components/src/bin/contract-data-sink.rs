//! `contract-data-sink`: reads `contract-data-processor`'s Arrow Flight and writes the
//! changes into PostgreSQL's `contract_data.entries`, a COPY and a checkpoint per batch in
//! one transaction, so a restart (or a kill -9) goes on after the last committed batch.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use flowctl_components::arrow::flight;
use flowctl_components::backoff::Backoff;
use flowctl_components::contract_data::batches;
use flowctl_components::contract_data::postgres::EntriesSink;
use flowctl_components::shutdown::Shutdown;
use flowctl_components::sink::health::Readiness;
use flowctl_components::sink::metrics::SinkMetrics;
use flowctl_components::sink::pg::checkpoint_id;
use flowctl_components::sink::SinkError;

const PREFIX: &str = "CONTRACT_DATA_SINK";

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Writes contract-data-processor's changes into PostgreSQL (contract_data.entries)",
    after_help = "Exit codes: 0 once the last ledger (END_LEDGER) is committed or after a stop; \
                  65 when a newer copy of this sink claimed its checkpoint row (this copy is \
                  stale and flowctl does not restart it); 1 on any other error."
)]
struct Args {
    /// The processor's Arrow Flight (host:port). SOURCE_SERVICE_ADDRESS or
    /// TTP_SERVICE_ADDRESS, which flowctl sets from `inputs`, is read when it is absent.
    #[arg(long, env = "PROCESSOR_ENDPOINT")]
    processor_endpoint: Option<String>,
    #[arg(long, env = "SOURCE_SERVICE_ADDRESS", hide = true)]
    source_service_address: Option<String>,
    #[arg(long, env = "TTP_SERVICE_ADDRESS", hide = true)]
    ttp_service_address: Option<String>,
    /// PostgreSQL connection string (URL or key=value form).
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[arg(long, env = "START_LEDGER", default_value_t = 0)]
    start_ledger: u32,
    /// Last ledger (inclusive); 0 = follow the live stream.
    #[arg(long, env = "END_LEDGER", default_value_t = 0)]
    end_ledger: u32,
    /// Name of this sink's checkpoint row (contract_data.sink_checkpoints); a bounded run
    /// keeps its own, SINK_ID@START_LEDGER-END_LEDGER. The component id under flowctl.
    #[arg(long, env = "SINK_ID")]
    sink_id: Option<String>,
    /// Longest wait between two reconnection attempts.
    #[arg(long, env = "MAX_BACKOFF", default_value = "10s", value_parser = humantime::parse_duration)]
    max_backoff: Duration,
}

#[tokio::main]
async fn main() {
    flowctl_components::process::init_logging();
    if let Err(e) = run(Args::parse()).await {
        eprintln!("contract-data-sink: {e:#}");
        let code = e
            .downcast_ref::<SinkError>()
            .map_or(1, SinkError::exit_code);
        std::process::exit(code);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals()?;
    let Some(processor) = args
        .processor_endpoint
        .clone()
        .or(args.source_service_address.clone())
        .or(args.ttp_service_address.clone())
    else {
        anyhow::bail!("PROCESSOR_ENDPOINT (or SOURCE_SERVICE_ADDRESS) is not set: the processor's Flight address is required");
    };
    let endpoint =
        flight::endpoint(&processor).map_err(|e| anyhow::anyhow!("PROCESSOR_ENDPOINT {e}"))?;
    let end = (args.end_ledger != 0).then_some(args.end_ledger);
    let id = args
        .sink_id
        .clone()
        .or_else(|| std::env::var("FLOWCTL_COMPONENT_ID").ok())
        .unwrap_or_else(|| "contract-data-sink".into());
    let row = checkpoint_id(&id, args.start_ledger, end);
    let readiness = Readiness::not_ready("starting");
    let mut sink = EntriesSink::new(&args.database_url, &row, readiness.clone())
        .with_max_backoff(args.max_backoff);

    let metrics = Arc::new(SinkMetrics::default());
    let sdk_metrics = metrics.clone();
    let sdk = flowctl_sdk::Component::from_env(PREFIX, flowctl_sdk::ServiceType::Sink)?
        .with_name("contract-data-sink")
        .with_event_types(&["contract_data.ArrowBatch"], &[])
        .with_metadata("sink", "postgres")
        .with_metadata("table", "contract_data.entries")
        .with_metadata("processor_endpoint", processor.clone())
        .with_metrics(move || sdk_metrics.snapshot())
        .start()
        .await?;
    readiness.attach(sdk);

    let result = tokio::select! {
        r = write_all(&mut sink, endpoint, &args, end, &readiness, &metrics, &shutdown) => r,
        _ = shutdown.grace_over() => {
            tracing::warn!("stopping without the last write: it did not finish in time");
            Ok(())
        }
    };
    readiness.shutdown().await;
    result
}

/// Reads the flight from after the checkpoint and commits each batch with its checkpoint,
/// until a bounded range is done or the sink is told to stop.
async fn write_all(
    sink: &mut EntriesSink,
    endpoint: tonic::transport::Endpoint,
    args: &Args,
    end: Option<u32>,
    readiness: &Readiness,
    metrics: &SinkMetrics,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let mut resume = tokio::select! {
        r = sink.checkpoint() => r?,
        _ = shutdown.requested() => return Ok(()),
    };
    if let Some(end) = end {
        if resume >= end && resume > 0 {
            // Written before: write it again (identical rows stay as they are).
            let before = args.start_ledger.saturating_sub(1);
            tracing::info!(
                checkpoint = resume,
                "this range was written before: writing it again from START_LEDGER"
            );
            sink.reset_checkpoint(before).await?;
            resume = before;
        }
    }
    let next = if resume > 0 {
        args.start_ledger.max(resume + 1)
    } else {
        args.start_ledger
    };
    if resume > 0 && resume >= args.start_ledger {
        tracing::info!(checkpoint = resume, next, "resuming after the checkpoint");
    }
    let connected = readiness.clone();
    let mut feed = flight::FlightFeed::new(
        endpoint,
        next,
        end,
        Backoff::new(Duration::from_millis(100), args.max_backoff),
    )
    .on_connected(move |up| {
        if up {
            connected.set_ready();
        } else {
            connected.set_degraded("the processor's flight is unreachable; reconnecting");
        }
    });
    let (mut rows, mut through) = (0u64, resume);
    loop {
        let next = tokio::select! {
            n = feed.next() => n,
            _ = shutdown.requested() => break,
        };
        let Some((batch, to)) = next.map_err(|s| SinkError::Upstream {
            addr: args
                .processor_endpoint
                .clone()
                .or(args.source_service_address.clone())
                .unwrap_or_default(),
            message: s.message().to_string(),
        })?
        else {
            break;
        };
        let changes = batches::from_batch(&batch).context("the processor's flight")?;
        sink.write(&changes, to).await?;
        metrics.written(changes.len() as u64, to);
        rows += changes.len() as u64;
        through = to;
    }
    tracing::info!(rows, through, "done");
    Ok(())
}
