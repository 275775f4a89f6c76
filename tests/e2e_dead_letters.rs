//! `on_error: dead-letter` through the whole pipeline under `flowctl run`: a data-lake object
//! that does not decode becomes a dead letter, the rest of the range is delivered whole,
//! `flowctl dlq` lists the letter, and `flowctl dlq replay` recovers its ledger once the
//! object is good again.

mod daemon_common;
mod e2e_common;

use std::path::Path;
use std::time::Duration;

use e2e_common::*;

/// The testnet lake (ledgers 997–999) copied to `dir`, with ledger 998's object garbage.
fn lake_with_garbage_998(root: &Path, dir: &Path) -> std::path::PathBuf {
    let from = root.join("testnet/datastore");
    let lake = dir.join("datastore");
    let partition = "FFFFFFFF--0-63999";
    std::fs::create_dir_all(lake.join(partition)).unwrap();
    std::fs::copy(from.join(".config.json"), lake.join(".config.json")).unwrap();
    for entry in std::fs::read_dir(from.join(partition)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), lake.join(partition).join(entry.file_name())).unwrap();
    }
    std::fs::write(
        lake.join(partition).join("FFFFFC19--998.xdr.zstd"),
        b"this is not a zstd frame",
    )
    .unwrap();
    lake
}

/// `flowctl run FILE --state-dir STATE` to its end, `DLQ_OUTPUT_FILE` set to `output` if given.
fn run_to_end(
    dir: &Path,
    file: &Path,
    state: &Path,
    output: Option<&Path>,
) -> std::process::Output {
    let mut cmd = run_cmd(dir, file);
    if let Some(output) = output {
        cmd.env("DLQ_OUTPUT_FILE", output);
    }
    cmd.arg("--state-dir").arg(state);
    Running::spawn(dir, cmd).finish(Duration::from_secs(120))
}

fn datalake_pipeline(lake: &Path, out: &Path, on_error: &str) -> String {
    format!(
        "apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: testnet-dlq
spec:
  sources:
    - id: datalake
      command: stellar-live-source
      on_error: {on_error}
      env:
        BACKEND: datalake
        DATALAKE_URL: \"{lake}\"
        NETWORK_PASSPHRASE: \"{TESTNET}\"
        START_LEDGER: \"997\"
        END_LEDGER: \"999\"
  processors:
    - id: ttp
      command: ttp-processor
      inputs: [datalake]
      on_error: {on_error}
      env:
        NETWORK_PASSPHRASE: \"{TESTNET}\"
  sinks:
    - id: jsonl
      command: ttp-sink
      inputs: [ttp]
      env:
        SINK: jsonl
        OUTPUT_FILE: \"{out}\"
        START_LEDGER: \"997\"
        END_LEDGER: \"999\"
",
        lake = lake.display(),
        out = out.display()
    )
}

