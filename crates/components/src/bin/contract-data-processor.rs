//! `contract-data-processor`: the contract-data changes of Soroban ledgers. Without a
//! subcommand it runs as a pipeline component: it reads ledgers from `RawLedgerService` and
//! serves their changes as an Arrow Flight (record batches) and as
//! `contract_data.ContractDataService` (a stream of messages). `extract` turns ledger files
//! into JSON lines.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use flowctl_components::arrow::flight::{self, ListenArgs, RangeFlights};
use flowctl_components::arrow::ticket::LedgerTicket;
use flowctl_components::backoff::Backoff;
use flowctl_components::contract_data::metrics::ContractDataMetrics;
use flowctl_components::contract_data::service::Processor;
use flowctl_components::processor::config::parse_listen;
use flowctl_components::processor::readiness::Readiness;
use flowctl_components::processor::{extract, upstream};
use flowctl_components::shutdown::Shutdown;
use flowctl_proto::contract_data::contract_data_service_server::ContractDataServiceServer;
use stellar_contract_data::{Extractor, Filter};
use stellar_ledgers::LedgerRange;

/// The component's prefix for the env contract (`CONTRACT_DATA_PROCESSOR_ENABLE_FLOWCTL`, …).
const PREFIX: &str = "CONTRACT_DATA_PROCESSOR";

#[derive(Parser)]
#[command(
    name = "contract-data-processor",
    version,
    about = "Soroban contract-data changes (CONTRACT_DATA entries created, updated, removed, evicted, restored)",
    after_help = "Without a command it runs as a pipeline component: it reads ledgers from \
RawLedgerService at SOURCE_ENDPOINT (or SOURCE_SERVICE_ADDRESS, which flowctl sets from \
`inputs`) and serves the Arrow Flight and contract_data.ContractDataService on one port, PORT \
(default 8816), unless FLIGHT_ADDRESS and GRPC_ADDRESS put them apart. /health and /metrics \
(contract_data_…) are on HEALTH_PORT (default 8089). FLOWCTL_ENABLED (or ENABLE_FLOWCTL) \
registers it with the control plane as SERVICE_NAME."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    component: ComponentArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Write the contract-data changes of ledger files or a data lake to stdout as JSON lines.
    Extract {
        #[arg(long, env = "NETWORK_PASSPHRASE")]
        network_passphrase: String,
        /// First ledger (inclusive); required for a data lake.
        #[arg(long)]
        start: Option<u32>,
        /// Last ledger (inclusive).
        #[arg(long)]
        end: Option<u32>,
        #[command(flatten)]
        filters: FilterArgs,
        /// Base64 lines, raw XDR, zstd batch or frame files, or data-lake directories.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
}

#[derive(Args, Debug, Clone)]
struct FilterArgs {
    /// Only these contracts (comma-separated C… strkeys).
    #[arg(long, env = "FILTER_CONTRACT_IDS", default_value = "")]
    filter_contract_ids: String,
    /// Only the Stellar Asset Contracts of these asset codes (`native` for XLM)…
    #[arg(long, env = "FILTER_ASSET_CODES", default_value = "")]
    filter_asset_codes: String,
    /// …and of these issuers (G… strkeys).
    #[arg(long, env = "FILTER_ASSET_ISSUERS", default_value = "")]
    filter_asset_issuers: String,
    /// Removed and evicted entries too.
    #[arg(long, env = "INCLUDE_DELETED", default_value_t = true, action = clap::ArgAction::Set)]
    include_deleted: bool,
}

impl FilterArgs {
    fn filter(&self, passphrase: &str) -> anyhow::Result<Filter> {
        Ok(Filter::new(
            passphrase,
            &self.filter_contract_ids,
            &self.filter_asset_codes,
            &self.filter_asset_issuers,
            self.include_deleted,
        )?)
    }
}

