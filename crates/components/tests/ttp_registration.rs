//! The ttp-processor binary registers with a control plane and heartbeats the Go
//! component's metrics, while serving events from a real ledger source.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowctl_proto::flowctl::control_plane_server::{ControlPlane, ControlPlaneServer};
use flowctl_proto::flowctl::*;
use support::{
    assert_same, collect_to_end, events, golden_between, lighthorizon, shared, FixtureSource,
    RunningSource, TESTNET,
};
use tonic::{Request, Response, Status};

/// Records what components tell it.
#[derive(Clone, Default)]
struct RecordingControlPlane {
    registered: Arc<Mutex<Vec<ServiceInfo>>>,
    heartbeats: Arc<Mutex<Vec<ServiceHeartbeat>>>,
}

#[tonic::async_trait]
impl ControlPlane for RecordingControlPlane {
    async fn register(&self, r: Request<ServiceInfo>) -> Result<Response<RegistrationAck>, Status> {
        self.registered.lock().unwrap().push(r.into_inner());
        Ok(Response::new(RegistrationAck {
            service_id: "ttp-1".into(),
            ..Default::default()
        }))
    }
    async fn heartbeat(&self, r: Request<ServiceHeartbeat>) -> Result<Response<()>, Status> {
        self.heartbeats.lock().unwrap().push(r.into_inner());
        Ok(Response::new(()))
    }
    async fn get_service_status(
        &self,
        _: Request<ServiceInfo>,
    ) -> Result<Response<ServiceStatus>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn list_services(&self, _: Request<()>) -> Result<Response<ServiceList>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn create_pipeline_run(
        &self,
        _: Request<CreatePipelineRunRequest>,
    ) -> Result<Response<PipelineRun>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn update_pipeline_run(
        &self,
        _: Request<UpdatePipelineRunRequest>,
    ) -> Result<Response<PipelineRun>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn get_pipeline_run(
        &self,
        _: Request<GetPipelineRunRequest>,
    ) -> Result<Response<PipelineRun>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn list_pipeline_runs(
        &self,
        _: Request<ListPipelineRunsRequest>,
    ) -> Result<Response<ListPipelineRunsResponse>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn stop_pipeline_run(
        &self,
        _: Request<StopPipelineRunRequest>,
    ) -> Result<Response<PipelineRun>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn upsert_chunk_run(
        &self,
        _: Request<flowctl_proto::flowctl::UpsertChunkRunRequest>,
    ) -> Result<Response<flowctl_proto::flowctl::ChunkRun>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn get_chunk_run(
        &self,
        _: Request<flowctl_proto::flowctl::GetChunkRunRequest>,
    ) -> Result<Response<flowctl_proto::flowctl::ChunkRun>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn list_chunk_runs(
        &self,
        _: Request<flowctl_proto::flowctl::ListChunkRunsRequest>,
    ) -> Result<Response<flowctl_proto::flowctl::ListChunkRunsResponse>, Status> {
        Err(Status::unimplemented(""))
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_as_a_processor_and_heartbeats_the_processing_metrics() {
    let Some(root) = shared() else { return };
    let (ledgers, golden) = lighthorizon(&root);
    let (_source, upstream) = RunningSource::start(
        FixtureSource::new(Arc::new(ledgers)),
        "127.0.0.1:0".parse().unwrap(),
    );

    let cp = RecordingControlPlane::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cp_addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ControlPlaneServer::new(cp.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let (port, health_port) = (free_port(), free_port());
    let _proc = Process(
        Command::new(env!("CARGO_BIN_EXE_ttp-processor"))
            .env_clear()
            .env("PORT", port.to_string())
            .env("HEALTH_PORT", health_port.to_string())
            .env("SOURCE_SERVICE_ADDRESS", upstream.to_string())
            .env("NETWORK_PASSPHRASE", TESTNET)
            .env("ENABLE_FLOWCTL", "true")
            .env("FLOWCTL_ENDPOINT", cp_addr.to_string())
            .env("FLOWCTL_HEARTBEAT_INTERVAL", "100ms")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    wait_until("registration", || !cp.registered.lock().unwrap().is_empty()).await;
    let info = cp.registered.lock().unwrap()[0].clone();
    assert_eq!(info.service_type(), ServiceType::Processor);
    assert!(
        info.output_event_types
            .iter()
            .any(|t| t == "token_transfer.TokenTransferEvent"),
        "{info:?}"
    );

    // Serve a bounded range; the heartbeats then report it.
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut stream = None;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            stream = Some(events(addr, 1410048, 1410057).await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ours = collect_to_end(stream.expect("the component listens on PORT")).await;
    assert_same(&ours, &golden_between(&golden, 1410048, 1410057));

    let latest = || -> HashMap<String, f64> {
        cp.heartbeats
            .lock()
            .unwrap()
            .last()
            .map(|h| h.metrics.clone().into_iter().collect())
            .unwrap_or_default()
    };
    wait_until("a heartbeat after the range", || {
        latest().get("last_processed_ledger") == Some(&1410057.0)
    })
    .await;
    let m = latest();
    for name in [
        "success_count",
        "error_count",
        "total_processed",
        "total_events_emitted",
        "last_processed_ledger",
        "processing_latency_ms",
    ] {
        assert!(m.contains_key(name), "heartbeat lacks {name}: {m:?}");
    }
    assert_eq!(m["success_count"], 10.0);
    assert_eq!(m["total_events_emitted"], ours.len() as f64);

    let health = http_get(health_port, "/health").expect("/health answers on HEALTH_PORT");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
}
