//! The systemd-facing edge of the daemon: notifications up to the service manager, the
//! journal for the daemon's and its children's output, and the delegated cgroup subtree.
//!
//! Each module works on its own and degrades plainly when systemd is absent: no
//! `NOTIFY_SOCKET` means notifications are no-ops, no journald means prefixed stderr, no
//! delegated cgroup means process groups. The supervisor calls these; nothing here decides
//! what a component should do next.

pub mod cgroup;
pub mod journal;
pub mod notify;

use crate::config::{CgroupMode, Config};

/// Everything the daemon needs from the systemd side, set up once at start from its config:
/// call [`journal::init_daemon_logging`] first, so the one-time notes made here are logged.
#[derive(Debug)]
pub struct SystemdEdge {
    pub notifier: notify::Notifier,
    pub child_logs: journal::ChildLogs,
    pub containment: cgroup::Containment,
}

impl SystemdEdge {
    pub fn setup(config: &Config) -> Self {
        SystemdEdge {
            notifier: notify::Notifier::from_env(),
            child_logs: journal::ChildLogs::new(
                config.log.children,
                journal::JournalSockets::system(),
            ),
            containment: cgroup::Containment::setup(config.cgroups.mode == CgroupMode::Auto),
        }
    }
}
