//! `stellar-arrow-source`: the ledgers of `stellar-live-source`'s backends (data lake, Stellar
//! RPC, synthetic) as an Arrow Flight service, one flight per ledger range.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use flowctl_components::arrow::flight::{self, ListenArgs};
use flowctl_components::arrow::ticket::LedgerTicket;
use flowctl_components::shutdown::Shutdown;
use flowctl_components::source::config::{BackendArgs, BackendKind};
use flowctl_components::source::flight::LedgerFlights;
use flowctl_components::source::metrics::SourceMetrics;
use flowctl_components::source::server::LedgerService;

/// The component's prefix for the env contract (`STELLAR_ARROW_SOURCE_ENABLE_FLOWCTL`, …).
const PREFIX: &str = "STELLAR_ARROW_SOURCE";

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Serves Stellar ledgers as Arrow Flight record batches from a data lake, RPC or a synthetic generator"
)]
struct Args {
    #[command(flatten)]
    listen: ListenArgs,
    /// Most ledgers in one record batch (a batch is also sent at 16 MiB of XDR).
    #[arg(long, env = "BATCH_SIZE", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    #[command(flatten)]
    source: BackendArgs,
}

#[tokio::main]
async fn main() {
    flowctl_components::process::init_logging();
    flowctl_components::process::exit("stellar-arrow-source", run(Args::parse()).await)
}

/// Where the ledgers are kept, in the seed's `storage_type` words.
fn storage_type(args: &BackendArgs) -> &'static str {
    match args.kind() {
        BackendKind::Datalake => match args.datalake_url.as_deref() {
            Some(u) if u.starts_with("s3://") => "S3",
            Some(u) if u.starts_with("gs://") => "GCS",
            _ => "FS",
        },
        BackendKind::Rpc => "rpc",
        BackendKind::Synthetic => "synthetic",
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals()?;
    let kind = args.source.kind();
    let end = args.source.end();
    let on_error = flowctl_sdk::OnError::from_env(PREFIX)?;
    let letters = flowctl_sdk::DeadLetters::new(&flowctl_sdk::Config::from_env(PREFIX)?);
    let set_aside = (on_error == flowctl_sdk::OnError::DeadLetter).then(|| letters.clone());
    let backend = tokio::select! {
        b = args.source.open(set_aside) => b?,
        _ = shutdown.requested() => return Ok(()),
    };
    let metrics = Arc::new(SourceMetrics::default());
    let default_start = args.source.default_start();
    let ledgers = LedgerService::new(
        Arc::new(backend),
        default_start,
        end,
        args.source.poll_interval,
        metrics.clone(),
    )
    .with_shutdown(shutdown.clone());
    let offered = (default_start != 0).then(|| LedgerTicket::new(default_start, end));
    let flights = Arc::new(LedgerFlights::new(
        Arc::new(ledgers),
        offered,
        args.batch_size as usize,
    ));

    let addr = args.listen.addr(8815);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr} (PORT)"))?;
    let kind_word = format!("{kind:?}").to_lowercase();
    let (batches, bytes) = (flights.batches_sent.clone(), flights.bytes_sent.clone());
    let sdk_metrics = metrics.clone();
    let sdk = flowctl_sdk::Component::from_env(PREFIX, flowctl_sdk::ServiceType::Source)?
        .with_name("stellar-arrow-source")
        .with_event_types(&[], &["stellar_ledger_service.StellarLedger"])
        .with_metadata("network", args.source.network_passphrase.clone())
        .with_metadata("storage_type", storage_type(&args.source))
        .with_metadata("backend_type", kind_word.clone())
        .with_metadata("batch_size", args.batch_size.to_string())
        .with_metadata("compression", "none")
        .with_metadata("data_plane", "arrow-flight")
        .with_metadata("flight_endpoint", addr.to_string())
        .with_metrics(move || {
            let mut m = sdk_metrics.snapshot();
            m.insert(
                "arrow_batches_sent_total".into(),
                batches.load(Ordering::Relaxed) as f64,
            );
            m.insert(
                "arrow_bytes_sent_total".into(),
                bytes.load(Ordering::Relaxed) as f64,
            );
            m.insert("dead_letters_total".into(), letters.total() as f64);
            m
        })
        .start()
        .await?;
    sdk.set_ready(true);
    tracing::info!(%addr, backend = %kind_word, ?end, "serving Arrow Flight");
    flight::serve(flights, listener, &shutdown)
        .await
        .context("Flight server")?;
    sdk.shutdown().await;
    tracing::info!(ledgers = metrics.processed(), "stopped");
    Ok(())
}
