//! Reload at the supervisor: pipeline files re-read and re-resolved the way the daemon does
//! it, the new plans handed to a running supervisor with real child processes.

mod supervisor_common;

use std::path::Path;
use std::time::Duration;

use flowctl::config::Config;
use flowctl::plan::PipelinePlan;
use flowctl::supervisor::reload::ChangeKind;
use flowctl::supervisor::{StateName, Supervisor};
use supervisor_common::*;

const T: Duration = Duration::from_secs(10);

/// Writes `dir/name.yaml`: a pipeline of test-kit components, each writing its environment
/// to `out/<id>.env`. `components`: (section, id, inputs, extra YAML lines).
fn write_pipeline(dir: &Path, out: &Path, name: &str, components: &[(&str, &str, &str, &str)]) {
    let kit = testkit();
    let mut sections: Vec<(&str, String)> = Vec::new();
    for (section, id, inputs, extra) in components {
        let mut c = format!(
            "    - id: {id}\n      command: {}\n      args: [\"--env-file\", \"{}/{id}.env\"]\n      ports: [{{name: grpc}}]\n",
            kit.display(),
            out.display()
        );
        if !inputs.is_empty() {
            c.push_str(&format!("      inputs: [{inputs}]\n"));
        }
        c.push_str(extra);
        match sections.iter_mut().find(|(s, _)| s == section) {
            Some((_, text)) => text.push_str(&c),
            None => sections.push((section, c)),
        }
    }
    let mut yaml =
        format!("apiVersion: flowctl/v1\nkind: Pipeline\nmetadata: {{name: {name}}}\nspec:\n");
    for (section, text) in sections {
        yaml.push_str(&format!("  {section}:\n{text}"));
    }
    std::fs::write(dir.join(format!("{name}.yaml")), yaml).unwrap();
}

fn config(dir: &Path) -> Config {
    let mut c = Config::default();
    c.paths.pipelines_dir = dir.join("pipelines");
    c
}

/// Loads the pipelines directory, keeping the ports `running` holds; panics on a bad file.
fn load(dir: &Path, running: &[PipelinePlan]) -> Vec<PipelinePlan> {
    let config = config(dir);
    let set = config.load_pipeline_files_holding(config.pipeline_files().unwrap(), running);
    assert!(set.rejected.is_empty(), "{:?}", set.rejected);
    set.loaded.into_iter().map(|l| l.plan).collect()
}

async fn pid(handle: &flowctl::supervisor::SupervisorHandle, id: &str) -> i32 {
    wait_for(handle, id, T, |c| c.ready && c.pid.is_some())
        .await
        .pid
        .unwrap()
}

/// The environment `id` wrote (waits for the file).
async fn env_of(dir: &Path, id: &str) -> serde_json::Value {
    serde_json::from_str(&read_when_present(&dir.join(format!("{id}.env")), T).await).unwrap()
}

