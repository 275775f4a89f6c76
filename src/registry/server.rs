//! Serving the registry: one gRPC server with `flowctl.ControlPlane`,
//! `flowctl.v1.ControlPlaneService`, `flowctl.v1.DeadLetterService`, `flowctl.v1.ReplayService`
//! and `grpc.health.v1.Health`, on TCP and on a unix socket.
//!
//! Security: the unix socket is guarded by file permissions (0660, in the runtime dir) and
//! takes no token; it and the operator's bearer token may do everything. What a TCP caller
//! without the token may do is [`super::access`]'s decision. Off loopback the server refuses
//! to start unless a token or mutual TLS is configured.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flowctl_proto::flowctl::control_plane_server::ControlPlaneServer;
use flowctl_proto::flowctl::v1::control_plane_service_server::ControlPlaneServiceServer;
use flowctl_proto::flowctl::v1::dead_letter_service_server::DeadLetterServiceServer;
use flowctl_proto::flowctl::v1::replay_service_server::ReplayServiceServer;
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Status};
use tonic_health::ServingStatus;

use super::access::{Access, Anonymous, OperatorToken};
use super::connections::ConnectionLimits;
use super::dead_letter_grpc::DeadLetterServiceImpl;
use super::grpc::{ControlPlaneV0, ControlPlaneV1};
use super::limits::MAX_MESSAGE_BYTES;
use super::replay_grpc::ReplayServiceImpl;
use super::state::Registry;

/// The socket file the registry listens on inside the runtime dir.
pub const REGISTRY_SOCKET: &str = "registry.sock";

/// Certificate files for mutual TLS (PEM).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must present a certificate signed by this CA.
    pub client_ca: PathBuf,
}

/// Where and how to listen.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// TCP address; `None` serves the unix socket only.
    pub listen: Option<SocketAddr>,
    /// Unix socket path; `None` serves TCP only.
    pub unix_socket: Option<PathBuf>,
    /// The operator's bearer token (`authorization: Bearer …`). A standalone registry
    /// requires it on every TCP RPC; in a supervisor it is needed for run management only.
    pub token: Option<String>,
    pub tls: Option<TlsFiles>,
    /// The registry runs in a supervisor: over TCP only the processes it started may
    /// register, heartbeat and unregister, each as its own component.
    pub in_supervisor: bool,
    pub connections: ConnectionLimits,
}

impl ServerOptions {
    /// What a TCP caller with neither the token nor a supervised process may do.
    pub fn anonymous(&self) -> Anonymous {
        let loopback = self.listen.is_none_or(|a| a.ip().is_loopback());
        match (self.in_supervisor, self.token.is_some()) {
            (true, _) if loopback => Anonymous::Read,
            (false, false) => Anonymous::ReadAndRegister,
            _ => Anonymous::Nothing,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "refusing to listen on {0} without authentication: it is not a loopback address, so \
         anyone who can reach it could register components and stop pipelines. Give \
         --token-file FILE (clients set FLOWCTL_TOKEN) or --tls-cert, --tls-key and \
         --tls-client-ca for mutual TLS, or listen on 127.0.0.1"
    )]
    Unauthenticated(SocketAddr),
    #[error("the token file {} is empty", .0.display())]
    EmptyToken(PathBuf),
    #[error("cannot read {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    BindTcp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen on the unix socket {}: {source}", path.display())]
    BindUnix {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    Tls(#[source] tonic::transport::Error),
    #[error("gRPC server: {0}")]
    Serve(#[source] tonic::transport::Error),
}

/// Several crypto back-ends may be linked into one binary (ring for us, others for other
/// dependencies), and then rustls will not choose one by itself: name ours once per process.
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Reads a token file: the first line, trimmed.
pub fn read_token_file(path: &Path) -> Result<String, ServerError> {
    let text = std::fs::read_to_string(path).map_err(|source| ServerError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(ServerError::EmptyToken(path.to_path_buf()));
    }
    Ok(token)
}

/// Checks `authorization: Bearer <token>` on TCP requests: the right token marks the request
/// as the operator's, a wrong one is refused, none leaves the decision to [`super::access`]
/// (or refuses it, where the token is `required`).
#[derive(Clone)]
pub struct BearerAuth {
    token: Option<Arc<str>>,
    required: bool,
}

impl BearerAuth {
    pub fn new(token: Option<String>, required: bool) -> Self {
        BearerAuth {
            token: token.map(Arc::from),
            required,
        }
    }
}

/// Compares without an early exit, so the time taken does not reveal a matching prefix.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let Some(header) = request.metadata().get("authorization") else {
            if self.required {
                return Err(Status::unauthenticated(
                    "missing bearer token: set FLOWCTL_TOKEN",
                ));
            }
            return Ok(request);
        };
        let Some(token) = &self.token else {
            // Nothing to check it against: the caller is not the operator.
            return Ok(request);
        };
        let given = header.as_bytes().strip_prefix(b"Bearer ").unwrap_or(b"");
        if same_secret(given, token.as_bytes()) {
            request.extensions_mut().insert(OperatorToken);
            Ok(request)
        } else {
            Err(Status::unauthenticated("invalid bearer token"))
        }
    }
}