#[derive(Args, Debug)]
struct ComponentArgs {
    #[command(flatten)]
    listen: ListenArgs,
    /// Arrow Flight address (host:port or Go's :port); PORT on LISTEN_ADDR when unset.
    #[arg(long, env = "FLIGHT_ADDRESS")]
    flight_address: Option<String>,
    /// ContractDataService address; the Flight's when unset (one port serves both).
    #[arg(long, env = "GRPC_ADDRESS")]
    grpc_address: Option<String>,
    /// The ledger source's RawLedgerService (host:port).
    #[arg(long, env = "SOURCE_ENDPOINT")]
    source_endpoint: Option<String>,
    #[arg(long, env = "SOURCE_SERVICE_ADDRESS", hide = true)]
    source_service_address: Option<String>,
    #[arg(long, env = "NETWORK_PASSPHRASE")]
    network_passphrase: Option<String>,
    #[command(flatten)]
    filters: FilterArgs,
    /// Rows per Flight record batch; a batch never splits a ledger.
    #[arg(long, env = "BATCH_SIZE", default_value_t = 10_000)]
    batch_size: usize,
    /// Longest a Flight holds rows back while ledgers arrive slowly.
    #[arg(long, env = "BATCH_WAIT", default_value = "1s", value_parser = humantime::parse_duration)]
    batch_wait: Duration,
    /// The range `ListFlights` offers; a `DoGet` may ask for any.
    #[arg(long, env = "START_LEDGER", default_value_t = 0)]
    start_ledger: u32,
    #[arg(long, env = "END_LEDGER", default_value_t = 0)]
    end_ledger: u32,
    /// The name it registers under, and its version.
    #[arg(long, env = "SERVICE_NAME", default_value = "contract-data-processor")]
    service_name: String,
    #[arg(long, env = "SERVICE_VERSION", default_value = env!("CARGO_PKG_VERSION"))]
    service_version: String,
    /// Longest wait between attempts to reach the source.
    #[arg(long, env = "MAX_BACKOFF", default_value = "5s", value_parser = humantime::parse_duration)]
    max_backoff: Duration,
}

fn main() {
    flowctl_components::process::init_logging();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Extract {
            network_passphrase,
            start,
            end,
            filters,
            inputs,
        }) => std::process::exit(run_extract(
            &network_passphrase,
            start,
            end,
            &filters,
            &inputs,
        )),
        None => {
            let rt = tokio::runtime::Runtime::new().expect("the async runtime starts");
            let result = rt.block_on(run(cli.component));
            // A ledger still being processed on a blocking thread is not waited for.
            rt.shutdown_timeout(Duration::from_millis(100));
            flowctl_components::process::exit("contract-data-processor", result)
        }
    }
}

