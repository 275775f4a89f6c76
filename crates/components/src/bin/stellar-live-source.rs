//! `stellar-live-source`: serves Stellar ledgers over `raw_ledger_service.RawLedgerService`
//! from a data lake, Stellar RPC, or the synthetic generator.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use flowctl_components::shutdown::Shutdown;
use flowctl_components::source::metrics::SourceMetrics;
use flowctl_components::source::server::LedgerService;
use flowctl_components::source::{datalake, rpc, synthetic, Backend};
use flowctl_proto::raw_ledger_service::raw_ledger_service_server::RawLedgerServiceServer;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum BackendKind {
    Datalake,
    Rpc,
    Synthetic,
}

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Serves Stellar ledgers (RawLedgerService) from a data lake, RPC or a synthetic generator"
)]
struct Args {
    /// gRPC port (bare number). GRPC_PORT is read when PORT is absent.
    #[arg(long, env = "PORT")]
    port: Option<u16>,
    #[arg(long, env = "GRPC_PORT", hide = true)]
    grpc_port: Option<u16>,
    /// Address to bind; loopback unless told otherwise.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Where ledgers come from; by default datalake when DATALAKE_URL is set, rpc when
    /// RPC_ENDPOINT is set, synthetic otherwise.
    #[arg(long, env = "BACKEND", value_enum, ignore_case = true)]
    backend: Option<BackendKind>,
    /// Data lake root: a local path, file://, s3://bucket/prefix or gs://bucket/prefix.
    #[arg(long, env = "DATALAKE_URL")]
    datalake_url: Option<String>,
    /// The object store's service URL for an s3:// or gs:// lake that is not on AWS or Google
    /// (S3-compatible storage, an emulator, a mirror); `http://` is allowed. Defaults to the
    /// stores' own variables (`AWS_ENDPOINT_URL`, `GOOGLE_BASE_URL`), else the public cloud.
    #[arg(long, env = "DATALAKE_ENDPOINT")]
    datalake_endpoint: Option<String>,
    /// Stellar RPC URL (JSON-RPC `getLedgers`).
    #[arg(long, env = "RPC_ENDPOINT")]
    rpc_endpoint: Option<String>,
    #[arg(long, env = "NETWORK_PASSPHRASE", default_value = stellar_synth::DEFAULT_PASSPHRASE)]
    network_passphrase: String,
    /// First ledger served when a client asks for 0; first synthetic ledger.
    #[arg(long, env = "START_LEDGER", default_value_t = 0)]
    start_ledger: u32,
    /// Last ledger served (inclusive); streams end cleanly after it. 0 = no end.
    #[arg(long, env = "END_LEDGER", default_value_t = 0)]
    end_ledger: u32,
    /// Synthetic ledgers per second; 0 = as fast as the consumer reads.
    #[arg(long, env = "SYNTHETIC_RATE", default_value_t = 0.0)]
    synthetic_rate: f64,
    #[arg(long, env = "SYNTHETIC_SEED", default_value_t = 1)]
    synthetic_seed: u64,
    #[arg(long, env = "SYNTHETIC_TXS_PER_LEDGER", default_value_t = 50)]
    synthetic_txs_per_ledger: u32,
    /// 23+ gives LCM V2 / TransactionMeta V4; 20–22 LCM V1 / TransactionMeta V3.
    #[arg(long, env = "SYNTHETIC_PROTOCOL", default_value_t = 23)]
    synthetic_protocol: u32,
    /// Data-lake objects fetched concurrently ahead of the consumer.
    #[arg(long, env = "DATALAKE_PREFETCH", default_value_t = datalake::DEFAULT_PREFETCH)]
    datalake_prefetch: usize,
    /// Wait at the tip before asking the backend again.
    #[arg(long, env = "POLL_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    poll_interval: Duration,
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
    let code = match run(Args::parse()).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("stellar-live-source: {e:#}");
            1
        }
    };
    // Not waiting for the runtime: a backend call still on a blocking thread (a decode, a
    // local read) must not delay the exit.
    std::process::exit(code);
}

