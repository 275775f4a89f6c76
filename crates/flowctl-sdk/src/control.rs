//! Registration and heartbeats. Runs in its own task and never fails the component: when the
//! control plane is absent or refuses, it logs and tries again with backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use flowctl_proto::flowctl::control_plane_client::ControlPlaneClient;
use flowctl_proto::flowctl::v1::control_plane_service_client::ControlPlaneServiceClient;
use flowctl_proto::flowctl::v1::UnregisterRequest;
use flowctl_proto::flowctl::{ServiceHeartbeat, ServiceInfo};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::component::Shared;

/// How registration retries: doubling from `initial` up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The wait before attempt `failures + 1`.
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.min(30));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

#[derive(Clone)]
pub(crate) struct Token(pub(crate) Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = &self.0 {
            request.metadata_mut().insert("authorization", t.clone());
        }
        Ok(request)
    }
}

pub(crate) type Authed = InterceptedService<Channel, Token>;

/// A lazily connected channel: creating it never waits for the control plane.
pub(crate) fn channel(endpoint: &str) -> Result<Channel, String> {
    const RPC_TIMEOUT: Duration = Duration::from_secs(5);
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
    if let Some(path) = endpoint.strip_prefix("unix:") {
        let path = std::path::PathBuf::from(path.trim_start_matches("//"));
        let ep = Endpoint::from_static("http://flowctl.local")
            .timeout(RPC_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT);
        return Ok(ep.connect_with_connector_lazy(tower::service_fn(
            move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            },
        )));
    }
    let url = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    let ep = Endpoint::from_shared(url).map_err(|e| e.to_string())?;
    Ok(ep
        .timeout(RPC_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .connect_lazy())
}

pub(crate) struct ControlLoop {
    pub shared: Arc<Shared>,
    pub info: ServiceInfo,
    pub backoff: Backoff,
    pub stop: watch::Receiver<bool>,
}

impl ControlLoop {
    pub async fn run(mut self) {
        let cfg = &self.shared.config;
        let channel = match channel(&cfg.endpoint) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(endpoint = %cfg.endpoint, error = %e, "bad FLOWCTL_ENDPOINT; not registering");
                return;
            }
        };
        let token = match cfg.token.as_deref().map(|t| format!("Bearer {t}").parse()) {
            Some(Err(_)) => {
                tracing::error!("FLOWCTL_TOKEN is not a valid header value; not registering");
                return;
            }
            other => Token(other.and_then(Result::ok)),
        };
        let authed = InterceptedService::new(channel, token);
        let mut v0 = ControlPlaneClient::new(authed.clone());
        let interval = cfg.heartbeat_interval;
        let mut failures = 0u32;
        loop {
            // Register until it works.
            let service_id = loop {
                let registered = tokio::select! {
                    r = v0.register(self.info.clone()) => r,
                    _ = self.stop.wait_for(|s| *s) => return,
                };
                match registered {
                    Ok(ack) => {
                        let id = ack.into_inner().service_id;
                        tracing::info!(service_id = %id, endpoint = %self.shared.config.endpoint, "registered with flowctl");
                        self.shared.set_service_id(Some(id.clone()));
                        failures = 0;
                        break id;
                    }
                    Err(status) => {
                        let wait = self.backoff.delay(failures);
                        if failures == 0 {
                            tracing::warn!(endpoint = %self.shared.config.endpoint, error = %status.message(), "cannot register with flowctl; retrying in the background");
                        } else {
                            tracing::debug!(error = %status.message(), retry_in = ?wait, "registration failed");
                        }
                        failures = failures.saturating_add(1);
                        if self.sleep_or_stop(wait).await {
                            return;
                        }
                    }
                }
            };
            // Heartbeat until told to stop or forgotten by the registry.
            loop {
                let heartbeat = ServiceHeartbeat {
                    service_id: service_id.clone(),
                    timestamp: Some(now()),
                    metrics: HashMap::new(),
                };
                if self.sleep_or_stop(interval).await {
                    // The last counts go with the goodbye, so a run that ends between two
                    // heartbeats still records what this component did.
                    let last = ServiceHeartbeat {
                        metrics: self.shared.provider.metrics().into_iter().collect(),
                        ..heartbeat
                    };
                    goodbye(authed.clone(), &mut v0, last, &service_id).await;
                    self.shared.set_service_id(None);
                    return;
                }
                let heartbeat = ServiceHeartbeat {
                    metrics: self
                        .shared
                        .provider
                        .metrics()
                        .into_iter()
                        .collect::<HashMap<_, _>>(),
                    ..heartbeat
                };
                let beat = tokio::select! {
                    r = v0.heartbeat(heartbeat) => r,
                    // A control plane that does not answer must not hold up the stop.
                    _ = self.stop.wait_for(|s| *s) => Err(Status::cancelled("stopping")),
                };
                let counter = match &beat {
                    Ok(_) => &self.shared.heartbeats_sent,
                    Err(_) => &self.shared.heartbeat_errors,
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match beat {
                    Ok(_) => {
                        if failures > 0 {
                            tracing::info!(service_id = %service_id, "heartbeats reach flowctl again");
                        }
                        failures = 0;
                    }
                    Err(status) if status.code() == Code::NotFound => {
                        tracing::info!(service_id = %service_id, "flowctl no longer knows this component; registering again");
                        self.shared.set_service_id(None);
                        break;
                    }
                    Err(_) if *self.stop.borrow() => {}
                    Err(status) => {
                        if failures == 0 {
                            tracing::warn!(error = %status.message(), "heartbeat failed; will keep trying");
                        }
                        failures = failures.saturating_add(1);
                    }
                }
            }
        }
    }

    /// Sleeps; true when shutdown was asked for meanwhile.
    async fn sleep_or_stop(&mut self, d: Duration) -> bool {
        if *self.stop.borrow() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = self.stop.changed() => true,
        }
    }
}

/// The longest a stopping component waits for the control plane to take its goodbye; after
/// it, the registration simply expires.
const UNREGISTER_TIMEOUT: Duration = Duration::from_millis(400);

/// A last heartbeat with the final metrics, then the unregistration, together within
/// [`UNREGISTER_TIMEOUT`].
async fn goodbye(
    channel: Authed,
    v0: &mut ControlPlaneClient<Authed>,
    last: ServiceHeartbeat,
    service_id: &str,
) {
    let started = tokio::time::Instant::now();
    let _ = tokio::time::timeout(UNREGISTER_TIMEOUT / 2, v0.heartbeat(last)).await;
    let _ = tokio::time::timeout(
        UNREGISTER_TIMEOUT.saturating_sub(started.elapsed()),
        unregister(channel, service_id),
    )
    .await;
}

/// Says goodbye through `flowctl.v1` (the older API has no unregister; a registry without it
/// simply lets the registration expire).
async fn unregister(channel: Authed, service_id: &str) {
    let mut v1 = ControlPlaneServiceClient::new(channel);
    let request = UnregisterRequest {
        service_id: service_id.to_string(),
    };
    match tokio::time::timeout(UNREGISTER_TIMEOUT, v1.unregister_component(request)).await {
        Ok(Ok(_)) => tracing::info!(service_id, "unregistered from flowctl"),
        Ok(Err(status)) => {
            tracing::debug!(service_id, error = %status.message(), "unregister failed")
        }
        Err(_) => tracing::debug!(service_id, "unregister timed out"),
    }
}

fn now() -> prost_types::Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_until_the_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let delays: Vec<u128> = (0..6).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
    }
}