fn run_extract(
    passphrase: &str,
    start: Option<u32>,
    end: Option<u32>,
    filters: &FilterArgs,
    inputs: &[PathBuf],
) -> i32 {
    if let (Some(s), Some(e)) = (start, end) {
        if e < s {
            eprintln!("error: --end {e} is before --start {s}");
            return 2;
        }
    }
    let filter = match filters.filter(passphrase) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let extractor = Extractor::new(passphrase);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let result = extract::extract_lines(
        inputs,
        LedgerRange::new(start, end),
        &mut out,
        |lcm, text| {
            let changes = extractor.changes(lcm).map_err(|e| e.message)?;
            let mut n = 0;
            for c in changes.iter().filter(|c| filter.keeps(c)) {
                text.push_str(&c.to_json());
                text.push('\n');
                n += 1;
            }
            Ok(n)
        },
    );
    match result {
        Ok(_) => 0,
        Err(extract::ExtractError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn address(name: &str, value: &str) -> anyhow::Result<SocketAddr> {
    parse_listen(value.trim(), 0)
        .filter(|a| a.port() != 0 || value.trim().ends_with(":0"))
        .with_context(|| format!("{name}={value:?} is not valid: expected host:port or :port"))
}

async fn run(args: ComponentArgs) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals()?;
    let Some(source) = args
        .source_endpoint
        .clone()
        .or(args.source_service_address.clone())
    else {
        anyhow::bail!("SOURCE_ENDPOINT (or SOURCE_SERVICE_ADDRESS) is not set: the ledger source's RawLedgerService address is required");
    };
    let Some(passphrase) = args.network_passphrase.clone() else {
        anyhow::bail!("NETWORK_PASSPHRASE is not set; it is required (it derives the Stellar Asset Contracts' ids)");
    };
    let upstream = flight::endpoint(&source)
        .map_err(|e| anyhow::anyhow!("SOURCE_ENDPOINT {e}"))?
        .connect_timeout(Duration::from_secs(2));
    let upstream = flowctl_components::grpc::streaming(upstream);
    let filter = args.filters.filter(&passphrase)?;
    let on_error = flowctl_sdk::OnError::from_env(PREFIX)?;
    let letters = flowctl_sdk::DeadLetters::new(&flowctl_sdk::Config::from_env(PREFIX)?);

    let flight_addr = match &args.flight_address {
        Some(a) => address("FLIGHT_ADDRESS", a)?,
        None => args.listen.addr(8816),
    };
    let grpc_addr = match &args.grpc_address {
        Some(a) => address("GRPC_ADDRESS", a)?,
        None => flight_addr,
    };
    let flight_listener = tokio::net::TcpListener::bind(flight_addr)
        .await
        .with_context(|| format!("binding {flight_addr} (FLIGHT_ADDRESS or PORT)"))?;
    let flight_addr = flight_listener.local_addr()?;
    let grpc_listener = if grpc_addr == flight_addr {
        None
    } else {
        let l = tokio::net::TcpListener::bind(grpc_addr)
            .await
            .with_context(|| format!("binding {grpc_addr} (GRPC_ADDRESS)"))?;
        Some(l)
    };
    let grpc_addr = match &grpc_listener {
        Some(l) => l.local_addr()?,
        None => flight_addr,
    };

    let reporter = tonic_health::server::HealthReporter::new();
    let health = tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(reporter.clone()),
    );
    let readiness = Readiness::new(reporter).await;
    let metrics = Arc::new(ContractDataMetrics::default());
    let sdk_metrics = metrics.clone();
    let sdk_letters = letters.clone();
    let sdk = flowctl_sdk::Component::from_env(PREFIX, flowctl_sdk::ServiceType::Processor)?
        .with_name(args.service_name.clone())
        .with_metrics_namespace("contract_data")
        .with_default_health_port(8089)
        .with_event_types(
            &[
                "raw_ledger_service.RawLedgerChunk",
                "stellar.LedgerCloseMeta",
            ],
            &[
                "contract_data.ArrowBatch",
                "stellar.ContractDataEntry",
                "contract_data.ContractDataChange",
            ],
        )
        .with_metadata("processor_type", "contract_data")
        .with_metadata("version", args.service_version.clone())
        .with_metadata("network", passphrase.clone())
        .with_metadata("source_endpoint", source.clone())
        .with_metadata("flight_endpoint", flight_addr.to_string())
        .with_metadata("grpc_endpoint", grpc_addr.to_string())
        .with_metadata("filters", filter.describe())
        .with_metadata("data_plane", "arrow-flight")
        .with_collector(metrics.collector())
        .with_metrics(move || {
            let mut m = sdk_metrics.snapshot();
            m.insert("dead_letters_total".into(), sdk_letters.total() as f64);
            m
        })
        .start()
        .await?;
    let sdk = Arc::new(sdk);
    // Weak: the stop below takes the handle back to unregister.
    let hook = Arc::downgrade(&sdk);
    readiness.on_change(move |ready| {
        let Some(hook) = hook.upgrade() else { return };
        hook.set_ready(ready);
        hook.set_health(if ready {
            flowctl_sdk::Health::Healthy
        } else {
            flowctl_sdk::Health::Degraded
        });
    });
    let watcher = tokio::spawn(upstream::watch_source(
        upstream.clone(),
        readiness.clone(),
        Duration::from_secs(1),
    ));

    let offered = (args.start_ledger != 0).then(|| {
        LedgerTicket::new(
            args.start_ledger,
            (args.end_ledger != 0).then_some(args.end_ledger),
        )
    });
    let processor = Processor {
        extractor: Arc::new(Extractor::new(&passphrase)),
        filter: Arc::new(filter),
        upstream,
        backoff: Backoff::new(Duration::from_millis(100), args.max_backoff),
        readiness,
        metrics,
        shutdown: shutdown.clone(),
        dead_letters: (on_error == flowctl_sdk::OnError::DeadLetter).then_some(letters),
        batch_rows: args.batch_size.max(1),
        batch_wait: args.batch_wait,
        offered,
    };
    let changes = || {
        ContractDataServiceServer::new(processor.clone())
            .max_encoding_message_size(64 * 1024 * 1024)
    };
    let flights = RangeFlights::new(Arc::new(processor.clone())).into_server();
    tracing::info!(flight = %flight_addr, grpc = %grpc_addr, %source, "serving contract-data changes");
    let mut routes = tonic::service::Routes::new(health.clone()).add_service(flights);
    let served = match grpc_listener {
        None => {
            routes = routes.add_service(changes());
            flight::serve_routes(routes, flight_listener, &shutdown).await
        }
        Some(grpc_listener) => {
            let grpc_routes = tonic::service::Routes::new(health).add_service(changes());
            let (a, b) = tokio::join!(
                flight::serve_routes(routes, flight_listener, &shutdown),
                flight::serve_routes(grpc_routes, grpc_listener, &shutdown),
            );
            a.and(b)
        }
    };
    watcher.abort();
    served.context("gRPC/Flight server")?;
    if let Ok(sdk) = Arc::try_unwrap(sdk) {
        sdk.shutdown().await;
    }
    Ok(())
}