/// A registry server with its sockets bound, so callers learn the real port before serving.
pub struct RegistryServer {
    registry: Registry,
    tcp: Option<TcpListener>,
    unix: Option<(UnixListener, PathBuf)>,
    token: Option<String>,
    tls: Option<ServerTlsConfig>,
    anonymous: Anonymous,
    connections: ConnectionLimits,
}

fn read(path: &Path) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|source| ServerError::ReadFile {
        path: path.to_path_buf(),
        source,
    })
}

impl RegistryServer {
    /// Checks the security rules and binds the sockets.
    pub async fn bind(registry: Registry, options: ServerOptions) -> Result<Self, ServerError> {
        let anonymous = options.anonymous();
        if let Some(addr) = options.listen {
            if !addr.ip().is_loopback() && options.token.is_none() && options.tls.is_none() {
                return Err(ServerError::Unauthenticated(addr));
            }
        }
        if options.tls.is_some() {
            install_crypto_provider();
        }
        let tls = match &options.tls {
            None => None,
            Some(files) => Some(
                ServerTlsConfig::new()
                    .identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?))
                    .client_ca_root(Certificate::from_pem(read(&files.client_ca)?)),
            ),
        };
        let tcp = match options.listen {
            None => None,
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServerError::BindTcp { addr, source })?,
            ),
        };
        let unix = match options.unix_socket {
            None => None,
            Some(path) => Some((bind_unix(&path)?, path)),
        };
        Ok(RegistryServer {
            registry,
            tcp,
            unix,
            token: options.token,
            tls,
            anonymous,
            connections: options.connections,
        })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn unix_socket(&self) -> Option<&Path> {
        self.unix.as_ref().map(|(_, p)| p.as_path())
    }

    /// Serves until `shutdown` completes, and sweeps health in the background meanwhile.
    /// The unix socket file is removed on the way out.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let sweeper = tokio::spawn(self.registry.clone().sweep_forever());

        let (reporter, health) = tonic_health::server::health_reporter();
        for name in [
            "",
            "flowctl.ControlPlane",
            "flowctl.v1.ControlPlaneService",
            "flowctl.v1.DeadLetterService",
            "flowctl.v1.ReplayService",
        ] {
            reporter
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
        // Refuse oversized requests before decoding them; the field limits in `limits` sit
        // just below this.
        let access = Access::new(self.registry.clone(), self.anonymous);
        let v0 =
            ControlPlaneServer::new(ControlPlaneV0::new(self.registry.clone(), access.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let v1 = ControlPlaneServiceServer::new(ControlPlaneV1::new(
            self.registry.clone(),
            access.clone(),
        ))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let dlq = DeadLetterServiceServer::new(DeadLetterServiceImpl::new(
            self.registry.clone(),
            access.clone(),
        ))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let replay =
            ReplayServiceServer::new(ReplayServiceImpl::new(self.registry.clone(), access))
                .max_decoding_message_size(MAX_MESSAGE_BYTES);

        let mut tasks = tokio::task::JoinSet::new();
        if let Some(listener) = self.tcp {
            let required = self.anonymous == Anonymous::Nothing;
            let auth = BearerAuth::new(self.token.clone(), required);
            // Health says nothing about anyone: it needs the token only where everything does.
            let mut builder = Server::builder()
                // A connection whose client stops answering pings is closed, so dead peers do
                // not hold fds.
                .http2_keepalive_interval(Some(std::time::Duration::from_secs(60)))
                .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)));
            if let Some(tls) = self.tls.clone() {
                builder = builder.tls_config(tls).map_err(ServerError::Tls)?;
            }
            let router = builder
                .add_service(InterceptedService::new(v0.clone(), auth.clone()))
                .add_service(InterceptedService::new(v1.clone(), auth.clone()))
                .add_service(InterceptedService::new(dlq.clone(), auth.clone()))
                .add_service(InterceptedService::new(replay.clone(), auth.clone()))
                .add_service(InterceptedService::new(health.clone(), auth));
            // Heartbeats are small writes: `incoming` sets TCP_NODELAY, or Nagle and delayed
            // ACKs would add tens of milliseconds to some of them.
            let incoming =
                super::connections::incoming(listener, self.registry.clone(), self.connections);
            let stop = stopped(stop_rx.clone());
            tasks.spawn(async move { router.serve_with_incoming_shutdown(incoming, stop).await });
        }
        let mut socket_path = None;
        if let Some((listener, path)) = self.unix {
            socket_path = Some(path);
            let router = Server::builder()
                .add_service(v0)
                .add_service(v1)
                .add_service(dlq)
                .add_service(replay)
                .add_service(health);
            let incoming = UnixListenerStream::new(listener);
            let stop = stopped(stop_rx.clone());
            tasks.spawn(async move { router.serve_with_incoming_shutdown(incoming, stop).await });
        }
        let mut result = Ok(());
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    result = Err(ServerError::Serve(e));
                    tasks.abort_all();
                }
                Err(e) if e.is_cancelled() => {}
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
        sweeper.abort();
        if let Some(path) = socket_path {
            let _ = std::fs::remove_file(path);
        }
        result
    }
}