#[test]
fn a_garbage_ledger_998_becomes_one_dead_letter_and_dlq_replay_writes_its_golden_events_once_restored(
) {
    let Some(root) = testdata() else { return };
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_garbage_998(&root, dir.path());
    let out_file = dir.path().join("events.jsonl");
    let state = dir.path().join("state");
    // The output file comes from the environment, so each replay writes a file of its own (a
    // JSONL sink appends only ledgers past its checkpoint).
    let file = pipeline(
        dir.path(),
        "dlq",
        &datalake_pipeline(&lake, Path::new("${DLQ_OUTPUT_FILE}"), "dead-letter"),
    );
    let out = run_to_end(dir.path(), &file, &state, Some(out_file.as_ref()));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("1 dead letter") && last.contains("flowctl dlq ls --pipeline testnet-dlq"),
        "{stderr}"
    );

    let got = parse_jsonl(&std::fs::read_to_string(&out_file).unwrap());
    let golden: Vec<_> = golden_997_999(&root)
        .into_iter()
        .filter(|e| ledger_of(e) != 998)
        .collect();
    assert!(!golden.is_empty());
    assert_eq!(got, golden, "997 and 999 exactly, nothing of 998");

    let dlq = std::process::Command::new(flowctl())
        .args([
            "dlq",
            "ls",
            "--pipeline",
            "testnet-dlq",
            "-o",
            "json",
            "--state-dir",
        ])
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        dlq.status.success(),
        "{}",
        String::from_utf8_lossy(&dlq.stderr)
    );
    let letters: Vec<serde_json::Value> = serde_json::from_slice(&dlq.stdout).unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter["ledger"], 998);
    assert_eq!(letter["component"], "datalake");
    assert_eq!(letter["status"], "open");
    let reason = letter["reason"].as_str().unwrap();
    assert!(reason.contains("FFFFFC19--998.xdr.zstd"), "{reason}");
    assert!(reason.to_lowercase().contains("zstd"), "{reason}");
    assert_eq!(letter["payload_size"], b"this is not a zstd frame".len());

    let runs = std::process::Command::new(flowctl())
        .args(["dlq", "show"])
        .arg(letter["id"].as_str().unwrap())
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&runs.stdout);
    assert!(
        runs.status.success(),
        "{}",
        String::from_utf8_lossy(&runs.stderr)
    );
    // The payload is the object as read: "this" in hex.
    assert!(shown.contains("74686973"), "{shown}");

    let id = letter["id"].as_str().unwrap().to_string();
    let dlq_replay = |out: &Path| {
        let output = std::process::Command::new(flowctl())
            .args(["dlq", "replay", "--id", &id, "--state-dir"])
            .arg(&state)
            .arg("--runtime-dir")
            .arg(dir.path().join("run"))
            .env("DLQ_OUTPUT_FILE", out)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.code(), text)
    };
    let all_letters = || -> Vec<serde_json::Value> {
        let ls = std::process::Command::new(flowctl())
            .args(["dlq", "ls", "--all", "-o", "json", "--state-dir"])
            .arg(&state)
            .output()
            .unwrap();
        assert!(
            ls.status.success(),
            "{}",
            String::from_utf8_lossy(&ls.stderr)
        );
        serde_json::from_slice(&ls.stdout).unwrap()
    };

    // Still garbage: the replay fails on 998 again, the letter stays open with one more try.
    let (code, text) = dlq_replay(&dir.path().join("still-garbage.jsonl"));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("dead letter(s) {id} stay open")),
        "{text}"
    );
    let letters = all_letters();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["id"], id.as_str());
    assert_eq!(letters[0]["status"], "open");
    assert_eq!(letters[0]["attempts"], 2, "{text}");

    // The object restored: the replay writes exactly 998's golden events and resolves it.
    std::fs::copy(
        root.join("testnet/datastore/FFFFFFFF--0-63999/FFFFFC19--998.xdr.zstd"),
        lake.join("FFFFFFFF--0-63999/FFFFFC19--998.xdr.zstd"),
    )
    .unwrap();
    let replayed_file = dir.path().join("replayed.jsonl");
    let (code, text) = dlq_replay(&replayed_file);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("dead letter(s) {id} resolved")),
        "{text}"
    );
    let replayed = parse_jsonl(&std::fs::read_to_string(&replayed_file).unwrap());
    let golden_998: Vec<_> = golden_997_999(&root)
        .into_iter()
        .filter(|e| ledger_of(e) == 998)
        .collect();
    assert!(!golden_998.is_empty());
    assert_eq!(replayed, golden_998, "998 exactly");
    // Over both runs, every golden event of 997-999 exactly once.
    let mut both = got;
    both.extend(replayed);
    let mut golden_all = golden_997_999(&root);
    let key = |e: &serde_json::Value| e.to_string();
    both.sort_by_key(key);
    golden_all.sort_by_key(key);
    assert_eq!(both, golden_all);

    let letters = all_letters();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["status"], "resolved", "{letters:?}");

    // Replaying a resolved letter has nothing to do.
    let (code, text) = dlq_replay(&dir.path().join("again.jsonl"));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("already resolved"), "{text}");

    // An id no letter has is an error naming it.
    let unknown = std::process::Command::new(flowctl())
        .args(["dlq", "replay", "--id", "no-such-letter", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert_eq!(unknown.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("\"no-such-letter\""), "{stderr}");
}

#[test]
fn with_on_error_fail_the_same_garbage_ledger_fails_the_run_naming_ledger_998() {
    let Some(root) = testdata() else { return };
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_garbage_998(&root, dir.path());
    let out_file = dir.path().join("events.jsonl");
    let file = pipeline(
        dir.path(),
        "fail",
        &datalake_pipeline(&lake, &out_file, "fail"),
    );
    let out = run_to_end(dir.path(), &file, &dir.path().join("state"), None);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // The sink, told by the processor that the source cannot read 998, fails naming it.
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("jsonl|") && l.contains("ledger 998")),
        "{stderr}"
    );
    assert!(
        stderr.contains("component `jsonl` of pipeline `testnet-dlq` failed"),
        "{stderr}"
    );
    // What came before it was written; nothing after it.
    let got = parse_jsonl(&std::fs::read_to_string(&out_file).unwrap_or_default());
    assert!(got.iter().all(|e| ledger_of(e) == 997), "{got:?}");
}

