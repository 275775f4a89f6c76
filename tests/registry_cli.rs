//! `flowctl server`, `list`, `get pipelines` and `pipelines …` as an operator runs them: real
//! processes, a real socket, and the output they print.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use flowctl::registry::client::{connect, ClientOptions};
use flowctl_proto::flowctl::{
    CreatePipelineRunRequest, RunStatus, ServiceHeartbeat, ServiceInfo, ServiceType,
    UpdatePipelineRunRequest,
};

struct Server {
    child: Child,
    endpoint: String,
    socket: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(dir: &Path) -> Server {
    start_server_with(dir, &[])
}

fn start_server_with(dir: &Path, extra: &[&str]) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_flowctl"))
        .args(["server", "--port", &port.to_string(), "--state-dir"])
        .arg(dir.join("state"))
        .arg("--runtime-dir")
        .arg(dir.join("run"))
        .args(extra)
        .spawn()
        .unwrap();
    let socket = dir.join("run/registry.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() || !socket.exists() {
        assert!(Instant::now() < deadline, "flowctl server did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server {
        child,
        endpoint: format!("127.0.0.1:{port}"),
        socket,
    }
}

fn flowctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowctl"))
        .args(args)
        .env_remove("FLOWCTL_ENDPOINT")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn cli_lists_services_and_pipeline_runs_and_resolves_run_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    let ep = server.endpoint.clone();
    // Runs are managed over the unix socket; TCP without the token may only read and register.
    let operator = format!("unix:{}", server.socket.display());
    let mut c = connect(&ClientOptions::from_env(operator)).await.unwrap();
    c.v0.register(ServiceInfo {
        component_id: "ttp-processor".into(),
        service_type: ServiceType::Processor as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    c.v0.heartbeat(ServiceHeartbeat {
        service_id: "ttp-processor".into(),
        timestamp: None,
        metrics: HashMap::from([("total_processed".into(), 5.0)]),
    })
    .await
    .unwrap();
    for (id, name) in [
        ("aaaa-1111", "ttp"),
        ("aaaa-2222", "ttp"),
        ("bbbb-3333", "backfill"),
    ] {
        c.v0.create_pipeline_run(CreatePipelineRunRequest {
            run_id: id.into(),
            pipeline_name: name.into(),
            config_yaml: String::new(),
            component_ids: vec!["ttp-processor".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    c.v0.update_pipeline_run(UpdatePipelineRunRequest {
        run_id: "aaaa-1111".into(),
        status: RunStatus::Failed as i32,
        error: "source unreachable".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    // flowctl list: table and JSON, over TCP and over the unix socket.
    let out = flowctl(&["list", "--endpoint", &ep]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.starts_with("SERVICE"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("ttp-processor"))
        .unwrap();
    assert!(
        row.contains("processor") && row.contains("healthy") && row.contains("total_processed=5"),
        "{row}"
    );
    let unix = format!("unix:{}", server.socket.display());
    let out = flowctl(&["list", "-o", "json", "--endpoint", &unix]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json[0]["service_id"], "ttp-processor");
    assert_eq!(json[0]["component_id"], "ttp-processor");
    assert_eq!(json[0]["health"], "healthy");
    assert_eq!(json[0]["metrics"]["total_processed"], "5");

    // get pipelines / pipelines list: one row per pipeline, with its latest run.
    let out = flowctl(&["get", "pipelines", "--endpoint", &ep, "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let names: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["backfill", "ttp"]);
    assert_eq!(json[1]["runs"], 2);
    let out = flowctl(&["pipelines", "list", "--endpoint", &ep]);
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with("ttp") && l.contains("aaaa-2222")),
        "{}",
        stdout(&out)
    );

    // pipelines runs NAME: newest first.
    let out = flowctl(&["pipelines", "runs", "ttp", "--endpoint", &ep]);
    let text = stdout(&out);
    let ids: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(ids, ["aaaa-2222", "aaaa-1111"], "{text}");
    let out = flowctl(&[
        "pipelines",
        "runs",
        "ttp",
        "--status",
        "failed",
        "--endpoint",
        &ep,
    ]);
    assert!(
        stdout(&out).contains("source unreachable"),
        "{}",
        stdout(&out)
    );

    // pipelines get: a unique prefix works, an ambiguous one lists the matches.
    let out = flowctl(&["pipelines", "get", "bbbb", "--endpoint", &ep]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Run:        bbbb-3333"),
        "{}",
        stdout(&out)
    );
    let out = flowctl(&["pipelines", "get", "aaaa", "--endpoint", &ep]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("ambiguous") && err.contains("aaaa-1111") && err.contains("aaaa-2222"),
        "{err}"
    );
    let out = flowctl(&["pipelines", "get", "zzzz", "--endpoint", &ep]);
    assert!(
        stderr(&out).contains("no pipeline run matches \"zzzz\""),
        "{}",
        stderr(&out)
    );

    // pipelines stop over TCP without the operator token is refused, and says where to go.
    let out = flowctl(&["pipelines", "stop", "bbbb", "--endpoint", &ep]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("unix socket"), "{}", stderr(&out));

    // Over the unix socket: the run's component still heartbeats and no owner is in this
    // registry, so it refuses and says why.
    let out = flowctl(&["pipelines", "stop", "bbbb", "--endpoint", &unix]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot stop"), "{}", stderr(&out));
    assert!(stderr(&out).contains("ttp-processor"), "{}", stderr(&out));
}

#[test]
fn server_stops_cleanly_on_sigterm_and_removes_its_socket() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_server(dir.path());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!server.socket.exists());
    assert!(dir.path().join("state/runs.sqlite3").exists());
}

#[test]
fn cli_reports_an_unreachable_registry_plainly() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = flowctl(&["list", "--endpoint", &format!("127.0.0.1:{port}")]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        format!("flowctl: error: cannot connect to the registry at 127.0.0.1:{port}: Connection refused (os error 111)")
    );
}

#[tokio::test]
async fn list_prints_the_longest_allowed_id_and_an_escape_sequence_id_escaped_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    let ep = server.endpoint.clone();
    let mut c = connect(&ClientOptions::from_env(ep.clone())).await.unwrap();
    // The registry refuses longer ids (tests/registry_limits.rs); the CLI pads any length
    // (cli::text's unit tests go past the formatter's 65,535 limit).
    let long = "L".repeat(flowctl::registry::limits::MAX_ID_BYTES);
    for id in [long.as_str(), "evil\x1b[2Jid"] {
        c.v0.register(ServiceInfo {
            component_id: id.into(),
            service_type: ServiceType::Processor as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let out = flowctl(&["list", "--endpoint", &ep]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(!table.contains('\x1b'), "raw escape printed");
    assert!(table.contains("evil\\u{1b}[2Jid"), "{}", &table[..200]);
    assert!(table.contains(&long));
}

#[tokio::test]
async fn a_silent_registration_tied_to_no_component_is_dropped_after_ttl_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server_with(
        dir.path(),
        &["--heartbeat-ttl", "200ms", "--unlinked-retention", "300ms"],
    );
    let ep = server.endpoint.clone();
    let mut c = connect(&ClientOptions::from_env(ep.clone())).await.unwrap();
    let ack =
        c.v0.register(ServiceInfo {
            service_type: ServiceType::Processor as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let listed = || {
        let out = flowctl(&["list", "--endpoint", &ep, "-o", "json"]);
        stdout(&out)
    };
    assert!(listed().contains(&ack.service_id));
    let deadline = Instant::now() + Duration::from_secs(10);
    while listed().contains(&ack.service_id) {
        assert!(Instant::now() < deadline, "still listed: {}", listed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Dropped, not merely unhealthy: its heartbeat is told to register again.
    let beat =
        c.v0.heartbeat(ServiceHeartbeat {
            service_id: ack.service_id.clone(),
            timestamp: None,
            metrics: HashMap::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(beat.code(), tonic::Code::NotFound, "{beat}");
}