fn bind_unix(path: &Path) -> Result<UnixListener, ServerError> {
    let err = |source| ServerError::BindUnix {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    // A socket file left by a previous run that is no longer served: replace it.
    if path.exists() && std::os::unix::net::UnixStream::connect(path).is_err() {
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    Ok(listener)
}

/// Where the socket lives unless told: `/run/flowctl` for root, else
/// `$XDG_RUNTIME_DIR/flowctl` (or `/tmp/flowctl-<uid>`).
pub fn default_runtime_dir() -> PathBuf {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return PathBuf::from("/run/flowctl");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("flowctl"),
        None => PathBuf::from(format!("/tmp/flowctl-{uid}")),
    }
}

/// Where run history lives unless told: `/var/lib/flowctl` for root, else
/// `$XDG_STATE_HOME/flowctl` (or `~/.local/state/flowctl`).
pub fn default_state_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/flowctl");
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("flowctl");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/state/flowctl")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    fn request(header: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(h) = header {
            r.metadata_mut().insert("authorization", h.parse().unwrap());
        }
        r
    }

    #[test]
    fn bearer_auth_accepts_only_the_token() {
        let mut auth = BearerAuth::new(Some("s3cret".into()), true);
        let accepted = auth.call(request(Some("Bearer s3cret"))).unwrap();
        assert!(accepted.extensions().get::<OperatorToken>().is_some());
        for bad in [
            None,
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("s3cret"),
            Some("Basic s3cret"),
        ] {
            let err = auth.call(request(bad)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
        let mut optional = BearerAuth::new(Some("s3cret".into()), false);
        let anonymous = optional.call(request(None)).unwrap();
        assert!(anonymous.extensions().get::<OperatorToken>().is_none());
        assert!(optional.call(request(Some("Bearer nope"))).is_err());
        let no_token = BearerAuth::new(None, false)
            .call(request(Some("Bearer x")))
            .unwrap();
        assert!(no_token.extensions().get::<OperatorToken>().is_none());
    }

    #[tokio::test]
    async fn off_loopback_without_auth_is_refused() {
        let registry = Registry::open(Default::default()).unwrap();
        let options = ServerOptions {
            listen: Some("0.0.0.0:0".parse().unwrap()),
            ..Default::default()
        };
        let err = RegistryServer::bind(registry, options).await.err().unwrap();
        assert!(matches!(err, ServerError::Unauthenticated(_)));
        assert!(err.to_string().contains("--token-file"), "{err}");
    }
}
