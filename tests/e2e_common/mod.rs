//! What the end-to-end tests share: the built binaries, pipeline files in a temp dir,
//! `flowctl run` as a child with a control socket, and the golden data.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const TESTNET: &str = "Test SDF Network ; September 2015";
pub const BUNDLED: [&str; 3] = ["stellar-live-source", "ttp-processor", "ttp-sink"];

pub fn flowctl() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_flowctl"))
}

/// The directory of the built binaries; the bundled components must be there, since
/// `flowctl run` looks for them next to itself.
pub fn bin_dir() -> PathBuf {
    let dir = flowctl().parent().unwrap().to_path_buf();
    for b in BUNDLED {
        assert!(
            dir.join(b).is_file(),
            "{} is missing next to flowctl: run `cargo build --workspace` first \
             (cargo nextest run --workspace builds it)",
            dir.join(b).display()
        );
    }
    dir
}

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared/testdata/stellar`, or `None` after a skip message.
pub fn testdata() -> Option<PathBuf> {
    let p = repo().join("../shared/testdata/stellar");
    if p.join("testnet/datastore/.config.json").is_file() {
        Some(p)
    } else {
        eprintln!("skipped: Stellar test data not found at {}", p.display());
        None
    }
}

/// JSON objects, one per non-empty line.
pub fn parse_jsonl(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

pub fn golden_997_999(root: &Path) -> Vec<serde_json::Value> {
    parse_jsonl(
        &std::fs::read_to_string(root.join("golden/testnet-datastore-997-999.ttp-events.jsonl"))
            .unwrap(),
    )
}

/// The ledger of an event (`meta.ledgerSequence`).
pub fn ledger_of(e: &serde_json::Value) -> u64 {
    e["meta"]["ledgerSequence"]
        .as_u64()
        .unwrap_or_else(|| panic!("no meta.ledgerSequence: {e}"))
}

/// Writes `NAME.yaml` in `dir`.
pub fn pipeline(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// `flowctl run FILE` with its control socket in `DIR/run`.
pub fn run_cmd(dir: &Path, file: &Path) -> Command {
    bin_dir();
    let mut cmd = Command::new(flowctl());
    cmd.arg("run")
        .arg(file)
        .arg("--runtime-dir")
        .arg(dir.join("run"))
        .stdin(Stdio::null());
    cmd
}

pub fn socket(dir: &Path) -> PathBuf {
    dir.join("run/flowctl.sock")
}

/// A running `flowctl run`, killed (with its pipeline) if the test ends early.
pub struct Running {
    pub child: Option<Child>,
    pub dir: PathBuf,
}

impl Running {
    pub fn start(dir: &Path, file: &Path) -> Running {
        Running::spawn(dir, run_cmd(dir, file))
    }

    /// Starts `cmd` (a [`run_cmd`] with more arguments or variables), its output going to
    /// DIR/flowctl.stdout and DIR/flowctl.stderr.
    pub fn spawn(dir: &Path, mut cmd: Command) -> Running {
        // Files, not pipes: nobody reads while the pipeline runs, and a full pipe would stall it.
        let child = cmd
            .stdout(std::fs::File::create(dir.join("flowctl.stdout")).unwrap())
            .stderr(std::fs::File::create(dir.join("flowctl.stderr")).unwrap())
            .spawn()
            .unwrap();
        Running {
            child: Some(child),
            dir: dir.to_path_buf(),
        }
    }

    /// Waits for the end, at most `limit`; the output and exit code.
    pub fn finish(mut self, limit: Duration) -> Output {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "flowctl run did not finish in {limit:?}; stderr:\n{}",
                    String::from_utf8_lossy(&self.read("flowctl.stderr"))
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Output {
            status,
            stdout: self.read("flowctl.stdout"),
            stderr: self.read("flowctl.stderr"),
        }
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).unwrap_or_default()
    }

    /// The status of component `id` from `flowctl-sup status --json`, once the socket answers.
    pub fn component(&self, id: &str) -> Option<serde_json::Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_flowctl-sup"))
            .arg("--socket")
            .arg(socket(&self.dir))
            .args(["status", "--json"])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let status = v.get("status").unwrap_or(&v);
        status["pipelines"]
            .as_array()?
            .iter()
            .flat_map(|p| p["components"].as_array().cloned().unwrap_or_default())
            .find(|c| c["id"] == id)
    }

    /// The pid of component `id` once it is ready.
    pub fn ready_pid(&self, id: &str, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(c) = self.component(id) {
                if c["ready"] == true {
                    if let Some(pid) = c["pid"].as_i64() {
                        return pid as i32;
                    }
                }
            }
            assert!(Instant::now() < deadline, "{id} not ready in {limit:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM drains the pipeline; the children die with flowctl either way.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            std::thread::sleep(Duration::from_millis(500));
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn kill9(pid: i32) {
    assert_eq!(
        unsafe { libc::kill(pid, libc::SIGKILL) },
        0,
        "kill -9 {pid}"
    );
}

/// Waits until `cond` holds, polling; panics with `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Lines of a JSONL file written so far (0 while it does not exist).
pub fn lines_so_far(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// A synthetic pipeline: ledgers `start..=end` at `rate` ledgers/s (0 = as fast as possible)
/// → processor → the sink given by `sink_env` (YAML lines under `env:`, indented 8).
pub fn synthetic_pipeline(name: &str, start: u32, end: u32, rate: f64, sink_env: &str) -> String {
    format!(
        "apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: {name}
spec:
  sources:
    - id: ledgers
      command: stellar-live-source
      env:
        BACKEND: synthetic
        NETWORK_PASSPHRASE: \"{TESTNET}\"
        START_LEDGER: \"{start}\"
        END_LEDGER: \"{end}\"
        SYNTHETIC_RATE: \"{rate}\"
        SYNTHETIC_TXS_PER_LEDGER: \"10\"
      restart:
        initial_delay: 100ms
  processors:
    - id: ttp
      command: ttp-processor
      inputs: [ledgers]
      env:
        NETWORK_PASSPHRASE: \"{TESTNET}\"
      restart:
        initial_delay: 100ms
  sinks:
    - id: sink
      command: ttp-sink
      inputs: [ttp]
      env:
        START_LEDGER: \"{start}\"
        END_LEDGER: \"{end}\"
        MAX_BACKOFF: 500ms
{sink_env}
      restart:
        initial_delay: 100ms
"
    )
}

/// [`synthetic_pipeline`] with its range in `spec.range` instead of the components' env,
/// at `rate` ledgers/s (0: as fast as it can), writing JSONL to `DIR/NAME.jsonl`.
pub fn ranged_pipeline(
    dir: &Path,
    name: &str,
    from: u32,
    to: u32,
    rate: f64,
) -> std::path::PathBuf {
    let out = dir.join(format!("{name}.jsonl"));
    let text = synthetic_pipeline(
        name,
        from,
        to,
        rate,
        &format!(
            "        SINK: jsonl\n        OUTPUT_FILE: \"{}\"",
            out.display()
        ),
    );
    let text: String = text
        .lines()
        .filter(|l| !l.contains("START_LEDGER") && !l.contains("END_LEDGER"))
        .map(|l| {
            if l == "spec:" {
                format!("spec:\n  range: {{from_ledger: {from}, to_ledger: {to}}}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    pipeline(dir, name, &text)
}

/// The events of synthetic ledgers `start..=end` as the pipeline writes them undisturbed:
/// the reference the disturbed runs are compared with.
pub fn reference_events(start: u32, end: u32) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("reference.jsonl");
    let file = pipeline(
        dir.path(),
        "reference",
        &synthetic_pipeline(
            "reference",
            start,
            end,
            0.0,
            &format!(
                "        SINK: jsonl\n        OUTPUT_FILE: \"{}\"",
                out.display()
            ),
        ),
    );
    let o = Running::start(dir.path(), &file).finish(Duration::from_secs(120));
    assert_eq!(
        o.status.code(),
        Some(0),
        "reference run: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    parse_jsonl(&std::fs::read_to_string(&out).unwrap())
}

/// `FLOWCTL_ENDPOINT` as the supervisor gave it to the process `pid`.
pub fn endpoint_of(pid: i32) -> String {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    environ
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix("FLOWCTL_ENDPOINT="))
        .expect("the component was given FLOWCTL_ENDPOINT")
        .to_string()
}
