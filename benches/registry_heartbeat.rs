//! Registry load: heartbeats per second from many concurrent components over loopback, their
//! latency, and the registry's memory with many registered services.
//!
//! The registry runs as its own process (`flowctl server`), so its RSS is its own; the load
//! generator runs here, on the same machine, each simulated component with its own TCP
//! connection. Phases:
//! 1. register `SERVICES` services, read the registry's RSS;
//! 2. paced: `CLIENTS` components together offering `RATE` heartbeats/s (one in flight each,
//!    as real components do), for `SECS` s: achieved rate, p50/p99 latency;
//! 3. saturation: the same components heartbeating back to back, for `SECS` s: the ceiling;
//! 4. RSS again (current and peak);
//! 5. the floor: the same connections doing the same-sized round trips over bare loopback TCP
//!    against a trivial echo server, as fast as they can: what the kernel and the two cores
//!    allow before any protocol.
//!
//! `cargo bench --bench registry_heartbeat`; override with env `BENCH_CLIENTS`,
//! `BENCH_RATE`, `BENCH_SECS`, `BENCH_SERVICES`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use flowctl_proto::flowctl::control_plane_client::ControlPlaneClient;
use flowctl_proto::flowctl::{ServiceHeartbeat, ServiceInfo, ServiceType};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Server {
    child: Child,
    port: u16,
    _state: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let state = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = Command::new(env!("CARGO_BIN_EXE_flowctl"))
        .args([
            "server",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--no-unix-socket",
            "--state-dir",
        ])
        .arg(state.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start flowctl server");
    Server {
        child,
        port,
        _state: state,
    }
}

/// (VmRSS, VmHWM) in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time (user + system) a process has used.
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// One simulated component's HTTP/2 connection, used by tonic's generated client directly.
///
/// The load generator shares the two cores with the registry, so it should cost as little as
/// it can: tonic's `Channel` adds a buffer task and a hop per request on top of this.
#[derive(Clone)]
struct Connection(http2::SendRequest<tonic::body::Body>);

impl tower::Service<http::Request<tonic::body::Body>> for Connection {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}

type Client = ControlPlaneClient<Connection>;

async fn connect(port: u16) -> Client {
    let origin: http::Uri = format!("http://127.0.0.1:{port}").parse().unwrap();
    for _ in 0..100 {
        let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tcp.set_nodelay(true).unwrap();
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("HTTP/2 handshake with the registry");
        tokio::spawn(connection);
        return ControlPlaneClient::with_origin(Connection(sender), origin);
    }
    panic!("registry did not come up on port {port}");
}

fn service_id(i: u64) -> String {
    format!("bench-{i:05}")
}

/// The metrics the Go ttp-processor sends.
fn metrics(n: u64) -> HashMap<String, f64> {
    HashMap::from([
        ("success_count".into(), n as f64),
        ("error_count".into(), 0.0),
        ("total_processed".into(), n as f64),
        ("total_events_emitted".into(), (n * 23) as f64),
        ("last_processed_ledger".into(), (500_000 + n) as f64),
        ("processing_latency_ms".into(), 1.5),
    ])
}

struct Outcome {
    /// CPU used by the registry and by the load generator during the phase.
    server_cpu: Duration,
    client_cpu: Duration,
    sent: u64,
    errors: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

/// One simulated component's request/response round trip.
trait Beat: Send + 'static {
    /// Sends the `n`th request and waits for its answer; false when it failed.
    fn beat(&mut self, n: u64) -> impl Future<Output = bool> + Send;
}

/// A real heartbeat through the registry's gRPC API.
struct Heartbeat {
    client: Client,
    id: String,
}

impl Beat for Heartbeat {
    async fn beat(&mut self, n: u64) -> bool {
        let request = ServiceHeartbeat {
            service_id: self.id.clone(),
            timestamp: None,
            metrics: metrics(n),
        };
        self.client.heartbeat(request).await.is_ok()
    }
}

/// A heartbeat's bytes with none of the protocol: what loopback TCP alone costs.
struct BareRoundTrip(tokio::net::TcpStream);

/// About what a heartbeat's HEADERS + DATA frames, and its answer's HEADERS + DATA +
/// trailers, take on the wire.
const FLOOR_REQUEST: usize = 256;
const FLOOR_RESPONSE: usize = 64;

impl Beat for BareRoundTrip {
    async fn beat(&mut self, _n: u64) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut answer = [0u8; FLOOR_RESPONSE];
        self.0.write_all(&[7u8; FLOOR_REQUEST]).await.is_ok()
            && self.0.read_exact(&mut answer).await.is_ok()
    }
}

