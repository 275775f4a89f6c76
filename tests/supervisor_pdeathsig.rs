//! SIGKILL of the supervisor takes its children with it (`PR_SET_PDEATHSIG`).

mod supervisor_common;

use std::time::{Duration, Instant};

use flowctl::supervisor::{testplan, Supervisor};
use supervisor_common::*;

const ROLE: &str = "FLOWCTL_TEST_SUPERVISOR_DIR";

/// Runs a supervisor with three children when started by the test below; a no-op otherwise.
#[tokio::test]
async fn supervisor_process_for_pdeathsig_test() {
    let Ok(dir) = std::env::var(ROLE) else { return };
    let dir = std::path::PathBuf::from(dir);
    let components = (0..3)
        .map(|i| {
            let pid_file = dir.join(format!("child{i}.pid"));
            kit(
                &format!("c{i}"),
                &["--ignore-sigterm", "--pid-file", pid_file.to_str().unwrap()],
            )
        })
        .collect();
    let (sup, _handle) =
        Supervisor::new(vec![testplan::pipeline("p", components)], options(&dir)).unwrap();
    sup.run().await.unwrap();
}

#[tokio::test]
async fn supervisor_sigkill_leaves_no_direct_child_alive() {
    let dir = tempfile::tempdir().unwrap();
    let mut supervisor = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "supervisor_process_for_pdeathsig_test",
            "--nocapture",
        ])
        .env(ROLE, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut children = Vec::new();
    for i in 0..3 {
        let pid = read_when_present(
            &dir.path().join(format!("child{i}.pid")),
            Duration::from_secs(10),
        )
        .await;
        children.push(pid.parse::<i32>().unwrap());
    }
    assert!(children.iter().all(|&p| alive(p)));
    supervisor.kill().unwrap(); // SIGKILL
    supervisor.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while children.iter().any(|&p| alive(p)) {
        assert!(
            Instant::now() < deadline,
            "children {children:?} outlived their supervisor"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
