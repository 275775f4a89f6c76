//! Connecting to a registry: `http://host:port`, `https://host:port` (TLS), a bare
//! `host:port`, or `unix:/path/to/registry.sock`. The bearer token comes from `FLOWCTL_TOKEN`,
//! TLS files from `FLOWCTL_TLS_CA`, `FLOWCTL_TLS_CERT` and `FLOWCTL_TLS_KEY`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use flowctl_proto::flowctl::control_plane_client::ControlPlaneClient;
use flowctl_proto::flowctl::v1::control_plane_service_client::ControlPlaneServiceClient;
use flowctl_proto::flowctl::v1::dead_letter_service_client::DeadLetterServiceClient;
use flowctl_proto::flowctl::v1::replay_service_client::ReplayServiceClient;
use hyper_util::rt::TokioIo;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

/// The registry a CLI talks to unless told: `FLOWCTL_ENDPOINT`, else the unix socket in the
/// runtime dir when it exists (a local daemon or `flowctl server`), else `127.0.0.1:8080`.
pub fn default_endpoint() -> String {
    if let Some(e) = std::env::var("FLOWCTL_ENDPOINT")
        .ok()
        .filter(|v| !v.is_empty())
    {
        return e;
    }
    let socket = super::server::default_runtime_dir().join(super::server::REGISTRY_SOCKET);
    if socket.exists() {
        return format!("unix:{}", socket.display());
    }
    "127.0.0.1:8080".to_string()
}

/// Mutual-TLS files of a client (PEM).
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub endpoint: String,
    pub token: Option<String>,
    pub tls: ClientTls,
    pub connect_timeout: Duration,
}

impl ClientOptions {
    /// Options for `endpoint` with the token and TLS files from the environment.
    pub fn from_env(endpoint: impl Into<String>) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        ClientOptions {
            endpoint: endpoint.into(),
            token: var("FLOWCTL_TOKEN"),
            tls: ClientTls {
                ca: var("FLOWCTL_TLS_CA").map(PathBuf::from),
                cert: var("FLOWCTL_TLS_CERT").map(PathBuf::from),
                key: var("FLOWCTL_TLS_KEY").map(PathBuf::from),
            },
            connect_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad registry endpoint {endpoint:?}: {detail}")]
    BadEndpoint { endpoint: String, detail: String },
    #[error("cannot read {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot connect to the registry at {endpoint}: {}", root_cause(.cause))]
    Connect {
        endpoint: String,
        /// Not a `source`: its chain repeats itself, the root cause says it all.
        cause: tonic::transport::Error,
    },
    #[error("the token in FLOWCTL_TOKEN is not a valid header value")]
    BadToken,
}

/// The innermost error: transport errors nest the same words several times.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct TokenInterceptor {
    header: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(h) = &self.header {
            request.metadata_mut().insert("authorization", h.clone());
        }
        Ok(request)
    }
}

pub type AuthChannel = InterceptedService<Channel, TokenInterceptor>;

/// Clients of every API over one connection.
#[derive(Clone)]
pub struct RegistryClient {
    pub v0: ControlPlaneClient<AuthChannel>,
    pub v1: ControlPlaneServiceClient<AuthChannel>,
    pub dlq: DeadLetterServiceClient<AuthChannel>,
    pub replay: ReplayServiceClient<AuthChannel>,
    pub channel: AuthChannel,
}

fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::ReadFile {
        path: path.to_path_buf(),
        source,
    })
}

/// Connects (eagerly, so a wrong address is reported here, not on the first call).
pub async fn connect(options: &ClientOptions) -> Result<RegistryClient, ClientError> {
    let bad = |detail: String| ClientError::BadEndpoint {
        endpoint: options.endpoint.clone(),
        detail,
    };
    let raw = options.endpoint.trim();
    let connect_err = |cause| ClientError::Connect {
        endpoint: raw.to_string(),
        cause,
    };
    let channel = if let Some(path) = raw.strip_prefix("unix:") {
        let path = PathBuf::from(path.trim_start_matches("//"));
        // The URI is required by the API but unused: the connector below decides.
        let endpoint =
            Endpoint::from_static("http://registry.local").connect_timeout(options.connect_timeout);
        endpoint
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .map_err(connect_err)?
    } else {
        let url = if raw.contains("://") {
            raw.to_string()
        } else {
            format!("http://{raw}")
        };
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(options.connect_timeout);
        if url.starts_with("https://") {
            super::server::install_crypto_provider();
            let mut tls = ClientTlsConfig::new();
            if let Some(ca) = &options.tls.ca {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            match (&options.tls.cert, &options.tls.key) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?))
                }
                (None, None) => {}
                _ => {
                    return Err(bad(
                        "FLOWCTL_TLS_CERT and FLOWCTL_TLS_KEY go together".into()
                    ))
                }
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| bad(e.to_string()))?;
        }
        endpoint.connect().await.map_err(connect_err)?
    };
    let header = match &options.token {
        None => None,
        Some(t) => Some(
            format!("Bearer {t}")
                .parse()
                .map_err(|_| ClientError::BadToken)?,
        ),
    };
    let channel = InterceptedService::new(channel, TokenInterceptor { header });
    Ok(RegistryClient {
        v0: ControlPlaneClient::new(channel.clone()),
        v1: ControlPlaneServiceClient::new(channel.clone()),
        dlq: DeadLetterServiceClient::new(channel.clone()),
        replay: ReplayServiceClient::new(channel.clone()),
        channel,
    })
}