/// Each component beating for `secs`; `period` None means back to back.
async fn load<B: Beat>(
    server_pid: u32,
    components: Vec<B>,
    period: Option<Duration>,
    secs: u64,
) -> Outcome {
    let (server_cpu0, client_cpu0) = (cpu_time(&server_pid.to_string()), cpu_time("self"));
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs(secs);
    let count = components.len();
    let mut tasks = Vec::new();
    for (i, mut component) in components.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            // Spread the components' phases over one period so they do not beat in lockstep.
            let offset = period
                .map(|p| p.mul_f64(i as f64 / count as f64))
                .unwrap_or_default();
            let mut next = tokio::time::Instant::from_std(start + offset);
            let mut latencies = Vec::new();
            let (mut sent, mut errors) = (0u64, 0u64);
            loop {
                if let Some(p) = period {
                    tokio::time::sleep_until(next).await;
                    next += p;
                } else if Instant::now() < start {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(start)).await;
                }
                if Instant::now() >= end {
                    break;
                }
                let t = Instant::now();
                let ok = component.beat(sent).await;
                latencies.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                sent += 1;
                if !ok {
                    errors += 1;
                }
            }
            (sent, errors, latencies)
        }));
    }
    let mut outcome = Outcome {
        server_cpu: Duration::ZERO,
        client_cpu: Duration::ZERO,
        sent: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
    };
    for t in tasks {
        let (sent, errors, lat) = t.await.unwrap();
        outcome.sent += sent;
        outcome.errors += errors;
        outcome.latencies_us.extend(lat);
    }
    outcome.elapsed = Instant::now()
        .saturating_duration_since(start)
        .min(Duration::from_secs(secs) + Duration::from_millis(500));
    outcome.server_cpu = cpu_time(&server_pid.to_string()).saturating_sub(server_cpu0);
    outcome.client_cpu = cpu_time("self").saturating_sub(client_cpu0);
    outcome.latencies_us.sort_unstable();
    outcome
}

