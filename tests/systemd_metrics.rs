//! The daemon's Prometheus `/metrics`: `flowctl-sup run` with a temporary config and a free
//! port, scraped over HTTP and parsed as Prometheus text.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

mod daemon_common;
use daemon_common::{sup_status, write_config, SUP};

/// The daemon; killed on drop whatever happened.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes a config whose pipelines dir holds `pipeline` (YAML) and starts the daemon on it.
fn start_daemon(dir: &Path, metrics_listen: &str, pipeline: &str) -> Daemon {
    let (config, pipelines) = write_config(dir, metrics_listen);
    std::fs::write(pipelines.join("p.yaml"), pipeline).unwrap();
    let child = Command::new(SUP)
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Daemon(child)
}

const SLEEPER: &str = "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata: {name: obs}\nspec:\n  \
                       sources:\n    - id: sleeper\n      command: sleep\n      args: [\"1000\"]\n";

/// GET `http://127.0.0.1:port/path`: status, content type and body.
fn get(port: u16, path: &str) -> std::io::Result<(u16, String, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, format!("127.0.0.1:{port}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender
            .send_request(request)
            .await
            .map_err(std::io::Error::other)?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        Ok((
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        ))
    })
}

/// One scrape, parsed as Prometheus text: `name{labels}` → value, labels sorted.
struct Scrape {
    text: String,
    values: HashMap<String, f64>,
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let parsed = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
        let mut values = HashMap::new();
        for s in parsed.samples {
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                other => panic!("unexpected sample {other:?}"),
            };
            values.insert(format!("{}{{{}}}", s.metric, labels.join(",")), value);
        }
        Scrape { text, values }
    }

    /// The value of `metric` for component `sleeper` of pipeline `obs`, plus `extra` labels.
    fn sleeper(&self, metric: &str, extra: &[&str]) -> Option<f64> {
        let mut labels = vec!["component=sleeper", "pipeline=obs"];
        labels.extend_from_slice(extra);
        labels.sort();
        self.values
            .get(&format!("{metric}{{{}}}", labels.join(",")))
            .copied()
    }
}

/// Scrapes until `pred` holds (the daemon may still be starting), or panics with the last text.
fn scrape_until(port: u16, what: &str, pred: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::from("(no answer)");
    while Instant::now() < deadline {
        if let Ok((200, content_type, body)) = get(port, "/metrics") {
            assert!(
                content_type.starts_with("application/openmetrics-text"),
                "{content_type}"
            );
            let scrape = Scrape::parse(body);
            if pred(&scrape) {
                return scrape;
            }
            last = scrape.text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}; last scrape:\n{last}");
}

#[test]
fn metrics_show_up_ready_and_restarts_of_a_component_across_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _daemon = start_daemon(dir.path(), &format!("127.0.0.1:{port}"), SLEEPER);

    let first = scrape_until(port, "sleeper ready", |s| {
        s.sleeper("flowctl_component_ready", &[]) == Some(1.0)
    });
    assert_eq!(first.sleeper("flowctl_component_up", &[]), Some(1.0));
    assert_eq!(
        first.sleeper("flowctl_component_restarts_total", &[]),
        Some(0.0)
    );
    assert_eq!(
        first.sleeper("flowctl_component_state", &["state=ready"]),
        Some(1.0)
    );
    assert_eq!(
        first.sleeper("flowctl_component_state", &["state=failed"]),
        Some(0.0)
    );
    assert_eq!(first.values.get("flowctl_pipelines{}"), Some(&1.0));
    assert_eq!(first.values.get("flowctl_components{}"), Some(&1.0));
    assert!(
        first.text.contains(&format!(
            "flowctl_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{}",
        first.text
    );
    assert!(first
        .sleeper("flowctl_component_last_exit_signal", &[])
        .is_none());

    // kill -9 of the component: the supervisor restarts it, and the scrape says so.
    let json = sup_status(&dir.path().join("run/flowctl.sock"));
    let pid = json["pipelines"][0]["components"][0]["pid"]
        .as_i64()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let after = scrape_until(port, "a restart after kill -9", |s| {
        s.sleeper("flowctl_component_restarts_total", &[]) == Some(1.0)
            && s.sleeper("flowctl_component_ready", &[]) == Some(1.0)
    });
    assert_eq!(after.sleeper("flowctl_component_up", &[]), Some(1.0));
    assert_eq!(
        after.sleeper("flowctl_component_last_exit_signal", &[]),
        Some(9.0)
    );
    assert!(after
        .sleeper("flowctl_component_last_exit_code", &[])
        .is_none());

    // Only /metrics is served.
    assert_eq!(get(port, "/").unwrap().0, 404);
}

/// Waits until the daemon says `want` on stderr (it logs there without journald), returns
/// everything it said so far.
fn stderr_until(daemon: &mut Daemon, want: &str) -> String {
    let mut err = daemon.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(100)) {
            seen.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&seen);
        if text.contains(want) {
            return text.into_owned();
        }
    }
    panic!(
        "daemon never said {want:?}:\n{}",
        String::from_utf8_lossy(&seen)
    );
}

fn assert_runs_on(daemon: &mut Daemon, dir: &Path) {
    assert!(daemon.0.try_wait().unwrap().is_none(), "the daemon exited");
    sup_status(&dir.join("run/flowctl.sock"));
}

#[test]
fn a_taken_metrics_port_is_reported_and_the_daemon_runs_on() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = start_daemon(dir.path(), &addr.to_string(), SLEEPER);
    let said = stderr_until(&mut daemon, "running without /metrics");
    assert!(
        said.contains(&format!("cannot listen on {addr} for /metrics")),
        "{said}"
    );
    assert_runs_on(&mut daemon, dir.path());
}

#[test]
fn a_non_loopback_metrics_address_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut daemon = start_daemon(dir.path(), &format!("0.0.0.0:{port}"), SLEEPER);
    let said = stderr_until(&mut daemon, "running without /metrics");
    assert!(
        said.contains("is not a loopback address") && said.contains("metrics.allow_remote"),
        "{said}"
    );
    assert_runs_on(&mut daemon, dir.path());
    assert!(get(port, "/metrics").is_err(), "served on 0.0.0.0 anyway");
}