#[test]
fn dlq_replay_all_replays_contiguous_letters_998_and_999_as_one_range_and_resolves_both() {
    let Some(root) = testdata() else { return };
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_garbage_998(&root, dir.path());
    let partition = lake.join("FFFFFFFF--0-63999");
    std::fs::write(partition.join("FFFFFC18--999.xdr.zstd"), b"garbage too").unwrap();
    let state = dir.path().join("state");
    let file = pipeline(
        dir.path(),
        "dlq",
        &datalake_pipeline(&lake, Path::new("${DLQ_OUTPUT_FILE}"), "dead-letter"),
    );
    let out = run_to_end(
        dir.path(),
        &file,
        &state,
        Some(dir.path().join("events.jsonl").as_ref()),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let src = root.join("testnet/datastore/FFFFFFFF--0-63999");
    for name in ["FFFFFC19--998.xdr.zstd", "FFFFFC18--999.xdr.zstd"] {
        std::fs::copy(src.join(name), partition.join(name)).unwrap();
    }
    let replayed_file = dir.path().join("replayed.jsonl");
    let replay = std::process::Command::new(flowctl())
        .args([
            "dlq",
            "replay",
            "--pipeline",
            "testnet-dlq",
            "--all",
            "--state-dir",
        ])
        .arg(&state)
        .arg("--runtime-dir")
        .arg(dir.path().join("run"))
        .env("DLQ_OUTPUT_FILE", &replayed_file)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&replay.stderr);
    assert_eq!(replay.status.code(), Some(0), "{stderr}");
    // One replay for both.
    assert_eq!(
        stderr
            .matches("running pipeline `testnet-dlq@998-999`")
            .count(),
        1,
        "{stderr}"
    );
    let golden: Vec<_> = golden_997_999(&root)
        .into_iter()
        .filter(|e| ledger_of(e) >= 998)
        .collect();
    assert_eq!(
        parse_jsonl(&std::fs::read_to_string(&replayed_file).unwrap()),
        golden
    );
    let ls = std::process::Command::new(flowctl())
        .args(["dlq", "ls", "--all", "-o", "json", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    let letters: Vec<serde_json::Value> = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(
        letters.iter().all(|l| l["status"] == "resolved"),
        "{letters:?}"
    );

    // Nothing open is left to replay.
    let again = std::process::Command::new(flowctl())
        .args([
            "dlq",
            "replay",
            "--pipeline",
            "testnet-dlq",
            "--all",
            "--state-dir",
        ])
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stdout).contains("no open dead letters"));
}

/// `flowctl-sup run`, stopped with SIGTERM when the test ends (also when it fails).
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

#[test]
fn under_the_daemon_dlq_replay_wait_replays_the_letters_ledger_and_the_daemon_resolves_it() {
    let Some(root) = testdata() else { return };
    bin_dir();
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_garbage_998(&root, dir.path());
    let out_file = dir.path().join("events.jsonl");
    let (config, pipelines) = daemon_common::write_config(dir.path(), "");
    std::fs::write(
        pipelines.join("testnet-dlq.yaml"),
        datalake_pipeline(&lake, &out_file, "dead-letter"),
    )
    .unwrap();
    let _daemon = Daemon(
        std::process::Command::new(daemon_common::SUP)
            .args(["run", "--config"])
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("daemon.stderr")).unwrap())
            .spawn()
            .unwrap(),
    );
    let registry = format!("unix:{}", dir.path().join("run/registry.sock").display());
    let daemon_log = || std::fs::read_to_string(dir.path().join("daemon.stderr")).unwrap();
    let letters = |all: bool| -> Option<Vec<serde_json::Value>> {
        let mut cmd = std::process::Command::new(flowctl());
        cmd.args(["dlq", "ls", "-o", "json", "--endpoint", &registry]);
        if all {
            cmd.arg("--all");
        }
        let out = cmd.output().unwrap();
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    };

    // The bounded pipeline completes with one letter for 998.
    let socket = dir.path().join("run/flowctl.sock");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let letter = loop {
        let completed = socket.exists()
            && daemon_common::sup_status(&socket)["pipelines"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "testnet-dlq" && p["completed"] == true);
        if completed {
            if let Some(mut list) = letters(false).filter(|l| l.len() == 1) {
                break list.remove(0);
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no completed pipeline with one letter: {}",
            daemon_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(letter["ledger"], 998);
    let id = letter["id"].as_str().unwrap().to_string();

    // The object restored and the file moved aside (a JSONL file is only appended to past
    // its checkpoint): the replay writes 998 into a new one.
    std::fs::copy(
        root.join("testnet/datastore/FFFFFFFF--0-63999/FFFFFC19--998.xdr.zstd"),
        lake.join("FFFFFFFF--0-63999/FFFFFC19--998.xdr.zstd"),
    )
    .unwrap();
    std::fs::rename(&out_file, dir.path().join("live.jsonl")).unwrap();
    std::fs::rename(
        dir.path().join("events.jsonl.checkpoint"),
        dir.path().join("live.jsonl.checkpoint"),
    )
    .unwrap();
    let replay = std::process::Command::new(flowctl())
        .args([
            "dlq",
            "replay",
            "--id",
            &id,
            "--wait",
            "--endpoint",
            &registry,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&replay.stdout),
        String::from_utf8_lossy(&replay.stderr)
    );
    assert_eq!(replay.status.code(), Some(0), "{text}\n{}", daemon_log());
    assert!(
        text.contains("replay testnet-dlq@998-998 completed"),
        "{text}"
    );

    let replayed = parse_jsonl(&std::fs::read_to_string(&out_file).unwrap());
    let golden_998: Vec<_> = golden_997_999(&root)
        .into_iter()
        .filter(|e| ledger_of(e) == 998)
        .collect();
    assert!(!golden_998.is_empty());
    assert_eq!(replayed, golden_998, "998 exactly");
    let all = letters(true).expect("dlq ls --all");
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["status"], "resolved", "{all:?}");
}
