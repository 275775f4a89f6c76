//! Shared by the tests that run `flowctl-sup run` as a process: asking it for its status.
#![allow(dead_code)]

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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

/// A daemon config keeping everything under `dir` (state, runtime, pipelines in
/// `dir/pipelines`): the registry on a free port, children's output on stderr, no cgroups,
/// `/metrics` on `metrics_listen` (`""` turns it off).
pub fn config_text(dir: &Path, metrics_listen: &str) -> String {
    format!(
        "[registry]\nlisten = \"127.0.0.1:0\"\n\
         [paths]\nstate_dir = \"{0}/state\"\nruntime_dir = \"{0}/run\"\npipelines_dir = \"{0}/pipelines\"\n\
         [log]\nchildren = \"stderr\"\n[cgroups]\nmode = \"off\"\n\
         [metrics]\nlisten = \"{metrics_listen}\"\n",
        dir.display(),
    )
}

/// Writes [`config_text`] to `dir/flowctl.toml` and makes `dir/pipelines`; returns both paths.
pub fn write_config(dir: &Path, metrics_listen: &str) -> (PathBuf, PathBuf) {
    let pipelines = dir.join("pipelines");
    std::fs::create_dir_all(&pipelines).unwrap();
    let config = dir.join("flowctl.toml");
    std::fs::write(&config, config_text(dir, metrics_listen)).unwrap();
    (config, pipelines)
}

/// A datagram socket at `dir/notify` standing in for systemd's `NOTIFY_SOCKET`.
pub fn notify_socket(dir: &Path) -> (PathBuf, UnixDatagram) {
    let path = dir.join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    (path, sock)
}
