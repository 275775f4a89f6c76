//! Readiness and liveness checks with real processes and sockets.

mod supervisor_common;

use std::time::{Duration, Instant};

use flowctl::plan::ProbeCheck;
use flowctl::supervisor::{testplan, StateName};
use supervisor_common::*;

/// A source whose `/health` passes `ready_after_ms` after start, checked every `period`, and a
/// sink that depends on it; both stamp their start in the files returned.
fn gated_pair(
    dir: &std::path::Path,
    ready_after_ms: u64,
    period: Duration,
) -> (
    flowctl::plan::PipelinePlan,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let (sa, sb) = (dir.join("a"), dir.join("b"));
    let port = free_port();
    let mut a = kit(
        "source",
        &[
            "--serve-health",
            "--ready-after-ms",
            &ready_after_ms.to_string(),
            "--stamp-file",
            sa.to_str().unwrap(),
        ],
    );
    a.health_port = port;
    a.readiness = Some(testplan::probe(
        ProbeCheck::Http {
            port,
            path: "/health".into(),
        },
        period,
    ));
    let mut b = kit("sink", &["--stamp-file", sb.to_str().unwrap()]);
    b.depends_on = vec!["source".into()];
    (testplan::pipeline("p", vec![a, b]), sa, sb)
}

#[tokio::test]
async fn readiness_gates_dependents_start() {
    let dir = tempfile::tempdir().unwrap();
    let (plan, sa, sb) = gated_pair(dir.path(), 600, Duration::from_millis(50));
    let run = start(plan);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let (a_now, b_now) = (
        component(&run.handle, "source").await,
        component(&run.handle, "sink").await,
    );
    assert_eq!(a_now.state, StateName::Starting);
    assert!(a_now.last_probe.is_none_or(|p| !p.ok), "not passing yet");
    assert_eq!((b_now.state, b_now.pid), (StateName::Pending, None));

    wait_for(&run.handle, "sink", Duration::from_secs(5), |c| {
        c.state == StateName::Ready
    })
    .await;
    // Ready at spawn (no check): wait for the process itself to have written its stamp.
    read_when_present(&sb, Duration::from_secs(5)).await;
    let a_start = stamps(&sa)[0].1;
    let b_start = stamps(&sb)[0].1;
    assert!(
        b_start - a_start >= 600_000_000,
        "the sink started {} ms after the source, before it was ready",
        (b_start - a_start) / 1_000_000
    );
    let a_ready = component(&run.handle, "source").await;
    assert!(a_ready.ready && a_ready.last_probe.unwrap().ok);
    run.handle.shutdown();
    run.task.await.unwrap();
}

#[tokio::test]
async fn readiness_not_yet_passed_is_checked_sooner_than_its_period() {
    let dir = tempfile::tempdir().unwrap();
    // A 5 s period: were only the period used, the sink would wait 5 s for the second check.
    let (plan, sa, sb) = gated_pair(dir.path(), 300, Duration::from_secs(5));
    let run = start(plan);

    read_when_present(&sb, Duration::from_secs(4)).await;
    let a_start = stamps(&sa)[0].1;
    let b_start = stamps(&sb)[0].1;
    let gap_ms = (b_start - a_start) / 1_000_000;
    // Checks at about 0, 50, 150, 350 ms, 750 ms…: passing at the first after 300 ms.
    assert!(
        (300..2_500).contains(&gap_ms),
        "the sink started {gap_ms} ms after the source"
    );
    run.handle.shutdown();
    run.task.await.unwrap();
}

#[tokio::test]
async fn notify_ready_marks_component_ready_and_shows_status() {
    let mut c = kit(
        "n",
        &[
            "--notify-ready",
            "--ready-after-ms",
            "200",
            "--notify-status",
            "caught up",
        ],
    );
    c.readiness = Some(testplan::probe(ProbeCheck::Notify, Duration::from_secs(1)));
    let run = start(testplan::pipeline("p", vec![c]));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(component(&run.handle, "n").await.state, StateName::Starting);
    let status = wait_for(&run.handle, "n", Duration::from_secs(5), |c| c.ready).await;
    assert_eq!(status.notify_status.as_deref(), Some("caught up"));
    run.handle.shutdown();
    run.task.await.unwrap();
}

