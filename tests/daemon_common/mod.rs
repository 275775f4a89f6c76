//! Shared by the tests that run `flowctl-sup run` as a process: asking it for its status.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

pub const SUP: &str = env!("CARGO_BIN_EXE_flowctl-sup");

/// `flowctl-sup --socket SOCKET status --json`, which must succeed.
pub fn sup_status(socket: &Path) -> serde_json::Value {
    let out = Command::new(SUP)
        .arg("--socket")
        .arg(socket)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "flowctl-sup status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
