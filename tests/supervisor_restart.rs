//! Restart policy with real processes: backoff, reset, start limit, reaping, spawn failures.

mod supervisor_common;

use std::time::Duration;

use flowctl::api::protocol::LastExit;
use flowctl::plan::{ProbeCheck, RestartPolicy};
use flowctl::supervisor::{testplan, StateName};
use supervisor_common::*;

/// Gaps between each exit and the next start, in ms.
fn restart_gaps(stamps: &[(String, u128)]) -> Vec<u128> {
    stamps
        .windows(2)
        .filter(|w| w[0].0 == "exit" && w[1].0 == "start")
        .map(|w| (w[1].1 - w[0].1) / 1_000_000)
        .collect()
}

/// Waits until the restarted processes have written `n` exit→start gaps.
async fn gaps_when(stamp: &std::path::Path, n: usize) -> Vec<u128> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let gaps = restart_gaps(&stamps(stamp));
        if gaps.len() >= n {
            return gaps;
        }
        assert!(std::time::Instant::now() < deadline, "only {gaps:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn restart_backoff_grows_by_multiplier_to_cap() {
    let dir = tempfile::tempdir().unwrap();
    let stamp = dir.path().join("stamps");
    let mut c = kit(
        "crasher",
        &["--exit-code", "1", "--stamp-file", stamp.to_str().unwrap()],
    );
    c.restart.initial_delay = Duration::from_millis(100);
    c.restart.multiplier = 2.0;
    c.restart.max_delay = Duration::from_millis(400);
    c.restart.start_limit_burst = 0;
    let run = start(testplan::pipeline("p", vec![c]));
    let gaps = gaps_when(&stamp, 5).await;
    let want = [100u128, 200, 400, 400, 400];
    assert!(gaps.len() >= want.len(), "gaps {gaps:?}");
    for (got, want) in gaps.iter().zip(want) {
        assert!(
            *got >= want && *got < want + 150,
            "delays {gaps:?} should follow {want} (100, 200, 400, 400, 400 ms)"
        );
    }
    run.handle.shutdown();
    run.task.await.unwrap();
}

#[tokio::test]
async fn restart_backoff_resets_after_stable_run() {
    let dir = tempfile::tempdir().unwrap();
    let stamp = dir.path().join("stamps");
    // Each run lasts 300 ms, longer than reset_after: every restart waits the initial delay,
    // where without the reset the delays would be 100, 400, 1600 ms.
    let mut c = kit(
        "steady",
        &[
            "--exit-code",
            "1",
            "--after-ms",
            "300",
            "--stamp-file",
            stamp.to_str().unwrap(),
        ],
    );
    c.restart.initial_delay = Duration::from_millis(100);
    c.restart.multiplier = 4.0;
    c.restart.max_delay = Duration::from_secs(10);
    c.restart.reset_after = Duration::from_millis(200);
    c.restart.start_limit_burst = 0;
    let run = start(testplan::pipeline("p", vec![c]));
    let gaps = gaps_when(&stamp, 3).await;
    assert!(gaps.len() >= 3, "gaps {gaps:?}");
    for gap in &gaps[..3] {
        assert!(
            (100..250).contains(gap),
            "delays {gaps:?} should all be ~100 ms"
        );
    }
    run.handle.shutdown();
    run.task.await.unwrap();
}

