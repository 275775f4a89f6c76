//! `flowctl server`: the registry alone, for components that run outside a local supervisor.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args as ClapArgs;

use crate::registry::server::{default_runtime_dir, default_state_dir, read_token_file};
use crate::registry::{
    Registry, RegistryConfig, RegistryServer, ServerOptions, TlsFiles, REGISTRY_SOCKET,
};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// TCP address to serve gRPC on. Off loopback it needs --token-file or mutual TLS.
    #[arg(long, default_value = "127.0.0.1:8080", conflicts_with = "port")]
    listen: SocketAddr,
    /// Shorthand for --listen 127.0.0.1:PORT.
    #[arg(long)]
    port: Option<u16>,
    /// Where run history is kept (runs.sqlite3). Default /var/lib/flowctl for root,
    /// else $XDG_STATE_HOME/flowctl.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Where the unix socket registry.sock is created. Default /run/flowctl for root,
    /// else $XDG_RUNTIME_DIR/flowctl.
    #[arg(long)]
    runtime_dir: Option<PathBuf>,
    /// Serve TCP only, without the unix socket.
    #[arg(long)]
    no_unix_socket: bool,
    /// How often components should heartbeat (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    heartbeat_interval: Duration,
    /// Silence after which a component is unhealthy. Default 3 × --heartbeat-interval.
    #[arg(long, value_parser = humantime::parse_duration)]
    heartbeat_ttl: Option<Duration>,
    /// Finished runs kept in history.
    #[arg(long, default_value_t = 1000)]
    run_retention: usize,
    /// How long a registration tied to no supervised component stays listed once unhealthy
    /// before it is dropped (and counted).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    unlinked_retention: Duration,
    /// File holding the bearer token clients must send (they set FLOWCTL_TOKEN).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Server certificate (PEM) for mutual TLS; needs --tls-key and --tls-client-ca.
    #[arg(long, requires_all = ["tls_key", "tls_client_ca"])]
    tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, requires_all = ["tls_cert", "tls_client_ca"])]
    tls_key: Option<PathBuf>,
    /// CA (PEM) that must have signed every client certificate.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_client_ca: Option<PathBuf>,
}

impl Args {
    pub fn run(self) -> anyhow::Result<i32> {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_writer(std::io::stderr)
            .try_init();
        let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
        runtime.block_on(self.serve())
    }

    async fn serve(self) -> anyhow::Result<i32> {
        // Connections are capped at a share of the fd limit: make that share as large as
        // the host allows.
        crate::supervisor::fdlimit::raise();
        let shutdown = shutdown_signal()?;
        let listen = match self.port {
            Some(port) => SocketAddr::from(([127, 0, 0, 1], port)),
            None => self.listen,
        };
        let state_dir = self.state_dir.unwrap_or_else(default_state_dir);
        let registry = Registry::open(RegistryConfig {
            heartbeat_interval: self.heartbeat_interval,
            ttl: self.heartbeat_ttl,
            state_dir: Some(state_dir.clone()),
            run_retention: self.run_retention,
            unlinked_retention: self.unlinked_retention,
            ..Default::default()
        })?;
        let token = self
            .token_file
            .as_deref()
            .map(read_token_file)
            .transpose()?;
        let tls = match (self.tls_cert, self.tls_key, self.tls_client_ca) {
            (Some(cert), Some(key), Some(client_ca)) => Some(TlsFiles {
                cert,
                key,
                client_ca,
            }),
            _ => None,
        };
        let unix_socket = (!self.no_unix_socket).then(|| {
            self.runtime_dir
                .unwrap_or_else(default_runtime_dir)
                .join(REGISTRY_SOCKET)
        });
        let server = RegistryServer::bind(
            registry,
            ServerOptions {
                listen: Some(listen),
                unix_socket,
                token,
                tls,
                ..Default::default()
            },
        )
        .await?;
        tracing::info!(
            listen = %server.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            unix_socket = %server.unix_socket().map(|p| p.display().to_string()).unwrap_or_default(),
            state_dir = %state_dir.display(),
            "flowctl registry serving"
        );
        server.serve(shutdown).await?;
        tracing::info!("flowctl registry stopped");
        Ok(0)
    }
}

/// Installs the SIGTERM/SIGINT handlers now (before any socket exists, so a stop request
/// that arrives right after start-up is not lost) and returns the future that waits for one.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