#[tokio::test]
async fn registered_check_without_registry_stays_not_ready() {
    let mut c = kit("r", &[]);
    c.readiness = Some(testplan::probe(
        ProbeCheck::Registered,
        Duration::from_millis(20),
    ));
    let run = start(testplan::pipeline("p", vec![c]));
    wait_for(&run.handle, "r", Duration::from_secs(5), |c| {
        c.last_probe.is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = component(&run.handle, "r").await;
    assert_eq!(status.state, StateName::Starting);
    let error = status.last_probe.unwrap().error.unwrap();
    assert!(error.contains("no registry"), "{error}");
    run.handle.shutdown();
    run.task.await.unwrap();
}

#[tokio::test]
async fn grpc_readiness_check_follows_serving_status() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("ledgers", tonic_health::ServingStatus::NotServing)
        .await;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut c = kit("g", &[]);
    c.readiness = Some(testplan::probe(
        ProbeCheck::Grpc {
            port,
            service: "ledgers".into(),
        },
        Duration::from_millis(50),
    ));
    let run = start(testplan::pipeline("p", vec![c]));
    let status = wait_for(&run.handle, "g", Duration::from_secs(5), |c| {
        c.last_probe.is_some()
    })
    .await;
    let error = status.last_probe.unwrap().error.unwrap();
    assert!(error.contains("NOT_SERVING"), "{error}");
    reporter
        .set_service_status("ledgers", tonic_health::ServingStatus::Serving)
        .await;
    wait_for(&run.handle, "g", Duration::from_secs(5), |c| c.ready).await;
    run.handle.shutdown();
    run.task.await.unwrap();
}

#[tokio::test]
async fn exec_check_timeout_kills_the_check_process() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("check.pid");
    let mut c = kit("e", &[]);
    let mut probe = testplan::probe(
        ProbeCheck::Exec {
            command: vec![
                testkit().display().to_string(),
                "--pid-file".into(),
                pid_file.display().to_string(),
            ],
        },
        Duration::from_secs(60),
    );
    probe.timeout = Duration::from_millis(300);
    c.readiness = Some(probe);
    let run = start(testplan::pipeline("p", vec![c]));
    let check_pid: i32 = read_when_present(&pid_file, Duration::from_secs(5))
        .await
        .parse()
        .unwrap();
    let status = wait_for(&run.handle, "e", Duration::from_secs(5), |c| {
        c.last_probe.is_some()
    })
    .await;
    let error = status.last_probe.unwrap().error.unwrap();
    assert!(error.contains("timed out after 300ms"), "{error}");
    let deadline = Instant::now() + Duration::from_secs(1);
    while alive(check_pid) {
        assert!(
            Instant::now() < deadline,
            "check process {check_pid} survived its timeout"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status.state, StateName::Starting);
    run.handle.shutdown();
    run.task.await.unwrap();
}

#[tokio::test]
async fn exec_check_exit_code_decides_readiness() {
    let mut c = kit("e", &[]);
    c.readiness = Some(testplan::probe(
        ProbeCheck::Exec {
            command: vec![
                testkit().display().to_string(),
                "--exit-code".into(),
                "0".into(),
            ],
        },
        Duration::from_millis(50),
    ));
    let mut bad = kit("f", &[]);
    bad.readiness = Some(testplan::probe(
        ProbeCheck::Exec {
            command: vec![
                testkit().display().to_string(),
                "--exit-code".into(),
                "4".into(),
            ],
        },
        Duration::from_millis(50),
    ));
    let run = start(testplan::pipeline("p", vec![c, bad]));
    wait_for(&run.handle, "e", Duration::from_secs(5), |c| c.ready).await;
    let f = wait_for(&run.handle, "f", Duration::from_secs(5), |c| {
        c.last_probe.is_some()
    })
    .await;
    assert!(f
        .last_probe
        .unwrap()
        .error
        .unwrap()
        .contains("exited with code 4"));
    assert!(!component(&run.handle, "f").await.ready);
    run.handle.shutdown();
    run.task.await.unwrap();
}

#[tokio::test]
async fn watchdog_restarts_a_silent_component_and_spares_a_chatty_one() {
    let mut silent = kit("silent", &[]);
    silent.watchdog = Some(Duration::from_millis(200));
    silent.restart.initial_delay = Duration::from_millis(10);
    let mut chatty = kit("chatty", &["--watchdog-ms", "50"]);
    chatty.watchdog = Some(Duration::from_millis(200));
    let run = start(testplan::pipeline("p", vec![silent, chatty]));
    let s = wait_for(&run.handle, "silent", Duration::from_secs(5), |c| {
        c.restarts >= 1
    })
    .await;
    assert!(s.reason.unwrap().contains("watchdog"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(component(&run.handle, "chatty").await.restarts, 0);
    run.handle.shutdown();
    run.task.await.unwrap();
}

#[tokio::test]
async fn registered_check_follows_the_in_process_registry() {
    use flowctl::registry::state::{Api, Registration};
    use flowctl::registry::{Registry, RegistryConfig};
    let registry = Registry::open(RegistryConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.registry = Some(std::sync::Arc::new(registry.clone()));
    let mut c = kit("joiner", &[]);
    c.readiness = Some(testplan::probe(
        ProbeCheck::Registered,
        Duration::from_millis(20),
    ));
    let run = start_with(
        testplan::pipeline("p", vec![c]),
        opts,
        tempfile::tempdir().unwrap(),
    );
    let before = wait_for(&run.handle, "joiner", Duration::from_secs(5), |c| {
        c.last_probe.is_some()
    })
    .await;
    assert!(!before.ready);
    let error = before.last_probe.unwrap().error.unwrap();
    assert!(error.contains("has not registered"), "{error}");
    registry.register(Registration {
        service_id: "joiner".into(),
        component_id: "joiner".into(),
        api: Api::V1,
        service_type: Default::default(),
        info: Default::default(),
        max_inflight: 0,
    });
    wait_for(&run.handle, "joiner", Duration::from_secs(5), |c| c.ready).await;
    run.handle.shutdown();
    run.task.await.unwrap();
}
