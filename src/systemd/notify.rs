//! sd_notify up to systemd: `READY`, `STATUS`, `WATCHDOG`, `EXTEND_TIMEOUT_USEC`,
//! `RELOADING`+`MONOTONIC_USEC` and `STOPPING` for a `Type=notify` unit.
//!
//! The socket and watchdog settings are read once, when the [`Notifier`] is made, so later
//! changes to the environment (or children built from it) cannot redirect the daemon's
//! notifications. Outside systemd every call is a cheap no-op.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::time::Duration;

use sd_notify::NotifyState;

/// The daemon's line to the service manager.
#[derive(Debug, Clone)]
pub struct Notifier {
    /// `NOTIFY_SOCKET` as found at start; `None` outside a `Type=notify` unit.
    socket: Option<OsString>,
    /// `WATCHDOG_USEC`, when it is meant for this process.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the environment.
    pub fn from_env() -> Self {
        Notifier {
            socket: std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()),
            watchdog: sd_notify::watchdog_enabled(),
        }
    }

    /// A notifier that never sends anything (`flowctl run` on a terminal).
    pub fn disabled() -> Self {
        Notifier {
            socket: None,
            watchdog: None,
        }
    }

    /// True when there is a service manager listening.
    pub fn is_enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// How often the main loop must call [`Notifier::watchdog`]: half of `WatchdogSec=`, as
    /// sd_watchdog_enabled(3) recommends, so one late tick does not kill the daemon.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.socket.as_ref()?;
        self.watchdog.map(|d| d / 2)
    }

    /// Startup is complete: every pipeline's components are ready.
    pub fn ready(&self, status: &str) -> io::Result<()> {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)])
    }

    /// Replaces the one-line status shown by `systemctl status`.
    pub fn status(&self, status: &str) -> io::Result<()> {
        self.send(&[NotifyState::Status(status)])
    }

    /// The main loop is alive.
    pub fn watchdog(&self) -> io::Result<()> {
        self.send(&[NotifyState::Watchdog])
    }

    /// A slow start (or stop) is still progressing: ask for `extra` more time from now.
    pub fn extend_timeout(&self, extra: Duration, status: &str) -> io::Result<()> {
        let usec = u32::try_from(extra.as_micros()).unwrap_or(u32::MAX);
        self.send(&[
            NotifyState::ExtendTimeoutUsec(usec),
            NotifyState::Status(status),
        ])
    }

    /// A reload begins; systemd 253+ requires `MONOTONIC_USEC` with it. Follow with
    /// [`Notifier::ready`] once the new configuration runs (or the old one was kept).
    pub fn reloading(&self, status: &str) -> io::Result<()> {
        self.send(&[
            NotifyState::Reloading,
            NotifyState::monotonic_usec_now()?,
            NotifyState::Status(status),
        ])
    }

    /// The daemon is draining its pipelines and will exit.
    pub fn stopping(&self, status: &str) -> io::Result<()> {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)])
    }

    fn send(&self, states: &[NotifyState]) -> io::Result<()> {
        let Some(socket) = &self.socket else {
            return Ok(());
        };
        // sd-notify reads the socket path from the environment on each call; give it the one
        // captured at start, so a cleared or changed variable cannot silence or divert us.
        let mut msg = String::new();
        for s in states {
            msg.push_str(&s.to_string());
            msg.push('\n');
        }
        send_datagram(socket, msg.as_bytes())
    }
}

/// Sends one datagram to a notify socket path (`@name` is an abstract socket).
fn send_datagram(path: &std::ffi::OsStr, msg: &[u8]) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = path.as_bytes();
    let addr = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name)?
    } else {
        SocketAddr::from_pathname(std::path::Path::new(path))?
    };
    let sock = UnixDatagram::unbound()?;
    let sent = sock.send_to_addr(msg, &addr)?;
    if sent != msg.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "notification truncated",
        ));
    }
    Ok(())
}

/// The one-line `STATUS=` summary: "2 pipelines, 6/6 ready, 0 failed, 1,204 ledgers/s".
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StatusLine {
    pub pipelines: usize,
    pub components: usize,
    pub ready: usize,
    pub failed: usize,
    /// Pipelines whose bounded run completed.
    pub completed: usize,
    /// Ledgers per second over all sources; `None` until a component has reported it.
    pub ledgers_per_sec: Option<f64>,
}

impl fmt::Display for StatusLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.pipelines == 1 { "" } else { "s" };
        write!(
            f,
            "{} pipeline{plural}, {}/{} ready, {} failed",
            self.pipelines, self.ready, self.components, self.failed
        )?;
        if self.completed > 0 {
            write!(f, ", {} completed", self.completed)?;
        }
        if let Some(rate) = self.ledgers_per_sec {
            write!(f, ", {} ledgers/s", thousands(rate.round().max(0.0) as u64))?;
        }
        Ok(())
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_reads_like_the_systemctl_summary() {
        let line = StatusLine {
            pipelines: 2,
            components: 6,
            ready: 6,
            failed: 0,
            completed: 0,
            ledgers_per_sec: Some(1204.4),
        };
        assert_eq!(
            line.to_string(),
            "2 pipelines, 6/6 ready, 0 failed, 1,204 ledgers/s"
        );
        let one = StatusLine {
            pipelines: 1,
            components: 3,
            ready: 1,
            failed: 1,
            completed: 0,
            ledgers_per_sec: None,
        };
        assert_eq!(one.to_string(), "1 pipeline, 1/3 ready, 1 failed");
        let done = StatusLine {
            pipelines: 2,
            components: 6,
            ready: 3,
            failed: 0,
            completed: 1,
            ledgers_per_sec: None,
        };
        assert_eq!(
            done.to_string(),
            "2 pipelines, 3/6 ready, 0 failed, 1 completed"
        );
    }

    #[test]
    fn thousands_separators_group_by_three() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn disabled_notifier_sends_nothing_and_has_no_watchdog() {
        let n = Notifier::disabled();
        assert!(!n.is_enabled());
        assert_eq!(n.watchdog_interval(), None);
        n.ready("x").unwrap();
        n.stopping("x").unwrap();
    }
}
