//! The registry's memory and disk under the largest requests it accepts, repeated: a
//! `flowctl server` process is sent rounds of re-registrations with the largest metadata and
//! runs with the largest pipeline file, and its RSS, peak RSS and run store are read after
//! each round. The defect this guards against: 3.9 MB registrations took a registry from
//! 604 MB to 1.99 GB, and 100 runs of 3.9 MB added 377 MB on disk with an 8.4 GB peak.
//!
//! `cargo bench --bench registry_memory` (`-- --rounds N`, default 10).

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowctl::registry::client::{connect, ClientOptions, RegistryClient};
use flowctl::registry::limits::{MAX_CONFIG_YAML_BYTES, MAX_METADATA_BYTES, MAX_METADATA_ENTRIES};
use flowctl_proto::flowctl::{
    CreatePipelineRunRequest, ListPipelineRunsRequest, RunStatus, ServiceInfo,
    UpdatePipelineRunRequest,
};

const SERVICES: usize = 100;
const RUNS_PER_ROUND: usize = 20;

struct Server {
    child: Child,
    state: tempfile::TempDir,
    runtime: tempfile::TempDir,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let state = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_flowctl"))
        .args(["server", "--port", &port.to_string(), "--state-dir"])
        .arg(state.path())
        .arg("--runtime-dir")
        .arg(runtime.path())
        .args(["--run-retention", "100"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start flowctl server");
    Server {
        child,
        state,
        runtime,
        port,
    }
}

/// (VmRSS, VmHWM) in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn dir_mib(dir: &std::path::Path) -> f64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum::<u64>()
        })
        .unwrap_or(0) as f64
        / (1024.0 * 1024.0)
}

/// The largest metadata a registration may carry: 64 entries filling 64 KiB.
fn largest_metadata(round: usize) -> HashMap<String, String> {
    let value_len = MAX_METADATA_BYTES / MAX_METADATA_ENTRIES - 8;
    (0..MAX_METADATA_ENTRIES)
        .map(|i| (format!("k{i:03}"), format!("{round}").repeat(value_len)))
        .map(|(k, mut v)| {
            v.truncate(value_len);
            (k, v)
        })
        .collect()
}

async fn client(endpoint: String) -> RegistryClient {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match connect(&ClientOptions::from_env(endpoint.clone())).await {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("{e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(10usize);
    let server = start_server();
    let pid = server.child.id();
    let mut tcp = client(format!("127.0.0.1:{}", server.port)).await;
    let socket = server.runtime.path().join("registry.sock");
    let mut operator = client(format!("unix:{}", socket.display())).await;
    let config = "x".repeat(MAX_CONFIG_YAML_BYTES);
    let (idle, _) = rss_mib(pid);
    println!(
        "registry_memory: {SERVICES} services re-registered with {} KiB of metadata and \
         {RUNS_PER_ROUND} runs of a {} KiB pipeline file created and ended per round (retention 100 runs)",
        MAX_METADATA_BYTES / 1024,
        MAX_CONFIG_YAML_BYTES / 1024
    );
    println!("round  rss_mib  peak_mib  store_mib  secs");
    println!("{:>5}  {idle:>7.1}  {:>8}  {:>9}", 0, "-", "-");
    let mut after_first = 0.0;
    let mut last = (0.0, 0.0, 0.0);
    for round in 1..=rounds {
        let started = Instant::now();
        let metadata = largest_metadata(round);
        for i in 0..SERVICES {
            tcp.v0
                .register(ServiceInfo {
                    component_id: format!("svc-{i:03}"),
                    metadata: metadata.clone(),
                    ..Default::default()
                })
                .await
                .expect("register");
        }
        for _ in 0..RUNS_PER_ROUND {
            let run = operator
                .v0
                .create_pipeline_run(CreatePipelineRunRequest {
                    pipeline_name: "big".into(),
                    config_yaml: config.clone(),
                    ..Default::default()
                })
                .await
                .expect("create run")
                .into_inner();
            operator
                .v0
                .update_pipeline_run(UpdatePipelineRunRequest {
                    run_id: run.run_id,
                    status: RunStatus::Completed as i32,
                    ..Default::default()
                })
                .await
                .expect("end run");
        }
        let listed = operator
            .v0
            .list_pipeline_runs(ListPipelineRunsRequest::default())
            .await
            .expect("list runs")
            .into_inner();
        assert!(!listed.runs.is_empty());
        tcp.v0.list_services(()).await.expect("list services");
        let (rss, peak) = rss_mib(pid);
        let store = dir_mib(server.state.path());
        if round == 1 {
            after_first = rss;
        }
        last = (rss, peak, store);
        println!(
            "{round:>5}  {rss:>7.1}  {peak:>8.1}  {store:>9.1}  {:.2}",
            started.elapsed().as_secs_f64()
        );
    }
    let (rss, peak, store) = last;
    println!(
        "registry_memory: RSS {after_first:.1} MiB after round 1, {rss:.1} MiB after round \
         {rounds} (growth {:.1} MiB), peak {peak:.1} MiB, run store {store:.1} MiB; \
         reference defect: 604 MB -> 1.99 GB RSS, +377 MB store, 8.4 GB peak",
        rss - after_first
    );
}