#[tokio::test]
async fn start_limit_moves_crash_loop_to_failed() {
    let mut c = kit("looper", &["--exit-code", "3"]);
    c.restart.initial_delay = Duration::ZERO;
    c.restart.start_limit_burst = 3;
    c.restart.start_limit_interval = Duration::from_secs(30);
    let run = start(testplan::pipeline("p", vec![c]));
    let status = wait_for(&run.handle, "looper", Duration::from_secs(10), |c| {
        c.state == StateName::Failed
    })
    .await;
    assert_eq!(status.restarts, 2, "three starts, then failed");
    assert_eq!(status.last_exit, Some(LastExit::Code { code: 3 }));
    let reason = status.reason.unwrap();
    assert!(reason.contains("start limit"), "{reason}");
    assert!(reason.contains("exited with code 3"), "{reason}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let later = component(&run.handle, "looper").await;
    assert_eq!(
        (later.state, later.restarts),
        (StateName::Failed, 2),
        "stays failed"
    );
    run.handle.shutdown();
    run.task.await.unwrap();
}

#[tokio::test]
async fn hundred_restarts_leave_no_zombie() {
    let mut c = kit("flapper", &["--exit-code", "1"]);
    c.restart.initial_delay = Duration::ZERO;
    c.restart.start_limit_burst = 0;
    let run = start(testplan::pipeline("p", vec![c]));
    wait_for(&run.handle, "flapper", Duration::from_secs(60), |c| {
        c.restarts >= 100
    })
    .await;
    run.handle.shutdown();
    let summary = run.task.await.unwrap();
    assert_eq!(summary.components[0].state, StateName::Stopped);
    assert_eq!(zombie_children(), Vec::<i32>::new());
}

#[tokio::test]
async fn missing_command_fails_with_os_error_instead_of_looping() {
    let mut c = testplan::component("ghost");
    c.command = "flowctl-no-such-program".into();
    c.restart.initial_delay = Duration::ZERO;
    let run = start(testplan::pipeline("p", vec![c]));
    let status = wait_for(&run.handle, "ghost", Duration::from_secs(5), |c| {
        c.state == StateName::Failed
    })
    .await;
    let reason = status.reason.unwrap();
    assert!(
        reason.contains("No such file or directory (os error 2)"),
        "{reason}"
    );
    assert!(reason.contains("flowctl-no-such-program"), "{reason}");
    assert_eq!((status.restarts, status.pid), (0, None));
    run.handle.shutdown();
    run.task.await.unwrap();
}

#[tokio::test]
async fn not_executable_command_fails_with_permission_denied() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.txt");
    std::fs::write(&file, "not a program").unwrap();
    let mut c = testplan::component("data");
    c.command = file.display().to_string();
    let run = start(testplan::pipeline("p", vec![c]));
    let status = wait_for(&run.handle, "data", Duration::from_secs(5), |c| {
        c.state == StateName::Failed
    })
    .await;
    let reason = status.reason.unwrap();
    assert!(
        reason.contains("Permission denied (os error 13)"),
        "{reason}"
    );
    run.handle.shutdown();
    run.task.await.unwrap();
}

#[tokio::test]
async fn clean_exit_under_on_failure_is_exited_and_run_ends() {
    let mut c = kit("job", &["--exit-code", "0", "--after-ms", "50"]);
    c.restart.policy = RestartPolicy::OnFailure;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.exit_when_done = true;
    let run = start_with(testplan::pipeline("p", vec![c]), opts, dir);
    let summary = tokio::time::timeout(Duration::from_secs(5), run.task)
        .await
        .expect("a bounded run ends by itself")
        .unwrap();
    assert_eq!(summary.components[0].state, StateName::Exited);
    assert_eq!(summary.failed().count(), 0);
}

#[tokio::test]
async fn failing_liveness_check_restarts_the_component() {
    let port = free_port(); // nobody listens: every check fails
    let mut c = kit("stuck", &[]);
    c.liveness = Some(testplan::probe(
        ProbeCheck::Tcp { port },
        Duration::from_millis(50),
    ));
    c.restart.initial_delay = Duration::from_millis(10);
    c.restart.start_limit_burst = 0;
    c.stop.timeout = Duration::from_millis(500);
    let run = start(testplan::pipeline("p", vec![c]));
    let status = wait_for(&run.handle, "stuck", Duration::from_secs(5), |c| {
        c.restarts >= 2
    })
    .await;
    let reason = status.reason.unwrap_or_default();
    assert!(
        reason.contains("liveness check failed: connect 127.0.0.1:"),
        "{reason}"
    );
    run.handle.shutdown();
    let summary = run.task.await.unwrap();
    assert_eq!(summary.components[0].state, StateName::Stopped);
}

#[tokio::test]
async fn a_component_that_exits_fenced_is_not_restarted_even_with_restart_always() {
    // A stale copy of a shard's sink exits 65: starting it again would fence the newer copy.
    let mut c = kit("zombie", &["--exit-code", "65"]);
    c.restart.policy = RestartPolicy::Always;
    c.restart.initial_delay = Duration::ZERO;
    c.restart.start_limit_burst = 0;
    let run = start(testplan::pipeline("p", vec![c]));
    let status = wait_for(&run.handle, "zombie", Duration::from_secs(10), |c| {
        c.state == StateName::Failed
    })
    .await;
    assert_eq!(status.last_exit, Some(LastExit::Code { code: 65 }));
    let reason = status.reason.unwrap();
    assert!(reason.contains("fenced"), "{reason}");
    assert!(reason.contains("not restarted"), "{reason}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = component(&run.handle, "zombie").await;
    assert_eq!((later.state, later.restarts), (StateName::Failed, 0));
    run.handle.shutdown();
    let summary = run.task.await.unwrap();
    let zombie = summary
        .components
        .iter()
        .find(|c| c.id == "zombie")
        .unwrap();
    assert!(zombie.fenced, "{zombie:?}");
    assert_eq!(zombie.spawns, 1);
}

#[test]
fn the_fenced_exit_code_is_the_one_components_exit_with() {
    assert_eq!(
        flowctl::supervisor::restart::FENCED_EXIT_CODE,
        flowctl_sdk::EXIT_FENCED
    );
}
