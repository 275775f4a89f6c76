//! The control socket and `flowctl-sup` against a running supervisor.

mod supervisor_common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use flowctl::api;
use flowctl::plan::RestartPolicy;
use flowctl::supervisor::reaper::{self, ExitStatus};
use flowctl::supervisor::{testplan, StateName};
use supervisor_common::*;

/// What `flowctl-sup` printed and how it exited.
struct Output {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs `flowctl-sup ARGS --socket SOCKET`. The supervisor's reap loop collects every child
/// of this process, so the CLI is spawned through it to get its exit status.
#[allow(clippy::zombie_processes)] // the reap loop waits for it
async fn sup(socket: &Path, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_flowctl-sup"));
    cmd.args(args)
        .arg("--socket")
        .arg(socket)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut child = reaper::spawn_registered(
        &mut cmd,
        Box::new(move |exited: reaper::Exited| {
            let _ = tx.send(exited.status);
        }),
    )
    .unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let (stdout, stderr) = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let (mut o, mut e) = (Vec::new(), Vec::new());
        out.read_to_end(&mut o).unwrap();
        err.read_to_end(&mut e).unwrap();
        (o, e)
    })
    .await
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .unwrap()
        .unwrap();
    Output {
        code: match status {
            ExitStatus::Code(code) => Some(code),
            ExitStatus::Signal(_) => None,
        },
        stdout,
        stderr,
    }
}

#[tokio::test]
async fn control_socket_is_0660_and_status_json_has_fields() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("run");
    let socket = api::socket::socket_path(&runtime);
    let mut job = kit("job", &["--exit-code", "2"]);
    job.restart.policy = RestartPolicy::Never;
    let worker = kit("worker", &[]);
    let run = start(testplan::pipeline("demo", vec![job, worker]));
    let listener = api::socket::bind(&socket).unwrap();
    tokio::spawn(api::server::serve(listener, run.handle.clone()));

    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.mode() & 0o002, 0, "never world-writable");

    wait_for(&run.handle, "job", Duration::from_secs(5), |c| {
        c.state == StateName::Failed
    })
    .await;
    wait_for(&run.handle, "worker", Duration::from_secs(5), |c| c.ready).await;
    let out = sup(&socket, &["status", "--json"]).await;
    assert_eq!(out.code, Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let json: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout} {}", String::from_utf8_lossy(&out.stderr)));
    let pipeline = &json["pipelines"][0];
    assert_eq!(pipeline["name"], "demo");
    let job = &pipeline["components"][0];
    let worker = &pipeline["components"][1];
    for field in [
        "id",
        "state",
        "pid",
        "restarts",
        "ready",
        "uptime_ms",
        "last_exit",
        "next_restart_ms",
        "last_probe",
    ] {
        assert!(job.get(field).is_some(), "missing {field} in {job}");
    }
    assert_eq!(job["id"], "job");
    assert_eq!(job["state"], "failed");
    assert_eq!(job["last_exit"], serde_json::json!({"code": 2}));
    assert_eq!(job["pid"], serde_json::Value::Null);
    assert_eq!(worker["state"], "ready");
    assert_eq!(worker["ready"], true);
    assert!(worker["pid"].as_i64().unwrap() > 0);
    assert!(worker["uptime_ms"].as_u64().is_some());

    let table = String::from_utf8(sup(&socket, &["status"]).await.stdout).unwrap();
    assert!(table.starts_with("PIPELINE"), "{table}");
    assert!(
        table.contains("worker") && table.contains("ready"),
        "{table}"
    );
    assert!(table.contains("code 2"), "{table}");
    run.handle.shutdown();
    run.task.await.unwrap();
}

#[tokio::test]
async fn flowctl_sup_restart_stop_start_act_on_one_component() {
    let dir = tempfile::tempdir().unwrap();
    let socket = api::socket::socket_path(&dir.path().join("run"));
    let run = start(testplan::pipeline(
        "demo",
        vec![kit("a", &[]), kit("b", &[])],
    ));
    tokio::spawn(api::server::serve(
        api::socket::bind(&socket).unwrap(),
        run.handle.clone(),
    ));
    let first = wait_for(&run.handle, "a", Duration::from_secs(5), |c| c.ready).await;
    let b_pid = wait_for(&run.handle, "b", Duration::from_secs(5), |c| c.ready)
        .await
        .pid;

    assert_eq!(sup(&socket, &["restart", "a"]).await.code, Some(0));
    let again = wait_for(&run.handle, "a", Duration::from_secs(5), |c| {
        c.restarts == 1 && c.ready
    })
    .await;
    assert_ne!(again.pid, first.pid);

    sup(&socket, &["stop", "demo/a"]).await;
    wait_for(&run.handle, "a", Duration::from_secs(5), |c| {
        c.state == StateName::Stopped
    })
    .await;
    sup(&socket, &["start", "a"]).await;
    wait_for(&run.handle, "a", Duration::from_secs(5), |c| c.ready).await;
    assert_eq!(component(&run.handle, "b").await.pid, b_pid, "b untouched");

    let out = sup(&socket, &["restart", "nope"]).await;
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("no component `nope`"), "{stderr}");
    assert_eq!(out.code, Some(1));
    run.handle.shutdown();
    run.task.await.unwrap();
}

#[tokio::test]
async fn second_bind_on_a_live_socket_is_refused_and_stale_one_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let socket = api::socket::socket_path(&dir.path().join("run"));
    let first = api::socket::bind(&socket).unwrap();
    let err = api::socket::bind(&socket).unwrap_err();
    assert!(err.to_string().contains("already listening"), "{err}");
    drop(first);
    api::socket::bind(&socket).expect("a stale socket is replaced");
}

#[tokio::test]
async fn control_request_over_64_kib_gets_one_error_and_its_tail_never_runs() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let socket = api::socket::socket_path(&dir.path().join("run"));
    let run = start(testplan::pipeline("demo", vec![kit("a", &[])]));
    tokio::spawn(api::server::serve(
        api::socket::bind(&socket).unwrap(),
        run.handle.clone(),
    ));
    let before = wait_for(&run.handle, "a", Duration::from_secs(5), |c| c.ready).await;

    // 70 KiB: padding, then at byte 64 KiB a request that would stop `a` if run on its own.
    let mut request = vec![b' '; 64 * 1024];
    request.extend_from_slice(br#"{"cmd":"stop","component":"a"}"#);
    request.resize(70 * 1024, b' ');
    request.push(b'\n');
    let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let (read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&request).await;
        let _ = write.shutdown().await;
    });
    let mut replies = String::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut lines = BufReader::new(read);
        let mut first = String::new();
        lines.read_line(&mut first).await.unwrap();
        replies.push_str(&first);
        lines.read_to_string(&mut replies).await.unwrap();
    })
    .await
    .expect("the supervisor answered and closed the connection");
    writer.await.unwrap();
    assert_eq!(replies.lines().count(), 1, "{replies}");
    let reply: api::protocol::Response = serde_json::from_str(replies.trim()).unwrap();
    assert!(!reply.ok);
    assert!(
        reply
            .error
            .as_deref()
            .unwrap()
            .contains("request too large"),
        "{replies}"
    );

    // A status request on a new connection is answered only after any earlier request; `a`
    // is still the same running process.
    let status = sup(&socket, &["status", "--json"]).await;
    assert_eq!(status.code, Some(0));
    let after = component(&run.handle, "a").await;
    assert_eq!(after.state, StateName::Ready);
    assert_eq!(
        after.pid, before.pid,
        "the tail of the request stopped nothing"
    );
    run.handle.shutdown();
    run.task.await.unwrap();
}
