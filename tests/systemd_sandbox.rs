//! The packages in a real systemd: `packaging/build.sh` output installed with apt-get inside
//! `../shared/tools/systemd-sandbox.sh` (systemd as PID 1 in throw-away namespaces).
//!
//! Building packages takes minutes, so these tests use what `packaging/build.sh` left in
//! `target/packages/` and skip, saying so, when there is nothing there.

mod e2e_common;
mod sandbox;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e_common::{ledger_of, parse_jsonl, reference_events};
use sandbox::{text, Sandbox};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn newest(ext: &str) -> Option<PathBuf> {
    let dir = Path::new(ROOT).join("target/packages");
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

#[test]
fn deb_installs_user_unit_and_config_and_removes_cleanly() {
    let Some(deb) = newest("deb") else {
        eprintln!("skipped: no .deb in target/packages/ (run packaging/build.sh first)");
        return;
    };
    let Some(sb) = Sandbox::start() else {
        return;
    };
    sb.copy_in(&deb, "/tmp/pkg/flowctl.deb");
    sb.ok("cd /tmp/pkg && apt-get install -y -q ./flowctl.deb");

    let files = sb.ok("dpkg -L flowctl");
    for f in [
        "/usr/bin/flowctl",
        "/usr/bin/flowctl-sup",
        "/usr/lib/systemd/system/flowctl.service",
        "/usr/lib/systemd/system/flowctl@.service",
        "/etc/flowctl/flowctl.toml",
        "/usr/lib/sysusers.d/flowctl.conf",
        "/usr/lib/flowctl",
    ] {
        assert!(
            files.lines().any(|l| l == f),
            "{f} not in package:\n{files}"
        );
    }
    let conffiles = sb.ok("dpkg-query -W -f='${Conffiles}' flowctl");
    assert!(
        conffiles.contains("/etc/flowctl/flowctl.toml"),
        "{conffiles}"
    );

    // The account from sysusers.d: a system user whose home is the state directory.
    let pw = sb.ok("getent passwd flowctl");
    let fields: Vec<&str> = pw.trim().split(':').collect();
    assert!(fields[2].parse::<u32>().unwrap() < 1000, "{pw}");
    assert_eq!(fields[5], "/var/lib/flowctl");
    assert_eq!(fields[6], "/usr/sbin/nologin");
    sb.ok("test -d /etc/flowctl/pipelines");

    // The postinst enabled the unit through deb-systemd-helper.
    assert_eq!(
        sb.ok("systemctl is-enabled flowctl.service").trim(),
        "enabled"
    );
    sb.ok("systemd-analyze verify /usr/lib/systemd/system/flowctl.service /usr/lib/systemd/system/flowctl@.service");
    let sec = sb.ok("systemd-analyze security --no-pager flowctl.service");
    let exposure: f64 = sec
        .lines()
        .find_map(|l| l.split("flowctl.service: ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure in:\n{sec}"));
    eprintln!("systemd-analyze security flowctl.service: exposure {exposure}");
    assert!(exposure <= 3.0, "exposure {exposure} > 3.0");

    // `systemctl start` must return only after READY=1, once the daemon exists.
    // (The daemon mode is `flowctl-sup run --config FILE`, what the unit's ExecStart runs.)
    let has_daemon = sb
        .run("/usr/bin/flowctl-sup run --help | grep -q -e --config")
        .status
        .success();
    if has_daemon {
        daemon_checks(&sb);
    } else {
        eprintln!("skipped start checks: this flowctl-sup has no `run` daemon mode yet");
    }

    sb.ok("apt-get remove -y -q flowctl");
    assert!(!sb
        .run("systemctl is-enabled flowctl.service")
        .status
        .success());
    assert!(!sb
        .run("systemctl is-active flowctl.service")
        .status
        .success());
    assert!(!sb.run("pgrep -u flowctl").status.success());
    // The conffile stays until purge, like any Debian package.
    sb.ok("test -f /etc/flowctl/flowctl.toml");
    sb.ok("apt-get purge -y -q flowctl");
    sb.ok("test ! -e /etc/flowctl/flowctl.toml && test ! -e /var/lib/flowctl");
}

#[test]
fn rpm_lists_the_same_files_and_systemd_scriptlets() {
    let Some(rpm) = newest("rpm") else {
        eprintln!("skipped: no .rpm in target/packages/ (run packaging/build.sh first)");
        return;
    };
    if Command::new("rpm").arg("--version").output().is_err() {
        eprintln!("skipped: no rpm tool (apt-get install rpm)");
        return;
    }
    let out = Command::new("rpm").arg("-qpl").arg(&rpm).output().unwrap();
    let files = text(&out);
    assert!(out.status.success(), "{files}");
    for f in [
        "/usr/bin/flowctl",
        "/usr/bin/flowctl-sup",
        "/usr/lib/systemd/system/flowctl.service",
        "/usr/lib/systemd/system/flowctl@.service",
        "/etc/flowctl/flowctl.toml",
        "/usr/lib/sysusers.d/flowctl.conf",
    ] {
        assert!(files.lines().any(|l| l == f), "{f} not in rpm:\n{files}");
    }
    let out = Command::new("rpm").arg("-qpc").arg(&rpm).output().unwrap();
    assert!(
        text(&out).contains("/etc/flowctl/flowctl.toml"),
        "config files: {}",
        text(&out)
    );
    let out = Command::new("rpm")
        .args(["-qp", "--scripts"])
        .arg(&rpm)
        .output()
        .unwrap();
    let scripts = text(&out);
    for want in [
        "preinstall scriptlet",
        "systemd-sysusers",
        "postinstall scriptlet",
        "enable --now flowctl.service",
        "preuninstall scriptlet",
        "disable --now flowctl.service",
        "postuninstall scriptlet",
        "try-restart flowctl.service",
    ] {
        assert!(
            scripts.contains(want),
            "{want:?} not in scripts:\n{scripts}"
        );
    }
}

/// The daemon under systemd: start returns after READY, status line, children in the
/// journal, cgroup layout, restart of a killed child, stop leaves nothing behind.
fn daemon_checks(sb: &Sandbox) {
    sb.ok("cat > /etc/flowctl/pipelines/demo.yaml <<'EOF'
apiVersion: flowctl/v1
kind: Pipeline
metadata: {name: demo}
spec:
  sources:
    - id: greeter
      command: sh
      args: [\"-c\", \"echo hello from greeter; echo '<3>greeter trouble'; setsid sh -c 'sleep 777 &'; exec sleep 1000\"]
EOF");
    sb.ok("systemctl restart flowctl.service");
    assert_eq!(
        sb.ok("systemctl is-active flowctl.service").trim(),
        "active"
    );
    let status = sb.ok("systemctl status --no-pager flowctl.service");
    assert!(
        status.contains("Status: \"1 pipeline, 1/1 ready, 0 failed\""),
        "{status}"
    );
    let sup = sb.ok("flowctl-sup status");
    assert!(sup.contains("greeter"), "{sup}");

    // The daemon sits in its own leaf of the delegated subtree.
    let main_pid = sb.ok("systemctl show -p MainPID --value flowctl.service");
    let cg = sb.ok(&format!("cat /proc/{}/cgroup", main_pid.trim()));
    assert!(
        cg.trim()
            .ends_with("/system.slice/flowctl.service/supervisor"),
        "{cg}"
    );
    // The component, and the daemon it double-forked out of its process group, in its own.
    let escaped = sb.ok("pgrep -f '^sleep 777'");
    let cg = sb.ok(&format!("cat /proc/{}/cgroup", escaped.trim()));
    assert!(
        cg.trim()
            .ends_with("/system.slice/flowctl.service/demo/greeter"),
        "{cg}"
    );

    // Children's lines in the journal, with their fields and priorities.
    let mut journal = String::new();
    for _ in 0..50 {
        journal = sb.ok("journalctl --no-pager -o verbose FLOWCTL_COMPONENT=greeter");
        if journal.contains("greeter trouble") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(journal.contains("MESSAGE=hello from greeter"), "{journal}");
    assert!(journal.contains("FLOWCTL_PIPELINE=demo"), "{journal}");
    assert!(journal.contains("PRIORITY=3"), "{journal}");
    let unit_log = sb.ok("journalctl --no-pager -u flowctl.service");
    assert!(unit_log.contains("hello from greeter"), "{unit_log}");
    let logs = sb.ok("flowctl logs greeter -n 5");
    assert!(logs.contains("hello from greeter"), "{logs}");

    // kill -9 of a child: the supervisor starts it again.
    let pid_of = |sb: &Sandbox| {
        let json = sb.ok("flowctl-sup status --json");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["pipelines"][0]["components"][0]["pid"].as_i64()
    };
    let first = pid_of(sb).expect("greeter runs");
    sb.ok(&format!("kill -9 {first}"));
    let mut again = None;
    for _ in 0..100 {
        again = pid_of(sb).filter(|p| *p != first);
        if again.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(again.is_some(), "greeter was not restarted");

    // Prometheus /metrics on the default loopback address: the restart, and CPU from the cgroup.
    let metrics = sb.ok("curl -sf http://127.0.0.1:9464/metrics");
    let greeter = r#"{pipeline="demo",component="greeter"}"#;
    for want in [
        format!("flowctl_component_up{greeter} 1"),
        format!("flowctl_component_restarts_total{greeter} 1"),
        format!("flowctl_component_cpu_seconds_total{greeter} "),
    ] {
        assert!(metrics.contains(&want), "no {want:?} in\n{metrics}");
    }

    reload_checks(sb);
    range_checks(sb);

    sb.ok("systemctl stop flowctl.service");
    assert!(!sb.run("pgrep -u flowctl").status.success());
    assert!(!sb.run("pgrep -f '^sleep 1000'").status.success());
    assert!(!sb.run("pgrep -f '^sleep 777'").status.success());
}

/// Each component's pid by `PIPELINE/ID`, from `flowctl-sup status --json`.
fn pids(sb: &Sandbox) -> std::collections::BTreeMap<String, i64> {
    let json = sb.ok("flowctl-sup status --json");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut pids = std::collections::BTreeMap::new();
    for p in v["pipelines"].as_array().unwrap() {
        for c in p["components"].as_array().unwrap() {
            if let Some(pid) = c["pid"].as_i64() {
                let key = format!(
                    "{}/{}",
                    p["name"].as_str().unwrap(),
                    c["id"].as_str().unwrap()
                );
                pids.insert(key, pid);
            }
        }
    }
    pids
}

/// `systemctl reload` keeps unchanged components; `flowctl apply -f` starts a new pipeline
/// without touching the running one; `flowctl delete` stops it again.
fn reload_checks(sb: &Sandbox) {
    let before = pids(sb);
    let greeter = before["demo/greeter"];
    sb.ok("systemctl reload flowctl.service");
    assert_eq!(
        pids(sb)["demo/greeter"],
        greeter,
        "systemctl reload restarted greeter"
    );
    let log = sb.ok("journalctl --no-pager -u flowctl.service");
    assert!(log.contains("demo: unchanged"), "{log}");

    sb.ok("cat > /tmp/extra.yaml <<'EOF'
apiVersion: flowctl/v1
kind: Pipeline
metadata: {name: extra}
spec:
  sources:
    - id: ticker
      command: sleep
      args: [\"1001\"]
EOF");
    let out = sb.ok("flowctl apply -f /tmp/extra.yaml");
    assert!(out.contains("extra: added, starting ticker"), "{out}");
    sb.ok("test -f /etc/flowctl/pipelines/extra.yaml");
    let mut now = pids(sb);
    for _ in 0..100 {
        if now.contains_key("extra/ticker") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        now = pids(sb);
    }
    assert!(now.contains_key("extra/ticker"), "{now:?}");
    assert_eq!(
        now["demo/greeter"], greeter,
        "apply touched the running pipeline"
    );
    let listed = sb.ok("flowctl get pipelines");
    assert!(listed.lines().any(|l| l.starts_with("extra")), "{listed}");

    sb.ok("flowctl delete extra");
    sb.ok("test ! -e /etc/flowctl/pipelines/extra.yaml");
    for _ in 0..100 {
        if !sb.run("pgrep -f '^sleep 1001'").status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!sb.run("pgrep -f '^sleep 1001'").status.success());
    assert_eq!(pids(sb)["demo/greeter"], greeter);
}

/// A synthetic pipeline whose sink writes JSON lines to stdout, i.e. to the journal, where
/// each line carries the pipeline (or replay instance) that wrote it. `source_env` and
/// `sink_env` are extra `KEY: value` pairs; `spec` is put before the components.
fn synthetic_yaml(name: &str, spec: &str, source_env: &str, sink_env: &str) -> String {
    format!(
        "apiVersion: flowctl/v1
kind: Pipeline
metadata: {{name: {name}}}
spec:
{spec}
  sources:
    - id: ledgers
      command: stellar-live-source
      env:
        BACKEND: synthetic
        NETWORK_PASSPHRASE: \"{net}\"
        SYNTHETIC_TXS_PER_LEDGER: \"10\"
        RUST_LOG: warn
{source_env}
  processors:
    - id: ttp
      command: ttp-processor
      inputs: [ledgers]
      env:
        NETWORK_PASSPHRASE: \"{net}\"
        LOG_LEVEL: warn
  sinks:
    - id: sink
      command: ttp-sink
      inputs: [ttp]
      env:
        SINK: jsonl
        RUST_LOG: warn
{sink_env}
",
        net = "Test SDF Network ; September 2015"
    )
}

/// The events the sink of `pipeline` (a pipeline or replay instance name) wrote to the
/// journal, once there are `want` of them (or what there is after a minute).
fn journal_events(sb: &Sandbox, pipeline: &str, want: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = sb.ok(&format!(
            "journalctl --no-pager -o cat FLOWCTL_PIPELINE='{pipeline}' FLOWCTL_COMPONENT=sink"
        ));
        let lines: String = out
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| format!("{l}\n"))
            .collect();
        let events = parse_jsonl(&lines);
        if events.len() >= want || Instant::now() > deadline {
            return events;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls `cond` over `flowctl-sup status --json` for up to a minute; the last status.
fn wait_status(
    sb: &Sandbox,
    what: &str,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status: serde_json::Value =
            serde_json::from_str(&sb.ok("flowctl-sup status --json")).unwrap();
        if cond(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{what}: {status:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn pipeline_of<'a>(status: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    status["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
}

/// Bounded runs under systemd: a pipeline with `spec.range` installed with `flowctl apply`
/// completes and stays completed; `flowctl replay --wait` of a live pipeline completes with
/// exactly the range's events while the live pipeline keeps its processes.
fn range_checks(sb: &Sandbox) {
    // (a) A bounded pipeline reaches completed, and nothing is restarted.
    sb.ok(&format!(
        "cat > /tmp/backfill.yaml <<'EOF'\n{}EOF",
        synthetic_yaml(
            "backfill",
            "  range: {from_ledger: 2, to_ledger: 11}",
            "        SYNTHETIC_RATE: \"0\"",
            ""
        )
    ));
    sb.ok("flowctl apply -f /tmp/backfill.yaml");
    let status = wait_status(sb, "backfill did not complete", |s| {
        pipeline_of(s, "backfill").is_some_and(|p| {
            p["completed"] == true
                && p["components"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|c| c["state"] == "exited" || c["state"] == "stopped")
        })
    });
    for c in pipeline_of(&status, "backfill").unwrap()["components"]
        .as_array()
        .unwrap()
    {
        assert_eq!(c["restarts"], 0, "{c}");
        assert!(c["pid"].is_null(), "{c}");
    }
    let sup = sb.ok("flowctl-sup status");
    assert!(
        sup.lines().any(|l| l.starts_with("backfill (completed)")),
        "{sup}"
    );
    let listed = sb.ok("flowctl get pipelines");
    let row = listed
        .lines()
        .find(|l| l.starts_with("backfill"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(row.contains("completed"), "{listed}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = sb.ok("systemctl status --no-pager flowctl.service");
        if status.contains(", 1 completed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no `1 completed` in STATUS=:\n{status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let reference = reference_events(2, 11);
    assert_eq!(journal_events(sb, "backfill", reference.len()), reference);
    // Still completed a moment later: no restart came after the exit.
    std::thread::sleep(Duration::from_secs(1));
    let again = wait_status(sb, "backfill", |s| pipeline_of(s, "backfill").is_some());
    assert_eq!(
        pipeline_of(&again, "backfill").unwrap(),
        pipeline_of(&status, "backfill").unwrap()
    );
    sb.ok("flowctl delete backfill");

    // (b) A replay beside a live pipeline. The live one follows the tip from ledger 100000,
    // two ledgers a second; its sink writes to the journal like the replay's, so each keeps
    // its own output. (One JSONL file shared by both would not do: each sink appends at its
    // own offset, and a copy whose range ends before the file's checkpoint writes nothing.)
    sb.ok(&format!(
        "cat > /tmp/live.yaml <<'EOF'\n{}EOF",
        synthetic_yaml(
            "live",
            "",
            "        START_LEDGER: \"100000\"\n        SYNTHETIC_RATE: \"2\"",
            "        START_LEDGER: \"100000\""
        )
    ));
    sb.ok("flowctl apply -f /tmp/live.yaml");
    wait_status(sb, "live did not start", |s| {
        pipeline_of(s, "live").is_some_and(|p| {
            p["components"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["pid"].is_i64())
        })
    });
    journal_events(sb, "live", 1);
    let live_pids = |sb: &Sandbox| {
        pids(sb)
            .into_iter()
            .filter(|(k, _)| k.starts_with("live/"))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let before = live_pids(sb);
    assert_eq!(before.len(), 3, "{before:?}");

    let out = sb.ok("flowctl replay --pipeline live --from-ledger 20 --to-ledger 29 --wait");
    eprintln!("flowctl replay: {out}");
    let runs = sb.ok("flowctl pipelines runs 'live@20-29'");
    let row = runs
        .lines()
        .find(|l| l.contains(" completed "))
        .unwrap_or_else(|| panic!("no completed run:\n{runs}"));
    assert!(row.contains("20-29"), "{runs}");
    let reference = reference_events(20, 29);
    assert_eq!(journal_events(sb, "live@20-29", reference.len()), reference);
    assert_eq!(
        live_pids(sb),
        before,
        "the replay touched the live pipeline"
    );
    let live = journal_events(sb, "live", 1);
    assert!(
        live.iter().all(|e| ledger_of(e) >= 100_000),
        "the live sink wrote ledgers of the replay"
    );
    sb.ok("flowctl delete live");
}
