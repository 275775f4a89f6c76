//! `stellar-live-source`: serves Stellar ledgers over `raw_ledger_service.RawLedgerService`
//! from a data lake, Stellar RPC, or the synthetic generator.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use flowctl_components::shutdown::Shutdown;
use flowctl_components::source::config::BackendArgs;
use flowctl_components::source::metrics::SourceMetrics;
use flowctl_components::source::server::LedgerService;
use flowctl_proto::raw_ledger_service::raw_ledger_service_server::RawLedgerServiceServer;

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
    #[command(flatten)]
    source: BackendArgs,
}

#[tokio::main]
async fn main() {
    flowctl_components::process::init_logging();
    flowctl_components::process::exit("stellar-live-source", run(Args::parse()).await)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals()?;
    let port = args.port.or(args.grpc_port).unwrap_or(50051);
    let kind = args.source.kind();
    let end = args.source.end();
    let on_error = flowctl_sdk::OnError::from_env("STELLAR_LIVE_SOURCE")?;
    let letters =
        flowctl_sdk::DeadLetters::new(&flowctl_sdk::Config::from_env("STELLAR_LIVE_SOURCE")?);
    let set_aside = (on_error == flowctl_sdk::OnError::DeadLetter).then(|| letters.clone());
    // A data lake that does not answer must not hold up a stop during start-up either.
    let backend = tokio::select! {
        b = args.source.open(set_aside) => b?,
        _ = shutdown.requested() => return Ok(()),
    };
    let default_start = args.source.default_start();
    let metrics = Arc::new(SourceMetrics::default());
    let service = LedgerService::new(
        Arc::new(backend),
        default_start,
        end,
        args.source.poll_interval,
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
            .with_metadata("network_passphrase", args.source.network_passphrase.clone())
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