/// The backend `kind` names, set up from `args` (a data lake's manifest is read here).
/// With `on_error: dead-letter`, a data-lake object that does not decode is recorded in
/// `letters` and skipped; otherwise it ends the stream.
async fn open_backend(
    args: &Args,
    kind: BackendKind,
    letters: Option<flowctl_sdk::DeadLetters>,
) -> anyhow::Result<Backend> {
    Ok(match kind {
        BackendKind::Datalake => {
            let Some(url) = &args.datalake_url else {
                bail!("BACKEND=datalake needs DATALAKE_URL (a path, file://, s3:// or gs:// URL)");
            };
            let lake = datalake::DataLake::open(
                url,
                args.datalake_endpoint.as_deref(),
                args.datalake_prefetch,
            )
            .await?;
            if lake.manifest().network_passphrase != args.network_passphrase {
                tracing::warn!(
                    lake = %lake.manifest().network_passphrase,
                    configured = %args.network_passphrase,
                    "the data lake's network passphrase differs from NETWORK_PASSPHRASE"
                );
            }
            match letters {
                Some(letters) => Backend::DataLake(lake.with_dead_letters(letters)),
                None => Backend::DataLake(lake),
            }
        }
        BackendKind::Rpc => {
            let Some(url) = &args.rpc_endpoint else {
                bail!("BACKEND=rpc needs RPC_ENDPOINT (a Stellar RPC URL)");
            };
            Backend::Rpc(rpc::RpcClient::new(url)?)
        }
        BackendKind::Synthetic => {
            if args.synthetic_rate < 0.0 || !args.synthetic_rate.is_finite() {
                bail!(
                    "SYNTHETIC_RATE {} must be 0 or a positive number",
                    args.synthetic_rate
                );
            }
            let cfg = stellar_synth::Config {
                network_passphrase: args.network_passphrase.clone(),
                seed: args.synthetic_seed,
                // 0 asks for the default; 1 (genesis) is refused by the generator, naming it.
                first_ledger: if args.start_ledger == 0 {
                    2
                } else {
                    args.start_ledger
                },
                protocol_version: args.synthetic_protocol,
                txs_per_ledger: args.synthetic_txs_per_ledger,
                ..stellar_synth::Config::default()
            };
            Backend::Synthetic(
                synthetic::Synthetic::new(cfg, args.synthetic_rate)
                    .context("START_LEDGER and SYNTHETIC_* settings")?
                    .closing_from(args.start_ledger),
            )
        }
    })
}

async fn run(args: Args) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals()?;
    let port = args.port.or(args.grpc_port).unwrap_or(50051);
    let kind = args.backend.unwrap_or(if args.datalake_url.is_some() {
        BackendKind::Datalake
    } else if args.rpc_endpoint.is_some() {
        BackendKind::Rpc
    } else {
        BackendKind::Synthetic
    });
    let end = (args.end_ledger != 0).then_some(args.end_ledger);
    let on_error = flowctl_sdk::OnError::from_env("STELLAR_LIVE_SOURCE")?;
    let letters =
        flowctl_sdk::DeadLetters::new(&flowctl_sdk::Config::from_env("STELLAR_LIVE_SOURCE")?);
    let set_aside = (on_error == flowctl_sdk::OnError::DeadLetter).then(|| letters.clone());
    // A data lake that does not answer must not hold up a stop during start-up either.
    let backend = tokio::select! {
        b = open_backend(&args, kind, set_aside) => b?,
        _ = shutdown.requested() => return Ok(()),
    };
    let default_start = match kind {
        BackendKind::Synthetic => args.start_ledger.max(2),
        _ => args.start_ledger,
    };
    let metrics = Arc::new(SourceMetrics::default());
    let service = LedgerService::new(
        Arc::new(backend),
        default_start,
        end,
        args.poll_interval,
        metrics.clone(),
    )
    .with_shutdown(shutdown.clone());

    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<RawLedgerServiceServer<LedgerService>>()
        .await;
    let addr = SocketAddr::new(args.bind, port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr} (PORT)"))?;
    // Registration, heartbeats and /health on HEALTH_PORT, through the component SDK.
    let sdk_metrics = metrics.clone();
    let sdk =
        flowctl_sdk::Component::from_env("STELLAR_LIVE_SOURCE", flowctl_sdk::ServiceType::Source)?
            .with_name("stellar-live-source")
            .with_event_types(&[], &["raw_ledger_service.RawLedger"])
            .with_metadata("backend", format!("{kind:?}").to_lowercase())
            .with_metadata("network_passphrase", args.network_passphrase.clone())
            .with_metrics(move || {
                let mut m = sdk_metrics.snapshot();
                m.insert("dead_letters_total".into(), letters.total() as f64);
                m
            })
            .start()
            .await?;
    sdk.set_ready(true);
    tracing::info!(%addr, backend = ?kind, ?end, "serving RawLedgerService");
    let server = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(
            RawLedgerServiceServer::new(service)
                .max_encoding_message_size(64 << 20)
                .max_decoding_message_size(4 << 20),
        )
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown.requested(),
        );
    // The streams end on the signal; a consumer that does not read them (or a client that
    // holds a connection) is not waited for beyond the grace period.
    tokio::select! {
        served = server => served.context("gRPC server")?,
        _ = shutdown.grace_over() => tracing::warn!("closing the connections still open"),
    }
    sdk.shutdown().await;
    tracing::info!(ledgers = metrics.processed(), "stopped");
    Ok(())
}
