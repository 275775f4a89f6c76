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
