//! `arrow-analytics-sink`: reads `ttp-arrow-processor`'s flight of token-transfer events
//! and writes a Hive-partitioned Parquet dataset, JSON lines and a live WebSocket feed
//! (`OUTPUT_FORMATS`), each durable output exactly once across restarts.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use flowctl_components::analytics::dataset::{FlushPolicy, DEFAULT_FLUSH_ROWS};
use flowctl_components::analytics::feed::Feed;
use flowctl_components::analytics::metrics::AnalyticsMetrics;
use flowctl_components::analytics::{OutputFormats, Outputs, OutputsConfig};
use flowctl_components::arrow::flight::{endpoint, FlightFeed};
use flowctl_components::backoff::Backoff;
use flowctl_components::shutdown::Shutdown;

/// The component's prefix for the env contract (`ARROW_ANALYTICS_SINK_ENABLE_FLOWCTL`, …).
const PREFIX: &str = "ARROW_ANALYTICS_SINK";

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Writes ttp-arrow-processor's events as Parquet (Hive-partitioned by date), JSON lines and a WebSocket feed",
    after_help = "Exit codes: 0 once the last ledger (END_LEDGER) is written or after a stop; \
                  1 on an error, named."
)]
struct Args {
    /// The processor's Flight address (host:port). TTP_SERVICE_ADDRESS, which flowctl sets
    /// from `inputs`, is read when it is absent.
    #[arg(long, env = "PROCESSOR_ENDPOINT")]
    processor_endpoint: Option<String>,
    #[arg(long, env = "TTP_SERVICE_ADDRESS", hide = true)]
    ttp_service_address: Option<String>,
    /// Any of parquet, json, websocket, comma-separated.
    #[arg(long, env = "OUTPUT_FORMATS", default_value = "parquet")]
    output_formats: String,
    /// Where the Parquet dataset (and by default the JSON lines) are written.
    #[arg(long, env = "OUTPUT_DIR", default_value = "analytics")]
    output_dir: PathBuf,
    /// The JSON lines file (default OUTPUT_DIR/events.jsonl).
    #[arg(long, env = "JSON_FILE")]
    json_file: Option<PathBuf>,
    /// The WebSocket feed's port (`ws://HOST:PORT/ws`).
    #[arg(long, env = "WEBSOCKET_PORT", default_value_t = 8080)]
    websocket_port: u16,
    /// Address the feed binds; loopback unless told otherwise.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1")]
    bind: IpAddr,
    /// First ledger written when the dataset has none yet.
    #[arg(long, env = "START_LEDGER", default_value_t = 0)]
    start_ledger: u32,
    /// Last ledger (inclusive); 0 = follow the live stream.
    #[arg(long, env = "END_LEDGER", default_value_t = 0)]
    end_ledger: u32,
    /// Longest time complete ledgers wait in memory before a Parquet file is written.
    #[arg(long, env = "FLUSH_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    flush_interval: Duration,
    /// Events buffered that make a Parquet flush.
    #[arg(long, env = "FLUSH_ROWS", default_value_t = DEFAULT_FLUSH_ROWS as u64, value_parser = clap::value_parser!(u64).range(1..))]
    flush_rows: u64,
    /// Longest wait between attempts to reach the processor.
    #[arg(long, env = "MAX_BACKOFF", default_value = "10s", value_parser = humantime::parse_duration)]
    max_backoff: Duration,
}

