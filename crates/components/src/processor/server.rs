//! Runs the component: EventService and grpc.health.v1 on one listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flowctl_proto::token_transfer_service::event_service_server::EventServiceServer;
use stellar_ttp::EventsProcessor;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Endpoint, Server};

use super::config::ComponentConfig;
use super::metrics::Metrics;
use super::readiness::Readiness;
use super::service::TtpService;
use super::upstream::{self, Backoff};
use crate::shutdown::Shutdown;

/// A bound, not yet serving component; binding first lets callers learn the port.
pub struct Component {
    listener: TcpListener,
    service: TtpService,
    upstream: Endpoint,
    health: tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
}

impl Component {
    /// `dead_letters`: with `on_error: dead-letter`, where ledgers that cannot be processed
    /// are recorded (otherwise they are logged and skipped).
    pub async fn bind(
        config: &ComponentConfig,
        dead_letters: Option<flowctl_sdk::DeadLetters>,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        let upstream = crate::grpc::streaming(Endpoint::from_shared(config.upstream.clone())?)
            .connect_timeout(Duration::from_secs(2));
        let reporter = tonic_health::server::HealthReporter::new();
        let health = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(reporter.clone()),
        );
        let readiness = Readiness::new(reporter).await;
        let service = TtpService {
            processor: Arc::new(EventsProcessor::new(config.network_passphrase.clone())),
            upstream: upstream.clone(),
            backoff: Backoff::new(config.backoff_initial, config.backoff_max),
            metrics: Arc::new(Metrics::default()),
            readiness,
            shutdown: Shutdown::never(),
            dead_letters,
        };
        Ok(Component {
            listener,
            service,
            upstream,
            health,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn readiness(&self) -> Readiness {
        self.service.readiness.clone()
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.service.metrics.clone()
    }

    /// Serves until `shutdown` fires: then every stream sends what is processed and ends,
    /// and the server returns once they have, or [`GRACE`](crate::shutdown::GRACE) later
    /// when a consumer does not read.
    pub async fn serve(mut self, shutdown: Shutdown) -> anyhow::Result<()> {
        let watcher = tokio::spawn(upstream::watch_source(
            self.upstream.clone(),
            self.service.readiness.clone(),
            Duration::from_secs(1),
        ));
        self.service.shutdown = shutdown.clone();
        let server = Server::builder()
            .add_service(self.health)
            .add_service(
                EventServiceServer::new(self.service).max_encoding_message_size(64 * 1024 * 1024),
            )
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(self.listener),
                shutdown.requested(),
            );
        let result = tokio::select! {
            r = server => r.map_err(|e| anyhow::anyhow!("gRPC server failed: {e}")),
            _ = shutdown.grace_over() => {
                tracing::warn!("closing the streams still open");
                Ok(())
            }
        };
        watcher.abort();
        result
    }
}
