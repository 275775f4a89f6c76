//! A registry served on real sockets for the integration tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flowctl::registry::client::{connect, ClientOptions, ClientTls, RegistryClient};
use flowctl::registry::{Registry, RegistryConfig, RegistryServer, ServerError, ServerOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Running {
    pub registry: Registry,
    pub addr: SocketAddr,
    pub socket: Option<PathBuf>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServerError>>,
    /// Holds the unix socket's directory when `start` made one.
    _runtime: Option<tempfile::TempDir>,
}

impl Running {
    /// Stops serving and waits until the sockets are closed.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("server stops")
            .expect("server task")
            .expect("server result");
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }

    /// The unix socket, where the operator manages runs.
    pub fn operator_endpoint(&self) -> String {
        let socket = self.socket.as_ref().expect("served on a unix socket");
        format!("unix:{}", socket.display())
    }
}

/// Serves `registry` on an ephemeral loopback port (and a unix socket under `runtime_dir`).
pub async fn serve(
    registry: Registry,
    runtime_dir: Option<&Path>,
    mut options: ServerOptions,
) -> Running {
    if options.listen.is_none() {
        options.listen = Some("127.0.0.1:0".parse().unwrap());
    }
    options.unix_socket = runtime_dir.map(|d| d.join("registry.sock"));
    let server = RegistryServer::bind(registry.clone(), options)
        .await
        .expect("bind");
    let addr = server.local_addr().unwrap();
    let socket = server.unix_socket().map(Path::to_path_buf);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    Running {
        registry,
        addr,
        socket,
        stop: Some(stop),
        task,
        _runtime: None,
    }
}

/// A standalone registry (as `flowctl server` runs it) on loopback TCP and a unix socket.
pub async fn start(config: RegistryConfig) -> Running {
    let runtime = tempfile::tempdir().unwrap();
    let mut running = serve(
        Registry::open(config).unwrap(),
        Some(runtime.path()),
        ServerOptions::default(),
    )
    .await;
    running._runtime = Some(runtime);
    running
}

pub async fn client(endpoint: &str) -> RegistryClient {
    client_with(endpoint, None, ClientTls::default()).await
}

pub async fn client_with(endpoint: &str, token: Option<&str>, tls: ClientTls) -> RegistryClient {
    let options = ClientOptions {
        endpoint: endpoint.to_string(),
        token: token.map(str::to_string),
        tls,
        connect_timeout: Duration::from_secs(5),
    };
    connect(&options).await.expect("connect")
}

/// Polls `check` every 20 ms until it holds, for at most `within`.
pub async fn eventually<F: FnMut() -> bool>(within: Duration, mut check: F) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