#[tokio::test]
async fn reload_keeps_unchanged_pids_restarts_changed_stops_removed_starts_new() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&pipelines).unwrap();
    write_pipeline(
        &pipelines,
        &out,
        "a",
        &[
            ("sources", "src", "", ""),
            ("processors", "proc", "src", "      env: {MODE: one}\n"),
            ("sinks", "old", "proc", ""),
        ],
    );
    let plans = load(dir.path(), &[]);
    let (sup, handle) = Supervisor::new(plans, options(dir.path())).unwrap();
    let task = tokio::spawn(async move { sup.run().await.unwrap() });

    let src = pid(&handle, "src").await;
    let proc = pid(&handle, "proc").await;
    let old = pid(&handle, "old").await;
    let proc_env = env_of(&out, "proc").await;
    assert_eq!(proc_env["MODE"], "one");

    // The same files again: identical plans (same ports), nothing restarts.
    let running = handle.plans().await.unwrap();
    let same = load(dir.path(), &running);
    assert_eq!(same, running);
    let diff = handle.reload(same).await.unwrap();
    assert!(diff.is_empty(), "{diff:?}");

    // proc's env changes, `old` goes, `fresh` comes, and a new pipeline `b` appears.
    write_pipeline(
        &pipelines,
        &out,
        "a",
        &[
            ("sources", "src", "", ""),
            ("processors", "proc", "src", "      env: {MODE: two}\n"),
            ("sinks", "fresh", "proc", ""),
        ],
    );
    write_pipeline(&pipelines, &out, "b", &[("sources", "other", "", "")]);
    let running = handle.plans().await.unwrap();
    let diff = handle.reload(load(dir.path(), &running)).await.unwrap();
    let a = diff.pipelines.iter().find(|p| p.name == "a").unwrap();
    assert_eq!(a.kind, ChangeKind::Changed);
    assert_eq!(a.unchanged, vec!["src"]);
    assert_eq!(a.changed, vec!["proc"]);
    assert_eq!(a.added, vec!["fresh"]);
    assert_eq!(a.removed, vec!["old"]);
    assert_eq!(
        diff.pipelines_of(ChangeKind::Added).collect::<Vec<_>>(),
        vec!["b"]
    );

    let new_proc = wait_for(&handle, "proc", T, |c| {
        c.ready && c.pid.is_some_and(|p| p != proc)
    })
    .await
    .pid
    .unwrap();
    assert!(!alive(proc), "the old proc process is gone");
    let deadline = std::time::Instant::now() + T;
    while env_of(&out, "proc").await["MODE"] != "two" {
        assert!(
            std::time::Instant::now() < deadline,
            "proc never saw MODE=two"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Its upstream's address did not move: the source kept its port.
    assert_eq!(
        env_of(&out, "proc").await["SOURCE_SERVICE_ADDRESS"],
        proc_env["SOURCE_SERVICE_ADDRESS"]
    );
    assert_eq!(
        pid(&handle, "src").await,
        src,
        "unchanged source kept its pid"
    );
    pid(&handle, "fresh").await;
    pid(&handle, "other").await;
    // The removed sink is stopped and leaves the status.
    let deadline = std::time::Instant::now() + T;
    loop {
        let s = status(&handle).await;
        let ids: Vec<String> = s
            .pipelines
            .iter()
            .flat_map(|p| p.components.iter().map(|c| c.id.clone()))
            .collect();
        if !ids.contains(&"old".to_string()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "old still listed: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!alive(old), "the removed component's process is gone");

    // An inconsistent set is refused as a whole and nothing moves.
    let mut bad = handle.plans().await.unwrap();
    bad.push(bad[0].clone());
    let err = handle.reload(bad).await.unwrap_err();
    assert!(err.contains("two pipelines are named `a`"), "{err}");
    assert_eq!(pid(&handle, "src").await, src);
    assert_eq!(pid(&handle, "proc").await, new_proc);

    // Removing pipeline `b` drains it and drops it from the status.
    std::fs::remove_file(pipelines.join("b.yaml")).unwrap();
    let other = pid(&handle, "other").await;
    let running = handle.plans().await.unwrap();
    let diff = handle.reload(load(dir.path(), &running)).await.unwrap();
    assert_eq!(
        diff.pipelines_of(ChangeKind::Removed).collect::<Vec<_>>(),
        vec!["b"]
    );
    let deadline = std::time::Instant::now() + T;
    while status(&handle).await.pipelines.len() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "pipeline b still listed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!alive(other));
    assert_eq!(pid(&handle, "src").await, src);

    handle.shutdown();
    let summary = task.await.unwrap();
    assert!(
        summary
            .components
            .iter()
            .all(|c| c.state == StateName::Stopped),
        "{summary:?}"
    );
}

#[tokio::test]
async fn a_changed_component_that_had_failed_starts_again_with_its_new_plan() {
    let dir = tempfile::tempdir().unwrap();
    let mut broken = kit("job", &["--exit-code", "3"]);
    broken.restart.policy = flowctl::plan::RestartPolicy::Never;
    let plan = flowctl::supervisor::testplan::pipeline("p", vec![broken]);
    let (sup, handle) = Supervisor::new(vec![plan], options(dir.path())).unwrap();
    let task = tokio::spawn(async move { sup.run().await.unwrap() });
    wait_for(&handle, "job", T, |c| c.state == StateName::Failed).await;

    let fixed = flowctl::supervisor::testplan::pipeline("p", vec![kit("job", &[])]);
    let diff = handle.reload(vec![fixed]).await.unwrap();
    assert_eq!(diff.pipelines[0].changed, vec!["job"]);
    let c = wait_for(&handle, "job", T, |c| c.ready).await;
    assert!(alive(c.pid.unwrap()));
    handle.shutdown();
    task.await.unwrap();
}
