//! `ttp-arrow-processor`: reads `stellar-arrow-source`'s flight of ledgers and serves their
//! token-transfer events (the same events as `ttp-processor`) as an Arrow Flight of typed
//! record batches.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use flowctl_components::arrow::flight::{self, ListenArgs};
use flowctl_components::arrow::ticket::LedgerTicket;
use flowctl_components::backoff::Backoff;
use flowctl_components::processor::flight::{EventFilter, EventFlights, FlightMetrics};
use flowctl_components::shutdown::Shutdown;
use stellar_ttp::EventsProcessor;

/// The component's prefix for the env contract (`TTP_ARROW_PROCESSOR_ENABLE_FLOWCTL`, …).
const PREFIX: &str = "TTP_ARROW_PROCESSOR";

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Serves the token-transfer events of stellar-arrow-source's ledgers as Arrow Flight record batches"
)]
struct Args {
    #[command(flatten)]
    listen: ListenArgs,
    /// The ledger source's Flight address (host:port). SOURCE_SERVICE_ADDRESS, which flowctl
    /// sets from `inputs`, is read when it is absent.
    #[arg(long, env = "SOURCE_ENDPOINT")]
    source_endpoint: Option<String>,
    #[arg(long, env = "SOURCE_SERVICE_ADDRESS", hide = true)]
    source_service_address: Option<String>,
    #[arg(long, env = "NETWORK_PASSPHRASE")]
    network_passphrase: String,
    /// Event types kept, comma-separated (transfer, mint, burn, clawback, fee); all when unset.
    #[arg(long, env = "EVENT_TYPES", default_value = "")]
    event_types: String,
    /// The range `ListFlights` offers; a `DoGet` may ask for any.
    #[arg(long, env = "START_LEDGER", default_value_t = 0)]
    start_ledger: u32,
    #[arg(long, env = "END_LEDGER", default_value_t = 0)]
    end_ledger: u32,
    /// Longest wait between attempts to reach the source.
    #[arg(long, env = "MAX_BACKOFF", default_value = "10s", value_parser = humantime::parse_duration)]
    max_backoff: Duration,
}

#[tokio::main]
async fn main() {
    flowctl_components::process::init_logging();
    flowctl_components::process::exit("ttp-arrow-processor", run(Args::parse()).await)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals()?;
    let Some(source) = args
        .source_endpoint
        .clone()
        .or(args.source_service_address.clone())
    else {
        anyhow::bail!("SOURCE_ENDPOINT (or SOURCE_SERVICE_ADDRESS) is not set: the source's Flight address is required");
    };
    let upstream = flight::endpoint(&source).map_err(|e| anyhow::anyhow!("SOURCE_ENDPOINT {e}"))?;
    let filter = EventFilter::parse(&args.event_types).map_err(anyhow::Error::msg)?;
    let on_error = flowctl_sdk::OnError::from_env(PREFIX)?;
    let letters = flowctl_sdk::DeadLetters::new(&flowctl_sdk::Config::from_env(PREFIX)?);
    let metrics = Arc::new(FlightMetrics::default());
    let offered = (args.start_ledger != 0).then(|| {
        LedgerTicket::new(
            args.start_ledger,
            (args.end_ledger != 0).then_some(args.end_ledger),
        )
    });

    let addr = args.listen.addr(8816);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr} (PORT)"))?;
    let sdk_metrics = metrics.clone();
    let sdk_letters = letters.clone();
    let sdk = flowctl_sdk::Component::from_env(PREFIX, flowctl_sdk::ServiceType::Processor)?
        .with_name("ttp-arrow-processor")
        .with_event_types(
            &["stellar_ledger_service.StellarLedger"],
            &["ttp_event_service.TTPEvent"],
        )
        .with_metadata("processor_type", "ttp_event_extraction")
        .with_metadata("event_types", filter.describe())
        .with_metadata("source_endpoint", source.clone())
        .with_metadata("network", args.network_passphrase.clone())
        .with_metadata("data_plane", "arrow-flight")
        .with_metadata("flight_endpoint", addr.to_string())
        .with_metrics(move || {
            let mut m = sdk_metrics.snapshot();
            m.insert("dead_letters_total".into(), sdk_letters.total() as f64);
            m
        })
        .start()
        .await?;
    // Ready once it serves: a flight waits for its source, reconnecting.
    sdk.set_ready(true);
    let flights = Arc::new(EventFlights {
        processor: Arc::new(EventsProcessor::new(args.network_passphrase.clone())),
        upstream,
        backoff: Backoff::new(Duration::from_millis(100), args.max_backoff),
        filter,
        offered,
        metrics: metrics.clone(),
        dead_letters: (on_error == flowctl_sdk::OnError::DeadLetter).then_some(letters),
    });
    tracing::info!(%addr, %source, "serving Arrow Flight of token-transfer events");
    flight::serve(flights, listener, &shutdown)
        .await
        .context("Flight server")?;
    sdk.shutdown().await;
    Ok(())
}
