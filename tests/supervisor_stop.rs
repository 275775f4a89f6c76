//! Stopping: process groups, SIGKILL after the timeout, drain order, dependency restarts.

mod supervisor_common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flowctl::api::Request;
use flowctl::supervisor::{testplan, StateName};
use supervisor_common::*;

#[tokio::test]
async fn stop_kills_grandchild_that_ignores_sigterm_within_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let grandchild_file = dir.path().join("grandchild.pid");
    let mut c = kit(
        "parent",
        &[
            "--ignore-sigterm",
            "--grandchild",
            grandchild_file.to_str().unwrap(),
        ],
    );
    c.stop.timeout = Duration::from_secs(1);
    let run = start(testplan::pipeline("p", vec![c]));
    let grandchild: i32 = read_when_present(&grandchild_file, Duration::from_secs(5))
        .await
        .parse()
        .unwrap();
    let parent = component(&run.handle, "parent").await.pid.unwrap();
    assert!(alive(grandchild) && alive(parent));

    let asked = Instant::now();
    let answer = run
        .handle
        .request(Request::Stop {
            component: "parent".into(),
        })
        .await;
    assert!(answer.ok, "{answer:?}");
    while alive(grandchild) || alive(parent) {
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "grandchild {grandchild} or parent {parent} outlived the stop timeout + 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        asked.elapsed() >= Duration::from_millis(900),
        "both ignore SIGTERM: only the SIGKILL after the timeout ends them"
    );
    let status = wait_for(&run.handle, "parent", Duration::from_secs(1), |c| {
        c.state == StateName::Stopped
    })
    .await;
    assert_eq!(status.pid, None);
    run.handle.shutdown();
    run.task.await.unwrap();
    assert_eq!(zombie_children(), Vec::<i32>::new());
}

#[tokio::test]
async fn stop_drains_sources_before_their_consumers() {
    // The source takes 400 ms to die (it ignores SIGTERM); its consumers must keep running
    // until it is gone.
    let mut source = kit("source", &["--ignore-sigterm"]);
    source.stop.timeout = Duration::from_millis(400);
    let mut processor = kit("processor", &[]);
    processor.inputs = vec!["source".into()];
    processor.depends_on = vec!["source".into()];
    let mut sink = kit("sink", &[]);
    sink.inputs = vec!["processor".into()];
    sink.depends_on = vec!["processor".into()];
    let run = start(testplan::pipeline("p", vec![source, processor, sink]));
    wait_for(&run.handle, "sink", Duration::from_secs(5), |c| c.ready).await;
    // Without a readiness probe "ready" means spawned; give the source time to install its
    // SIGTERM disposition, or an early SIGTERM ends it at once.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let asked = Instant::now();
    run.handle.shutdown();
    let mut stopped_at: BTreeMap<String, Duration> = BTreeMap::new();
    while stopped_at.len() < 3 {
        if let Some(status) = run.handle.status().await {
            for c in status.pipelines.into_iter().flat_map(|p| p.components) {
                if c.state == StateName::Stopped {
                    stopped_at.entry(c.id).or_insert_with(|| asked.elapsed());
                }
            }
        } else {
            // The supervisor has returned: whatever was left stopped by now.
            for id in ["source", "processor", "sink"] {
                stopped_at
                    .entry(id.into())
                    .or_insert_with(|| asked.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let summary = run.task.await.unwrap();
    assert!(summary
        .components
        .iter()
        .all(|c| c.state == StateName::Stopped));
    let (s, p, k) = (
        stopped_at["source"],
        stopped_at["processor"],
        stopped_at["sink"],
    );
    assert!(
        s >= Duration::from_millis(380),
        "source stopped after {s:?}"
    );
    assert!(
        s <= p && p <= k,
        "order source {s:?}, processor {p:?}, sink {k:?}"
    );
}

#[tokio::test]
async fn dependency_restart_restarts_dependents_only_when_asked() {
    let upstream = kit("upstream", &[]);
    let mut follower = kit("follower", &[]);
    follower.depends_on = vec!["upstream".into()];
    let mut tied = kit("tied", &[]);
    tied.depends_on = vec!["upstream".into()];
    tied.restart.restart_with_dependencies = true;
    let run = start(testplan::pipeline("p", vec![upstream, follower, tied]));
    let follower_pid = wait_for(&run.handle, "follower", Duration::from_secs(5), |c| c.ready)
        .await
        .pid;
    let tied_pid = wait_for(&run.handle, "tied", Duration::from_secs(5), |c| c.ready)
        .await
        .pid;
    let answer = run
        .handle
        .request(Request::Restart {
            component: "upstream".into(),
        })
        .await;
    assert!(answer.ok);
    wait_for(&run.handle, "upstream", Duration::from_secs(5), |c| {
        c.restarts == 1 && c.ready
    })
    .await;
    let tied_now = wait_for(&run.handle, "tied", Duration::from_secs(5), |c| {
        c.restarts == 1 && c.ready
    })
    .await;
    assert_ne!(tied_now.pid, tied_pid);
    let follower_now = component(&run.handle, "follower").await;
    assert_eq!((follower_now.pid, follower_now.restarts), (follower_pid, 0));
    run.handle.shutdown();
    run.task.await.unwrap();
}
