//! A booted systemd for tests: `../shared/tools/systemd-sandbox.sh` (systemd as PID 1 in
//! throw-away namespaces, the host's userland as a copy-on-write root).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A running sandbox; stopped on drop, whatever happened.
pub struct Sandbox {
    script: PathBuf,
    name: String,
}

impl Sandbox {
    pub fn start() -> Option<Sandbox> {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/systemd-sandbox.sh");
        if !script.exists() {
            eprintln!("skipped: {} is absent", script.display());
            return None;
        }
        if !nix::unistd::geteuid().is_root() || !Path::new("/lib/systemd/systemd").exists() {
            eprintln!("skipped: the systemd sandbox needs root and systemd installed");
            return None;
        }
        let sb = Sandbox {
            script,
            name: format!("flowctl-test-{}", std::process::id()),
        };
        let out = Command::new("bash")
            .arg(&sb.script)
            .args(["start", &sb.name])
            .output()
            .unwrap();
        assert!(out.status.success(), "sandbox start: {}", text(&out));
        Some(sb)
    }

    pub fn run(&self, cmd: &str) -> Output {
        Command::new("bash")
            .arg(&self.script)
            .args(["exec", &self.name, "sh", "-c", cmd])
            .output()
            .unwrap()
    }

    /// Runs `cmd` inside and returns its output; fails the test when it fails.
    pub fn ok(&self, cmd: &str) -> String {
        let out = self.run(cmd);
        assert!(out.status.success(), "`{cmd}` failed: {}", text(&out));
        text(&out)
    }

    pub fn copy_in(&self, src: &Path, dst: &str) {
        let out = Command::new("bash")
            .arg(&self.script)
            .args(["cp-in", &self.name])
            .arg(src)
            .arg(dst)
            .output()
            .unwrap();
        assert!(out.status.success(), "cp-in: {}", text(&out));
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .args(["stop", &self.name])
            .output();
    }
}
