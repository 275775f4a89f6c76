//! A client from another toolchain: Node.js `@grpc/grpc-js` with `@grpc/proto-loader`, loading
//! our `proto/` files as the ttp-processor-demo consumer_app does, streams `GetTTPEvents` from
//! our ttp-processor fed by stellar-live-source on the testnet data lake, and gets exactly the
//! golden events.

mod e2e_common;

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use e2e_common::*;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn component(bin: &str, port: u16, env: &[(&str, String)]) -> Killed {
    let mut cmd = Command::new(bin_dir().join(bin));
    cmd.env("PORT", port.to_string())
        .env("HEALTH_PORT", free_port().to_string())
        .env("ENABLE_FLOWCTL", "false")
        .env("NETWORK_PASSPHRASE", TESTNET)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Killed(cmd.spawn().unwrap())
}

#[test]
fn node_grpc_client_streams_the_golden_events_from_the_ttp_processor() {
    let node_dir = repo().join("tests/wire/node");
    if !node_dir.join("node_modules/@grpc/grpc-js").is_dir() {
        eprintln!(
            "skipped: run `npm ci --prefix tests/wire/node` first (Node.js gRPC packages absent)"
        );
        return;
    }
    let Some(root) = testdata() else { return };
    let (src_port, ttp_port) = (free_port(), free_port());
    let _source = component(
        "stellar-live-source",
        src_port,
        &[
            ("BACKEND", "datalake".into()),
            (
                "DATALAKE_URL",
                root.join("testnet/datastore").display().to_string(),
            ),
        ],
    );
    let _ttp = component(
        "ttp-processor",
        ttp_port,
        &[("SOURCE_SERVICE_ADDRESS", format!("127.0.0.1:{src_port}"))],
    );
    wait_for("the processor's port", Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", ttp_port)).is_ok()
    });
    let out = Command::new("node")
        .arg(node_dir.join("ttp_events.js"))
        .arg(format!("127.0.0.1:{ttp_port}"))
        .args(["997", "999"])
        .output()
        .expect("node is installed");
    assert!(
        out.status.success(),
        "node client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = parse_jsonl(&String::from_utf8_lossy(&out.stdout));
    let golden = golden_997_999(&root);
    assert_eq!(got.len(), golden.len());
    for (i, (g, w)) in got.iter().zip(&golden).enumerate() {
        assert_eq!(g, w, "event {i}");
    }
}