#[tokio::main]
async fn main() {
    flowctl_components::process::init_logging();
    flowctl_components::process::exit("arrow-analytics-sink", run(Args::parse()).await)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals()?;
    let formats = OutputFormats::parse(&args.output_formats).map_err(anyhow::Error::msg)?;
    let Some(upstream) = args
        .processor_endpoint
        .clone()
        .or(args.ttp_service_address.clone())
    else {
        anyhow::bail!("PROCESSOR_ENDPOINT (or TTP_SERVICE_ADDRESS) is not set: the processor's Flight address is required");
    };
    let flight = endpoint(&upstream).map_err(|e| anyhow::anyhow!("PROCESSOR_ENDPOINT {e}"))?;
    let metrics = Arc::new(AnalyticsMetrics::new(formats));
    let config = OutputsConfig {
        formats,
        dir: args.output_dir.clone(),
        json_file: args.json_file.clone(),
        flush: FlushPolicy {
            rows: args.flush_rows as usize,
            interval: args.flush_interval,
        },
    };
    let mut outputs = Outputs::open(&config, metrics.clone())?;
    let end = (args.end_ledger != 0).then_some(args.end_ledger);
    let start = match (outputs.resume_from(), args.start_ledger) {
        (Some(resume), start) => resume.max(start),
        (None, 0) => anyhow::bail!(
            "START_LEDGER is not set and {} holds no checkpoint: say where to start",
            args.output_dir.display()
        ),
        (None, start) => start,
    };
    let mut endpoints = Vec::new();
    if formats.websocket {
        let addr = SocketAddr::new(args.bind, args.websocket_port);
        let (feed, bound) = Feed::serve(addr, metrics.clone(), shutdown.clone())
            .await
            .with_context(|| format!("binding the WebSocket feed on {addr} (WEBSOCKET_PORT)"))?;
        endpoints.push(format!("ws://{bound}/ws"));
        outputs = outputs.with_feed(feed);
    }

    let sdk_metrics = metrics.clone();
    let sdk = flowctl_sdk::Component::from_env(PREFIX, flowctl_sdk::ServiceType::Sink)?
        .with_name("arrow-analytics-sink")
        .with_event_types(&["ttp_event_service.TTPEvent"], &[])
        .with_metadata("output_formats", formats.describe())
        .with_metadata("endpoints", endpoints.join(","))
        .with_metadata("websocket_enabled", formats.websocket.to_string())
        .with_metadata("buffer_size", args.flush_rows.to_string())
        .with_metadata("writer_threads", "1")
        .with_metadata(
            "flush_interval",
            humantime::format_duration(args.flush_interval).to_string(),
        )
        .with_metadata("output_dir", args.output_dir.display().to_string())
        .with_metrics(move || sdk_metrics.snapshot())
        .start()
        .await?;
    if end.is_some_and(|e| start > e) {
        tracing::info!(start, ?end, "every ledger of the range is already written");
        sdk.shutdown().await;
        return Ok(());
    }
    // Ready while the processor's flight is reached.
    let connected = Arc::new(AtomicBool::new(false));
    let on_connected = connected.clone();
    let mut feed = FlightFeed::new(
        flight,
        start,
        end,
        Backoff::new(Duration::from_millis(100), args.max_backoff),
    )
    .on_connected(move |up| on_connected.store(up, Ordering::Relaxed));
    tracing::info!(%upstream, start, ?end, formats = %formats.describe(), "reading the processor's flight");
    // The flight is read in its own task, so the flush ticks never interrupt a reconnect.
    let (batches_tx, mut batches) = tokio::sync::mpsc::channel(2);
    let reader = tokio::spawn(async move {
        loop {
            let next = feed.next().await;
            let last = !matches!(next, Ok(Some(_)));
            if batches_tx.send(next).await.is_err() || last {
                return;
            }
        }
    });
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut through = start.saturating_sub(1);
    let result: anyhow::Result<()> = loop {
        tokio::select! {
            next = batches.recv() => match next {
                Some(Ok(Some((batch, reached)))) => {
                    if let Err(e) = outputs.write(&batch, reached) {
                        break Err(e.into());
                    }
                    through = reached;
                }
                Some(Ok(None)) | None => break Ok(()),
                Some(Err(status)) => break Err(anyhow::anyhow!("the processor's flight: {}", status.message())),
            },
            _ = tick.tick() => {
                sdk.set_ready(connected.load(Ordering::Relaxed));
                if let Err(e) = outputs.flush_if_due() {
                    break Err(e.into());
                }
            }
            _ = shutdown.requested() => break Ok(()),
        }
    };
    reader.abort();
    // What is complete is written and checkpointed, whatever ended the loop.
    let finished = outputs.finish();
    sdk.shutdown().await;
    result?;
    finished?;
    tracing::info!(through, "stopped");
    Ok(())
}