/// The floor's server: answers every `FLOOR_REQUEST` bytes with `FLOOR_RESPONSE` bytes, on a
/// runtime built like `flowctl server`'s. Runs as its own process (this binary, re-executed).
fn echo_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut request = [0u8; FLOOR_REQUEST];
                while tcp.read_exact(&mut request).await.is_ok() {
                    if tcp.write_all(&[1u8; FLOOR_RESPONSE]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// Loopback TCP alone, same connections, sizes and pacing: the ceiling any protocol on top
/// could reach on this machine.
async fn floor(clients: u64, secs: u64) -> Outcome {
    use std::io::BufRead;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("--echo-server")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the echo server");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().unwrap();
    let mut connections = Vec::new();
    for _ in 0..clients {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        tcp.set_nodelay(true).unwrap();
        connections.push(BareRoundTrip(tcp));
    }
    let outcome = load(child.id(), connections, None, secs).await;
    let _ = child.kill();
    let _ = child.wait();
    outcome
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn report(name: &str, o: &Outcome) {
    let secs = o.elapsed.as_secs_f64();
    println!(
        "{name:<11} {:>9.0} heartbeats/s  p50 {:>6.2} ms  p99 {:>6.2} ms  p99.9 {:>6.2} ms  max {:>7.2} ms  errors {}",
        o.sent as f64 / secs,
        percentile(&o.latencies_us, 0.50),
        percentile(&o.latencies_us, 0.99),
        percentile(&o.latencies_us, 0.999),
        percentile(&o.latencies_us, 1.0),
        o.errors
    );
    let per = |cpu: Duration| cpu.as_secs_f64() * 1e6 / o.sent.max(1) as f64;
    println!(
        "{:<11} registry CPU {:.1} us/heartbeat ({:.2} cores), load generator CPU {:.1} us/heartbeat",
        "",
        per(o.server_cpu),
        o.server_cpu.as_secs_f64() / secs,
        per(o.client_cpu)
    );
}

fn main() {
    if std::env::args().any(|a| a == "--echo-server") {
        return echo_server();
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: keep that short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let clients = env_or("BENCH_CLIENTS", if quick { 50 } else { 1000 });
    let rate = env_or("BENCH_RATE", if quick { 1000 } else { 50_000 });
    let secs = env_or("BENCH_SECS", if quick { 1 } else { 10 });
    let services = env_or("BENCH_SERVICES", if quick { 500 } else { 10_000 }).max(clients);

    let server = start_server();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (idle_rss, _) = {
            let _ = connect(server.port).await;
            rss_kib(server.child.id())
        };
        // One connection per component, as real components have.
        let mut channels = Vec::new();
        for _ in 0..clients {
            channels.push(connect(server.port).await);
        }
        let registered = Instant::now();
        let mut joins = Vec::new();
        for chunk in 0..clients.min(64) {
            let mut client = channels[chunk as usize].clone();
            let (step, n) = (clients.min(64), services);
            joins.push(tokio::spawn(async move {
                let mut i = chunk;
                while i < n {
                    let info = ServiceInfo {
                        service_type: ServiceType::Processor as i32,
                        component_id: service_id(i),
                        output_event_types: vec!["token_transfer.TokenTransferEvent".into()],
                        health_endpoint: format!("http://127.0.0.1:{}/health", 20000 + i % 40000),
                        metadata: HashMap::from([("network".into(), "testnet".into())]),
                        ..Default::default()
                    };
                    client.register(info).await.expect("register");
                    client
                        .heartbeat(ServiceHeartbeat { service_id: service_id(i), timestamp: None, metrics: metrics(i) })
                        .await
                        .expect("first heartbeat");
                    i += step;
                }
            }));
        }
        for j in joins {
            j.await.unwrap();
        }
        let registration = registered.elapsed();
        let (rss_registered, _) = rss_kib(server.child.id());
        println!(
            "registry: {services} services registered (with metrics) in {:.2} s; RSS idle {:.1} MiB, with {services} services {:.1} MiB",
            registration.as_secs_f64(),
            idle_rss as f64 / 1024.0,
            rss_registered as f64 / 1024.0
        );
        println!("load: {clients} concurrent components over loopback, {} cores shared by registry and load", num_cpus());

        let heartbeats = || {
            (0..clients)
                .map(|i| Heartbeat {
                    client: channels[i as usize].clone(),
                    id: service_id(i),
                })
                .collect::<Vec<_>>()
        };
        let period = Duration::from_secs_f64(clients as f64 / rate as f64);
        let paced = load(server.child.id(), heartbeats(), Some(period), secs).await;
        report(&format!("paced {}k/s", rate / 1000), &paced);
        let saturated = load(server.child.id(), heartbeats(), None, secs).await;
        report("saturation", &saturated);
        let bare = floor(clients, secs).await;
        report("bare TCP", &bare);
        let (rss, hwm) = rss_kib(server.child.id());
        println!("registry RSS after load: {:.1} MiB (peak {:.1} MiB)", rss as f64 / 1024.0, hwm as f64 / 1024.0);
        assert_eq!(paced.errors + saturated.errors, 0, "heartbeats failed");
    });
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
